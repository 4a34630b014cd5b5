"""block.py: effective window, post-/pre-norm data paths, DropPath, Mlp, extra norm; stage."""

import numpy as np
import pytest

import keras

from keras_swinv2.layers import (
    DropPath,
    Mlp,
    PatchMerging,
    SwinV2Block,
    SwinV2Stage,
    effective_window,
    window_merge,
    window_partition,
)

from swin_layer_helpers import layer_norm, official_shift_mask, randomize_keras, to_numpy


@pytest.mark.parametrize(
    "resolution, window, shift, expected",
    [
        ((8, 8), 8, 4, (8, 0)),  # equal: one window, no shift
        ((6, 10), 8, 4, (6, 0)),  # min side fits: window = min side
        ((10, 6), 8, 4, (6, 0)),
        ((4, 4), 8, 0, (4, 0)),
        ((9, 16), 8, 4, (8, 4)),  # larger: unchanged
        ((16, 16), 8, 0, (8, 0)),
        ((None, None), 8, 4, (8, 4)),  # dynamic: unchanged
        ((4, None), 8, 4, (8, 4)),
    ],
)
def test_effective_window(resolution, window, shift, expected):
    assert effective_window(resolution, window, shift) == expected


def test_block_builds_attention_at_effective_window():
    block = SwinV2Block(8, 2, window_size=8, shift_size=4)
    block.build((1, 6, 10, 8))
    assert (block.window, block.shift) == (6, 0)
    assert block.attn.window_size == (6, 6)
    assert block.attn.bias_layer.index.shape == (36 * 36,)
    assert tuple(block.attn.bias_layer.coords.shape) == (11 * 11, 2)
    # A dynamic resolution keeps the requested window.
    dynamic = SwinV2Block(8, 2, window_size=8, shift_size=4)
    dynamic.build((None, None, None, 8))
    assert (dynamic.window, dynamic.shift) == (8, 4)


def test_post_norm_block_is_identity_at_init():
    x = np.random.default_rng(0).standard_normal((1, 6, 10, 8)).astype("float32")
    block = SwinV2Block(8, 2, window_size=4, shift_size=2)
    out = to_numpy(block(x))
    for norm in (block.norm1, block.norm2):
        np.testing.assert_array_equal(to_numpy(norm.gamma), 0.0)
        np.testing.assert_array_equal(to_numpy(norm.beta), 0.0)
    np.testing.assert_array_equal(out, x)


def test_pre_norm_block_norms_start_at_one():
    block = SwinV2Block(8, 2, window_size=4, norm_position="pre")
    block.build((1, 8, 8, 8))
    np.testing.assert_array_equal(to_numpy(block.norm1.gamma), 1.0)
    np.testing.assert_array_equal(to_numpy(block.norm2.gamma), 1.0)


def _reference_attention_branch(block, x, window, shift):
    """pad -> roll(-s) -> partition -> attn(+mask) -> merge -> roll(+s) -> crop."""
    _, height, width, _ = x.shape
    ph, pw = (-height) % window, (-width) % window
    xp = np.pad(x, [(0, 0), (0, ph), (0, pw), (0, 0)])
    hp, wp = height + ph, width + pw
    mask = None
    if shift:
        xp = np.roll(xp, (-shift, -shift), axis=(1, 2))
        mask = official_shift_mask(hp, wp, window, shift)
    windows = to_numpy(window_partition(xp, window))
    windows = to_numpy(block.attn(windows, attention_mask=mask))
    y = to_numpy(window_merge(windows, window, hp, wp))
    if shift:
        y = np.roll(y, (shift, shift), axis=(1, 2))
    return y[:, :height, :width]


def _ln(layer, x):
    return layer_norm(x, to_numpy(layer.gamma), to_numpy(layer.beta))


@pytest.mark.parametrize(
    "norm, shape, window, shift",
    [
        ("post", (1, 6, 10, 8), 4, 2),  # padded 6x10 -> 8x12, shifted
        ("pre", (1, 6, 10, 8), 4, 2),
        ("post", (1, 6, 10, 8), 4, 0),  # regular windows, no mask
    ],
)
def test_block_data_path(norm, shape, window, shift):
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    block = SwinV2Block(8, 2, window_size=window, shift_size=shift, norm_position=norm)
    block.build(shape)
    randomize_keras(block, seed=2)
    assert (block.window, block.shift) == (window, shift)

    out = to_numpy(block(x))

    def mlp(v):
        return to_numpy(block.mlp(v.astype("float32")))

    if norm == "post":
        # x = x + LN(attn(x)); x = x + LN(mlp(x))
        h = x + _ln(block.norm1, _reference_attention_branch(block, x, window, shift))
        expected = h + _ln(block.norm2, mlp(h))
    else:
        # x = x + attn(LN(x)); x = x + mlp(LN(x))
        normed = _ln(block.norm1, x).astype("float32")
        h = x + _reference_attention_branch(block, normed, window, shift)
        expected = h + mlp(_ln(block.norm2, h))
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-5)


def test_padded_tokens_take_part_unmasked():
    # Documented semantics (HF's): the zero padding is attended to, not masked out.
    shape = (1, 6, 10, 8)  # window 4: padded to 8x12
    x = np.random.default_rng(3).standard_normal(shape).astype("float32")
    block = SwinV2Block(8, 2, window_size=4, shift_size=0)
    block.build(shape)
    randomize_keras(block, seed=4)
    out = to_numpy(block(x))

    # Alternative semantics: mask the padded keys with -100.
    padded = np.zeros((1, 8, 12, 1), dtype="float32")
    padded[:, 6:, :] = 1.0
    padded[:, :, 10:] = 1.0
    is_pad = to_numpy(window_partition(padded, 4))[..., 0]  # (6 windows, 16 tokens)
    pad_mask = np.where(is_pad[:, None, :] > 0, -100.0, 0.0).astype("float32")
    xp = np.pad(x, [(0, 0), (0, 2), (0, 2), (0, 0)])
    masked = to_numpy(block.attn(to_numpy(window_partition(xp, 4)), attention_mask=pad_mask))
    masked = to_numpy(window_merge(masked, 4, 8, 12))[:, :6, :10]
    h = x + _ln(block.norm1, masked)
    alternative = h + _ln(block.norm2, to_numpy(block.mlp(h.astype("float32"))))

    # The two top-left windows hold no padding: both agree there...
    np.testing.assert_allclose(out[:, :4, :8], alternative[:, :4, :8], rtol=0, atol=2e-5)
    # ...the windows that hold padding differ.
    assert np.abs(out[:, 4:, :] - alternative[:, 4:, :]).max() > 1e-3
    assert np.abs(out[:, :4, 8:] - alternative[:, :4, 8:]).max() > 1e-3


def test_extra_norm_adds_norm3_on_the_output():
    shape = (1, 6, 10, 8)
    x = np.random.default_rng(5).standard_normal(shape).astype("float32")
    plain = SwinV2Block(8, 2, window_size=4, shift_size=2)
    extra = SwinV2Block(8, 2, window_size=4, shift_size=2, extra_norm=True)
    plain.build(shape)
    extra.build(shape)
    assert plain.norm3 is None and extra.norm3 is not None
    assert len(extra.weights) == len(plain.weights) + 2
    randomize_keras(extra, seed=6)
    for src, dst in [
        (extra.norm1, plain.norm1),
        (extra.norm2, plain.norm2),
        (extra.mlp, plain.mlp),
        (extra.attn, plain.attn),
    ]:
        dst.set_weights(src.get_weights())
    np.testing.assert_array_equal(to_numpy(extra.norm3.gamma) != 1.0, True)  # randomised
    expected = _ln(extra.norm3, to_numpy(plain(x)))
    np.testing.assert_allclose(to_numpy(extra(x)), expected, rtol=0, atol=2e-5)


def test_block_argument_errors():
    with pytest.raises(ValueError, match="norm_position must be one of"):
        SwinV2Block(8, 2, norm_position="mid")
    with pytest.raises(ValueError, match="shift_size must be in"):
        SwinV2Block(8, 2, window_size=4, shift_size=4)
    with pytest.raises(ValueError, match="window_size must be >= 1"):
        SwinV2Block(8, 2, window_size=0)
    with pytest.raises(ValueError, match=r"drop_path_rate must be a float in \[0, 1\); got 1.5"):
        SwinV2Block(8, 2, drop_path_rate=1.5)
    with pytest.raises(TypeError, match="options must be a BlockOptions"):
        SwinV2Block(8, 2, options="post")
    with pytest.raises(ValueError, match=r"\(batch, height, width, 8\)"):
        SwinV2Block(8, 2, window_size=4).build((1, 8, 8, 6))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function with dynamic shapes")
def test_block_and_merging_with_dynamic_spatial_dims_in_tf_function():
    import tensorflow as tf

    block = SwinV2Block(8, 2, window_size=4, shift_size=2)
    block.build((None, None, None, 8))
    assert (block.window, block.shift) == (4, 2)  # unknown resolution keeps the request
    merge = PatchMerging(8)
    merge.build((None, None, None, 8))
    randomize_keras(block, seed=12)
    randomize_keras(merge, seed=13)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 8], tf.float32)])
    def fn(x):
        return block(x), merge(x)

    for shape in [(1, 6, 10, 8), (2, 9, 8, 8), (1, 5, 5, 8)]:  # padded and unpadded, odd sizes
        x = np.random.default_rng(14).standard_normal(shape).astype("float32")
        out, merged = fn(tf.constant(x))
        assert tuple(out.shape) == shape
        assert tuple(merged.shape) == (shape[0], (shape[1] + 1) // 2, (shape[2] + 1) // 2, 16)
        # Same as the eager (static-shape) computation with the same window.
        h = x + _ln(block.norm1, _reference_attention_branch(block, x, 4, 2))
        expected = h + _ln(block.norm2, to_numpy(block.mlp(h.astype("float32"))))
        np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=2e-5)
        np.testing.assert_allclose(merged.numpy(), to_numpy(merge(x)), rtol=0, atol=1e-6)
    assert fn.experimental_get_tracing_count() == 1


def test_drop_path_identity_at_inference():
    x = np.random.default_rng(0).standard_normal((16, 3, 4)).astype("float32")
    layer = DropPath(0.5, seed=1)
    np.testing.assert_array_equal(to_numpy(layer(x)), x)
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)
    np.testing.assert_array_equal(to_numpy(DropPath(0.0)(x, training=True)), x)


@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_drop_path_drops_whole_samples_and_rescales(rate):
    batch = 4000
    x = np.ones((batch, 3, 2), dtype="float32")
    out = to_numpy(DropPath(rate, seed=3)(x, training=True))
    assert out.shape == x.shape
    flat = out.reshape(batch, -1)
    # Whole samples: every element of a sample shares one fate.
    np.testing.assert_array_equal(flat.min(axis=1), flat.max(axis=1))
    kept = flat[:, 0] != 0
    np.testing.assert_allclose(flat[kept], 1.0 / (1.0 - rate), rtol=1e-6)
    std = np.sqrt(rate * (1 - rate) / batch)
    assert abs((1.0 - kept.mean()) - rate) < 5 * std
    assert abs(out.mean() - 1.0) < 0.1


def test_drop_path_rejects_bad_rate():
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match="rate"):
            DropPath(rate)


def test_block_drop_path_only_in_training():
    shape = (32, 4, 4, 8)
    x = np.random.default_rng(7).standard_normal(shape).astype("float32")
    block = SwinV2Block(8, 2, window_size=4, drop_path_rate=0.5)
    block.build(shape)
    randomize_keras(block, seed=8)
    inference = to_numpy(block(x, training=False))
    np.testing.assert_array_equal(inference, to_numpy(block(x)))
    trained = to_numpy(block(x, training=True))
    # Some samples pass through untouched (both branches dropped), others do not.
    untouched = np.all(trained == x, axis=(1, 2, 3))
    assert 0 < untouched.sum() < shape[0]


def test_mlp_matches_numpy():
    from math import erf

    layer = Mlp(6, 10)
    layer.build((None, 6))
    randomize_keras(layer, seed=9)
    x = np.random.default_rng(9).standard_normal((2, 3, 6)).astype("float32")
    w1, b1 = to_numpy(layer.fc1.kernel), to_numpy(layer.fc1.bias)
    w2, b2 = to_numpy(layer.fc2.kernel), to_numpy(layer.fc2.bias)
    h = x.astype("float64") @ w1 + b1
    h = 0.5 * h * (1.0 + np.vectorize(erf)(h / np.sqrt(2.0)))  # exact GELU
    np.testing.assert_allclose(to_numpy(layer(x)), h @ w2 + b2, rtol=0, atol=1e-5)


def test_stage_wiring():
    stage = SwinV2Stage(
        8,
        depth=4,
        num_heads=2,
        window_size=4,
        downsample=True,
        extra_norm_period=2,
        drop_path_rates=[0.0, 0.1, 0.2, 0.3],
        norm_position="post",
        mlp_ratio=2.0,
    )
    shape = (1, 11, 20, 4)  # merged (odd height padded) to (1, 6, 10, 8)
    x = np.random.default_rng(10).standard_normal(shape).astype("float32")
    out = stage(x)
    assert tuple(out.shape) == (1, 6, 10, 8) == stage.compute_output_shape(shape)
    assert [b.shift_size for b in stage.blocks] == [0, 2, 0, 2]
    assert [b.norm3 is not None for b in stage.blocks] == [False, True, False, True]
    assert [b.drop_path_rate for b in stage.blocks] == [0.0, 0.1, 0.2, 0.3]
    assert all(b.mlp.hidden_dim == 16 for b in stage.blocks)
    assert isinstance(stage.merge, PatchMerging) and stage.merge.dim == 4

    randomize_keras(stage, seed=11)
    expected = stage.merge(x)
    for block in stage.blocks:
        expected = block(expected)
    np.testing.assert_allclose(to_numpy(stage(x)), to_numpy(expected), rtol=0, atol=1e-6)

    with pytest.raises(ValueError, match="one per block"):
        SwinV2Stage(8, depth=2, num_heads=2, drop_path_rates=[0.1])
    with pytest.raises(ValueError, match="even dim"):
        SwinV2Stage(9, depth=1, num_heads=3, downsample=True)
