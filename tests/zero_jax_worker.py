"""Measures ZeRO-1 (`keras_swinv2.distribute.jax_zero`) on simulated CPU devices; run by test_zero_jax.py.

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
        python tests/zero_jax_worker.py save DIR
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/zero_jax_worker.py resume DIR

`save` trains a tiny SwinV2 on one device for 3 + 3 steps (the reference), and
for 3 steps with ZeRO-1 on all its devices, checkpointing with
`ResumableTraining`; then a mixed_bfloat16 pair on all devices, DataParallel
without and with ZeRO-1. `resume` restores that checkpoint onto all of its own
devices and trains the last 3 steps. Each writes its measurements to
DIR/<mode>.json and prints them.
"""

import json
import os
import sys

import h5py
import jax
import numpy as np

import keras
import keras_swinv2
from keras_swinv2.distribute.jax_zero import bytes_per_device, shard_optimizer_state
from keras_swinv2.training import ResumableTraining

CONFIG = dict(embed_dim=16, depths=(1, 1), num_heads=(2, 4), window_size=4, image_shape=(16, 16, 3), drop_path_rate=0.0)
CLASSES = 8


def swinv2(dtype=None, **config):
    backbone = keras_swinv2.SwinV2Backbone(**config, dtype=dtype)
    return keras_swinv2.SwinV2ImageClassifier(backbone, CLASSES, activation="softmax")


BATCH, STEPS, CLIP = 8, 3, 0.05  # CLIP is below the global gradient norm: clipping acts
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(BATCH * STEPS, 16, 16, 3)).astype("float32"), rng.integers(0, 8, BATCH * STEPS)


def distribute(devices):
    """Sets DataParallel over the first `devices` devices (None: no distribution)."""
    distribution = None
    if devices:
        distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:devices])
    keras.distribution.set_distribution(distribution)


def swin_optimizer(model):
    schedule = dict(total_steps=2 * STEPS, warmup_steps=2, warmup_learning_rate=1e-4)
    return keras_swinv2.swinv2_adamw(model, 1e-3, layer_decay=0.9, global_clipnorm=CLIP, **schedule)


def adamw(model):
    return keras.optimizers.AdamW(1e-3, weight_decay=0.05, global_clipnorm=CLIP)


def build(weights, make_optimizer, zero, dtype=None):
    model = swinv2(**CONFIG, dtype=dtype)
    if weights is not None:
        model.set_weights(weights)
    optimizer = make_optimizer(model)
    if zero:
        shard_optimizer_state(optimizer)
    model.compile(optimizer, loss=LOSS)
    return model


def fit(model, rows=slice(None), **kwargs):
    """Trains on `rows` of the data (batches of BATCH, in order) and returns the weights."""
    x, y = data()
    model.fit(x[rows], y[rows], batch_size=BATCH, shuffle=False, verbose=0, **kwargs)
    return model.get_weights()


def max_diff(a, b):
    return float(max(np.abs(u.astype("float64") - v.astype("float64")).max() for u, v in zip(a, b)))


def clipped_gradient_norm(optimizer):
    """Global norm of the gradient the first step applied: Adam's first moment is `(1 - beta_1) * g`."""
    momenta = [np.asarray(v.value, "float64") for v in optimizer.variables if v.path.endswith("_momentum")]
    return float(np.sqrt(sum(np.sum(m * m) for m in momenta)) / (1.0 - optimizer.beta_1))


def state_report(model):
    """Where the optimizer state and the parameters live, from the JAX arrays' shards."""
    optimizer = model.optimizer
    devices = len(jax.devices())
    slots, replicated = [], []
    for v in optimizer.variables:
        array = v.value
        shards = array.addressable_shards
        entry = dict(
            path=v.path,
            shape=list(array.shape),
            dtype=str(array.dtype),
            nbytes=int(array.nbytes),
            shard_shapes=sorted({tuple(s.data.shape) for s in shards}),
            devices=len(shards),
        )
        (replicated if array.sharding.is_fully_replicated else slots).append(entry)
    params = [v.value for v in model.trainable_variables]
    total = sum(e["nbytes"] for e in slots + replicated)
    sharded = sum(e["nbytes"] for e in slots)
    return dict(
        devices=devices,
        total_bytes=total,
        sharded_bytes=sharded,
        sharded_fraction=sharded / total,
        replicated=[(e["path"], e["shape"]) for e in replicated],
        bytes_per_device=bytes_per_device(optimizer.variables),
        expected_per_device=sharded // devices + (total - sharded),
        slots_evenly_sharded=all(_evenly_sharded(e, devices) for e in slots),
        slot_dtypes=sorted({e["dtype"] for e in slots}),
        params_replicated=all(p.sharding.is_fully_replicated and len(p.addressable_shards) == devices for p in params),
        params_equal_on_devices=all(
            np.array_equal(np.asarray(s.data), np.asarray(p.addressable_shards[0].data))
            for p in params
            for s in p.addressable_shards
        ),
        param_bytes_per_device=bytes_per_device(model.trainable_variables),
    )


def _evenly_sharded(entry, devices):
    """One shard per device, all of one shape: the full shape with one axis divided by `devices`."""
    if entry["devices"] != devices or len(entry["shard_shapes"]) != 1:
        return False
    smaller = [(d, s) for d, s in zip(entry["shape"], entry["shard_shapes"][0]) if d != s]
    return len(smaller) == 1 and smaller[0][0] == smaller[0][1] * devices


def checkpoint_report(path, model):
    """What `save_weights` wrote: the optimizer's variables, each gathered to its full shape."""
    with h5py.File(path, "r") as f:
        groups = sorted(f.keys())
        variables = f["optimizer"]["vars"]
        saved = [tuple(variables[str(i)].shape) for i in range(len(variables))]
    return dict(
        groups=groups,
        optimizer_variables_saved=len(saved),
        optimizer_variables=len(model.optimizer.variables),
        saved_full_shapes=saved == [tuple(v.shape) for v in model.optimizer.variables],
    )


def save(directory):
    devices = len(jax.devices())
    distribute(None)
    keras.utils.set_random_seed(0)
    reference = swinv2(**CONFIG)
    init = reference.get_weights()
    reference.compile(swin_optimizer(reference), loss=LOSS)
    x, y = data()
    reference.train_on_batch(x[:BATCH], y[:BATCH])
    result = dict(clip=CLIP, clipped_norm=clipped_gradient_norm(reference.optimizer))
    after_3 = fit(reference, slice(BATCH, None))
    after_6 = fit(reference)
    np.savez(os.path.join(directory, "reference.npz"), *after_6)

    distribute(devices)
    model = build(init, swin_optimizer, zero=True)
    checkpoints = os.path.join(directory, "checkpoints")
    callback = ResumableTraining(checkpoints, monitor="loss", mode="min", plot=False)
    result["diff"] = max_diff(fit(model, callbacks=[callback]), after_3)
    result["state"] = state_report(model)
    result["checkpoint"] = checkpoint_report(os.path.join(checkpoints, "state-1.weights.h5"), model)

    replicated = build(init, adamw, zero=False, dtype="mixed_bfloat16")
    after_replicated = fit(replicated)
    result["without_zero"] = dict(
        bytes_per_device=bytes_per_device(replicated.optimizer.variables),
        total_bytes=sum(int(v.value.nbytes) for v in replicated.optimizer.variables),
    )
    mixed = build(init, adamw, zero=True, dtype="mixed_bfloat16")
    result["mixed"] = dict(diff=max_diff(fit(mixed), after_replicated), state=state_report(mixed))
    return result


def resume(directory):
    distribute(len(jax.devices()))
    model = build(None, swin_optimizer, zero=True)
    callback = ResumableTraining(os.path.join(directory, "checkpoints"), monitor="loss", mode="min", plot=False)
    epoch = callback.restore(model)
    result = dict(restored_epoch=epoch, restored_state=state_report(model))
    reference = np.load(os.path.join(directory, "reference.npz"))
    after_6 = fit(model, epochs=2, initial_epoch=epoch)
    result["diff"] = max_diff(after_6, [reference[f"arr_{i}"] for i in range(len(reference.files))])
    result["state"] = state_report(model)
    return result


if __name__ == "__main__":
    mode, directory = sys.argv[1:3]
    result = {"save": save, "resume": resume}[mode](directory)
    with open(os.path.join(directory, f"{mode}.json"), "w") as f:
        json.dump(result, f, indent=1, default=list)
    print(json.dumps(result, indent=1, default=list))
