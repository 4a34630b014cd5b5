"""Weight initialisation drawn on the host with numpy, identical on every backend.

Keras' random initialisers run the backend's random ops; on JAX each new weight shape compiles an
XLA program (SwinV2-T: 86 programs, ~14 s of its first build on a 2-core CPU). Drawing with numpy
costs no compilation, and a model built after `keras.utils.set_random_seed(s)` starts from the
same weights on TensorFlow, JAX and PyTorch.
"""

import random

import numpy as np

import keras


@keras.saving.register_keras_serializable(package="keras_swinv2")
class TruncatedNormal(keras.initializers.Initializer):
    """Normal(0, stddev) truncated at two standard deviations (redrawn beyond), as timm's `trunc_normal_`.

    Args:
        stddev: float, standard deviation before truncation.
        seed: int or None. None draws one from Python's `random` (which
            `keras.utils.set_random_seed` seeds), as Keras' initialisers do.
            Successive calls of one initialiser give different values.
    """

    def __init__(self, stddev=0.02, seed=None):
        self.stddev = float(stddev)
        self._init_seed = seed
        self.seed = seed if seed is not None else random.randint(1, 10**9)
        self._calls = 0

    def __call__(self, shape, dtype=None):
        rng = np.random.default_rng((self.seed, self._calls))
        self._calls += 1
        values = rng.standard_normal(int(np.prod(shape)), dtype=np.float32)
        outside = np.abs(values) > 2.0
        while outside.any():
            values[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
            outside = np.abs(values) > 2.0
        values = (values * self.stddev).reshape(shape)
        return keras.ops.convert_to_tensor(values, dtype=dtype or keras.config.floatx())

    def get_config(self):
        return {"stddev": self.stddev, "seed": self._init_seed}
