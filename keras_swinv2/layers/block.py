"""The Swin Transformer block: shifted-window attention and an MLP, each residual."""

import math

import keras
from keras import ops

from keras_swinv2.layers.attention import WindowAttention, apply_dropout
from keras_swinv2.layers.linear import Linear
from keras_swinv2.layers.patch_embedding import LAYER_NORM_EPSILON
from keras_swinv2.layers.remat import remat
from keras_swinv2.layers.windows import (
    pad_to_multiple,
    region_mask,
    shifted_window_regions,
    window_merge,
    window_partition,
)

NORM_TYPES = ("post", "pre")


@keras.saving.register_keras_serializable(package="keras_swinv2")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops the whole residual branch per sample.

    In training, each sample's input is zeroed with probability `rate` and the
    survivors are scaled by `1 / (1 - rate)`; at inference it is the identity.

    Input/output shape: any `(batch, ...)`.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1); got {rate}.")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None
        # No weights to build, and the block calls `sample`, never `__call__`: an unbuilt layer
        # would make Keras trace the whole model again on every `train_on_batch`.
        self.built = True

    def sample(self, x, training=None):
        """Draws the per-sample scale `mask / (1 - rate)`, or None when inactive.

        Args:
            x: tensor `(batch, ...)`, the branch the scale will multiply.
            training: bool.

        Returns:
            None, or a tensor `(batch, 1, ..., 1)` of x's dtype holding 0 or
            `1 / (1 - rate)`.
        """
        if not training or self.rate == 0.0:
            return None
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype) < keep
        return ops.cast(mask, x.dtype) / keep

    def call(self, x, training=None):
        scale = self.sample(x, training)
        return x if scale is None else x * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


def gelu(x):
    """Exact GELU, `x * Phi(x)` with `Phi` the standard normal CDF; any shape.

    On JAX it is written `0.5 * x * (1 + erf(x / sqrt(2)))`, PyTorch's formula:
    `jax.nn.gelu` goes through `erfc`, whose XLA expansion (two branches and an
    exp) took 0.30 s of SwinV2-T's 2.26 s forward + backward on CPU, `erf` 0.21 s.
    Elsewhere it is `keras.activations.gelu`, which already has that form.
    """
    if keras.backend.backend() == "jax":
        return 0.5 * x * (1.0 + ops.erf(x * math.sqrt(0.5)))
    return keras.activations.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="keras_swinv2")
class Mlp(keras.layers.Layer):
    """Dense(hidden) -> GELU -> Dropout -> Dense(dim) -> Dropout.

    Input/output shape: `(..., dim)`.
    """

    def __init__(self, dim, hidden_dim, drop=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.drop = drop
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.fc1 = Linear(
            hidden_dim, kernel_initializer=init, dtype=self.dtype_policy, name="fc1"
        )
        self.fc2 = Linear(dim, kernel_initializer=init, dtype=self.dtype_policy, name="fc2")
        self.dropout = keras.layers.Dropout(drop, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.fc1.build((None, self.dim))
        self.fc2.build((None, self.hidden_dim))

    def call(self, x, training=None):
        x = apply_dropout(self.dropout, gelu(self.fc1(x)), training)
        return apply_dropout(self.dropout, self.fc2(x), training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, hidden_dim=self.hidden_dim, drop=self.drop)
        return config


def effective_window(resolution, window_size, shift_size):
    """Window and shift a block really uses at a given feature-map resolution.

    The official rule: when the smaller side of the map fits in one window,
    the window shrinks to that side and the shift is 0. Unknown (dynamic)
    resolutions keep the requested window and shift.

    Args:
        resolution: `(height, width)`, entries may be None.
        window_size: int, requested window side.
        shift_size: int, requested shift.

    Returns:
        `(window, shift)` ints.
    """
    if None not in resolution and min(resolution) <= window_size:
        return int(min(resolution)), 0
    return window_size, shift_size


def largest_divisor(n, limit):
    """The largest divisor of `n` that is at most `limit` (>= 1)."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def map_sequentially(function, elements):
    """`keras.ops.map` with one iteration at a time on every backend.

    TensorFlow's `map_fn` (behind `ops.map`) runs up to 10 iterations in
    parallel, which would keep 10 chunks' buffers alive at once.
    """
    if keras.backend.backend() != "tensorflow":
        return ops.map(function, elements)
    import tensorflow as tf

    first = tf.nest.map_structure(lambda x: x[0], elements)
    signature = tf.TensorSpec.from_tensor(function(first))
    return tf.map_fn(function, elements, fn_output_signature=signature, parallel_iterations=1)


def check_checkpointing(gradient_checkpointing, drop, attn_drop):
    """Refuses dropout inside recomputed blocks.

    `remat` re-runs the block in the backward pass. On TensorFlow and
    PyTorch a Keras seed generator advances in between, so the recomputed
    dropout masks would differ from the forward pass (wrong gradients); on JAX
    the generator's state update inside `jax.checkpoint` leaks a tracer.
    Stochastic depth is fine: its masks are drawn outside the recomputation.
    The official SwinV2 recipes use no dropout (only stochastic depth).
    """
    if gradient_checkpointing and (drop or attn_drop):
        raise ValueError(
            "gradient_checkpointing=True needs drop=0 and attn_drop=0 (drop_rate and "
            f"attn_drop_rate on the model); got drop={drop}, attn_drop={attn_drop}. "
            "Stochastic depth (drop_path) is supported."
        )


@keras.saving.register_keras_serializable(package="keras_swinv2")
class SwinV2Block(keras.layers.Layer):
    """One Swin Transformer block on a `(batch, height, width, dim)` token map.

    Data path (V2, `norm="post"`):
        pad to a window multiple (zeros, bottom/right) -> cyclic shift by
        `-shift` -> window partition -> WindowAttention (+ shift mask) ->
        merge -> unshift -> crop the padding;
        `x = x + DropPath(LN(attn(x)))`, then `x = x + DropPath(LN(mlp(x)))`.
    With `norm="pre"` (V1) the norms move in front of the branches:
        `x = x + DropPath(attn(LN(x)))`, `x = x + DropPath(mlp(LN(x)))`.

    Padded tokens are zeros that take part in attention unmasked (the
    semantics of HF transformers' Swin/Swinv2, which pad before the shift).
    The window actually used is decided in `build` from the static input
    resolution (`effective_window`); with a dynamic resolution the requested
    window and shift are kept.

    Args:
        dim: int, channels.
        num_heads: int.
        window_size: int, requested window side.
        shift_size: int, requested cyclic shift (0 for regular windows).
        pretrained_window_size: int, see `ContinuousPositionBias`.
        mlp_ratio: float, MLP hidden width relative to `dim`.
        qkv_bias, key_bias, attention, position_bias: see `WindowAttention`.
        drop: float, dropout in the MLP and after the attention projection.
        attn_drop: float, dropout on attention probabilities.
        drop_path: float, stochastic depth rate of both residual branches.
        norm: "post" (V2 res-post-norm, LayerNorms initialised to zero) or
            "pre" (V1).
        extra_norm: bool, apply one more LayerNorm to the block's output (the
            main-branch norm SwinV2-H/G use every 6 blocks).
        gradient_checkpointing: bool, in training keep only the block's input
            for the backward pass and recompute its activations there
            (`keras_swinv2.layers.remat.remat`). The stochastic-depth masks
            are drawn outside the recomputed function, so gradients equal the
            plain block's. Dropout
            inside the block (`drop`, `attn_drop`) cannot be recomputed
            identically and is refused (see `check_checkpointing`).
        attention_chunk_size: int, 0 to attend all windows at once; otherwise
            the windows of each image go through attention in sequential
            chunks of at most this many windows (the largest divisor of the
            window count that fits), which caps the `(windows, heads, N, N)`
            attention buffer. Outputs are identical. Needs a static resolution.

    Input/output shape: `(batch, height, width, dim)`.
    """

    def __init__(
        self,
        dim,
        num_heads,
        window_size=8,
        shift_size=0,
        pretrained_window_size=0,
        mlp_ratio=4.0,
        qkv_bias=True,
        key_bias=False,
        attention="cosine",
        position_bias="log_cpb",
        drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
        norm="post",
        extra_norm=False,
        gradient_checkpointing=False,
        attention_chunk_size=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if norm not in NORM_TYPES:
            raise ValueError(f"norm must be one of {NORM_TYPES}; got {norm!r}.")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1; got {window_size}.")
        if not 0 <= shift_size < window_size:
            raise ValueError(
                f"shift_size must be in [0, window_size={window_size}); got {shift_size}."
            )
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.pretrained_window_size = pretrained_window_size
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.key_bias = key_bias
        self.attention = attention
        self.position_bias = position_bias
        self.drop = drop
        self.attn_drop = attn_drop
        self.drop_path = drop_path
        self.norm = norm
        self.extra_norm = extra_norm
        self.gradient_checkpointing = gradient_checkpointing
        self.attention_chunk_size = attention_chunk_size
        check_checkpointing(gradient_checkpointing, drop, attn_drop)
        if attention_chunk_size < 0:
            raise ValueError(f"attention_chunk_size must be >= 0; got {attention_chunk_size}.")

        gamma = "zeros" if norm == "post" else "ones"
        self.norm1 = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, gamma_initializer=gamma, dtype=self.dtype_policy, name="norm1"
        )
        self.norm2 = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, gamma_initializer=gamma, dtype=self.dtype_policy, name="norm2"
        )
        self.norm3 = (
            keras.layers.LayerNormalization(
                epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name="norm3"
            )
            if extra_norm
            else None
        )
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, dtype=self.dtype_policy, name="mlp")
        self.drop_path_layer = DropPath(drop_path, dtype=self.dtype_policy)
        # Set in build(), once the input resolution is known.
        self.attn = None
        self.window, self.shift = window_size, shift_size
        self.chunk = 0

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] != self.dim:
            raise ValueError(
                f"SwinV2Block expects tokens of shape (batch, height, width, {self.dim}); "
                f"got {tuple(input_shape)}."
            )
        self.window, self.shift = effective_window(
            tuple(input_shape[1:3]), self.window_size, self.shift_size
        )
        if self.attention_chunk_size:
            if None in tuple(input_shape[1:3]):
                raise ValueError(
                    "attention_chunk_size needs a static resolution; got input shape "
                    f"{tuple(input_shape)}."
                )
            rows, cols = (-(-side // self.window) for side in input_shape[1:3])
            self.chunk = largest_divisor(rows * cols, self.attention_chunk_size)
        self.attn = WindowAttention(
            self.dim,
            self.num_heads,
            self.window,
            pretrained_window_size=self.pretrained_window_size,
            attention=self.attention,
            position_bias=self.position_bias,
            qkv_bias=self.qkv_bias,
            key_bias=self.key_bias,
            attn_drop=self.attn_drop,
            proj_drop=self.drop,
            dtype=self.dtype_policy,
            name="attn",
        )
        tokens = (None, None, None, self.dim)
        self.attn.build((None, self.window * self.window, self.dim))
        for layer in (self.norm1, self.norm2, self.norm3, self.mlp):
            if layer is not None:
                layer.build(tokens)

    def _shifted_window_attention(self, x, training):
        w, s = self.window, self.shift
        _, height, width, _ = ops.shape(x)
        x, padded_h, padded_w = pad_to_multiple(x, w)
        regions = None
        if s > 0:
            x = ops.roll(x, shift=(-s, -s), axis=(1, 2))
            regions = shifted_window_regions(padded_h, padded_w, w, s)
        windows = self._attend(window_partition(x, w), regions, padded_h * padded_w // (w * w), training)
        x = window_merge(windows, w, padded_h, padded_w)
        if s > 0:
            x = ops.roll(x, shift=(s, s), axis=(1, 2))
        return x[:, :height, :width, :]  # drop the padding (a no-op view when there is none)

    def _attend(self, windows, regions, num_windows, training):
        """WindowAttention on `(batch * num_windows, N, C)`, in chunks if asked.

        `regions` (`(num_windows, N)` shifted-region ids, or None) is expanded
        into the attention mask; in chunks, one chunk's mask at a time. The
        position bias is computed once and shared by all chunks.
        """
        if not self.chunk or self.chunk >= num_windows:
            mask = None if regions is None else region_mask(regions)
            return self.attn(windows, attention_mask=mask, training=training)
        n, steps = self.window * self.window, num_windows // self.chunk
        bias = self.attn.bias_layer.bias()
        # (batch, steps, chunk, N, C) -> (steps, batch * chunk, N, C): one step per map iteration
        chunks = ops.reshape(windows, (-1, steps, self.chunk, n, self.dim))
        chunks = ops.reshape(ops.transpose(chunks, (1, 0, 2, 3, 4)), (steps, -1, n, self.dim))
        if regions is None:
            out = map_sequentially(lambda c: self.attn(c, bias=bias, training=training), chunks)
        else:
            out = map_sequentially(
                lambda args: self.attn(
                    args[0], attention_mask=region_mask(args[1]), bias=bias, training=training
                ),
                (chunks, ops.reshape(regions, (steps, self.chunk, n))),
            )
        out = ops.transpose(ops.reshape(out, (steps, -1, self.chunk, n, self.dim)), (1, 0, 2, 3, 4))
        return ops.reshape(out, (-1, n, self.dim))

    def _forward(self, x, scales, training):
        """The block's data path, given the two stochastic-depth scales (or None)."""

        def residual(branch, scale):
            return branch if scale is None else branch * scale

        if self.norm == "post":
            x = x + residual(self.norm1(self._shifted_window_attention(x, training)), scales[0])
            x = x + residual(self.norm2(self.mlp(x, training=training)), scales[1])
        else:
            x = x + residual(self._shifted_window_attention(self.norm1(x), training), scales[0])
            x = x + residual(self.mlp(self.norm2(x), training=training), scales[1])
        if self.norm3 is not None:
            x = self.norm3(x)
        return x

    def call(self, x, training=None):
        # Random masks are drawn here, never inside a recomputed function.
        scales = [self.drop_path_layer.sample(x, training) for _ in range(2)]
        if not (self.gradient_checkpointing and training):
            return self._forward(x, scales, training)
        drawn = [s for s in scales if s is not None]

        def forward(x, *drawn):
            given = iter(drawn)
            return self._forward(x, [None if s is None else next(given) for s in scales], training)

        return remat(forward)(x, *drawn)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim,
            num_heads=self.num_heads,
            window_size=self.window_size,
            shift_size=self.shift_size,
            pretrained_window_size=self.pretrained_window_size,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            key_bias=self.key_bias,
            attention=self.attention,
            position_bias=self.position_bias,
            drop=self.drop,
            attn_drop=self.attn_drop,
            drop_path=self.drop_path,
            norm=self.norm,
            extra_norm=self.extra_norm,
            gradient_checkpointing=self.gradient_checkpointing,
            attention_chunk_size=self.attention_chunk_size,
        )
        return config
