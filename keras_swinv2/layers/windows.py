"""Window partition / merge and the shifted-window attention mask.

Pure functions on `keras.ops`: they work on every backend, inside `jit`, and
with dynamic spatial sizes on TensorFlow. A window is given as an int (square)
or a `(height, width)` pair.
"""

from keras import ops

# Added to the attention logits between tokens of different shifted regions.
MASK_VALUE = -100.0


def to_pair(value):
    """Returns `value` as a `(height, width)` tuple of ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"Expected an int or a pair (height, width); got {value!r}.")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def pad_to_multiple(x, multiple):
    """Zero-pads a `(batch, height, width, channels)` map at the bottom/right.

    Args:
        x: tensor; height and width may be dynamic on TensorFlow.
        multiple: int, the size both sides are padded up to a multiple of.

    Returns:
        `(padded, padded_height, padded_width)`; `x` itself when no padding is
        needed (statically known).
    """
    _, height, width, _ = ops.shape(x)
    # Written as ceil(side / multiple) * multiple with non-negative operands:
    # with symbolic sizes (a JAX export with dynamic height/width) the padded
    # side is then provably a multiple, which the reshapes into windows need,
    # and tf2onnx maps floor division of negative ints to a truncating Div.
    padded_h = (height + multiple - 1) // multiple * multiple
    padded_w = (width + multiple - 1) // multiple * multiple
    if isinstance(height, int) and isinstance(width, int) and (padded_h, padded_w) == (height, width):
        return x, height, width
    x = ops.pad(x, [[0, 0], [0, padded_h - height], [0, padded_w - width], [0, 0]])
    return x, padded_h, padded_w


def cyclic_shift(x, shift):
    """Rolls a `(batch, height, width, channels)` map by `shift` rows and columns.

    `ops.roll(x, (shift, shift), axis=(1, 2))`, written as two slices and a
    concatenation per axis: the same data movement, and ops every exporter
    maps to builtins (`tf.Roll` is not a LiteRT builtin op). `|shift|` must be
    smaller than both sides; height and width may be dynamic.

    Args:
        x: tensor `(batch, height, width, channels)`.
        shift: int; positive moves content down/right, as `ops.roll`.

    Returns:
        Tensor of the same shape.
    """
    if shift == 0:
        return x
    # shift > 0: the last `shift` rows come first; shift < 0: the first `-shift` rows go last
    x = ops.concatenate([x[:, -shift:], x[:, :-shift]], axis=1)
    return ops.concatenate([x[:, :, -shift:], x[:, :, :-shift]], axis=2)


def window_partition(x, window_size):
    """Cuts a feature map into non-overlapping windows.

    Args:
        x: tensor `(batch, height, width, channels)`; height and width must be
            multiples of the window.
        window_size: int or `(wh, ww)`.

    Returns:
        Tensor `(batch * num_windows, wh * ww, channels)`, windows in row-major
        order per image, tokens in row-major order per window.
    """
    wh, ww = to_pair(window_size)
    _, height, width, channels = ops.shape(x)
    x = ops.reshape(x, (-1, height // wh, wh, width // ww, ww, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, wh * ww, channels))


def window_merge(windows, window_size, height, width):
    """Inverse of `window_partition`.

    Args:
        windows: tensor `(batch * num_windows, wh * ww, channels)`.
        window_size: int or `(wh, ww)`.
        height: height of the (padded) feature map the windows came from.
        width: its width.

    Returns:
        Tensor `(batch, height, width, channels)`.
    """
    wh, ww = to_pair(window_size)
    channels = ops.shape(windows)[-1]
    x = ops.reshape(windows, (-1, height // wh, width // ww, wh, ww, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height, width, channels))


def shifted_window_regions(height, width, window_size, shift_size):
    """Region id of every token of every window after a cyclic shift.

    After a shift by `shift_size`, a window at the bottom/right border holds
    tokens from up to four regions that are not neighbours in the image. This
    is the compact form of the attention mask: `region_mask` expands it.

    Args:
        height: height of the (padded) feature map; an int or a scalar tensor.
        width: its width.
        window_size: int or `(wh, ww)`.
        shift_size: int or `(sh, sw)`, the cyclic shift applied before
            partitioning.

    Returns:
        Float32 tensor `(num_windows, wh * ww)` of region ids in {0, ..., 8}.
    """
    wh, ww = to_pair(window_size)
    sh, sw = to_pair(shift_size)

    def regions(size, window, shift):
        # 0: [0, size - window), 1: [size - window, size - shift), 2: [size - shift, size)
        idx = ops.arange(0, size)  # (0, size): jax2onnx cannot trace arange(stop)
        return ops.cast(idx >= size - window, "int32") + ops.cast(idx >= size - shift, "int32")

    region = regions(height, wh, sh)[:, None] * 3 + regions(width, ww, sw)[None, :]
    region = ops.cast(region[None, :, :, None], "float32")
    return ops.squeeze(window_partition(region, (wh, ww)), axis=-1)


def region_mask(regions):
    """Attention mask from region ids: 0 within a region, `MASK_VALUE` across.

    Args:
        regions: tensor `(num_windows, N)`, e.g. from `shifted_window_regions`.

    Returns:
        Float32 tensor `(num_windows, N, N)`.
    """
    same = ops.equal(regions[:, :, None], regions[:, None, :])
    return ops.where(same, 0.0, MASK_VALUE)


def shifted_window_mask(height, width, window_size, shift_size):
    """Attention mask for shifted windows.

    Tokens attend only within their own region: the mask is 0 for pairs in
    the same region and `MASK_VALUE` (-100) otherwise. Arguments as for
    `shifted_window_regions`.

    Returns:
        Float32 tensor `(num_windows, wh * ww, wh * ww)`.
    """
    return region_mask(shifted_window_regions(height, width, window_size, shift_size))


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


def stage_geometry(image_size, window_size, num_stages=4, patch_size=4):
    """Resolution, window and shift of every stage, as the model builds them.

    The patch embedding pads to a multiple of `patch_size` and each patch
    merging pads an odd side, so every division rounds up (at 200 px with
    patch 4, stages see 50, 25, 13 and 7 tokens a side). This is the one
    place that rule is written; the layers apply it through their shapes.

    Args:
        image_size: int or `(height, width)`; None entries for dynamic sizes.
        window_size: int, requested window side.
        num_stages: int.
        patch_size: int.

    Returns:
        list of `num_stages` tuples `((height, width), window, shift)`, where
        `shift` is that of the stage's odd (shifted) blocks.
    """

    def ceil_div(n, d):
        return None if n is None else -(-n // d)

    height, width = to_pair(image_size)
    resolution = (ceil_div(height, patch_size), ceil_div(width, patch_size))
    geometry = []
    for i in range(num_stages):
        if i > 0:
            resolution = tuple(ceil_div(n, 2) for n in resolution)
        window, shift = effective_window(resolution, window_size, window_size // 2)
        geometry.append((resolution, window, shift))
    return geometry
