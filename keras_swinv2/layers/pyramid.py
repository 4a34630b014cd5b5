"""Layers of dense-prediction heads that work at any feature-map size: `ResizeLike`
(resize to another tensor's height and width) and `AdaptiveAveragePooling`."""

import keras
from keras import ops

from keras_swinv2 import backend

INTERPOLATIONS = ("bilinear", "nearest")


@keras.saving.register_keras_serializable(package="keras_swinv2")
class ResizeLike(keras.layers.Layer):
    """Resizes `x` (batch, h, w, c) to the height and width of `reference`.

    Bilinear interpolation samples at pixel centres without antialiasing
    (PyTorch's `interpolate(mode="bilinear", align_corners=False)` and
    `tf.image.resize`): the resizing of UperNet's pyramid and logits. Unlike
    `keras.layers.Resizing`, the target size is read from `reference` when the
    model runs, so a model built for any input size (`(None, None, 3)`)
    upsamples to whatever it is given.

    Args:
        interpolation: "bilinear" or "nearest".
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}.")
        self.interpolation = interpolation

    def call(self, x, reference):
        height, width = ops.shape(reference)[1], ops.shape(reference)[2]
        static = all(isinstance(side, int) for side in (height, width, ops.shape(x)[1], ops.shape(x)[2]))
        if static and (ops.shape(x)[1], ops.shape(x)[2]) == (height, width):
            return x
        return backend.resize_like(x, reference, self.interpolation)

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}


def _bin_weights(size, bins, dtype):
    """(bins, size) averaging weights of adaptive pooling: bin i covers
    [floor(i * size / bins), ceil((i + 1) * size / bins)), PyTorch's bins
    (overlapping when size is not a multiple of bins, repeated when smaller)."""
    index = ops.arange(0, bins, dtype="int32")
    start = (index * size) // bins
    end = ((index + 1) * size + bins - 1) // bins
    position = ops.arange(0, size, dtype="int32")
    inside = ops.logical_and(position[None, :] >= start[:, None], position[None, :] < end[:, None])
    return ops.cast(inside, dtype) / ops.cast(end - start, dtype)[:, None]


@keras.saving.register_keras_serializable(package="keras_swinv2")
class AdaptiveAveragePooling(keras.layers.Layer):
    """Average pooling of `(batch, h, w, c)` to `(batch, output_size, output_size, c)`.

    PyTorch's `AdaptiveAvgPool2d` bins for every h and w, including maps
    smaller than the output (a 3x2 P5 pooled to 6x6), which
    `keras.layers.AdaptiveAveragePooling2D` refuses on TensorFlow. Two small
    matrix products with the bins' averaging weights; h and w may be unknown
    until the model runs.

    Args:
        output_size: int, side of the pooled map.
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        if isinstance(output_size, bool) or not isinstance(output_size, int) or output_size < 1:
            raise ValueError(f"output_size must be an int >= 1; got {output_size!r}.")
        self.output_size = output_size

    def call(self, x):
        height, width = ops.shape(x)[1], ops.shape(x)[2]
        rows = _bin_weights(height, self.output_size, x.dtype)
        columns = _bin_weights(width, self.output_size, x.dtype)
        x = ops.einsum("ih,bhwc->biwc", rows, x)
        return ops.einsum("jw,biwc->bijc", columns, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size, self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}
