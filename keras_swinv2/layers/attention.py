"""Window multi-head self-attention with SwinV2's scaled cosine attention."""

import functools
import math

import keras
from keras import ops

from keras_swinv2.layers.linear import Linear
from keras_swinv2.layers.position_bias import ContinuousPositionBias, RelativePositionBiasTable
from keras_swinv2.layers.windows import to_pair

ATTENTION_TYPES = ("cosine", "dot")
POSITION_BIAS_TYPES = ("log_cpb", "linear_cpb", "table")
# exp(logit_scale) is capped at 1 / 0.01.
MAX_LOGIT_SCALE = math.log(100.0)


def l2_normalize(x, epsilon=1e-12):
    """`x / max(||x||_2, epsilon)` over the last axis (PyTorch's F.normalize)."""
    if keras.backend.backend() == "torch":
        # one norm kernel and one divide in eager torch, not five elementwise passes
        import torch.nn.functional as F

        return F.normalize(ops.convert_to_tensor(x), dim=-1, eps=epsilon)
    # 1 / max(||x||, eps) == rsqrt(max(||x||^2, eps^2)): a multiply instead of a divide
    x = ops.convert_to_tensor(x)
    squared = ops.sum(x * x, axis=-1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared, epsilon * epsilon))


def add_shared_bias(logits, bias):
    """`logits + bias`, with one `bias` shared by every row of `logits`.

    Args:
        logits: tensor `(rows, ...)`.
        bias: tensor `(1, ...)` with the same trailing shape.

    Returns:
        `logits + bias`, shaped like `logits`.

    On JAX the gradient of `bias`, the incoming gradient summed over the rows,
    is computed as a product with a ones vector: XLA's CPU reduction over the
    leading axis ran at ~0.5 GB/s, and summing the attention-bias gradients
    took 0.24 s of SwinV2-T's 2.35 s forward + backward (batch 8; 2.26 s after).
    """
    if keras.backend.backend() != "jax":
        return logits + bias
    return _jax_add_shared_bias()(logits, bias)


@functools.cache
def _jax_add_shared_bias():
    import jax

    @jax.custom_vjp
    def add(logits, bias):
        return logits + bias

    def forward(logits, bias):
        return logits + bias, None

    def backward(_, grad):
        rows = grad.shape[0]
        bias_grad = ops.ones((1, rows), grad.dtype) @ ops.reshape(grad, (rows, -1))
        return grad, ops.reshape(bias_grad, (1, *grad.shape[1:]))

    add.defvjp(forward, backward)
    return add


def apply_dropout(layer, x, training):
    """`layer(x, training=training)` for a `keras.layers.Dropout`, skipped when it cannot drop.

    At inference or with rate 0 the layer is the identity; not calling it saves
    the Keras layer-call overhead, which eager torch pays in Python (~0.1 ms a
    call, 48 calls per SwinV2-T forward).
    """
    if not training or layer.rate == 0:
        return x
    return layer(x, training=training)


def softmax(logits):
    """Softmax over the last axis of float32 `logits`, any shape.

    On the torch backend, probabilities below float32's smallest normal number
    (1.2e-38) are set to 0, and the gradient is the softmax's with that output.
    Behind the shifted-window mask (-100) a masked token's probability is often
    near e^-100, a denormal, and eager torch's CPU matrix products slow down
    ~40x on denormal inputs: the attention-times-values product of SwinV2-T's
    shifted blocks took 63 ms of 70 (batch 8), 1.6 ms per call once flushed.
    XLA (TF jit, JAX) flushes denormals already. Elsewhere: `ops.softmax`.
    """
    if keras.backend.backend() != "torch":
        return ops.softmax(logits, axis=-1)
    from keras_swinv2.layers.torch_ops import FlushedSoftmax

    return FlushedSoftmax.apply(logits)


@keras.saving.register_keras_serializable(package="keras_swinv2")
class WindowAttention(keras.layers.Layer):
    """Multi-head self-attention within each window, with a relative position bias.

    SwinV2 (the default): `logits = cos(q, k) * exp(min(logit_scale, log 100))
    + 16 * sigmoid(CPB)`, with a learnable temperature `logit_scale` of shape
    `(num_heads, 1, 1)`. V1: `logits = q k^T / sqrt(head_dim) + table bias`.
    Only q and v carry a bias unless `key_bias=True` (V1). The logits, the
    position bias and the softmax are computed in float32 whatever the dtype
    policy. On the torch backend, inference with windows of 256 tokens or more
    goes through the fused `scaled_dot_product_attention` (the temperature
    folded into q).

    Args:
        dim: int, channels C of the tokens; must be divisible by `num_heads`.
        num_heads: int.
        window_size: int or `(wh, ww)`, tokens per window N = wh * ww.
        pretrained_window_size: int or pair, window of the pretrained CPB
            coordinates (0: same as `window_size`).
        attention: "cosine" (V2) or "dot" (V1).
        position_bias: "log_cpb" (V2), "linear_cpb" or "table" (V1).
        qkv_bias: bool, learn biases for q and v.
        key_bias: bool, learn a bias for k too (V1).
        attn_drop: float, dropout on the attention probabilities.
        proj_drop: float, dropout after the output projection.

    Call arguments:
        windows: tensor `(batch * num_windows, N, C)`.
        attention_mask: optional float tensor `(num_windows, N, N)` added to the logits
            (the shifted-window mask).
        bias: optional `(num_heads, N, N)`, the output of `bias_layer.bias()`; pass it to
            share one computation between calls on chunks of the same windows.

    Output shape: `(batch * num_windows, N, C)`.
    """

    def __init__(
        self,
        dim,
        num_heads,
        window_size,
        pretrained_window_size=0,
        attention="cosine",
        position_bias="log_cpb",
        qkv_bias=True,
        key_bias=False,
        attn_drop=0.0,
        proj_drop=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(
                f"dim must be divisible by num_heads; got dim={dim}, num_heads={num_heads}."
            )
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}; got {attention!r}.")
        if position_bias not in POSITION_BIAS_TYPES:
            raise ValueError(
                f"position_bias must be one of {POSITION_BIAS_TYPES}; got {position_bias!r}."
            )
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = to_pair(window_size)
        self.pretrained_window_size = to_pair(pretrained_window_size)
        self.attention = attention
        self.position_bias = position_bias
        self.qkv_bias = qkv_bias
        self.key_bias = key_bias
        self.attn_drop = attn_drop
        self.proj_drop = proj_drop

        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.qkv = Linear(
            3 * dim, use_bias=False, kernel_initializer=init, dtype=self.dtype_policy, name="qkv"
        )
        self.proj = Linear(dim, kernel_initializer=init, dtype=self.dtype_policy, name="proj")
        if position_bias == "table":
            self.bias_layer = RelativePositionBiasTable(
                num_heads, self.window_size, dtype=self.dtype_policy, name="relative_position_bias"
            )
        else:
            self.bias_layer = ContinuousPositionBias(
                num_heads,
                self.window_size,
                self.pretrained_window_size,
                mode=position_bias.split("_")[0],
                dtype=self.dtype_policy,
                name="cpb",
            )
        self.attn_dropout = keras.layers.Dropout(attn_drop, dtype=self.dtype_policy)
        self.proj_dropout = keras.layers.Dropout(proj_drop, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.qkv.build((None, None, self.dim))
        self.proj.build((None, None, self.dim))
        self.bias_layer.build()
        if self.qkv_bias:
            self.q_bias = self.add_weight(name="q_bias", shape=(self.dim,), initializer="zeros")
            self.v_bias = self.add_weight(name="v_bias", shape=(self.dim,), initializer="zeros")
            if self.key_bias:
                self.k_bias = self.add_weight(name="k_bias", shape=(self.dim,), initializer="zeros")
        if self.attention == "cosine":
            self.logit_scale = self.add_weight(
                name="logit_scale",
                shape=(self.num_heads, 1, 1),
                initializer=keras.initializers.Constant(math.log(10.0)),
            )

    def call(self, windows, attention_mask=None, bias=None, training=None):
        n = self.window_size[0] * self.window_size[1]
        head_dim = self.dim // self.num_heads
        if self.qkv_bias:
            k_bias = self.k_bias if self.key_bias else ops.zeros((self.dim,), self.q_bias.dtype)
            qkv_bias = ops.concatenate([self.q_bias, k_bias, self.v_bias])
            qkv = self.qkv(windows, bias=qkv_bias)  # one GEMM with its bias on torch
        else:
            qkv = self.qkv(windows)
        # split, not reshape-to-(3, ...) and index: the gradient of a split is one concatenate,
        # that of indexing three zero-padded copies summed (12% of a TF XLA training step).
        q, k, v = (
            ops.transpose(ops.reshape(t, (-1, n, self.num_heads, head_dim)), (0, 2, 1, 3))
            for t in ops.split(qkv, 3, axis=-1)
        )  # (B_, heads, N, head_dim)

        if self.attention == "cosine":
            # the temperature folded into q: cos(q, k) * t == (t * q / ||q||) . k / ||k||
            scale = ops.exp(ops.minimum(ops.cast(self.logit_scale, "float32"), MAX_LOGIT_SCALE))
            if keras.backend.backend() == "torch":
                from keras_swinv2.layers.torch_ops import cosine_query_key

                q, k = cosine_query_key(qkv, self.num_heads, scale)
            else:
                q = l2_normalize(ops.cast(q, "float32")) * scale
                k = l2_normalize(ops.cast(k, "float32"))
        else:
            q = q * ops.cast(head_dim**-0.5, q.dtype)
        if bias is None:
            bias = self.bias_layer.bias()
        bias = ops.cast(bias, "float32")[None]  # (1, heads, N, N)
        heads = self.num_heads
        if attention_mask is not None:
            # the windows of one image side by side as heads: the bias + mask of all of them is
            # one (1, num_windows * heads, N, N) tensor broadcast over the images
            heads = ops.shape(attention_mask)[0] * self.num_heads
            bias = ops.reshape(bias + ops.cast(attention_mask, "float32")[:, None], (1, heads, n, n))
            q, k, v = (ops.reshape(t, (-1, heads, n, head_dim)) for t in (q, k, v))
        if keras.backend.backend() == "torch" and not training and n >= 256:
            # torch's fused scaled_dot_product_attention, in float32, for windows of 16 x 16 and
            # up: SwinV2-B 384/24 inference 0.67 -> 0.84 images/s; on 8 x 8 windows it is slower
            # (SwinV2-T 256/8 7.6 -> 5.7; one attention call 2x slower at N=64 and N=144, 5x
            # faster at N=256 and N=576). Not in training: with a bias that needs a gradient torch
            # falls back to an unfused kernel slower than the branch below (a SwinV2-B step
            # 9.4 s vs 7.9 s). Keras' version on TF and JAX is written out like the branch
            # below and measured a little slower (TF XLA 1.11 -> 1.03, JAX 0.96 -> 0.88).
            out = ops.dot_product_attention(
                *(ops.transpose(ops.cast(t, "float32"), (0, 2, 1, 3)) for t in (q, k, v)),
                bias=bias,
                scale=1.0,
            )
            out = ops.cast(ops.transpose(out, (0, 2, 1, 3)), v.dtype)
        else:
            logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
            probs = softmax(add_shared_bias(ops.cast(logits, "float32"), bias))
            probs = apply_dropout(self.attn_dropout, ops.cast(probs, v.dtype), training)
            out = ops.matmul(probs, v)  # (B_ or B, heads, N, head_dim)
        out = ops.transpose(ops.reshape(out, (-1, self.num_heads, n, head_dim)), (0, 2, 1, 3))
        out = self.proj(ops.reshape(out, (-1, n, self.dim)))
        return apply_dropout(self.proj_dropout, out, training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim,
            num_heads=self.num_heads,
            window_size=self.window_size,
            pretrained_window_size=self.pretrained_window_size,
            attention=self.attention,
            position_bias=self.position_bias,
            qkv_bias=self.qkv_bias,
            key_bias=self.key_bias,
            attn_drop=self.attn_drop,
            proj_drop=self.proj_drop,
        )
        return config
