"""tf.distribute training, TensorFlow only: model.fit on 2 and 4 devices, `DistributedTrainer` on
MirroredStrategy and on two real MultiWorkerMirroredStrategy worker processes, clipping after the
all-reduce, ZeRO-1 (sharded optimizer state) with resume on another device count, mixed precision.

The runs happen in subprocesses (tests/distribute_tf_worker.py), started once for the module:
logical devices and TF_CONFIG must be set before TensorFlow starts.
"""

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import keras

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute: TensorFlow only")

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribute_tf_worker.py")
CLIP = 0.02  # as in the worker


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Runs:
    """Results of one subprocess: `loss(run)`, `weights(run)`, `[key]`."""

    def __init__(self, path):
        with np.load(path) as f:
            self.arrays = dict(f)

    def __getitem__(self, key):
        return self.arrays[key]

    def loss(self, run):
        return self.arrays[f"{run}/loss"]

    def weights(self, run):
        count = sum(k.startswith(f"{run}/w") for k in self.arrays)
        return [self.arrays[f"{run}/w{j}"] for j in range(count)]


def _sharded_bytes(sizes, replicas, scalars=12):
    """AdamW's m and v, ceil(n / N) float32 each, plus the replicated step count (int64) and learning rate."""
    return sum(2 * 4 * math.ceil(n / replicas) for n in sizes) + scalars


def _diff(a, b):
    """Largest absolute difference between two weight lists."""
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("distribute_tf")
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    commands = {"devices": env}
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        commands[f"worker{index}"] = dict(env, TF_CONFIG=json.dumps(config))
    processes = {}
    for name, process_env in commands.items():
        role = "devices" if name == "devices" else "worker"
        with open(out / f"{name}.log", "w") as log:
            processes[name] = subprocess.Popen(
                [sys.executable, WORKER, role, str(out)], env=process_env, stdout=log, stderr=subprocess.STDOUT
            )
    try:
        for process in processes.values():
            process.wait(timeout=900)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for name, process in processes.items():
        assert process.returncode == 0, (out / f"{name}.log").read_text()[-3000:]
    return {"out": out, **{name: Runs(out / f"{name}.npz") for name in commands}}


def test_model_fit_on_2_and_4_devices_equals_one_device(runs, report):
    r = runs["devices"]
    for n in (2, 4):
        np.testing.assert_allclose(r.loss(f"fit{n}"), r.loss("fit1"), rtol=1e-5)
        # Adam moves each weight by ~lr = 1e-3 per step whatever the gradient's size, so summation
        # order (1 vs 4 replicas) shows in near-zero gradient components (up to 1e-6 seen).
        for got, want in zip(r.weights(f"fit{n}"), r.weights("fit1"), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
        report(test="model_fit_mirrored", replicas=n, max_weight_diff=_diff(r.weights(f"fit{n}"), r.weights("fit1")))


def test_trainer_clips_the_summed_gradient_like_one_device(runs, report):
    r = runs["devices"]
    assert r["grad_norm"] > 10 * CLIP  # the clipping binds
    np.testing.assert_allclose(r.loss("t1")[0], r["loss0"], rtol=1e-6)  # loss = mean over the global batch
    np.testing.assert_allclose(r.loss("t2"), r.loss("t1"), rtol=1e-6)
    assert r.loss("t1")[-1] < r.loss("t1")[0] - 0.1
    assert _diff(r.weights("t2"), r.weights("t1")) < 1e-6
    report(
        test="clip_after_all_reduce",
        grad_norm=float(r["grad_norm"]),
        clip=CLIP,
        trainer_2_replicas_vs_1=_diff(r.weights("t2"), r.weights("t1")),
        keras_fit_global_clipnorm_2_replicas_vs_1=_diff(r.weights("fitclip2"), r.weights("t1")),
    )


def test_multi_worker_trainer_matches_one_process(runs, report):
    w0, w1, r = runs["worker0"], runs["worker1"], runs["devices"]
    for run in ("mw", "mwz"):  # plain, ZeRO-1
        for a, b in zip(w0.weights(run), w1.weights(run), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(w0.loss(run), r.loss("t1"), rtol=1e-6)
        assert _diff(w0.weights(run), r.weights("t1")) < 1e-6
        report(test="multi_worker", run=run, max_weight_diff_vs_one_process=_diff(w0.weights(run), r.weights("t1")))
    assert list(w0["bytes_mwz"]) == list(w1["bytes_mwz"]) == [_sharded_bytes(r["sizes"], 2)]
    with np.load(runs["out"] / "mwz.npz") as saved:
        for j, w in enumerate(w0.weights("mwz")):
            np.testing.assert_array_equal(saved[f"model/{j}"], w)
        assert saved["optimizer/0"] == 5  # the step count, first of AdamW's variables


def test_zero1_equals_unsharded_training_and_shards_the_state(runs, report):
    r = runs["devices"]
    np.testing.assert_array_equal(r.loss("z2"), r.loss("t2"))
    assert _diff(r.weights("z2"), r.weights("t2")) < 1e-6
    assert _diff(r.weights("z2"), r.weights("t1")) < 1e-6
    assert _diff(r.weights("z4"), r.weights("t1")) < 1e-6
    unsharded = int(r["bytes_unsharded"])
    assert unsharded == _sharded_bytes(r["sizes"], 1)
    for n in (2, 4):
        per_device = r[f"bytes_z{n}"]
        assert len(per_device) == n
        assert all(b == _sharded_bytes(r["sizes"], n) for b in per_device)
        assert per_device[0] < unsharded / n * 1.01
        report(
            test="zero1",
            replicas=n,
            max_weight_diff_vs_one_device=_diff(r.weights(f"z{n}"), r.weights("t1")),
            state_bytes_per_device=int(per_device[0]),
            state_bytes_unsharded=unsharded,
            ratio=float(per_device[0] / unsharded),
        )


def test_zero1_checkpoint_resumes_on_another_device_count(runs, report):
    r = runs["devices"]
    np.testing.assert_allclose(r.loss("z2resumed"), r.loss("z4")[3:], rtol=1e-6)
    np.testing.assert_allclose(r.loss("t1resumed"), r.loss("z4")[3:], rtol=1e-6)
    assert _diff(r.weights("z2resumed"), r.weights("z4")) < 1e-6
    assert _diff(r.weights("t1resumed"), r.weights("z4")) < 1e-6
    report(
        test="zero1_resume_from_4_replicas",
        on_2_sharded=_diff(r.weights("z2resumed"), r.weights("z4")),
        on_1_unsharded=_diff(r.weights("t1resumed"), r.weights("z4")),
    )


def test_mixed_float16_loss_scaling_in_the_custom_loop(runs):
    r = runs["devices"]
    for run in ("mp2", "mpz2"):
        loss = r.loss(run)
        assert r[f"{run}/skipped_first"]  # 2**20 overflows float16: the step is skipped
        skipped = math.log2(2.0**20 / r[f"{run}/scale"])  # each skip halves the scale (no growth yet)
        assert skipped >= 1 and skipped == int(skipped)
        assert r[f"{run}/iterations"] == len(loss) - skipped
        assert np.all(np.isfinite(loss)) and loss[-1] < loss[1] - 0.1
    np.testing.assert_array_equal(r.loss("mpz2"), r.loss("mp2"))
    assert _diff(r.weights("mpz2"), r.weights("mp2")) == 0.0
