"""`SwinV2Backbone`: images -> final feature map, with the feature pyramid P2..P5."""

import numpy as np

import keras

from keras_swinv2.export import Exportable
from keras_swinv2.layers.block import BlockOptions, _check_rate
from keras_swinv2.layers.linear import LayerNorm
from keras_swinv2.layers.patch_embedding import LAYER_NORM_EPSILON, PatchEmbedding
from keras_swinv2.layers.patch_merging import PATCH_MERGING_VERSIONS
from keras_swinv2.layers.stage import SwinV2Stage
from keras_swinv2.models.presets import backbone_from_preset

POOLING_TYPES = (None, "avg", "max")


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_architecture(embed_dim, depths, num_heads, window_size, pretrained_window_sizes, patch_size):
    """Raises `ValueError` naming the argument when the architecture cannot be built."""
    for arg, value in (("embed_dim", embed_dim), ("window_size", window_size), ("patch_size", patch_size)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{arg} must be an int >= 1; got {value!r}.")
    if not depths or not all(_is_int(d) and d >= 1 for d in depths):
        raise ValueError(f"depths must be a non-empty sequence of ints >= 1; got {depths!r}.")
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
        if not _is_int(heads) or heads < 1 or dim % heads:
            raise ValueError(
                f"Stage {i + 1} has {dim} channels, which is not divisible by its "
                f"{heads!r} heads (num_heads={tuple(num_heads)})."
            )


def check_image_shape(image_shape, patch_size, num_stages):
    """Raises `ValueError` unless `image_shape` is `(height, width, channels)` large enough."""
    if image_shape is None or len(image_shape) != 3:
        raise ValueError(f"image_shape must be (height, width, channels); got {image_shape!r}.")
    min_size = patch_size * 2 ** (num_stages - 1)
    for side in image_shape[:2]:
        if side is not None and side < min_size:
            raise ValueError(
                f"An image of {image_shape[0]}x{image_shape[1]} px is too small for "
                f"{num_stages} stages with patch size {patch_size}: each side needs at least "
                f"{min_size} px."
            )


def head_policy(policy):
    """The dtype policy of pooling and classification heads under `policy`.

    Under a mixed policy they run in float32 (stable logits and softmax); a
    pure low-precision policy is taken at its word.
    """
    policy = keras.dtype_policies.get(policy) if policy is not None else keras.config.dtype_policy()
    return keras.dtype_policies.get(policy.variable_dtype) if policy.compute_dtype != policy.variable_dtype else policy


@keras.saving.register_keras_serializable(package="keras_swinv2")
class SwinV2Backbone(Exportable, keras.Model):
    """Swin Transformer V2 (Liu et al., CVPR 2022) backbone, a functional Keras model.

    Data path: `PatchEmbedding` (patch_size conv + LayerNorm) -> one
    `SwinV2Stage` per entry of `depths` (stages after the first start with a
    `PatchMerging`) -> LayerNorm. The output is the final normalised feature
    map `(batch, height / 32, width / 32, num_features)`, or with `pooling` its
    global average or max `(batch, num_features)`.

    `backbone.pyramid_outputs` maps "P2".."P5" to the stage outputs at
    strides 4, 8, 16 and 32 (before the final LayerNorm), as keras-hub's
    feature-pyramid backbones do, so the backbone is an `image_encoder` for
    keras-hub's task models and `keras.Model(backbone.inputs,
    backbone.pyramid_outputs)` is a feature extractor.

    The switches the paper ablates are arguments, so each mechanism can be
    studied on its own (the defaults are SwinV2; `attention="dot",
    norm_position="pre", position_bias="table", patch_merging="v1",
    key_bias=True` is Swin V1).

    Args:
        embed_dim: int, channels after patch embedding (C); stage i has
            C * 2**i.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: int, attention window side. A stage whose feature map
            is no larger than the window uses a window equal to its smaller
            side and no shift (decided from the static image shape).
        pretrained_window_sizes: per-stage window the position bias was
            trained at (0: none), for weights trained with another window.
        patch_size: int, side of the square patches of the embedding.
        mlp_ratio: float, MLP width relative to the channels (see
            `keras_swinv2.layers.BlockOptions` for this and the next nine).
        qkv_bias: bool, learn q and v biases.
        key_bias: bool, learn a k bias too (V1).
        attention: "cosine" (V2) or "dot" (V1).
        position_bias: "log_cpb" (V2), "linear_cpb" or "table" (V1).
        norm_position: "post" (V2 res-post-norm) or "pre" (V1).
        dropout_rate: float, dropout after patch embedding, in the MLPs and
            after the attention projections.
        attention_dropout_rate: float, dropout on attention probabilities.
        gradient_checkpointing: bool, recompute each block's activations in
            the backward pass instead of storing them.
        attention_chunk_size: int, 0 or the most windows per image attended
            at once (sequential attention).
        patch_merging: "v2" (Linear then LayerNorm) or "v1" (LayerNorm first).
        extra_norm_period: int, main-branch LayerNorm every k blocks
            (SwinV2-H/G use 6); 0 for none.
        drop_path_rate: float in [0, 1), stochastic depth, rising linearly
            from 0 to this value over all blocks.
        image_shape: `(height, width, channels)`; `(None, None, channels)`
            accepts any size (windows are then not shrunk for small maps).
        pooling: None (the feature map), "avg" or "max".
        input_tensor: optional Keras tensor to use as the image input.
        dtype: dtype policy (e.g. "mixed_bfloat16"); pooling runs in float32
            under a mixed policy.
        name: model name.

    Example:

    >>> backbone = SwinV2Backbone(embed_dim=32, depths=(1, 1), num_heads=(2, 4),
    ...                           window_size=4, image_shape=(32, 32, 3))
    >>> backbone(np.zeros((2, 32, 32, 3))).shape
    (2, 4, 4, 64)
    """

    def __init__(
        self,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=8,
        pretrained_window_sizes=None,
        patch_size=4,
        mlp_ratio=4.0,
        qkv_bias=True,
        key_bias=False,
        attention="cosine",
        position_bias="log_cpb",
        norm_position="post",
        patch_merging="v2",
        extra_norm_period=0,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.1,
        gradient_checkpointing=False,
        attention_chunk_size=0,
        image_shape=(256, 256, 3),
        pooling=None,
        input_tensor=None,
        dtype=None,
        name="swinv2_backbone",
        trainable=True,
    ):
        depths, num_heads = tuple(depths), tuple(num_heads)
        if pretrained_window_sizes is None:
            pretrained_window_sizes = (0,) * len(depths)
        pretrained_window_sizes = tuple(pretrained_window_sizes)
        check_architecture(embed_dim, depths, num_heads, window_size, pretrained_window_sizes, patch_size)
        options = BlockOptions(
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            key_bias=key_bias,
            attention=attention,
            position_bias=position_bias,
            norm_position=norm_position,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            gradient_checkpointing=gradient_checkpointing,
            attention_chunk_size=attention_chunk_size,
        )
        if patch_merging not in PATCH_MERGING_VERSIONS:
            raise ValueError(f"patch_merging must be one of {PATCH_MERGING_VERSIONS}; got {patch_merging!r}.")
        _check_rate("drop_path_rate", drop_path_rate)
        if not _is_int(extra_norm_period) or extra_norm_period < 0:
            raise ValueError(f"extra_norm_period must be an int >= 0; got {extra_norm_period!r}.")
        if pooling not in POOLING_TYPES:
            raise ValueError(f"pooling must be one of {POOLING_TYPES}; got {pooling!r}.")
        policy = keras.dtype_policies.get(dtype) if dtype is not None else keras.config.dtype_policy()

        # === Layers ===
        if input_tensor is not None:
            if not keras.backend.is_keras_tensor(input_tensor):
                input_tensor = keras.Input(tensor=input_tensor, shape=image_shape)
            image_shape = tuple(input_tensor.shape[1:])
            inputs = keras.utils.get_source_inputs(input_tensor)
            inputs = inputs[0] if len(inputs) == 1 else inputs
            images = input_tensor
        else:
            image_shape = tuple(image_shape) if image_shape is not None else None
            check_image_shape(image_shape, patch_size, len(depths))
            images = keras.Input(shape=image_shape, name="images")
            inputs = images
        check_image_shape(image_shape, patch_size, len(depths))

        x = PatchEmbedding(embed_dim, patch_size, image_shape[-1], dtype=policy, name="patch_embed")(images)
        x = keras.layers.Dropout(dropout_rate, dtype=policy, name="pos_drop")(x)
        rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
        pyramid = {}
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            x = SwinV2Stage(
                embed_dim * 2**i,
                depth,
                heads,
                window_size=window_size,
                pretrained_window_size=pretrained_window_sizes[i],
                downsample=i > 0,
                patch_merging=patch_merging,
                drop_path_rates=rates[start : start + depth],
                extra_norm_period=extra_norm_period,
                options=options,
                dtype=policy,
                name=f"stage_{i}",
            )(x)
            pyramid[f"P{i + 2}"] = x
        x = LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=policy, name="norm")(x)
        if pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(dtype=head_policy(policy), name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(dtype=head_policy(policy), name="max_pool")(x)

        super().__init__(inputs=inputs, outputs=x, name=name, trainable=trainable)

        # === Config ===
        # Functional models drop `dtype`; the model's own policy is what `compile` reads to
        # wrap the optimizer in a LossScaleOptimizer under mixed_float16.
        self.dtype_policy = policy
        # a plain dict, not one Keras' attribute tracking wraps: `keras.Model(backbone.inputs,
        # backbone.pyramid_outputs)` then returns a dict that jax.jit (and its exporters) accept
        object.__setattr__(self, "pyramid_outputs", pyramid)
        self.embed_dim = embed_dim
        self.depths = depths
        self.num_heads = num_heads
        self.window_size = window_size
        self.pretrained_window_sizes = pretrained_window_sizes
        self.patch_size = patch_size
        self.options = options
        self.patch_merging = patch_merging
        self.extra_norm_period = extra_norm_period
        self.drop_path_rate = drop_path_rate
        self.image_shape = image_shape
        self.pooling = pooling
        self.num_features = embed_dim * 2 ** (len(depths) - 1)

    @property
    def stages(self):
        """The `SwinV2Stage` layers, in order."""
        return [self.get_layer(f"stage_{i}") for i in range(len(self.depths))]

    def embed_patches(self, images):
        """The first half of the data path: images -> patch tokens `(batch, h, w, embed_dim)`.

        With `encode`, lets a model act on the tokens in between (SimMIM's mask
        token) while using the backbone's own layers.
        """
        return self.get_layer("patch_embed")(images)

    def encode(self, tokens, training=None):
        """The rest of the data path: patch tokens -> final normalised feature map (no pooling)."""
        x = self.get_layer("pos_drop")(tokens, training=training)
        for stage in self.stages:
            x = stage(x, training=training)
        return self.get_layer("norm")(x)

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
            **self.options.get_config(),
            "patch_merging": self.patch_merging,
            "extra_norm_period": self.extra_norm_period,
            "drop_path_rate": self.drop_path_rate,
            "image_shape": self.image_shape,
            "pooling": self.pooling,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """A backbone from a preset: a registry name, a variant, or a local file.

        Args:
            preset: a checkpoint name from `keras_swinv2.weights.CHECKPOINTS`
                (e.g. "swinv2_base_window12_192"), a variant ("tiny".."giant",
                or "swinv2_tiny".."swinv2_giant") with `weights=` among the
                keyword arguments, or a path: a `.keras` file, or a PyTorch /
                safetensors checkpoint in the official, timm or HF layout
                (architecture inferred from its tensors).
            **kwargs: `weights`, `input_shape`, `input_tensor`, `pooling`,
                `name` and architecture overrides (`window_size`, ...), as
                for `keras_swinv2.SwinV2Tiny(include_top=False)`.

        Returns:
            A `SwinV2Backbone` with the preset's weights.
        """
        return backbone_from_preset(cls, preset, **kwargs)
