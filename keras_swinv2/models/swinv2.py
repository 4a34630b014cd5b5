"""The SwinV2 model: patch embedding -> 4 stages -> LayerNorm -> [pool -> head]."""

import numpy as np

import keras

from keras_swinv2.layers.attention import ATTENTION_TYPES, POSITION_BIAS_TYPES
from keras_swinv2.layers.block import NORM_TYPES
from keras_swinv2.layers.patch_embedding import LAYER_NORM_EPSILON, PatchEmbedding
from keras_swinv2.layers.stage import SwinV2Stage

POOLING_TYPES = (None, "avg", "max")


def _check_architecture(embed_dim, depths, num_heads, window_size, pretrained_window_sizes):
    if isinstance(window_size, bool) or not isinstance(window_size, (int, np.integer)) or window_size < 1:
        raise ValueError(f"window_size must be an int >= 1; got {window_size!r}.")
    if len(depths) != len(num_heads):
        raise ValueError(
            "depths and num_heads need one entry per stage; got "
            f"{len(depths)} depths {tuple(depths)} and {len(num_heads)} num_heads {tuple(num_heads)}."
        )
    if len(pretrained_window_sizes) != len(depths):
        raise ValueError(
            f"pretrained_window_sizes needs {len(depths)} entries (one per stage); "
            f"got {tuple(pretrained_window_sizes)}."
        )
    for i, heads in enumerate(num_heads):
        dim = embed_dim * 2**i
        if dim % heads:
            raise ValueError(
                f"Stage {i + 1} has {dim} channels, which is not divisible by its "
                f"{heads} heads (num_heads={tuple(num_heads)})."
            )


def _check_input_shape(input_shape, in_channels, patch_size, num_stages):
    if input_shape is None or len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, {in_channels}); got {input_shape!r}."
        )
    if input_shape[-1] != in_channels:
        raise ValueError(
            f"input_shape must have {in_channels} channels, (height, width, {in_channels}); "
            f"got {tuple(input_shape)}."
        )
    min_size = patch_size * 2 ** (num_stages - 1)
    for side in input_shape[:2]:
        if side is not None and side < min_size:
            raise ValueError(
                f"An image of {input_shape[0]}x{input_shape[1]} px is too small for "
                f"{num_stages} stages with patch size {patch_size}: each side needs at least "
                f"{min_size} px."
            )


@keras.saving.register_keras_serializable(package="keras_swinv2")
class SwinV2Model(keras.Model):
    """Swin Transformer V2 (Liu et al., CVPR 2022), as a functional Keras model.

    Data path: `PatchEmbedding` (patch_size conv + LayerNorm) -> one
    `SwinV2Stage` per entry of `depths` (stages after the first start with a
    `PatchMerging`) -> LayerNorm -> with `include_top`, global average pooling
    and a Dense head.

    The four stage outputs (strides 4, 8, 16, 32; before the final
    LayerNorm) are exposed as `model.pyramid_outputs = {"P2": ..., "P5": ...}`,
    so `keras.Model(model.inputs, model.pyramid_outputs)` is a feature
    pyramid extractor.

    The switches the paper ablates, for studying each mechanism (the defaults
    are SwinV2; `attention="dot", norm="pre", position_bias="table",
    patch_merging=1, key_bias=True` is Swin V1):

    Args:
        embed_dim: int, channels after patch embedding (C); stage i has
            C * 2**i.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: int, attention window side. A stage whose feature map
            is no larger than the window uses a window equal to its smaller
            side and no shift (decided from the static input shape).
        pretrained_window_sizes: per-stage window the CPB was trained at
            (0: none), used when loading weights trained with another window.
        patch_size: int.
        in_channels: int.
        mlp_ratio: float.
        qkv_bias: bool, learn q and v biases.
        key_bias: bool, learn a k bias too (V1).
        attention: "cosine" (V2) or "dot" (V1).
        norm: "post" (V2 res-post-norm) or "pre" (V1).
        position_bias: "log_cpb" (V2), "linear_cpb" or "table" (V1).
        patch_merging: 2 or 1.
        extra_norm_period: int, main-branch LayerNorm every k blocks
            (SwinV2-H/G use 6); 0 for none.
        drop_rate: float, dropout after patch embedding, in MLPs and after
            attention projections.
        attn_drop_rate: float, dropout on attention probabilities.
        drop_path_rate: float, stochastic depth, rising linearly from 0 to
            this value over all blocks.
        gradient_checkpointing: bool, recompute each block's activations in
            the backward pass instead of storing them (see `SwinV2Block`).
        attention_chunk_size: int, 0 or the most windows per image attended
            at once (sequential attention, see `SwinV2Block`).
        include_top: bool, end with pooling and a Dense classifier.
        pooling: None, "avg" or "max", pooling when `include_top=False`
            (None: the final `(batch, h, w, channels)` feature map).
        classes: int, classifier outputs.
        classifier_activation: activation of the head (None for logits).
        input_shape: `(height, width, channels)`; `(None, None, channels)`
            accepts any size (windows are then not shrunk for small maps).
        input_tensor: optional Keras tensor to use as the image input.
        name: model name.

    Example:

    >>> model = SwinV2Model(embed_dim=32, depths=(1, 1), num_heads=(2, 4),
    ...                     window_size=4, input_shape=(32, 32, 3), classes=10)
    >>> model(np.zeros((2, 32, 32, 3))).shape
    (2, 10)
    """

    def __init__(
        self,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=8,
        pretrained_window_sizes=None,
        patch_size=4,
        in_channels=3,
        mlp_ratio=4.0,
        qkv_bias=True,
        key_bias=False,
        attention="cosine",
        norm="post",
        position_bias="log_cpb",
        patch_merging=2,
        extra_norm_period=0,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        gradient_checkpointing=False,
        attention_chunk_size=0,
        include_top=True,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        input_shape=(256, 256, 3),
        input_tensor=None,
        name="swinv2",
        **kwargs,
    ):
        depths, num_heads = tuple(depths), tuple(num_heads)
        if pretrained_window_sizes is None:
            pretrained_window_sizes = (0,) * len(depths)
        pretrained_window_sizes = tuple(pretrained_window_sizes)
        _check_architecture(embed_dim, depths, num_heads, window_size, pretrained_window_sizes)
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}; got {attention!r}.")
        if position_bias not in POSITION_BIAS_TYPES:
            raise ValueError(f"position_bias must be one of {POSITION_BIAS_TYPES}; got {position_bias!r}.")
        if norm not in NORM_TYPES:
            raise ValueError(f"norm must be one of {NORM_TYPES}; got {norm!r}.")
        if pooling not in POOLING_TYPES:
            raise ValueError(f"pooling must be one of {POOLING_TYPES}; got {pooling!r}.")
        dtype = kwargs.pop("dtype", None)
        policy = keras.dtype_policies.get(dtype) if dtype is not None else keras.config.dtype_policy()
        # Under a mixed policy, pooling and the classifier run in float32 (stable logits and
        # softmax); a pure low-precision policy is taken at its word.
        head_dtype = policy.variable_dtype if policy.compute_dtype != policy.variable_dtype else policy

        if input_tensor is not None:
            if not keras.backend.is_keras_tensor(input_tensor):
                input_tensor = keras.Input(tensor=input_tensor, shape=input_shape)
            input_shape = tuple(input_tensor.shape[1:])
            inputs = keras.utils.get_source_inputs(input_tensor)
            inputs = inputs[0] if len(inputs) == 1 else inputs
            images = input_tensor
        else:
            input_shape = tuple(input_shape) if input_shape is not None else None
            _check_input_shape(input_shape, in_channels, patch_size, len(depths))
            images = keras.Input(shape=input_shape, name="images")
            inputs = images
        _check_input_shape(input_shape, in_channels, patch_size, len(depths))

        x = PatchEmbedding(embed_dim, patch_size, in_channels, dtype=dtype, name="patch_embed")(images)
        x = keras.layers.Dropout(drop_rate, dtype=dtype, name="pos_drop")(x)
        rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
        pyramid = {}
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            x = SwinV2Stage(
                embed_dim * 2**i,
                depth,
                heads,
                window_size=window_size,
                downsample=i > 0,
                patch_merging=patch_merging,
                drop_path=rates[start : start + depth],
                extra_norm_period=extra_norm_period,
                pretrained_window_size=pretrained_window_sizes[i],
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                key_bias=key_bias,
                attention=attention,
                position_bias=position_bias,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                norm=norm,
                gradient_checkpointing=gradient_checkpointing,
                attention_chunk_size=attention_chunk_size,
                dtype=dtype,
                name=f"stage_{i}",
            )(x)
            pyramid[f"P{i + 2}"] = x
        x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, dtype=dtype, name="norm")(x)
        if include_top:
            x = keras.layers.GlobalAveragePooling2D(dtype=head_dtype, name="avg_pool")(x)
            x = keras.layers.Dense(
                classes,
                activation=classifier_activation,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                dtype=head_dtype,
                name="head",
            )(x)
        elif pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(dtype=head_dtype, name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(dtype=head_dtype, name="max_pool")(x)

        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)
        # Functional models drop `dtype`; the model's own policy is what `compile` reads to
        # wrap the optimizer in a LossScaleOptimizer under mixed_float16.
        self.dtype_policy = policy
        self.pyramid_outputs = pyramid
        self.embed_dim = embed_dim
        self.depths = depths
        self.num_heads = num_heads
        self.window_size = window_size
        self.pretrained_window_sizes = pretrained_window_sizes
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.key_bias = key_bias
        self.attention = attention
        self.norm = norm
        self.position_bias = position_bias
        self.patch_merging = patch_merging
        self.extra_norm_period = extra_norm_period
        self.drop_rate = drop_rate
        self.attn_drop_rate = attn_drop_rate
        self.drop_path_rate = drop_path_rate
        self.gradient_checkpointing = gradient_checkpointing
        self.attention_chunk_size = attention_chunk_size
        self.include_top = include_top
        self.pooling = pooling
        self.classes = classes
        self.classifier_activation = classifier_activation
        self.image_shape = input_shape

    @property
    def stages(self):
        """The `SwinV2Stage` layers, in order."""
        return [self.get_layer(f"stage_{i}") for i in range(len(self.depths))]

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "embed_dim": self.embed_dim,
            "depths": self.depths,
            "num_heads": self.num_heads,
            "window_size": self.window_size,
            "pretrained_window_sizes": self.pretrained_window_sizes,
            "patch_size": self.patch_size,
            "in_channels": self.in_channels,
            "mlp_ratio": self.mlp_ratio,
            "qkv_bias": self.qkv_bias,
            "key_bias": self.key_bias,
            "attention": self.attention,
            "norm": self.norm,
            "position_bias": self.position_bias,
            "patch_merging": self.patch_merging,
            "extra_norm_period": self.extra_norm_period,
            "drop_rate": self.drop_rate,
            "attn_drop_rate": self.attn_drop_rate,
            "drop_path_rate": self.drop_path_rate,
            "gradient_checkpointing": self.gradient_checkpointing,
            "attention_chunk_size": self.attention_chunk_size,
            "include_top": self.include_top,
            "pooling": self.pooling,
            "classes": self.classes,
            "classifier_activation": keras.activations.serialize(
                keras.activations.get(self.classifier_activation)
            )
            if self.classifier_activation is not None
            else None,
            "input_shape": self.image_shape,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        if isinstance(config.get("classifier_activation"), (dict, str)):
            config["classifier_activation"] = keras.activations.deserialize(
                config["classifier_activation"]
            )
        return cls(**config)
