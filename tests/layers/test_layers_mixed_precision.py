"""Mixed precision: a layer given a mixed dtype policy computes in it, sublayers included.

The attention logits, position bias and softmax stay float32 by design (and the
CPB MLP has float32 variables and compute), everything else follows the policy.
"""

import numpy as np
import pytest

import keras

from keras_swinv2.layers import (
    Mlp,
    PatchEmbedding,
    PatchMerging,
    SwinV2Block,
    SwinV2Stage,
    WindowAttention,
)

from swin_layer_helpers import randomize_keras, to_numpy

POLICY = "mixed_float16"


def _sublayers(layer):
    """Compute sublayers that must follow the parent's policy (not the CPB: float32 by design)."""
    if isinstance(layer, PatchEmbedding):
        return {"proj": layer.proj, "norm": layer.norm}
    if isinstance(layer, PatchMerging):
        return {"reduction": layer.reduction, "norm": layer.norm}
    if isinstance(layer, Mlp):
        return {"fc1": layer.fc1, "fc2": layer.fc2}
    if isinstance(layer, WindowAttention):
        return {"qkv": layer.qkv, "proj": layer.proj}
    if isinstance(layer, SwinV2Block):
        subs = {"norm1": layer.norm1, "norm2": layer.norm2, "mlp": layer.mlp, "attn": layer.attn}
        for name, sub in list(subs.items()):
            subs.update({f"{name}.{k}": v for k, v in _sublayers(sub).items()})
        return subs
    if isinstance(layer, SwinV2Stage):
        subs = {"downsample": layer.merge}
        subs.update({f"downsample.{k}": v for k, v in _sublayers(layer.merge).items()})
        for i, block in enumerate(layer.blocks):
            subs[f"blocks_{i}"] = block
            subs.update({f"blocks_{i}.{k}": v for k, v in _sublayers(block).items()})
        return subs
    return {}  # a Keras built-in layer: no sublayers of ours


CASES = {
    "PatchEmbedding": (lambda **kw: PatchEmbedding(8, patch_size=4, **kw), (1, 10, 13, 3)),
    "PatchMerging": (lambda **kw: PatchMerging(4, **kw), (1, 5, 7, 4)),
    "Mlp": (lambda **kw: Mlp(8, 16, **kw), (2, 3, 8)),
    "WindowAttention": (lambda **kw: WindowAttention(8, 2, 4, **kw), (6, 16, 8)),
    "SwinV2Block": (lambda **kw: SwinV2Block(8, 2, window_size=4, shift_size=2, **kw), (1, 6, 10, 8)),
    "SwinV2Stage": (lambda **kw: SwinV2Stage(8, 2, 2, window_size=4, downsample=True, **kw), (1, 12, 20, 4)),
}


def _compare_with_float32(factory, shape, layer):
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype("float32")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # a plain float32 twin, whatever the global policy
    try:
        reference = factory()
        reference.build(shape)
        reference.set_weights(layer.get_weights())
        expected = to_numpy(reference(x))
    finally:
        keras.config.set_dtype_policy(previous)
    out = to_numpy(out).astype("float32")
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, rtol=0, atol=0.02 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("name", list(CASES))
def test_per_layer_mixed_policy_reaches_sublayers(name):
    # SwinV2Model passes `dtype=` to its layers, so a per-layer policy must propagate.
    factory, shape = CASES[name]
    layer = factory(dtype=POLICY)
    layer.build(shape)
    randomize_keras(layer, seed=1)
    wrong = {k: v.dtype_policy.name for k, v in _sublayers(layer).items() if v.dtype_policy.name != POLICY}
    assert not wrong, f"sublayers ignore the parent's {POLICY} policy: {wrong}"
    assert all(v.dtype == "float32" for v in layer.weights)
    _compare_with_float32(factory, shape, layer)


@pytest.fixture
def global_mixed_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICY)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("name", ["WindowAttention", "SwinV2Block"])
def test_global_mixed_policy(name, global_mixed_policy):
    factory, shape = CASES[name]
    layer = factory()
    layer.build(shape)
    randomize_keras(layer, seed=2)
    block = layer if isinstance(layer, SwinV2Block) else None
    attn = block.attn if block is not None else layer
    # The CPB keeps float32 compute under mixed precision.
    assert attn.bias_layer.fc1.compute_dtype == "float32"
    assert keras.backend.standardize_dtype(attn.bias_layer.bias().dtype) == "float32"
    _compare_with_float32(factory, shape, layer)
