"""Relative position bias inside a window: SwinV2's continuous bias and V1's table.

Both layers produce a bias of shape `(num_heads, N, N)` (N = tokens per window)
that is added to the attention logits. They take no input: the bias depends
only on the window geometry (and on the layer's weights), so call `bias()`.
"""

import math

import numpy as np

import keras
from keras import ops

from keras_swinv2 import backend
from keras_swinv2.layers.windows import to_pair
from keras_swinv2.layers.initializers import TruncatedNormal

CPB_MODES = ("log", "linear")


def relative_position_index(window_size):
    """Index of each token pair's relative offset in a `(2wh-1)*(2ww-1)` table.

    Returns:
        int32 numpy array `(N * N,)`, N = wh * ww, row-major over (query, key).
    """
    wh, ww = to_pair(window_size)
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    rel[..., 0] += wh - 1
    rel[..., 1] += ww - 1
    return (rel[..., 0] * (2 * ww - 1) + rel[..., 1]).reshape(-1).astype("int32")


def relative_coords_table(window_size, pretrained_window_size=0, mode="log"):
    """Input coordinates of the continuous position bias MLP.

    Offsets in `[-(w-1), w-1]` per axis are divided by `pretrained - 1` when a
    pretrained window is given (else by `w - 1`), scaled to [-8, 8], and in
    "log" mode mapped through `sign(x) * log2(1 + |x|) / log2(8)`.

    Returns:
        float32 numpy array `((2wh-1) * (2ww-1), 2)`.
    """
    if mode not in CPB_MODES:
        raise ValueError(f"mode must be one of {CPB_MODES}; got {mode!r}.")
    wh, ww = to_pair(window_size)
    ph, pw = to_pair(pretrained_window_size)
    offsets_h = np.arange(-(wh - 1), wh, dtype="float32")
    offsets_w = np.arange(-(ww - 1), ww, dtype="float32")
    table = np.stack(np.meshgrid(offsets_h, offsets_w, indexing="ij"), axis=-1)
    if ph > 0:
        table /= np.array([max(ph - 1, 1), max(pw - 1, 1)], dtype="float32")
    else:
        table /= np.array([max(wh - 1, 1), max(ww - 1, 1)], dtype="float32")
    table *= 8.0
    if mode == "log":
        table = np.sign(table) * np.log2(np.abs(table) + 1.0) / np.log2(8.0)
    return table.reshape(-1, 2).astype("float32")


def _gather_bias(table, index, window_size):
    """Per-head bias maps from a table of offsets: `(R, heads)` -> `(heads, N, N)`.

    The small table is transposed before the gather, not the gathered
    `(N * N, heads)` tensor after it. (Gathering rows and transposing after
    also makes torch 2.13's inductor emit an out-of-bounds scatter in the
    backward pass on CPU: heap corruption on the second training step.)
    """
    n = window_size[0] * window_size[1]
    gathered = backend.take_columns(ops.transpose(table), index)
    return ops.reshape(gathered, (-1, n, n))


@keras.saving.register_keras_serializable(package="keras_swinv2")
class ContinuousPositionBias(keras.layers.Layer):
    """SwinV2's continuous position bias (CPB): a small MLP over relative offsets.

    `bias = 16 * sigmoid(MLP(coords))`, with `MLP = Dense(hidden) -> ReLU ->
    Dense(num_heads, no bias)`, gathered for every token pair of the window.
    The MLP does not depend on the window size, so weights trained at one
    window transfer to another; `pretrained_window_size` keeps the coordinate
    scale of the window the weights were trained at. Runs in float32 under
    mixed precision.

    Args:
        num_heads: int, attention heads (one bias map each).
        window_size: int or `(wh, ww)`.
        pretrained_window_size: int or pair, 0 for "same as window_size".
        mode: "log" (SwinV2's log-spaced coordinates) or "linear".
        hidden_dim: int, width of the MLP.

    Output of `bias()`: float32 tensor `(num_heads, wh * ww, wh * ww)`.
    """

    def __init__(self, num_heads, window_size, pretrained_window_size=0, mode="log", hidden_dim=512, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.window_size = to_pair(window_size)
        self.pretrained_window_size = to_pair(pretrained_window_size)
        self.mode = mode
        self.hidden_dim = hidden_dim
        self.coords = backend.constant(relative_coords_table(self.window_size, self.pretrained_window_size, mode))
        self.index = backend.constant(relative_position_index(self.window_size))
        float32 = self.dtype_policy.variable_dtype
        self.fc1 = keras.layers.Dense(
            hidden_dim, activation="relu", kernel_initializer=TruncatedNormal(0.02), dtype=float32, name="fc1"
        )
        self.fc2 = keras.layers.Dense(
            num_heads, use_bias=False, kernel_initializer=TruncatedNormal(0.02), dtype=float32, name="fc2"
        )

    def build(self, input_shape=None):
        self.fc1.build((None, 2))
        self.fc2.build((None, self.hidden_dim))

    def bias(self):
        # the sigmoid on the (offsets, heads) table, before the gather copies each offset's
        # value to all of its N * N / offsets token pairs (identical values, far fewer to compute)
        table = 16.0 * ops.sigmoid(self.fc2(self.fc1(ops.convert_to_tensor(self.coords))))
        return _gather_bias(table, self.index, self.window_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            window_size=self.window_size,
            pretrained_window_size=self.pretrained_window_size,
            mode=self.mode,
            hidden_dim=self.hidden_dim,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_swinv2")
class RelativePositionBiasTable(keras.layers.Layer):
    """Swin V1's learned relative position bias: one table entry per offset.

    The table has `(2wh-1) * (2ww-1)` rows and `num_heads` columns; its size is
    tied to the window, so moving to another window needs
    `resize_relative_position_table` (bicubic), which the weight loaders apply.

    Output of `bias()`: tensor `(num_heads, wh * ww, wh * ww)`.
    """

    def __init__(self, num_heads, window_size, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.window_size = to_pair(window_size)
        self.index = backend.constant(relative_position_index(self.window_size))

    def build(self, input_shape=None):
        wh, ww = self.window_size
        self.table = self.add_weight(
            name="relative_position_bias_table",
            shape=((2 * wh - 1) * (2 * ww - 1), self.num_heads),
            initializer=TruncatedNormal(stddev=0.02),
        )

    def bias(self):
        return _gather_bias(self.table, self.index, self.window_size)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, window_size=self.window_size)
        return config


def _cubic_weights(in_size, out_size, a=-0.75):
    """Matrix `(out_size, in_size)` of 1-D bicubic interpolation.

    Half-pixel centres, border-clamped taps, Keys kernel with a = -0.75: the
    convention of `torch.nn.functional.interpolate(mode="bicubic",
    align_corners=False)`, which timm uses to resize these tables.
    """
    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size), dtype="float64")
    for i in range(out_size):
        src = (i + 0.5) * scale - 0.5
        base = int(np.floor(src))
        t = src - base
        for k in range(-1, 3):
            d = abs(t - k)
            if d <= 1:
                w = (a + 2) * d**3 - (a + 3) * d**2 + 1
            elif d < 2:
                w = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
            else:
                w = 0.0
            matrix[i, min(max(base + k, 0), in_size - 1)] += w
    return matrix


def relative_position_table_window(rows):
    """The square window a V1 table of `rows` rows is for, `(2w-1)**2 == rows`; else None."""
    side = (math.isqrt(rows) + 1) // 2
    return side if (2 * side - 1) ** 2 == rows else None


def resize_relative_position_table(table, source_window, target_window):
    """Bicubically resizes a V1 relative position bias table to another window.

    Args:
        table: numpy array `((2sh-1) * (2sw-1), num_heads)`.
        source_window: int or pair, the window the table was trained for.
        target_window: int or pair, the window to resize to.

    Returns:
        numpy array `((2th-1) * (2tw-1), num_heads)` of the table's dtype.
    """
    sh, sw = to_pair(source_window)
    th, tw = to_pair(target_window)
    src_h, src_w, dst_h, dst_w = 2 * sh - 1, 2 * sw - 1, 2 * th - 1, 2 * tw - 1
    if table.shape[0] != src_h * src_w:
        raise ValueError(f"A table for window {(sh, sw)} has {src_h * src_w} rows; got shape {table.shape}.")
    if (src_h, src_w) == (dst_h, dst_w):
        return table
    grid = table.reshape(src_h, src_w, -1).astype("float64")
    grid = np.einsum("ih,hwc->iwc", _cubic_weights(src_h, dst_h), grid)
    grid = np.einsum("jw,iwc->ijc", _cubic_weights(src_w, dst_w), grid)
    return grid.reshape(dst_h * dst_w, -1).astype(table.dtype)
