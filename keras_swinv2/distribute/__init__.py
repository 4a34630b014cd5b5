"""Train big across devices: tf.distribute training loop, and ZeRO stage 1 on TF and JAX.

TensorFlow (`tf_training`): `DistributedTrainer` (a custom loop for the default,
Mirrored and MultiWorkerMirrored strategies, clipping after the all-reduce) and
`ShardedOptimizer` (ZeRO-1 inside tf.distribute). JAX (`jax_zero`):
`shard_optimizer_state` gives a Keras optimizer's slots a sharded layout under
`keras.distribution`; `slot_layout`, `bytes_per_device`.

Names are imported on first use, so this package imports under any backend.
"""

import importlib

_EXPORTS = {
    "DistributedTrainer": "tf_training",
    "ShardedOptimizer": "tf_training",
    "shard_optimizer_state": "jax_zero",
    "slot_layout": "jax_zero",
    "bytes_per_device": "jax_zero",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
