"""Patch embedding: the image enters the token space."""

import keras

from keras_swinv2.layers.linear import LayerNorm
from keras_swinv2.layers.windows import pad_to_multiple
from keras_swinv2.layers.initializers import TruncatedNormal

LAYER_NORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="keras_swinv2")
class PatchEmbedding(keras.layers.Layer):
    """Splits an image into non-overlapping patches and embeds each one.

    A `patch_size` x `patch_size` convolution with the same stride, followed
    by a LayerNorm. Images whose height or width is not a multiple of
    `patch_size` are zero-padded at the bottom/right first (as HF transformers
    does), so every pixel lands in a patch.

    Args:
        embed_dim: int, channels of the output tokens (C).
        patch_size: int, side of a square patch in pixels.
        in_channels: int, channels the input image must have.
        use_norm: bool, apply the LayerNorm after the projection.

    Input shape: `(batch, height, width, in_channels)`.
    Output shape: `(batch, ceil(height / patch_size), ceil(width / patch_size),
        embed_dim)`.

    Example:

    >>> layer = PatchEmbedding(embed_dim=96, patch_size=4)
    >>> layer(np.zeros((1, 64, 48, 3))).shape
    (1, 16, 12, 96)
    """

    def __init__(self, embed_dim, patch_size=4, in_channels=3, use_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.use_norm = use_norm
        self.proj = keras.layers.Conv2D(
            embed_dim,
            kernel_size=patch_size,
            strides=patch_size,
            kernel_initializer=TruncatedNormal(stddev=0.02),
            dtype=self.dtype_policy,
            name="proj",
        )
        self.norm = LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name="norm") if use_norm else None

    def _check_shape(self, shape):
        if len(shape) != 4 or (shape[-1] is not None and shape[-1] != self.in_channels):
            raise ValueError(
                f"{self.__class__.__name__} expects images of shape "
                f"(batch, height, width, {self.in_channels}); got shape {tuple(shape)}."
            )

    def build(self, input_shape):
        self._check_shape(input_shape)
        self.proj.build((None, None, None, self.in_channels))
        if self.norm is not None:
            self.norm.build((None, None, None, self.embed_dim))

    def call(self, images):
        self._check_shape(images.shape)
        images, _, _ = pad_to_multiple(images, self.patch_size)
        x = self.proj(images)
        if self.norm is not None:
            x = self.norm(x)
        return x

    def compute_output_shape(self, input_shape):
        def out(n):
            return None if n is None else -(-n // self.patch_size)

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            embed_dim=self.embed_dim,
            patch_size=self.patch_size,
            in_channels=self.in_channels,
            use_norm=self.use_norm,
        )
        return config
