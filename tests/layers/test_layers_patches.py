"""patch_merging.py and patch_embedding.py vs numpy."""

import numpy as np
import pytest

from keras_swinv2.layers import PatchEmbedding, PatchMerging

from swin_layer_helpers import layer_norm, randomize_keras, to_numpy


def _numpy_merge(x, layer):
    if x.shape[1] % 2 or x.shape[2] % 2:
        x = np.pad(x, [(0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)])
    cat = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1).astype(
        "float64"
    )
    kernel = to_numpy(layer.reduction.kernel)
    gamma, beta = to_numpy(layer.norm.gamma), to_numpy(layer.norm.beta)
    if layer.version == "v2":
        return layer_norm(cat @ kernel, gamma, beta)
    return layer_norm(cat, gamma, beta) @ kernel


@pytest.mark.parametrize("version", ["v2", "v1"])
@pytest.mark.parametrize("shape", [(2, 4, 6, 3), (1, 5, 7, 3), (1, 1, 2, 3)])
def test_patch_merging_matches_numpy(version, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    layer = PatchMerging(3, version=version)
    layer.build(shape)
    randomize_keras(layer, seed=1)
    assert tuple(layer.reduction.kernel.shape) == (12, 6)
    assert tuple(layer.norm.gamma.shape) == ((6,) if version == "v2" else (12,))
    assert layer.reduction.bias is None
    out = to_numpy(layer(x))
    expected_shape = (shape[0], (shape[1] + 1) // 2, (shape[2] + 1) // 2, 6)
    assert out.shape == expected_shape == layer.compute_output_shape(shape)
    np.testing.assert_allclose(out, _numpy_merge(x, layer), rtol=0, atol=1e-5)


def test_patch_merging_concatenation_order_is_visible():
    # Channel k of the 2x2 group member m is 10 * m + k: identity reduction shows the order.
    x = np.zeros((1, 2, 2, 2), dtype="float32")
    for m, (r, c) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        x[0, r, c] = [10 * m, 10 * m + 1]
    layer = PatchMerging(2, version="v1", out_dim=8)
    layer.build(x.shape)
    layer.reduction.kernel.assign(np.eye(8, dtype="float32"))
    layer.norm.gamma.assign(np.ones(8, dtype="float32"))
    out = to_numpy(layer(x))[0, 0, 0]
    expected = layer_norm(np.array([0, 1, 10, 11, 20, 21, 30, 31], dtype="float64"), 1.0, 0.0)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_patch_merging_out_dim_and_errors():
    layer = PatchMerging(4, out_dim=5)
    layer.build((1, 4, 4, 4))
    assert tuple(layer.reduction.kernel.shape) == (16, 5)
    assert tuple(layer.norm.gamma.shape) == (5,)
    assert layer.compute_output_shape((1, 4, 4, 4)) == (1, 2, 2, 5)
    assert layer.compute_output_shape((None, None, 7, 4)) == (None, None, 4, 5)
    with pytest.raises(ValueError, match=r"version must be one of \('v2', 'v1'\); got 'v3'"):
        PatchMerging(4, version="v3")
    with pytest.raises(ValueError, match=r"\(batch, height, width, 4\)"):
        PatchMerging(4).build((1, 4, 4, 3))


def _numpy_patch_embed(images, layer, p):
    b, h, w, c = images.shape
    ph, pw = (-h) % p, (-w) % p
    images = np.pad(images, [(0, 0), (0, ph), (0, pw), (0, 0)]).astype("float64")
    kernel = to_numpy(layer.proj.kernel)  # (p, p, c, embed)
    bias = to_numpy(layer.proj.bias)
    oh, ow = (h + ph) // p, (w + pw) // p
    out = np.zeros((b, oh, ow, kernel.shape[-1]))
    for i in range(oh):
        for j in range(ow):
            patch = images[:, i * p : (i + 1) * p, j * p : (j + 1) * p, :]
            out[:, i, j] = np.einsum("bxyc,xyco->bo", patch, kernel) + bias
    if layer.norm is not None:
        out = layer_norm(out, to_numpy(layer.norm.gamma), to_numpy(layer.norm.beta))
    return out


@pytest.mark.parametrize(
    "shape, use_norm",
    [((2, 8, 12, 3), True), ((1, 10, 13, 3), True), ((1, 10, 13, 3), False), ((1, 3, 5, 3), True)],
)
def test_patch_embedding_matches_numpy_and_pads(shape, use_norm):
    images = np.random.default_rng(2).standard_normal(shape).astype("float32")
    layer = PatchEmbedding(embed_dim=6, patch_size=4, use_norm=use_norm)
    layer.build(shape)
    randomize_keras(layer, seed=3)
    assert (layer.norm is None) == (not use_norm)
    out = to_numpy(layer(images))
    expected_shape = (shape[0], -(-shape[1] // 4), -(-shape[2] // 4), 6)
    assert out.shape == expected_shape == layer.compute_output_shape(shape)
    np.testing.assert_allclose(out, _numpy_patch_embed(images, layer, 4), rtol=0, atol=1e-5)


def test_patch_embedding_layer_norm_epsilon():
    layer = PatchEmbedding(embed_dim=6)
    assert layer.norm.epsilon == 1e-5


@pytest.mark.parametrize("bad_shape", [(1, 8, 8, 4), (1, 8, 8, 1), (8, 8, 3), (1, 1, 8, 8, 3)])
def test_patch_embedding_rejects_wrong_channels_or_rank(bad_shape):
    layer = PatchEmbedding(embed_dim=6, patch_size=4, in_channels=3)
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, height, width, 3\)"):
        layer(np.zeros(bad_shape, dtype="float32"))


def test_patch_embedding_other_in_channels():
    layer = PatchEmbedding(embed_dim=4, patch_size=2, in_channels=1)
    layer.build((1, 4, 4, 1))
    assert tuple(layer.proj.kernel.shape) == (2, 2, 1, 4)
    assert layer.compute_output_shape((1, 5, 4, 1)) == (1, 3, 2, 4)
    assert layer.compute_output_shape((None, None, None, 1)) == (None, None, None, 4)
    with pytest.raises(ValueError, match=r"\(batch, height, width, 1\)"):
        layer(np.zeros((1, 4, 4, 3), "float32"))
