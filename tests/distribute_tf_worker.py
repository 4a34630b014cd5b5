"""Subprocess side of tests/test_distribute_tf.py (TensorFlow only).

    python distribute_tf_worker.py devices OUT   # 4 logical CPUs: model.fit, trainer, ZeRO-1, resume
    python distribute_tf_worker.py worker OUT    # one MultiWorkerMirroredStrategy worker (TF_CONFIG)

Writes `OUT/devices.npz` (or `OUT/worker<i>.npz`): loss histories and final
weights of each run, keyed `<run>/loss` and `<run>/w<j>`, plus measured numbers.
"""

import json
import math
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROLE, OUT = sys.argv[1], sys.argv[2]
if ROLE == "devices":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
    STRATEGIES = {1: tf.distribute.get_strategy()}
    for n in (2, 4):
        # Two MirroredStrategy on different device sets in one process collide in the default
        # CPU collectives ("joining a group with size 4, but that group has size 2").
        devices = [f"/cpu:{i}" for i in range(n)]
        STRATEGIES[n] = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
else:
    WORKER = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402

import keras_swinv2  # noqa: E402
from keras_swinv2.distribute.tf_training import DistributedTrainer  # noqa: E402

GLOBAL_BATCH = 8
CLIP = 0.02  # far below the gradients' global norm (recorded as "grad_norm"): clipping binds
rng = np.random.RandomState(0)
X = rng.normal(size=(GLOBAL_BATCH, 16, 16, 3)).astype("float32")
Y = rng.randint(0, 5, size=(GLOBAL_BATCH,))


def build(**kwargs):
    backbone = keras_swinv2.SwinV2Backbone(
        embed_dim=16,
        depths=(1, 1),
        num_heads=(2, 4),
        window_size=4,
        image_shape=(16, 16, 3),
        drop_path_rate=0.0,
        **kwargs,
    )
    return keras_swinv2.SwinV2ImageClassifier(backbone, 5, activation="softmax")


keras.utils.set_random_seed(0)
INIT = build().get_weights()


def dataset():
    """One global batch: each epoch of every run is one step on the same examples."""
    return tf.data.Dataset.from_tensor_slices((X, Y)).batch(GLOBAL_BATCH)


def per_replica_dataset(context):
    """The same batch for `distribute_datasets_from_function`: each input pipeline's share."""
    data = dataset().unbatch().shard(context.num_input_pipelines, context.input_pipeline_id)
    return data.batch(context.get_per_replica_batch_size(GLOBAL_BATCH))


def trainer(strategy, shard=False, mixed=False):
    """A fresh model with `INIT` weights and its `DistributedTrainer`.

    Default: `SwinV2AdamW` (layer decay, no-decay list) with global-norm
    clipping. `mixed`: mixed_float16, SGD with momentum, no clipping (so a
    gradient off by a factor would show), under dynamic loss scaling that
    starts at 2**20, which overflows float16 in the first step.
    """
    with strategy.scope():
        model = build(dtype="mixed_float16") if mixed else build()
        model.set_weights(INIT)
        if mixed:
            optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**20)
        else:
            optimizer = keras_swinv2.swinv2_adamw(model, 1e-3, layer_decay=0.9, global_clipnorm=CLIP)
    return DistributedTrainer(model, optimizer, "sparse_categorical_crossentropy", strategy, shard)


def record(results, name, losses, model):
    results[f"{name}/loss"] = np.asarray(losses)
    for j, w in enumerate(model.get_weights()):
        results[f"{name}/w{j}"] = w


def keras_fit(results, name, strategy, clip=None):
    with strategy.scope():
        model = build()
        model.set_weights(INIT)
        optimizer = keras_swinv2.swinv2_adamw(model, 1e-3, layer_decay=0.9, global_clipnorm=clip)
        model.compile(optimizer, "sparse_categorical_crossentropy")
    history = model.fit(X, Y, batch_size=GLOBAL_BATCH, epochs=5, shuffle=False, verbose=0)
    record(results, name, history.history["loss"], model)


def run_devices():
    results = {}
    s1, s2, s4 = STRATEGIES[1], STRATEGIES[2], STRATEGIES[4]
    for n in (1, 2, 4):  # plain model.fit
        keras_fit(results, f"fit{n}", STRATEGIES[n])
    keras_fit(results, "fitclip2", s2, clip=CLIP)  # Keras' own clipping under tf.distribute

    model = build()
    model.set_weights(INIT)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(Y, model(X)))
    results["loss0"] = loss
    results["grad_norm"] = tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables))

    trainers = {}
    for name, strategy, shard in [("t1", s1, False), ("t2", s2, False), ("z2", s2, True)]:
        trainers[name] = t = trainer(strategy, shard)
        record(results, name, t.fit(dataset(), epochs=5)["loss"], t.model)
    # ZeRO-1 on 4 replicas: 3 steps, checkpoint, 2 more steps.
    z4 = trainer(s4, shard=True)
    first = z4.fit(dataset(), epochs=3)["loss"]
    z4.save(os.path.join(OUT, "z4.npz"))
    record(results, "z4", first + z4.fit(dataset(), epochs=2)["loss"], z4.model)
    results["sizes"] = [math.prod(v.shape) for v in z4.model.trainable_variables]
    results["bytes_unsharded"] = sum(np.asarray(v).nbytes for v in trainers["t1"].optimizer.variables)
    results["bytes_z2"] = list(trainers["z2"].optimizer.state_bytes_per_device().values())
    results["bytes_z4"] = list(z4.optimizer.state_bytes_per_device().values())
    # Resume the 4-replica checkpoint on 2 replicas (sharded) and on 1 (unsharded Keras optimizer).
    for name, strategy, shard in [("z2resumed", s2, True), ("t1resumed", s1, False)]:
        t = trainer(strategy, shard)
        t.load(os.path.join(OUT, "z4.npz"))
        record(results, name, t.fit(dataset(), epochs=2)["loss"], t.model)
    # mixed_float16 with dynamic loss scaling; 2**20 overflows float16 at first: skipped steps.
    for name, shard in [("mp2", False), ("mpz2", True)]:
        t = trainer(s2, shard, mixed=True)
        losses = t.fit(dataset(), epochs=1)["loss"]
        results[f"{name}/skipped_first"] = all(np.array_equal(a, b) for a, b in zip(INIT, t.model.get_weights()))
        losses += t.fit(dataset(), epochs=7)["loss"]
        results[f"{name}/scale"] = float((t.optimizer.optimizer if shard else t.optimizer).dynamic_scale.numpy())
        results[f"{name}/iterations"] = int(t.optimizer.iterations.numpy())
        record(results, name, losses, t.model)
    np.savez(os.path.join(OUT, "devices.npz"), **results)


def run_worker():
    results = {}
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    for name, shard, data in [("mw", False, dataset()), ("mwz", True, per_replica_dataset)]:
        t = trainer(WORKER, shard)
        record(results, name, t.fit(data, epochs=5)["loss"], t.model)
        if shard:
            results["bytes_mwz"] = list(t.optimizer.state_bytes_per_device().values())
            t.save(os.path.join(OUT, "mwz.npz"))  # both workers gather, the chief writes
    np.savez(os.path.join(OUT, f"worker{task}.npz"), **results)


if __name__ == "__main__":
    if ROLE == "devices":
        run_devices()
    else:
        run_worker()
