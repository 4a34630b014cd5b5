"""Kill `swinv2 finetune` mid-run with SIGKILL, start it again: it ends with the same weights."""

import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np

import keras

ARGS = [
    "finetune",
    "--data",
    "digits",
    "--model",
    "tiny",
    "--weights",
    "none",
    "--image-size",
    "16",
    "--window-size",
    "2",
    "--embed-dim",
    "16",
    "--depths",
    "1",
    "1",
    "--num-heads",
    "2",
    "4",
    "--epochs",
    "5",
    "--batch-size",
    "64",
    "--lr",
    "2e-3",
    "--crop-scale",
    "0.5",
    "1.0",
    # every source of randomness on: DropPath, crops, flips, MixUp/CutMix switch, erasing, EMA
    "--drop-path",
    "0.2",
    "--mixup",
    "0.8",
    "--cutmix",
    "1.0",
    "--erasing",
    "0.25",
    "--ema",
    "0.9",
    "--verbose",
    "2",
]


def _command(output):
    code = "import sys; from keras_swinv2.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *ARGS, "--output", str(output)]


def _env():
    return dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")


def _epochs_done(output):
    """The newest committed epoch (its `state-N.json` commit record)."""
    try:
        names = os.listdir(output)
    except OSError:
        return 0
    return max((int(n[len("state-") : -len(".json")]) for n in names if re.match(r"^state-\d+\.json$", n)), default=0)


def _weights(path):
    values = {}

    def read(name, obj):
        if isinstance(obj, h5py.Dataset):
            values[name] = obj[()]

    with h5py.File(path) as f:
        f.visititems(read)
    return values


def test_kill_and_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, report):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    subprocess.run(_command(straight), env=_env(), check=True, capture_output=True, timeout=600)

    process = subprocess.Popen(_command(interrupted), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while _epochs_done(interrupted) < 1 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    process.kill()
    assert process.wait() == -9, "the run finished before it could be killed"
    done = _epochs_done(interrupted)
    assert 1 <= done < 5

    resumed = subprocess.run(_command(interrupted), env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming {interrupted} after epoch {done} of 5." in resumed.stderr

    a, b = _weights(straight / "state-5.weights.h5"), _weights(interrupted / "state-5.weights.h5")
    assert a.keys() == b.keys() and len(a) > 50  # model weights and optimizer slots (moments, EMA)
    worst = max(float(np.max(np.abs(a[k].astype("float64") - b[k].astype("float64")), initial=0.0)) for k in a)
    report(test="kill_resume", killed_after_epoch=done, max_abs_diff=worst)
    assert worst == 0.0
    logs_a = (straight / "log.csv").read_text().splitlines()
    logs_b = (interrupted / "log.csv").read_text().splitlines()
    assert len(logs_a) == 6 and logs_a == logs_b
