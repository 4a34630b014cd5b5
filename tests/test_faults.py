"""Faults a weights cache and a run directory must survive: concurrent processes, bit rot, stalled
mirrors, full disks, kills mid-write, damaged resume states, NaN checkpoints.

Everything here is backend-independent file and network handling: it runs once, on the TensorFlow
pass. Helper processes use Keras' numpy backend (the cheapest to import). Network traffic goes to
a loopback server only; every wait is bounded.
"""

import dataclasses
import functools
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import keras
import keras_swinv2

from keras_swinv2.io_utils import _host, atomic_write, remove_stale_temporaries
from keras_swinv2.training import ResumableTraining, lock_run_directory
from keras_swinv2.weights import CHECKPOINTS, fetch_checkpoint, keras_weight_map, load_weights

from checkpoint_files import save_checkpoint
from helpers import small_model

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="backend-independent: runs once, on the TensorFlow pass"
)
DOWNLOAD_MODULE = sys.modules["keras_swinv2.weights.download"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the publish folder; a first path segment picks a misbehaviour:

    `/slow/...` waits 1 s before answering; `/stall/...` never answers; `/trickle/...` sends the
    headers, then 1 KiB every 0.3 s; `/flaky/...` answers 503 to the first request of each
    path, then serves; `/reset/...` drops the first connection of each path without a reply;
    `/error500/...` always answers 500.
    """

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        mode, _, rest = self.path.lstrip("/").partition("/")
        seen = self.server.requests.count(self.path)
        if mode == "slow":
            time.sleep(1.0)
        elif mode == "stall":
            time.sleep(20)
            return
        elif mode == "error500" or (mode == "flaky" and seen == 1):
            self.send_error(503 if mode == "flaky" else 500)
            return
        elif mode == "reset" and seen == 1:
            self.close_connection = True
            return
        elif mode == "trickle":
            data = open(self.translate_path("/" + rest), "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for start in range(0, min(len(data), 40 << 10), 1 << 10):
                    self.wfile.write(data[start : start + 1024])
                    self.wfile.flush()
                    time.sleep(0.3)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
                pass
            return
        if mode in ("slow", "flaky", "reset"):
            self.path = "/" + rest
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.daemon_threads = True
    httpd.requests = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.root = root
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()


@pytest.fixture
def cache(monkeypatch, tmp_path, server):
    monkeypatch.setenv("KERAS_SWINV2_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_SWINV2_BASE_URL", server.url)
    monkeypatch.delenv("KERAS_SWINV2_SOURCE", raising=False)
    monkeypatch.setattr(DOWNLOAD_MODULE, "BACKOFF_SECONDS", 0.05)
    return tmp_path / "cache"


def _fake(name):
    base = CHECKPOINTS["swinv2_tiny_window8_256"]
    return dataclasses.replace(base, name=name, timm_id=f"timm/{name}.test", official_file=None, sha256={})


def _state(seed=0, size=(64, 32)):
    rng = np.random.default_rng(seed)
    return {
        "patch_embed.proj.weight": rng.normal(size=(8, 3, 4, 4)).astype("float32"),
        "layers.1.downsample.reduction.weight": rng.normal(size=size).astype("float32"),
    }


def _publish(server, name, state):
    path = server.root / f"timm/{name}.test/resolve/main/model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state, path)
    return path


def _requests(server, name):
    return [r for r in server.requests if f"/{name}.test/" in r]


def _files(directory):
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and p.parent.name != "locks")


def _python(code, *args, env=None):
    """Starts a helper process running `code` with `args` (numpy backend: fast import)."""
    env = dict(os.environ, KERAS_BACKEND="numpy", TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    tests = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, seconds=60, what="condition"):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


FETCH = """
    import dataclasses, json, os, sys, time
    from keras_swinv2.weights import CHECKPOINTS, fetch_checkpoint
    name, ready, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    checkpoint = dataclasses.replace(
        CHECKPOINTS["swinv2_tiny_window8_256"], name=name, timm_id=f"timm/{name}.test", official_file=None, sha256={}
    )
    open(os.path.join(ready, str(os.getpid())), "w").close()
    while len(os.listdir(ready)) < count:  # start together
        time.sleep(0.01)
    state = fetch_checkpoint(checkpoint)
    print(json.dumps({k: float(v.astype("float64").sum()) for k, v in state.items()}))
"""


# ------------------------------------------------------------------ weights cache


def test_concurrent_first_loads_all_succeed_and_download_once(cache, server, tmp_path):
    state = _state(1)
    _publish(server, "shared", state)
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {"KERAS_SWINV2_BASE_URL": server.url + "/slow"}  # the download takes > 1 s: the others must wait
    processes = [_python(FETCH, "shared", ready, 3, env=env) for _ in range(3)]
    outputs = [p.communicate(timeout=240) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    expected = {k: float(v.astype("float64").sum()) for k, v in state.items()}
    assert [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs] == [expected] * 3
    assert len(_requests(server, "shared")) == 1
    assert _files(cache) == ["shared.json", "shared.safetensors"]  # no temporaries left


def _flip_bytes(path, count=64, offset=None):
    data = bytearray(path.read_bytes())
    start = len(data) // 2 if offset is None else offset
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_bit_rot_in_the_cache_is_caught_and_rebuilt_or_named(cache, server, monkeypatch, caplog):
    state = _state(2)
    _publish(server, "rot", state)
    fetch_checkpoint(_fake("rot"))
    converted = cache / "converted" / "rot.safetensors"
    _flip_bytes(converted)  # inside the tensor data: still a parseable safetensors file
    with caplog.at_level(logging.WARNING, logger="keras_swinv2"):
        again = fetch_checkpoint(_fake("rot"))
    assert len(_requests(server, "rot")) == 2  # rebuilt from the source
    assert f"The cached file {converted} was damaged" in caplog.text and "sha256" in caplog.text
    for k in state:
        np.testing.assert_array_equal(again[k], state[k])

    _flip_bytes(converted)
    monkeypatch.setenv("KERAS_SWINV2_BASE_URL", "http://127.0.0.1:9")  # nothing listens: offline
    with pytest.raises(OSError) as info:
        fetch_checkpoint(_fake("rot"))
    message = str(info.value)
    assert f"The cached file {converted} was damaged (its content does not match the record: sha256" in message
    assert "has been deleted" in message and "Offline? Download one of these files by hand" in message
    assert not converted.exists()


def test_a_stalled_mirror_times_out_naming_the_url(cache, server, monkeypatch):
    _publish(server, "stalled", _state(3))
    monkeypatch.setenv("KERAS_SWINV2_TIMEOUT", "1")
    monkeypatch.setenv("KERAS_SWINV2_RETRIES", "1")
    monkeypatch.setenv("KERAS_SWINV2_BASE_URL", server.url + "/stall")
    start = time.monotonic()
    with pytest.raises(OSError) as info:
        fetch_checkpoint(_fake("stalled"))
    assert time.monotonic() - start < 15
    url = f"{server.url}/stall/timm/stalled.test/resolve/main/model.safetensors"
    assert f"Downloading {url} failed after 2 attempt(s)" in str(info.value)
    assert len(_requests(server, "stalled")) == 2
    assert _files(cache) == []


def test_a_trickling_mirror_counts_as_stalled(cache, server, monkeypatch):
    _publish(server, "trickle", _state(4, size=(256, 256)))  # 256 KiB: ~75 s at 1 KiB / 0.3 s
    monkeypatch.setenv("KERAS_SWINV2_TIMEOUT", "1")
    monkeypatch.setenv("KERAS_SWINV2_RETRIES", "0")
    monkeypatch.setenv("KERAS_SWINV2_BASE_URL", server.url + "/trickle")
    start = time.monotonic()
    with pytest.raises(OSError, match=r"trickle/timm/trickle.test/.* failed after 1 attempt\(s\): stalled: \d+ bytes"):
        fetch_checkpoint(_fake("trickle"))
    assert time.monotonic() - start < 10
    assert _files(cache) == []


@pytest.mark.parametrize("mode", ["flaky", "reset"])
def test_transient_failures_are_retried(cache, server, monkeypatch, mode):
    state = _state(5)
    _publish(server, f"{mode}_ok", state)
    monkeypatch.setenv("KERAS_SWINV2_BASE_URL", f"{server.url}/{mode}")
    got = fetch_checkpoint(_fake(f"{mode}_ok"))
    np.testing.assert_array_equal(got["patch_embed.proj.weight"], state["patch_embed.proj.weight"])
    assert len(_requests(server, f"{mode}_ok")) == 2


def test_server_errors_are_retried_a_bounded_number_of_times_and_404_never(cache, server, monkeypatch):
    _publish(server, "always500", _state(6))
    monkeypatch.setenv("KERAS_SWINV2_RETRIES", "3")
    monkeypatch.setenv("KERAS_SWINV2_BASE_URL", server.url + "/error500")
    with pytest.raises(OSError, match=r"failed after 4 attempt\(s\): HTTP 500"):
        fetch_checkpoint(_fake("always500"))
    assert len(_requests(server, "always500")) == 4
    monkeypatch.setenv("KERAS_SWINV2_BASE_URL", server.url)
    with pytest.raises(OSError, match=r"model.safetensors failed: HTTP 404"):
        fetch_checkpoint(_fake("missing"))
    assert len(_requests(server, "missing")) == 1


def test_bad_timeout_setting_is_named(cache, monkeypatch):
    monkeypatch.setenv("KERAS_SWINV2_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"\$KERAS_SWINV2_TIMEOUT must be a number >= 0; got 'soon'"):
        fetch_checkpoint(_fake("never"))


FILL_DISK = """
    import dataclasses, resource, signal, sys
    from keras_swinv2.weights import CHECKPOINTS, fetch_checkpoint
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
    checkpoint = dataclasses.replace(
        CHECKPOINTS["swinv2_tiny_window8_256"], name="big", timm_id="timm/big.test", official_file=None, sha256={}
    )
    try:
        fetch_checkpoint(checkpoint)
    except OSError as e:
        print(type(e).__name__, e.errno, e)
"""


def test_a_full_disk_raises_oserror_naming_the_path(cache):
    # a file-size limit makes the kernel refuse the write, as a full disk does
    manual = cache / "downloads" / "big.test.safetensors"
    manual.parent.mkdir(parents=True)
    save_checkpoint(_state(7, size=(512, 512)), manual)  # 1 MiB
    process = _python(FILL_DISK, 256 << 10)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    converted = cache / "converted" / "big.safetensors"
    assert out.startswith("OSError 27 ") and f"Cannot write {converted}: " in out and "too large" in out, (
        out + err[-2000:]
    )
    assert _files(cache) == ["big.test.safetensors"]  # the download stays for the next try; no temporaries


HOLD_TEMPORARY = """
    import sys, time
    from keras_swinv2.io_utils import atomic_write

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"x" * 100_000)
        print("writing", flush=True)
        time.sleep(120)

    atomic_write(sys.argv[1], write)
"""


def test_temporaries_of_killed_writers_are_removed_live_ones_kept(tmp_path):
    run = tmp_path / "run"
    killed = _python(HOLD_TEMPORARY, run / "best.keras")
    alive = _python(HOLD_TEMPORARY, run / "state-3.weights.h5")
    try:
        for p in (killed, alive):
            assert p.stdout.readline().strip() == "writing", p.stderr.read()[-2000:]
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        legacy = run / ".log.csv.k2j4l5m6.partial.csv"  # the naming of earlier versions
        legacy.write_text("x")
        names = sorted(p.name for p in run.iterdir())
        assert len(names) == 3 and all(".partial" in n for n in names)
        ResumableTraining(str(run))  # a restart
        left = sorted(p.name for p in run.iterdir())
        assert len(left) == 1 and left[0].startswith(".state-3.weights.h5.") and str(alive.pid) in left[0]
    finally:
        alive.kill()
        alive.wait(timeout=30)
    ResumableTraining(str(run))
    assert list(run.iterdir()) == []


def test_the_cache_removes_its_own_leftovers(cache, server):
    _publish(server, "leftover", _state(8))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    downloads = cache / "downloads"
    downloads.mkdir(parents=True)
    # what a download killed mid-transfer leaves: its writer id names a process that is gone
    (downloads / f".other.safetensors.{_host()}-{dead.stdout.strip()}.k2j4l5m6.partial.safetensors").write_text("x")
    (downloads / "older.pth.partial").write_text("x")  # the naming of earlier versions
    fetch_checkpoint(_fake("leftover"))
    assert _files(cache) == ["leftover.json", "leftover.safetensors"]


def test_a_second_trainer_in_the_same_run_directory_is_refused(tmp_path):
    holder = _python(
        """
        import sys, time
        from keras_swinv2.training import lock_run_directory
        with lock_run_directory(sys.argv[1]):
            print("holding", flush=True)
            time.sleep(120)
        """,
        tmp_path / "run",
    )
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()[-2000:]
        with pytest.raises(RuntimeError, match=r"Another process is training in .*run; wait for it"):
            with lock_run_directory(str(tmp_path / "run")):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with lock_run_directory(str(tmp_path / "run")):  # the kernel released the dead holder's lock
        pass


def test_atomic_write_turns_writer_errors_into_oserror_naming_the_path(tmp_path):
    def broken(tmp):
        raise RuntimeError("the writer's own error type")

    with pytest.raises(OSError, match=r"Cannot write .*out.bin: the writer's own error type"):
        atomic_write(tmp_path / "out.bin", broken)
    assert list(tmp_path.iterdir()) == []
    assert remove_stale_temporaries(tmp_path / "missing") == []


# ------------------------------------------------------------------ resume state


def _trained(directory, epochs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.1), keras.layers.Dense(2)]
    )
    model.compile(optimizer="adamw", loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    callback = ResumableTraining(str(directory), monitor="loss", mode="min", plot=False)
    start = callback.restore(model)
    if start < epochs:
        model.fit(x, x[:, :2], epochs=epochs, initial_epoch=start, batch_size=8, callbacks=[callback], verbose=0)
    return model, callback, start


def test_a_damaged_state_is_named_and_the_previous_one_used(tmp_path, caplog):
    run = tmp_path / "run"
    _trained(run, 3)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("state-")) == [
        "state-2.json",
        "state-2.weights.h5",
        "state-3.json",
        "state-3.weights.h5",
    ]
    _flip_bytes(run / "state-3.weights.h5")  # bit rot inside a variable (model or optimizer)
    with caplog.at_level(logging.WARNING, logger="keras_swinv2"):
        _, callback, start = _trained(run, 2)
    assert start == 2 and [row["epoch"] for row in callback.history] == [1, 2]
    assert f"{run / 'state-3.weights.h5'} (epoch 3) is damaged: sha256" in caplog.text
    assert "resuming from the previous state (epoch 2)" in caplog.text

    # resuming from epoch 2 and training epoch 3 again gives the uninterrupted run's weights
    straight, _, _ = _trained(tmp_path / "straight", 3)
    resumed, _, start = _trained(run, 3)
    assert start == 2
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_truncated_states_are_reported_as_damaged_not_as_another_model(tmp_path):
    run = tmp_path / "run"
    _trained(run, 2)
    for epoch in (1, 2):
        path = run / f"state-{epoch}.weights.h5"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError) as info:
        _trained(run, 3)
    message = str(info.value)
    assert "is damaged and no intact earlier state is left" in message
    assert "state-2.weights.h5 (epoch 2) is damaged" in message and "state-1.weights.h5 (epoch 1) is damaged" in message
    assert "differs" not in message and f"Delete {run}" in message


def test_a_tampered_state_record_is_damaged(tmp_path):
    run = tmp_path / "run"
    _trained(run, 1)
    record = json.loads((run / "state-1.json").read_text())
    record["epoch"] = 7
    (run / "state-1.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"state-1.json is damaged \(its checksum does not match its content\)"):
        _trained(run, 2)


# ------------------------------------------------------------------ non-finite checkpoints


def _as_checkpoint(model):
    """The model's weights as a canonical (timm-layout) state dict."""
    state = {}
    for name, (variable, kind) in keras_weight_map(model).items():
        value = keras.ops.convert_to_numpy(variable)
        state[name] = value.T if kind == "linear" and value.ndim == 2 else value
        if kind == "conv":
            state[name] = value.transpose(3, 2, 0, 1)
    return state


def test_non_finite_checkpoints_are_refused_naming_the_tensors(tmp_path, monkeypatch):
    model = small_model()
    state = _as_checkpoint(model)
    state["layers.1.blocks.0.mlp.fc1.weight"][0, :3] = np.nan
    state["norm.bias"][1] = np.inf
    path = tmp_path / "diverged.safetensors"
    save_checkpoint(state, path)
    target = small_model(seed=1)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(ValueError) as info:
        load_weights(target, str(path))
    message = str(info.value)
    assert f"{path} holds non-finite values in 2 tensor(s)" in message
    assert "layers.1.blocks.0.mlp.fc1.weight (128, 32): 3 NaN" in message
    assert "3 NaN, 0 infinite" in message and "norm.bias (32,): 0 NaN, 1 infinite" in message
    assert "allow_nonfinite=True" in message and "KERAS_SWINV2_ALLOW_NONFINITE=1" in message
    assert all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))  # nothing assigned
    load_weights(target, str(path), allow_nonfinite=True)  # the explicit opt-out
    assert np.isinf(keras.ops.convert_to_numpy(target.backbone.get_layer("norm").beta)).sum() == 1
    monkeypatch.setenv("KERAS_SWINV2_ALLOW_NONFINITE", "1")
    load_weights(small_model(seed=1), str(path))

    monkeypatch.delenv("KERAS_SWINV2_ALLOW_NONFINITE")
    h5 = tmp_path / "diverged.weights.h5"
    target.save_weights(str(h5))  # holds the NaN loaded above
    with pytest.raises(
        ValueError,
        match=r"diverged.weights.h5 holds non-finite values in 2 tensor\(s\):\n  layers/.*norm.*: 0 NaN, 1 infinite",
    ):
        load_weights(small_model(seed=1), str(h5))
    with pytest.raises(ValueError, match=r"diverged.keras holds non-finite values in 2 tensor"):
        keras_swinv2.SwinV2ImageClassifier.from_preset(str(_saved(target, tmp_path / "diverged.keras")))


def _saved(model, path):
    model.save(str(path))
    return path
