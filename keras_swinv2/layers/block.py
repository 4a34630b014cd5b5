"""The Swin Transformer block: shifted-window attention and an MLP, each residual."""

import dataclasses

import keras
from keras import ops

from keras_swinv2 import backend
from keras_swinv2.layers.attention import (
    ATTENTION_TYPES,
    POSITION_BIAS_TYPES,
    WindowAttention,
    apply_dropout,
)
from keras_swinv2.layers.linear import LayerNorm, Linear
from keras_swinv2.layers.patch_embedding import LAYER_NORM_EPSILON
from keras_swinv2.layers.initializers import TruncatedNormal
from keras_swinv2.layers.windows import (
    cyclic_shift,
    effective_window,
    pad_to_multiple,
    region_mask,
    shifted_window_regions,
    window_merge,
    window_partition,
)

NORM_POSITIONS = ("post", "pre")


def _check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1); got {value!r}.")


@dataclasses.dataclass(frozen=True)
class BlockOptions:
    """What describes a SwinV2 block besides its width, heads and place in the stage.

    One instance is built by the backbone and shared by every stage and block,
    validated once here.

    Attributes:
        mlp_ratio: float, MLP hidden width relative to the block's channels.
        qkv_bias: bool, learn biases for q and v.
        key_bias: bool, learn a bias for k too (Swin V1).
        attention: "cosine" (V2 scaled cosine attention) or "dot" (V1).
        position_bias: "log_cpb" (V2), "linear_cpb" or "table" (V1).
        norm_position: "post" (V2 res-post-norm, LayerNorms after each
            residual branch, initialised to zero) or "pre" (V1).
        dropout_rate: float, dropout in the MLP and after the attention
            projection.
        attention_dropout_rate: float, dropout on attention probabilities.
        gradient_checkpointing: bool, in training keep only each block's input
            for the backward pass and recompute its activations there
            (`keras_swinv2.backend.remat`). Stochastic-depth masks are drawn
            outside the recomputed function; dropout inside it cannot be
            recomputed identically, so it needs both dropout rates 0.
        attention_chunk_size: int, 0 to attend all windows at once; otherwise
            the windows of each image go through attention in sequential
            chunks of at most this many windows (outputs identical, the
            `(windows, heads, N, N)` buffer capped). Needs a static resolution.
    """

    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    key_bias: bool = False
    attention: str = "cosine"
    position_bias: str = "log_cpb"
    norm_position: str = "post"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    gradient_checkpointing: bool = False
    attention_chunk_size: int = 0

    def __post_init__(self):
        if self.attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}; got {self.attention!r}.")
        if self.position_bias not in POSITION_BIAS_TYPES:
            raise ValueError(f"position_bias must be one of {POSITION_BIAS_TYPES}; got {self.position_bias!r}.")
        if self.norm_position not in NORM_POSITIONS:
            raise ValueError(f"norm_position must be one of {NORM_POSITIONS}; got {self.norm_position!r}.")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a number > 0; got {self.mlp_ratio!r}.")
        _check_rate("dropout_rate", self.dropout_rate)
        _check_rate("attention_dropout_rate", self.attention_dropout_rate)
        chunk = self.attention_chunk_size
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
            raise ValueError(f"attention_chunk_size must be an int >= 0; got {chunk!r}.")
        if self.gradient_checkpointing and (self.dropout_rate or self.attention_dropout_rate):
            # remat re-runs the block in the backward pass: on TF and torch a Keras seed
            # generator advances in between (different masks, wrong gradients); on JAX its
            # state update inside jax.checkpoint leaks a tracer.
            raise ValueError(
                "gradient_checkpointing=True needs dropout_rate=0 and attention_dropout_rate=0 "
                f"(dropout inside a recomputed block cannot be replayed); got dropout_rate="
                f"{self.dropout_rate}, attention_dropout_rate={self.attention_dropout_rate}. "
                "Stochastic depth (drop_path_rate) is supported."
            )

    @classmethod
    def fields(cls):
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split(cls, kwargs):
        """Separates option keywords from others: `(BlockOptions, remaining kwargs)`."""
        names = cls.fields()
        options = cls(**{k: kwargs[k] for k in names if k in kwargs})
        return options, {k: v for k, v in kwargs.items() if k not in names}

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def resolve_options(options, overrides):
    """A `BlockOptions` from an instance, a config dict or None, plus keyword overrides."""
    if options is None:
        options = BlockOptions()
    elif isinstance(options, dict):
        options = BlockOptions.from_config(options)
    elif not isinstance(options, BlockOptions):
        raise TypeError(f"options must be a BlockOptions or a dict; got {type(options).__name__}.")
    names = BlockOptions.fields()
    changed = {k: v for k, v in overrides.items() if k in names}
    rest = {k: v for k, v in overrides.items() if k not in names}
    return (dataclasses.replace(options, **changed) if changed else options), rest


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


@keras.saving.register_keras_serializable(package="keras_swinv2")
class Mlp(keras.layers.Layer):
    """Dense(hidden) -> GELU -> Dropout -> Dense(dim) -> Dropout.

    Input/output shape: `(..., dim)`.
    """

    def __init__(self, dim, hidden_dim, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.dropout_rate = dropout_rate
        init = TruncatedNormal(stddev=0.02)
        self.fc1 = Linear(hidden_dim, kernel_initializer=init, dtype=self.dtype_policy, name="fc1")
        self.fc2 = Linear(dim, kernel_initializer=init, dtype=self.dtype_policy, name="fc2")
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.fc1.build((None, self.dim))
        self.fc2.build((None, self.hidden_dim))

    def call(self, x, training=None):
        x = apply_dropout(self.dropout, backend.gelu(self.fc1(x), overwrite=True), training)
        return apply_dropout(self.dropout, self.fc2(x), training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, hidden_dim=self.hidden_dim, dropout_rate=self.dropout_rate)
        return config


def largest_divisor(n, limit):
    """The largest divisor of `n` that is at most `limit` (>= 1)."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


@keras.saving.register_keras_serializable(package="keras_swinv2")
class SwinV2Block(keras.layers.Layer):
    """One Swin Transformer block on a `(batch, height, width, dim)` token map.

    Data path (V2, `norm_position="post"`):
        pad to a window multiple (zeros, bottom/right) -> cyclic shift by
        `-shift` -> window partition -> WindowAttention (+ shift mask) ->
        merge -> unshift -> crop the padding;
        `x = x + DropPath(LN(attn(x)))`, then `x = x + DropPath(LN(mlp(x)))`.
    With `norm_position="pre"` (V1) the norms move in front of the branches:
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
        drop_path_rate: float, stochastic depth rate of both residual branches.
        extra_norm: bool, apply one more LayerNorm to the block's output (the
            main-branch norm SwinV2-H/G use every 6 blocks).
        options: `BlockOptions` (or its config dict): attention kind, position
            bias, norm position, MLP ratio, biases, dropout, gradient
            checkpointing, sequential attention. Its fields may also be given
            as keywords (`SwinV2Block(32, 2, norm_position="pre")`), which
            override `options`.

    Input/output shape: `(batch, height, width, dim)`.
    """

    def __init__(
        self,
        dim,
        num_heads,
        window_size=8,
        shift_size=0,
        pretrained_window_size=0,
        drop_path_rate=0.0,
        extra_norm=False,
        options=None,
        **kwargs,
    ):
        options, kwargs = resolve_options(options, kwargs)
        super().__init__(**kwargs)
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1; got {window_size}.")
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size={window_size}); got {shift_size}.")
        _check_rate("drop_path_rate", drop_path_rate)
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.pretrained_window_size = pretrained_window_size
        self.drop_path_rate = drop_path_rate
        self.extra_norm = extra_norm
        self.options = options

        gamma = "zeros" if options.norm_position == "post" else "ones"
        self.norm1 = LayerNorm(
            epsilon=LAYER_NORM_EPSILON, gamma_initializer=gamma, dtype=self.dtype_policy, name="norm1"
        )
        self.norm2 = LayerNorm(
            epsilon=LAYER_NORM_EPSILON, gamma_initializer=gamma, dtype=self.dtype_policy, name="norm2"
        )
        self.norm3 = (
            LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name="norm3") if extra_norm else None
        )
        self.mlp = Mlp(
            dim,
            int(dim * options.mlp_ratio),
            dropout_rate=options.dropout_rate,
            dtype=self.dtype_policy,
            name="mlp",
        )
        self.drop_path_layer = DropPath(drop_path_rate, dtype=self.dtype_policy)
        # Set in build(), once the input resolution is known.
        self.attn = None
        self.window, self.shift = window_size, shift_size
        self.chunk = 0

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] != self.dim:
            raise ValueError(
                f"SwinV2Block expects tokens of shape (batch, height, width, {self.dim}); got {tuple(input_shape)}."
            )
        options = self.options
        self.window, self.shift = effective_window(tuple(input_shape[1:3]), self.window_size, self.shift_size)
        if options.attention_chunk_size:
            if None in tuple(input_shape[1:3]):
                raise ValueError(
                    f"attention_chunk_size needs a static resolution; got input shape {tuple(input_shape)}."
                )
            rows, cols = (-(-side // self.window) for side in input_shape[1:3])
            self.chunk = largest_divisor(rows * cols, options.attention_chunk_size)
        self.attn = WindowAttention(
            self.dim,
            self.num_heads,
            self.window,
            pretrained_window_size=self.pretrained_window_size,
            attention=options.attention,
            position_bias=options.position_bias,
            qkv_bias=options.qkv_bias,
            key_bias=options.key_bias,
            attention_dropout_rate=options.attention_dropout_rate,
            dropout_rate=options.dropout_rate,
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
            x = cyclic_shift(x, -s)
            regions = shifted_window_regions(padded_h, padded_w, w, s)
        windows = self._attend(window_partition(x, w), regions, padded_h * padded_w // (w * w), training)
        x = window_merge(windows, w, padded_h, padded_w)
        if s > 0:
            x = cyclic_shift(x, s)
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
            out = backend.map_sequentially(lambda c: self.attn(c, bias=bias, training=training), chunks)
        else:
            out = backend.map_sequentially(
                lambda args: self.attn(args[0], attention_mask=region_mask(args[1]), bias=bias, training=training),
                (chunks, ops.reshape(regions, (steps, self.chunk, n))),
            )
        out = ops.transpose(ops.reshape(out, (steps, -1, self.chunk, n, self.dim)), (1, 0, 2, 3, 4))
        return ops.reshape(out, (-1, n, self.dim))

    def _forward(self, x, scales, training):
        """The block's data path, given the two stochastic-depth scales (or None)."""

        def residual(branch, scale):
            return branch if scale is None else branch * scale

        if self.options.norm_position == "post":
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
        if not (self.options.gradient_checkpointing and training):
            return self._forward(x, scales, training)
        drawn = [s for s in scales if s is not None]

        def forward(x, *drawn):
            given = iter(drawn)
            return self._forward(x, [None if s is None else next(given) for s in scales], training)

        return backend.remat(forward)(x, *drawn)

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
            drop_path_rate=self.drop_path_rate,
            extra_norm=self.extra_norm,
            options=self.options.get_config(),
        )
        return config
