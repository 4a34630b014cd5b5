"""Window multi-head self-attention with SwinV2's scaled cosine attention."""

import math

import keras
from keras import ops

from keras_swinv2 import backend
from keras_swinv2.layers.linear import Linear
from keras_swinv2.layers.position_bias import ContinuousPositionBias, RelativePositionBiasTable
from keras_swinv2.layers.windows import to_pair
from keras_swinv2.layers.initializers import TruncatedNormal

ATTENTION_TYPES = ("cosine", "dot")
POSITION_BIAS_TYPES = ("log_cpb", "linear_cpb", "table")
# exp(logit_scale) is capped at 1 / 0.01.
MAX_LOGIT_SCALE = math.log(100.0)


def apply_dropout(layer, x, training):
    """`layer(x, training=training)` for a `keras.layers.Dropout`, skipped when it cannot drop.

    At inference or with rate 0 the layer is the identity; not calling it saves
    the Keras layer-call overhead (eager torch pays it in Python per call).
    """
    if not training or layer.rate == 0:
        return x
    return layer(x, training=training)


@keras.saving.register_keras_serializable(package="keras_swinv2")
class WindowAttention(keras.layers.Layer):
    """Multi-head self-attention within each window, with a relative position bias.

    SwinV2 (the default): `logits = cos(q, k) * exp(min(logit_scale, log 100))
    + 16 * sigmoid(CPB)`, with a learnable temperature `logit_scale` of shape
    `(num_heads, 1, 1)`. V1: `logits = q k^T / sqrt(head_dim) + table bias`.
    Only q and v carry a bias unless `key_bias=True` (V1). The logits, the
    position bias and the softmax are computed in float32 whatever the dtype
    policy. Where `keras_swinv2.backend.use_fused_attention` says so (on a GPU
    or TPU, and for large windows in torch inference on a CPU), the product
    goes through `keras.ops.dot_product_attention` with the bias (and mask)
    as its bias and the temperature folded into q.

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
        attention_dropout_rate: float, dropout on the attention probabilities.
        dropout_rate: float, dropout after the output projection.

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
        attention_dropout_rate=0.0,
        dropout_rate=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads; got dim={dim}, num_heads={num_heads}.")
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}; got {attention!r}.")
        if position_bias not in POSITION_BIAS_TYPES:
            raise ValueError(f"position_bias must be one of {POSITION_BIAS_TYPES}; got {position_bias!r}.")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = to_pair(window_size)
        self.pretrained_window_size = to_pair(pretrained_window_size)
        self.attention = attention
        self.position_bias = position_bias
        self.qkv_bias = qkv_bias
        self.key_bias = key_bias
        self.attention_dropout_rate = attention_dropout_rate
        self.dropout_rate = dropout_rate

        init = TruncatedNormal(stddev=0.02)
        self.qkv = Linear(3 * dim, use_bias=False, kernel_initializer=init, dtype=self.dtype_policy, name="qkv")
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
        self.attn_dropout = keras.layers.Dropout(attention_dropout_rate, dtype=self.dtype_policy)
        self.proj_dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)

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
            q, k = backend.cosine_query_key(qkv, q, k, self.num_heads, scale)
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
        accelerated = backend.on_accelerator(q)
        if backend.use_fused_attention(accelerated, n, training, self.attention_dropout_rate > 0):
            # in the compute dtype on an accelerator (fused kernels take float16 / bfloat16 and
            # accumulate the softmax in float32); in float32 on a CPU, as the plain path
            dtype = v.dtype if accelerated else "float32"
            out = ops.dot_product_attention(
                *(ops.transpose(ops.cast(t, dtype), (0, 2, 1, 3)) for t in (q, k, v)),
                bias=ops.cast(bias, dtype),
                scale=1.0,
            )
            out = ops.cast(ops.transpose(out, (0, 2, 1, 3)), v.dtype)
        else:
            logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
            probs = backend.softmax(backend.add_shared_bias(ops.cast(logits, "float32"), bias, overwrite=True))
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
            attention_dropout_rate=self.attention_dropout_rate,
            dropout_rate=self.dropout_rate,
        )
        return config
