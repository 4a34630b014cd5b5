"""windows.py: partition / merge and the shifted-window mask."""

import numpy as np
import pytest

import keras

from keras_swinv2.layers import (
    region_mask,
    shifted_window_mask,
    shifted_window_regions,
    window_merge,
    window_partition,
)

from swin_layer_helpers import brute_force_partition, official_shift_mask, to_numpy


@pytest.mark.parametrize(
    "shape, window",
    [
        ((2, 8, 8, 3), 4),
        ((3, 6, 8, 2), (3, 4)),  # rectangular window
        ((2, 4, 12, 5), (2, 6)),
        ((1, 4, 4, 1), 4),  # a single window
    ],
)
def test_partition_matches_brute_force_and_round_trips(shape, window):
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    windows = to_numpy(window_partition(keras.ops.convert_to_tensor(x), window))
    np.testing.assert_array_equal(windows, brute_force_partition(x, window))
    merged = window_merge(keras.ops.convert_to_tensor(windows), window, shape[1], shape[2])
    merged = to_numpy(merged)
    assert merged.shape == shape
    np.testing.assert_array_equal(merged, x)


def test_partition_window_and_token_order():
    # Encode (batch, row, col) in the values: the order is visible directly.
    b, h, w = np.meshgrid(np.arange(2), np.arange(4), np.arange(6), indexing="ij")
    x = np.stack([b, h, w], axis=-1).astype("float32")  # (2, 4, 6, 3)
    windows = to_numpy(window_partition(keras.ops.convert_to_tensor(x), (2, 3)))
    assert windows.shape == (2 * 2 * 2, 6, 3)
    # Window 3 of image 0 is the bottom-right one; its tokens are row-major.
    expected = [[0, r, c] for r in (2, 3) for c in (3, 4, 5)]
    np.testing.assert_array_equal(windows[3], expected)
    # Window 5 is image 1's top-right window.
    np.testing.assert_array_equal(windows[5, 0], [1, 0, 3])
    np.testing.assert_array_equal(windows[5, -1], [1, 1, 5])


@pytest.mark.parametrize(
    "height, width, window, shift",
    [
        (8, 8, 4, 2),
        (12, 8, 4, 2),
        (8, 8, 4, 1),
        (8, 12, (4, 2), (2, 1)),  # rectangular window and shift
        (6, 9, 3, 1),
        (4, 4, 4, 2),  # one window holds all four regions
        (8, 8, 4, 0),  # no shift: nothing is masked
    ],
)
def test_shift_mask_matches_official_construction(height, width, window, shift):
    mask = to_numpy(shifted_window_mask(height, width, window, shift))
    expected = official_shift_mask(height, width, window, shift)
    assert mask.shape == expected.shape
    assert mask.dtype == np.float32
    np.testing.assert_array_equal(mask, expected)
    if shift != 0:
        assert (mask == -100.0).any() and (mask == 0.0).any()
    else:
        assert (mask == 0.0).all()


def test_region_ids_are_the_compact_mask_and_expand_per_chunk():
    """Sequential attention builds each chunk's mask from its windows' region ids."""
    regions = to_numpy(shifted_window_regions(12, 8, 4, 2))
    assert regions.shape == (6, 16)
    assert all(len(np.unique(r)) in (1, 2, 4) for r in regions)  # corner window: all four regions
    full = official_shift_mask(12, 8, 4, 2)
    for start in range(0, 6, 2):  # chunks of 2 windows
        np.testing.assert_array_equal(to_numpy(region_mask(regions[start : start + 2])), full[start : start + 2])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function with dynamic shapes")
def test_mask_and_windows_with_dynamic_spatial_dims_in_tf_function():
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2], tf.float32)])
    def fn(x):
        height, width = tf.shape(x)[1], tf.shape(x)[2]
        mask = shifted_window_mask(height, width, 4, 2)
        windows = window_partition(x, 4)
        merged = window_merge(windows, 4, height, width)
        return mask, windows, merged

    for shape in [(1, 8, 12, 2), (2, 12, 8, 2), (1, 4, 4, 2)]:
        x = np.random.default_rng(1).standard_normal(shape).astype("float32")
        mask, windows, merged = (t.numpy() for t in fn(tf.constant(x)))
        np.testing.assert_array_equal(mask, official_shift_mask(shape[1], shape[2], 4, 2))
        np.testing.assert_array_equal(windows, brute_force_partition(x, 4))
        np.testing.assert_array_equal(merged, x)
    # One trace served every size.
    assert fn.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("shift", [-3, -1, 2, 4])
def test_cyclic_shift_is_roll(shift):
    from keras_swinv2.layers.windows import cyclic_shift, pad_to_multiple

    x = np.random.default_rng(0).standard_normal((2, 5, 7, 3)).astype("float32")
    got = to_numpy(cyclic_shift(keras.ops.convert_to_tensor(x), shift))
    np.testing.assert_array_equal(got, np.roll(x, (shift, shift), axis=(1, 2)))
    padded, height, width = pad_to_multiple(keras.ops.convert_to_tensor(x), 4)
    assert (height, width) == (8, 8) and to_numpy(padded).shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(to_numpy(padded)[:, :5, :7], x)
