"""Linear is Dense with a fused torch path: same weights, same config, same results."""

import numpy as np
import pytest

import keras

from keras_swinv2.layers import Linear


def test_linear_equals_dense():
    x = np.random.default_rng(0).normal(size=(2, 5, 7)).astype("float32")
    for kwargs in (dict(units=4), dict(units=3, use_bias=False), dict(units=6, activation="gelu")):
        linear, dense = Linear(**kwargs), keras.layers.Dense(**kwargs)
        linear.build(x.shape)
        dense.build(x.shape)
        rng = np.random.default_rng(1)
        weights = [rng.normal(size=w.shape).astype("float32") for w in dense.get_weights()]
        linear.set_weights(weights)
        dense.set_weights(weights)
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
