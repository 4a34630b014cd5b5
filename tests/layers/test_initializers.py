"""The host-side truncated normal: its distribution, reproducibility and serialisation."""

import numpy as np

import keras

from keras_swinv2.layers.initializers import TruncatedNormal

from helpers import SMALL, build


def test_truncated_at_two_standard_deviations_with_the_right_spread():
    values = keras.ops.convert_to_numpy(TruncatedNormal(stddev=0.02, seed=3)((512, 512)))
    assert values.shape == (512, 512) and values.dtype == np.float32
    assert np.abs(values).max() <= 0.04
    # the standard deviation of N(0, 1) truncated to [-2, 2] is 0.8796
    assert abs(values.std() / 0.02 - 0.8796) < 0.005 and abs(values.mean()) < 2e-4


def test_reproducible_per_seed_and_different_per_call():
    a, b = TruncatedNormal(seed=1), TruncatedNormal(seed=1)
    first, second = keras.ops.convert_to_numpy(a((64,))), keras.ops.convert_to_numpy(a((64,)))
    np.testing.assert_array_equal(first, keras.ops.convert_to_numpy(b((64,))))
    assert not np.array_equal(first, second)
    restored = TruncatedNormal.from_config(TruncatedNormal(0.5, seed=7).get_config())
    assert restored.stddev == 0.5 and restored.seed == 7


def test_a_model_built_after_set_random_seed_starts_from_the_same_weights():
    keras.utils.set_random_seed(11)
    first = build(**SMALL, input_shape=(32, 32, 3), classes=5).get_weights()
    keras.utils.set_random_seed(11)
    second = build(**SMALL, input_shape=(32, 32, 3), classes=5).get_weights()
    assert len(first) == len(second) > 20
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)
