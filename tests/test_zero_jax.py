"""ZeRO-1 on JAX: sharded optimizer state under `keras.distribution.DataParallel`.

The distributed checks run `zero_jax_worker.py` twice, in subprocesses with 4
then 2 simulated CPU devices (the device count is fixed when JAX starts):
train and checkpoint on 4, restore and continue on 2.
"""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import keras
from keras.distribution import DataParallel, DeviceMesh, LayoutMap, ModelParallel
from keras_swinv2.distribute.jax_zero import shard_optimizer_state, slot_layout

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution shards only on JAX")

WORKER = os.path.join(os.path.dirname(__file__), "zero_jax_worker.py")
TOLERANCE = 1e-6
# mixed_bfloat16: the sharded and the replicated step are different XLA programs, which add the
# float32 sums of bf16 products in different orders. After 3 AdamW steps at lr 1e-3 the weights
# differ by 1.2e-6 (7e-9 before the attention bias became one tensor broadcast over images): 0.1%
# of one step's update. The bound is 1% of one step's update.
MIXED_TOLERANCE = 1e-5


def _work(mode, devices, directory):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS=flags, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, WORKER, mode, str(directory)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    with open(os.path.join(directory, f"{mode}.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("zero")
    saved = _work("save", 4, directory)
    return types.SimpleNamespace(saved=saved, resumed=_work("resume", 2, directory))


def test_training_equals_one_device(runs, report):
    # 3 steps on 4 devices, and 3 more on 2 devices after a restore, against one device.
    report(test="zero1_jax", diff_4_devices=runs.saved["diff"], diff_resumed_on_2=runs.resumed["diff"])
    assert runs.saved["diff"] <= TOLERANCE
    assert runs.resumed["diff"] <= TOLERANCE


def test_clipping_uses_the_global_gradient(runs):
    # On one device the first step's gradient was clipped to norm `clip` (it is below it
    # otherwise); the clipped steps on 4 devices equal those.
    assert runs.saved["clipped_norm"] == pytest.approx(runs.saved["clip"], rel=1e-4)
    assert runs.saved["diff"] <= TOLERANCE


@pytest.mark.parametrize("run", ["saved", "resumed"])
def test_optimizer_state_split_across_devices(runs, run, report):
    state = getattr(runs, run)["state"]
    devices, total = state["devices"], state["total_bytes"]
    held = state["bytes_per_device"]
    report(
        test="zero1_jax_bytes",
        devices=devices,
        total_bytes=total,
        bytes_per_device=held,
        sharded_fraction=state["sharded_fraction"],
    )
    assert len(held) == devices
    assert set(held.values()) == {state["expected_per_device"]}
    assert state["slots_evenly_sharded"]
    # Replicated: the step count, and on 4 devices stage 0's logit_scale slots (2 heads).
    replicated = [path.split("/", 1)[1] for path, _ in state["replicated"]]
    expected = ["iteration"]
    if devices == 4:
        expected += [f"stage_0_blocks_0_attn_logit_scale_{slot}" for slot in ("momentum", "velocity")]
    assert replicated == expected
    assert held["cpu:0"] <= total / devices + 24
    assert state["sharded_fraction"] > 0.999


def test_without_zero_every_device_holds_everything(runs):
    without = runs.saved["without_zero"]
    assert set(without["bytes_per_device"].values()) == {without["total_bytes"]}
    assert without["total_bytes"] == runs.saved["mixed"]["state"]["total_bytes"]


@pytest.mark.parametrize("run", ["saved", "resumed"])
def test_parameters_stay_replicated(runs, run):
    state = getattr(runs, run)["state"]
    assert state["params_replicated"] and state["params_equal_on_devices"]
    assert len(set(state["param_bytes_per_device"].values())) == 1


def test_checkpoint_gathers_and_reshards(runs):
    checkpoint = runs.saved["checkpoint"]
    assert "optimizer" in checkpoint["groups"]
    assert checkpoint["optimizer_variables_saved"] == checkpoint["optimizer_variables"]
    assert checkpoint["saved_full_shapes"]
    restored = runs.resumed["restored_state"]
    assert runs.resumed["restored_epoch"] == 1
    assert restored["devices"] == 2 and restored["slots_evenly_sharded"]
    assert set(restored["bytes_per_device"].values()) == {restored["expected_per_device"]}


def test_mixed_bfloat16(runs):
    mixed = runs.saved["mixed"]
    # ZeRO against DataParallel without it, same devices: sharding the state changes nothing.
    assert mixed["diff"] <= MIXED_TOLERANCE
    assert mixed["state"]["slot_dtypes"] == ["float32"]
    assert mixed["state"]["slots_evenly_sharded"]
    assert mixed["state"]["params_replicated"]


def _variable(shape, path="dense/kernel"):
    return types.SimpleNamespace(shape=shape, path=path)


def test_slot_layout_rule():
    mesh = DeviceMesh((4,), ["batch"], devices=[f"cpu:{i}" for i in range(4)])
    data_parallel = DataParallel(device_mesh=mesh)
    axes = {
        shape: getattr(slot_layout(_variable(shape), distribution=data_parallel), "axes", None)
        for shape in [(4, 4, 3, 16), (3, 16), (2, 1, 1), (4, 1, 1), (6,), ()]
    }
    assert axes == {
        (4, 4, 3, 16): ("batch", None, None, None),
        (3, 16): (None, "batch"),
        (2, 1, 1): None,
        (4, 1, 1): ("batch", None, None),
        (6,): None,
        (): None,
    }
    single = DataParallel(device_mesh=DeviceMesh((1,), ["batch"], devices=["cpu:0"]))
    assert slot_layout(_variable((4, 4)), distribution=single) is None
    assert slot_layout(_variable((4, 4))) is None  # no distribution set


def test_slot_layout_keeps_model_parallel_axes():
    mesh = DeviceMesh((2, 2), ["batch", "model"], devices=[f"cpu:{i}" for i in range(4)])
    layout_map = LayoutMap(mesh)
    layout_map["dense/kernel"] = (None, "model")
    distribution = ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    assert slot_layout(_variable((6, 8)), distribution=distribution).axes == ("batch", "model")
    assert slot_layout(_variable((3, 8)), distribution=distribution) is None


def test_needs_an_unbuilt_optimizer():
    optimizer = keras.optimizers.Adam()
    optimizer.build([keras.Variable(np.zeros((4,), "float32"))])
    with pytest.raises(ValueError, match="not built"):
        shard_optimizer_state(optimizer)


def test_loss_scale_optimizer_shards_its_inner_optimizer():
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    assert shard_optimizer_state(optimizer) is optimizer
    assert "add_variable_from_reference" in vars(optimizer.inner_optimizer)
    variable = keras.Variable(np.ones((4,), "float32"), name="w")
    optimizer.build([variable])  # no distribution: plain, replicated slots
    slots = [v for v in optimizer.inner_optimizer.variables if v.path.endswith(("_momentum", "_velocity"))]
    assert [tuple(v.shape) for v in slots] == [(4,), (4,)]
