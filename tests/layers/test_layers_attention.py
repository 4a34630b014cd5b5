"""attention.py: SwinV2 cosine attention vs HF, V1 dot attention vs numpy, softmax, dropout, argument checks."""

import math

import numpy as np
import pytest
import torch

import keras
from keras import ops

from keras_swinv2.layers import WindowAttention, l2_normalize
from keras_swinv2.backend import softmax as attention_softmax

from reference import max_abs_diff, randomize_
from swin_layer_helpers import (
    brute_force_relative_index,
    official_shift_mask,
    pair,
    randomize_keras,
    softmax,
    to_numpy,
)


def _hf_attention(dim, heads, window, pretrained, seed):
    from transformers import Swinv2Config
    from transformers.models.swinv2.modeling_swinv2 import Swinv2Attention

    config = Swinv2Config(qkv_bias=True, attention_probs_dropout_prob=0.0)
    return randomize_(Swinv2Attention(config, dim, heads, pair(window), pretrained), seed).eval()


def _copy_hf_attention(layer, hf):
    def t(p):
        return p.detach().numpy()

    s = hf.self
    layer.qkv.kernel.assign(np.concatenate([t(s.query.weight).T, t(s.key.weight).T, t(s.value.weight).T], axis=1))
    layer.q_bias.assign(t(s.query.bias))
    layer.v_bias.assign(t(s.value.bias))
    layer.logit_scale.assign(t(s.logit_scale))
    mlp = s.continuous_position_bias_mlp
    layer.bias_layer.fc1.kernel.assign(t(mlp[0].weight).T)
    layer.bias_layer.fc1.bias.assign(t(mlp[0].bias))
    layer.bias_layer.fc2.kernel.assign(t(mlp[2].weight).T)
    layer.proj.kernel.assign(t(hf.output.dense.weight).T)
    layer.proj.bias.assign(t(hf.output.dense.bias))


@pytest.mark.parametrize(
    "dim, heads, feature_size, window, shift, pretrained, tolerance",
    [
        (24, 4, (8, 8), 4, 2, 0, 1e-5),
        # rectangular window and shift, CPB coordinates scaled to a pretrained window
        (16, 2, (4, 8), (2, 4), (1, 2), (4, 6), 1e-5),
        # 256 tokens per window (float32 sums 4x longer): torch inference takes the fused kernel
        (16, 2, (32, 32), 16, 8, 8, 3e-5),
    ],
)
def test_cosine_attention_matches_hf_with_shift_mask_and_clamp(
    dim, heads, feature_size, window, shift, pretrained, tolerance, report
):
    hf = _hf_attention(dim, heads, window, pretrained, seed=7)
    # Temperatures on both sides of the log(100) clamp: heads above it prove the clamp.
    scales = np.random.default_rng(0).uniform(math.log(50), math.log(300), heads)
    scales[0], scales[-1] = math.log(60.0), math.log(300.0)
    with torch.no_grad():
        hf.self.logit_scale.copy_(torch.from_numpy(scales.reshape(heads, 1, 1)).float())

    layer = WindowAttention(dim, heads, window, pretrained_window_size=pretrained)
    wh, ww = pair(window)
    n = wh * ww
    layer.build((None, n, dim))
    _copy_hf_attention(layer, hf)

    batch = 2  # the mask repeats per image: windows are (image, window) ordered
    mask = official_shift_mask(*feature_size, window, shift)
    num_windows = mask.shape[0]
    assert (mask == -100).any()
    windows = np.random.default_rng(1).standard_normal((batch * num_windows, n, dim))
    windows = windows.astype("float32")

    with torch.no_grad():
        # HF adds the mask twice. At the clamped temperature (100) cosine logits
        # span up to 200, so -200 and the official -100 do NOT give the same
        # softmax: hand HF half the mask, which makes its total exactly -100.
        # At temperature 100 float32 rounding alone reaches ~1e-5, so the
        # reference runs in float64 and the bound measures our float32 error.
        expected = hf.double()(torch.from_numpy(windows).double(), torch.from_numpy(mask / 2).double())[0].numpy()
    out = to_numpy(layer(windows, attention_mask=mask))
    diff = max_abs_diff(out, expected)
    report(test="window_attention_vs_hf", window=str(window), max_abs_diff=diff)
    assert diff <= tolerance
    # training takes the unfused path on every backend: the same numbers
    trained = to_numpy(layer(windows, attention_mask=mask, training=True))
    assert max_abs_diff(trained, expected) <= tolerance

    clamped = np.minimum(scales, math.log(100.0))
    # Temperatures above the clamp act exactly as log(100)...
    layer.logit_scale.assign(clamped.reshape(heads, 1, 1))
    assert max_abs_diff(to_numpy(layer(windows, attention_mask=mask)), out) <= 1e-6
    # ...and the heads above it do influence the output (the check above is not vacuous).
    lowered = np.where(scales > math.log(100.0), math.log(50.0), scales)
    layer.logit_scale.assign(lowered.reshape(heads, 1, 1))
    assert max_abs_diff(to_numpy(layer(windows, attention_mask=mask)), expected) > 1e-3


def _numpy_window_attention(x, w, heads, mask):
    """Plain numpy window attention (dot-product, V1 table bias)."""
    b, n, dim = x.shape
    hd = dim // heads
    qkv = x.astype("float64") @ w["qkv"] + w["qkv_bias"]
    qkv = qkv.reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    logits = q @ k.transpose(0, 1, 3, 2) * hd**-0.5
    index = w["index"]
    bias = np.stack([w["table"][index, h] for h in range(heads)])  # (heads, n, n)
    logits = logits + bias[None]
    if mask is not None:
        nw = mask.shape[0]
        logits = logits.reshape(b // nw, nw, heads, n, n) + mask[None, :, None]
        logits = logits.reshape(b, heads, n, n)
    out = (softmax(logits) @ v).transpose(0, 2, 1, 3).reshape(b, n, dim)
    return out @ w["proj_kernel"] + w["proj_bias"]


@pytest.mark.parametrize(
    "qkv_bias, key_bias, with_mask",
    [(True, True, True), (True, False, False), (False, False, True)],
)
def test_dot_attention_with_table_matches_numpy(qkv_bias, key_bias, with_mask):
    dim, heads, window = 8, 2, 4
    n = 16
    layer = WindowAttention(
        dim,
        heads,
        window,
        attention="dot",
        position_bias="table",
        qkv_bias=qkv_bias,
        key_bias=key_bias,
    )
    layer.build((None, n, dim))
    randomize_keras(layer, seed=5)
    assert not hasattr(layer, "logit_scale")
    assert isinstance(layer.bias_layer, keras.layers.Layer)

    w = {
        "qkv": to_numpy(layer.qkv.kernel).astype("float64"),
        "proj_kernel": to_numpy(layer.proj.kernel),
        "proj_bias": to_numpy(layer.proj.bias),
        "table": to_numpy(layer.bias_layer.table),
        "index": brute_force_relative_index(window),
    }
    zeros = np.zeros(dim)
    if qkv_bias:
        k_bias = to_numpy(layer.k_bias) if key_bias else zeros
        w["qkv_bias"] = np.concatenate([to_numpy(layer.q_bias), k_bias, to_numpy(layer.v_bias)])
        assert np.abs(w["qkv_bias"]).max() > 0
    else:
        w["qkv_bias"] = np.zeros(3 * dim)
    assert hasattr(layer, "k_bias") == (qkv_bias and key_bias)

    mask = official_shift_mask(8, 12, window, 2) if with_mask else None
    nw = 6
    x = np.random.default_rng(2).standard_normal((2 * nw, n, dim)).astype("float32")
    expected = _numpy_window_attention(x, w, heads, mask)
    out = to_numpy(layer(x, attention_mask=mask))
    assert out.shape == (2 * nw, n, dim)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_linear_cpb_uses_linear_coordinates():
    layer = WindowAttention(8, 2, 4, position_bias="linear_cpb")
    assert layer.bias_layer.mode == "linear"
    assert np.abs(layer.bias_layer.coords).max() == pytest.approx(8.0)
    layer_log = WindowAttention(8, 2, 4)
    assert layer_log.bias_layer.mode == "log"
    assert np.abs(layer_log.bias_layer.coords).max() < 1.1


def test_logit_scale_initialised_to_log10():
    layer = WindowAttention(8, 2, 4)
    layer.build((None, 16, 8))
    expected = np.full((2, 1, 1), math.log(10.0))
    np.testing.assert_allclose(to_numpy(layer.logit_scale), expected, rtol=1e-6)


def test_argument_errors():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        WindowAttention(10, 3, 4)
    with pytest.raises(ValueError, match="attention must be one of"):
        WindowAttention(12, 3, 4, attention="additive")
    with pytest.raises(ValueError, match="position_bias must be one of"):
        WindowAttention(12, 3, 4, position_bias="rope")


def test_l2_normalize_is_safe_on_zero_vectors():
    x = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]], dtype="float32")
    out = to_numpy(l2_normalize(x))
    np.testing.assert_allclose(out, [[0, 0, 0], [0.6, 0, 0.8]], rtol=0, atol=1e-7)
    assert np.isfinite(out).all()


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch-only helper")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_cosine_query_key_matches_normalized_heads(dtype):
    """The torch path normalizes q and k on the fused (windows, N, 3C) projection: the result is
    per-head `scale * q / ||q||` and `k / ||k||` in float32, zero vectors included, laid out
    head-major."""
    from keras_swinv2.backend import cosine_query_key

    windows, n, heads, head_dim = 5, 16, 3, 4
    qkv = np.random.default_rng(0).standard_normal((windows, n, 3 * heads * head_dim))
    qkv[1, 2, :head_dim] = 0.0  # one query of head 0 is zero
    qkv = torch.tensor(qkv, dtype=dtype)
    scale = torch.tensor([2.0, 10.0, 100.0]).reshape(heads, 1, 1)
    views = qkv.reshape(windows, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k = cosine_query_key(qkv, views[0], views[1], heads, scale)
    assert q.dtype == k.dtype == torch.float32
    assert q.shape == k.shape == (windows, heads, n, head_dim)
    assert q.is_contiguous() and k.is_contiguous()  # head-major: q k^T reads them without a copy
    split = qkv.double().numpy().reshape(windows, n, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
    norms = np.maximum(np.linalg.norm(split, axis=-1, keepdims=True), 1e-12)
    np.testing.assert_allclose(q.numpy(), split[0] / norms[0] * scale.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(k.numpy(), split[1] / norms[1], rtol=1e-6, atol=1e-6)
    assert not q[1, 0, 2].any()


def test_precomputed_bias_is_used_as_given():
    """`bias=` replaces the layer's own position bias (shared by chunks of one block)."""
    layer = WindowAttention(8, 2, 4)
    x = np.random.default_rng(0).standard_normal((3, 16, 8)).astype("float32")
    layer(x)
    randomize_keras(layer, seed=2)  # a position bias that varies across pairs (at init it is nearly flat)
    own = to_numpy(layer(x))
    bias = layer.bias_layer.bias()
    np.testing.assert_allclose(to_numpy(layer(x, bias=bias)), own, rtol=0, atol=1e-6)
    shifted = to_numpy(layer(x, bias=ops.convert_to_tensor(to_numpy(bias) + 5.0)))
    np.testing.assert_allclose(shifted, own, rtol=0, atol=1e-5)  # softmax ignores a constant shift
    assert np.abs(to_numpy(layer(x, bias=ops.zeros_like(bias))) - own).max() > 1e-4


def test_attention_softmax_matches_and_has_no_denormals_on_torch():
    """Masked logits (-100) give probabilities near e^-100, float32 denormals; on torch they
    become 0 (slow matrix products otherwise), everywhere the result is the softmax's."""
    logits = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype("float32") * 3
    logits[..., 8:] -= 100.0
    expected = softmax(logits.astype("float64"))
    assert ((expected > 0) & (expected < np.finfo("float32").tiny)).any()  # the case at hand
    probs = to_numpy(attention_softmax(ops.convert_to_tensor(logits)))
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-30)
    if keras.backend.backend() != "torch":
        return
    assert not ((probs > 0) & (probs < np.finfo("float32").tiny)).any()
    weights = torch.from_numpy(np.random.default_rng(1).standard_normal(logits.shape).astype("float32"))
    grads = []
    for fn in (attention_softmax, lambda t: torch.softmax(t, dim=-1)):
        x = torch.from_numpy(logits).requires_grad_(True)
        (fn(x) * weights).sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("rates", [dict(attention_dropout_rate=0.5), dict(dropout_rate=0.5)])
def test_dropout_acts_in_training_only(rates):
    """Dropout layers are skipped when they cannot drop (inference, rate 0), never in training."""
    layer = WindowAttention(8, 2, 4, **rates)
    x = np.random.default_rng(0).standard_normal((3, 16, 8)).astype("float32")
    layer.build((3, 16, 8))
    randomize_keras(layer, seed=1)
    inference = to_numpy(layer(x))
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), inference)
    assert np.abs(to_numpy(layer(x, training=True)) - inference).max() > 1e-3
    plain = WindowAttention(8, 2, 4)
    plain.build((3, 16, 8))
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(plain(x, training=True)), inference, rtol=0, atol=1e-6)


def test_mlp_dropout_acts_in_training_only():
    from keras_swinv2.layers.block import Mlp

    mlp = Mlp(8, 16, dropout_rate=0.5)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype("float32")
    inference = to_numpy(mlp(x))
    np.testing.assert_array_equal(to_numpy(mlp(x, training=False)), inference)
    assert np.abs(to_numpy(mlp(x, training=True)) - inference).max() > 1e-3


@pytest.fixture
def fused_attention():
    """`backend.set_fused_attention`, put back to automatic after the test."""
    from keras_swinv2 import backend

    yield backend.set_fused_attention
    backend.set_fused_attention(None)


def test_fused_path_matches_the_plain_path_forward_and_backward(fused_attention, monkeypatch):
    """The accelerator path (`ops.dot_product_attention`, the position bias plus the shift mask as
    its bias), forced on this CPU: the same logits as the plain path, and the same SGD step, so
    the gradients of the weights, the temperature and the CPB MLP through the fused kernel agree."""
    from helpers import images, small_model

    x = images()
    y = np.array([0, 3])
    calls = []
    kernel = ops.dot_product_attention
    monkeypatch.setattr(ops, "dot_product_attention", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    results = {}
    for fused in (False, True):
        fused_attention(fused)
        keras.utils.set_random_seed(0)
        model = small_model(seed=3)
        logits = to_numpy(model(x, training=False))
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(True))
        model.train_on_batch(x, y)
        results[fused] = logits, [w.copy() for w in model.get_weights()]
        assert bool(calls) == fused, len(calls)  # the forced path is the one taken
    assert max_abs_diff(results[True][0], results[False][0]) <= 2e-5
    initial = small_model(seed=3).get_weights()
    moved = 0
    for before, plain, fused in zip(initial, results[False][1], results[True][1]):
        np.testing.assert_allclose(fused - before, plain - before, rtol=1e-3, atol=2e-6)
        moved += bool(np.any(plain != before))
    assert moved > 0.9 * len(initial)  # nearly every weight took a step: the comparison is not vacuous
    with pytest.raises(ValueError, match="set_fused_attention takes True, False or None; got 'yes'"):
        fused_attention("yes")
