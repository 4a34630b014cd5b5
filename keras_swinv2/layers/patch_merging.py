"""Patch merging: halves the resolution and doubles the channels between stages."""

import keras
from keras import ops

from keras_swinv2.layers.linear import LayerNorm, Linear
from keras_swinv2.layers.patch_embedding import LAYER_NORM_EPSILON
from keras_swinv2.layers.windows import pad_to_multiple
from keras_swinv2.layers.initializers import TruncatedNormal

PATCH_MERGING_VERSIONS = ("v2", "v1")


@keras.saving.register_keras_serializable(package="keras_swinv2")
class PatchMerging(keras.layers.Layer):
    """Merges each 2x2 group of tokens into one.

    The four tokens are concatenated on channels in the order
    `x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]`, then
    V2: `Dense(4C -> 2C, no bias) -> LayerNorm(2C)`;
    V1: `LayerNorm(4C) -> Dense(4C -> 2C, no bias)`.
    An odd height or width is zero-padded at the bottom/right first.

    Args:
        dim: int, input channels C.
        version: "v2" (SwinV2) or "v1" (Swin V1).
        out_dim: int, output channels (default 2C).

    Input shape: `(batch, height, width, dim)`.
    Output shape: `(batch, ceil(height / 2), ceil(width / 2), out_dim)`.
    """

    def __init__(self, dim, version="v2", out_dim=None, **kwargs):
        super().__init__(**kwargs)
        if version not in PATCH_MERGING_VERSIONS:
            raise ValueError(f"version must be one of {PATCH_MERGING_VERSIONS}; got {version!r}.")
        self.dim = dim
        self.version = version
        self.out_dim = out_dim or 2 * dim
        self.reduction = Linear(
            self.out_dim,
            use_bias=False,
            kernel_initializer=TruncatedNormal(stddev=0.02),
            dtype=self.dtype_policy,
            name="reduction",
        )
        self.norm = LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name="norm")

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] != self.dim:
            raise ValueError(
                f"PatchMerging expects tokens of shape (batch, height, width, {self.dim}); got {tuple(input_shape)}."
            )
        self.reduction.build((None, 4 * self.dim))
        self.norm.build((None, self.out_dim if self.version == "v2" else 4 * self.dim))

    def call(self, x):
        x, _, _ = pad_to_multiple(x, 2)
        x = ops.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        if self.version == "v1":
            return self.reduction(self.norm(x))
        return self.norm(self.reduction(x))

    def compute_output_shape(self, input_shape):
        def half(n):
            return None if n is None else (n + 1) // 2

        return (input_shape[0], half(input_shape[1]), half(input_shape[2]), self.out_dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, version=self.version, out_dim=self.out_dim)
        return config
