"""position_bias.py: relative index, CPB coordinates, CPB vs HF, V1 table and its resize."""

import math

import numpy as np
import pytest
import torch

from keras_swinv2.layers import (
    ContinuousPositionBias,
    RelativePositionBiasTable,
    relative_coords_table,
    relative_position_index,
    resize_relative_position_table,
)

from reference import randomize_
from swin_layer_helpers import brute_force_relative_index, pair, to_numpy


@pytest.mark.parametrize("window", [1, 2, 3, 5, (2, 4), (4, 3)])
def test_relative_position_index_matches_brute_force(window):
    index = relative_position_index(window)
    wh, ww = pair(window)
    assert index.shape == (wh * ww * wh * ww,)
    assert index.dtype == np.int32
    np.testing.assert_array_equal(index, brute_force_relative_index(window).reshape(-1))
    assert index.min() == 0 and index.max() == (2 * wh - 1) * (2 * ww - 1) - 1


def _direct_coords(window, pretrained, mode):
    wh, ww = pair(window)
    ph, pw = pair(pretrained)
    rows = []
    for i in range(2 * wh - 1):
        for j in range(2 * ww - 1):
            dh, dw = i - (wh - 1), j - (ww - 1)
            nh = dh / (ph - 1 if ph > 0 else wh - 1) * 8.0
            nw = dw / (pw - 1 if pw > 0 else ww - 1) * 8.0
            if mode == "log":
                nh = math.copysign(math.log2(abs(nh) + 1.0) / 3.0, nh) if nh else 0.0
                nw = math.copysign(math.log2(abs(nw) + 1.0) / 3.0, nw) if nw else 0.0
            rows.append((nh, nw))
    return np.array(rows)


@pytest.mark.parametrize("mode", ["log", "linear"])
@pytest.mark.parametrize(
    "window, pretrained",
    [(4, 0), (7, 0), ((3, 5), 0), (6, 4), ((4, 6), (8, 12)), (12, 8)],
)
def test_relative_coords_table_direct_formula(window, pretrained, mode):
    table = relative_coords_table(window, pretrained, mode)
    wh, ww = pair(window)
    assert table.shape == ((2 * wh - 1) * (2 * ww - 1), 2)
    assert table.dtype == np.float32
    np.testing.assert_allclose(table, _direct_coords(window, pretrained, mode), rtol=0, atol=1e-6)
    if pretrained == 0:
        # Own window: the extreme offsets map to +-8 (linear) / +-log2(9)/3 (log).
        edge = 8.0 if mode == "linear" else math.log2(9.0) / 3.0
        np.testing.assert_allclose(np.abs(table).max(), edge, rtol=1e-6)


def test_relative_coords_table_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        relative_coords_table(4, 0, "cubic")


def _hf_self_attention(dim, heads, window, pretrained, seed):
    from transformers import Swinv2Config
    from transformers.models.swinv2.modeling_swinv2 import Swinv2SelfAttention

    attn = Swinv2SelfAttention(Swinv2Config(), dim, heads, pair(window), list(pair(pretrained)))
    return randomize_(attn, seed).eval()


def _copy_cpb(cpb, hf_attn):
    mlp = hf_attn.continuous_position_bias_mlp
    cpb.fc1.kernel.assign(mlp[0].weight.detach().numpy().T)
    cpb.fc1.bias.assign(mlp[0].bias.detach().numpy())
    cpb.fc2.kernel.assign(mlp[2].weight.detach().numpy().T)


@pytest.mark.parametrize("heads, window, pretrained", [(3, 4, 0), (2, (3, 5), 0), (4, 6, 4), (2, (4, 2), (8, 4))])
def test_continuous_position_bias_matches_hf(heads, window, pretrained):
    hf = _hf_self_attention(8 * heads, heads, window, pretrained, seed=3)
    cpb = ContinuousPositionBias(heads, window, pretrained)
    cpb.build()
    _copy_cpb(cpb, hf)

    # The derived buffers agree with HF's.
    np.testing.assert_allclose(cpb.coords, hf.relative_coords_table.numpy().reshape(-1, 2), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(cpb.index, hf.relative_position_index.numpy().reshape(-1))

    # 16 * sigmoid(table gathered by the index), computed from HF's buffers.
    with torch.no_grad():
        table = hf.continuous_position_bias_mlp(hf.relative_coords_table).view(-1, heads)
        n = int(np.prod(pair(window)))
        gathered = table[hf.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        expected = (16 * torch.sigmoid(gathered)).numpy()

    bias = to_numpy(cpb.bias())
    assert bias.shape == (heads, n, n)
    assert bias.dtype == np.float32
    np.testing.assert_allclose(bias, expected, rtol=0, atol=1e-5)
    assert bias.std() > 0.1  # randomised weights make the bias non-trivial


def test_relative_position_bias_table_gathers_by_offset():
    heads, (wh, ww) = 3, (2, 3)
    layer = RelativePositionBiasTable(heads, (wh, ww))
    layer.build()
    table = np.random.default_rng(0).standard_normal(((2 * wh - 1) * (2 * ww - 1), heads))
    layer.table.assign(table.astype("float32"))
    bias = to_numpy(layer.bias())
    n = wh * ww
    assert bias.shape == (heads, n, n)
    coords = [(i, j) for i in range(wh) for j in range(ww)]
    for p, (hp, wp) in enumerate(coords):
        for q, (hq, wq) in enumerate(coords):
            row = (hp - hq + wh - 1) * (2 * ww - 1) + (wp - wq + ww - 1)
            np.testing.assert_allclose(bias[:, p, q], table[row], rtol=0, atol=1e-7)


def _torch_bicubic(table, source, target):
    (sh, sw), (th, tw) = pair(source), pair(target)
    heads = table.shape[1]
    grid = torch.from_numpy(table).T.reshape(1, heads, 2 * sh - 1, 2 * sw - 1)
    out = torch.nn.functional.interpolate(grid, size=(2 * th - 1, 2 * tw - 1), mode="bicubic", align_corners=False)
    return out[0].reshape(heads, -1).T.numpy()


@pytest.mark.parametrize("source, target", [(7, 12), (12, 7), (2, 5), (8, 16), ((3, 4), (5, 6)), ((6, 3), (3, 6))])
def test_resize_relative_position_table_matches_torch_bicubic(source, target):
    (sh, sw), (th, tw) = pair(source), pair(target)
    table = np.random.default_rng(1).standard_normal(((2 * sh - 1) * (2 * sw - 1), 3))
    table = table.astype("float32")
    resized = resize_relative_position_table(table, source, target)
    assert resized.shape == ((2 * th - 1) * (2 * tw - 1), 3)
    assert resized.dtype == np.float32
    expected = _torch_bicubic(table, source, target)
    assert np.max(np.abs(resized - expected)) < 1e-5


def test_resize_relative_position_table_identity_and_errors():
    table = np.random.default_rng(2).standard_normal((13 * 13, 4)).astype("float32")
    np.testing.assert_array_equal(resize_relative_position_table(table, 7, 7), table)
    with pytest.raises(ValueError, match=r"window \(6, 6\) has 121 rows"):
        resize_relative_position_table(table, 6, 12)
