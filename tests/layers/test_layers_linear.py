"""Linear is Dense with a fused torch path: same weights, same config, same results."""

import numpy as np
import pytest

import keras

from keras_swinv2.layers import Linear


def _linear_and_dense(input_shape, **kwargs):
    """A Linear and a Dense built with the same kwargs and the same random weights."""
    linear, dense = Linear(**kwargs), keras.layers.Dense(**kwargs)
    linear.build(input_shape)
    dense.build(input_shape)
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=w.shape).astype("float32") for w in dense.get_weights()]
    linear.set_weights(weights)
    dense.set_weights(weights)
    return linear, dense


def test_linear_equals_dense():
    x = np.random.default_rng(0).normal(size=(2, 5, 7)).astype("float32")
    for kwargs in (dict(units=4), dict(units=3, use_bias=False), dict(units=6, activation="gelu")):
        linear, dense = _linear_and_dense(x.shape, **kwargs)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(linear(x)), keras.ops.convert_to_numpy(dense(x)), rtol=1e-5, atol=1e-5
        )
        assert Linear.from_config(linear.get_config()).get_config() == linear.get_config()


def test_linear_gradients_flow():
    layer = Linear(3)
    x = np.ones((4, 2), "float32")
    model = keras.Sequential([keras.Input((2,)), layer])
    model.compile(optimizer="sgd", loss="mse")
    before = [w.copy() for w in layer.get_weights()]
    model.fit(x, np.zeros((4, 3), "float32"), epochs=1, verbose=0)
    assert all(not np.array_equal(a, b) for a, b in zip(before, layer.get_weights()))


def test_linear_bias_at_call_time():
    x = np.random.default_rng(0).normal(size=(2, 5, 7)).astype("float32")
    bias = np.random.default_rng(1).normal(size=(4,)).astype("float32")
    layer = Linear(4, use_bias=False)
    layer.build(x.shape)
    expected = x @ keras.ops.convert_to_numpy(layer.kernel) + bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, bias=bias)), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="without bias and activation"):
        Linear(4)(x, bias=bias)
    with pytest.raises(ValueError, match="without bias and activation"):
        Linear(4, use_bias=False, activation="relu")(x, bias=bias)


@pytest.mark.parametrize("use_bias", [True, False])
def test_linear_equals_dense_under_mixed_bfloat16(use_bias):
    # on torch the cast kernel is re-laid out row-major: same values as Dense
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    linear, dense = _linear_and_dense(x.shape, units=6, use_bias=use_bias, dtype="mixed_bfloat16")
    out = linear(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    expected = keras.ops.convert_to_numpy(keras.ops.cast(dense(x), "float32"))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")), expected, rtol=2e-2, atol=2e-2
    )
    if not use_bias:
        bias = np.random.default_rng(2).normal(size=(6,)).astype("float32")
        with_bias = keras.ops.convert_to_numpy(keras.ops.cast(linear(x, bias=bias), "float32"))
        np.testing.assert_allclose(with_bias, expected + bias, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_layer_norm_equals_keras_layer_normalization(dtype):
    from keras_swinv2.layers import LayerNorm

    x = np.random.default_rng(0).normal(size=(2, 3, 5, 8)).astype("float32") * 3 + 1
    ours = LayerNorm(epsilon=1e-5, dtype=dtype)
    theirs = keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype)
    ours.build(x.shape), theirs.build(x.shape)
    for layer in (ours, theirs):
        layer.set_weights([np.linspace(0.5, 1.5, 8, dtype="float32"), np.linspace(-0.2, 0.2, 8, dtype="float32")])
    a, b = ours(x), theirs(x)
    assert a.dtype == b.dtype
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(a, "float32")),
        keras.ops.convert_to_numpy(keras.ops.cast(b, "float32")),
        atol=1e-6 if dtype == "float32" else 1e-2,
    )
