"""How `swinv2` talks to people: fast help, versions, defaults, one-line errors with exit code 2,
Ctrl-C with exit code 130 and how to resume, nothing written before training starts.

Argument handling and messages do not depend on the backend: they run once, on the TensorFlow pass.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import keras

import keras_swinv2_cli
from keras_swinv2.training import lock_run_directory, save_run_config

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="backend-independent: runs once, on the TensorFlow pass"
)
TINY = ["--image-size", "16", "--window-size", "2", "--embed-dim", "16", "--depths", "1", "1", "--num-heads", "2", "4"]


def _swinv2(*args, cwd=None, env=None, timeout=300):
    environment = dict(os.environ, KERAS_BACKEND="tensorflow", **(env or {}))
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command line must be quiet on its own
    code = "import keras_swinv2_cli; keras_swinv2_cli.console()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_and_version_answer_without_importing_keras():
    code = (
        "import sys, contextlib, io, keras_swinv2_cli\n"
        "for argv in (['--help'], ['finetune', '--help'], ['demo', '--help'], ['--version']):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "        keras_swinv2_cli.main(argv)\n"
        "    print(out.getvalue())\n"
        "print('heavy modules:', sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch', 'keras_swinv2') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "heavy modules: []" in out
    assert "finetune" in out and "predict" in out and "pretrain" in out
    # defaults shown, and the demo's differ visibly from finetune's
    finetune_help, demo_help = out.split("usage: swinv2 finetune")[1], out.split("usage: swinv2 demo")[1]
    assert "epochs in all (the schedule spans them) (default: 30)" in " ".join(finetune_help.split())
    assert "(default: 12)" in " ".join(demo_help.split("usage:")[0].split())
    from importlib.metadata import version

    assert f"swinv2 (keras-swinv2) {version('keras-swinv2')}; keras {keras.__version__}" in out


def test_a_user_error_is_one_line_and_exit_code_2(tmp_path):
    result = _swinv2("predict", tmp_path / "cat.jpg", "--weights", tmp_path / "missing.safetensors")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"swinv2 predict: error: No checkpoint file at '{tmp_path / 'missing.safetensors'}'. "
        "(--debug shows the traceback)"
    ], result.stderr
    debug = _swinv2("predict", tmp_path / "cat.jpg", "--weights", tmp_path / "missing.safetensors", "--debug")
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    usage = _swinv2("finetune", "--epochs", "many", "--output", tmp_path)
    assert usage.returncode == 2 and "argument --epochs: invalid int value: 'many'" in usage.stderr


def test_offline_demo_with_weights_fails_cleanly_and_writes_nothing(tmp_path):
    env = {"KERAS_SWINV2_CACHE": str(tmp_path / "cache"), "KERAS_SWINV2_BASE_URL": "http://127.0.0.1:9"}
    result = _swinv2("demo", "--weights", "imagenet1k", "--epochs", "1", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "swinv2 demo: error: Could not obtain checkpoint 'swinv2_tiny_window8_256'" in result.stderr
    assert "Offline? Download one of these files by hand" in result.stderr
    # no run directory: the corrected retry is not refused as "a run with other settings"
    assert not (tmp_path / "runs").exists()
    # quiet: no TensorFlow C++ notices, no Python warnings
    for noise in ("absl::InitializeLog", "cpu_feature_guard", "oneDNN", "Warning"):
        assert noise not in result.stderr, result.stderr


def test_a_typo_in_data_writes_no_run_directory(tmp_path):
    result = _swinv2(
        "finetune", "--data", tmp_path / "no_such_folder", "--weights", "none", "--output", tmp_path / "run"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"swinv2 finetune: error: Image folder '{tmp_path / 'no_such_folder'}' does not exist" in result.stderr
    assert not (tmp_path / "run").exists()
    tfds = _swinv2("finetune", "--data", "tfds:oxford_iiit_pets", "--weights", "none", "--output", tmp_path / "run")
    assert tfds.returncode == 2 and "did you mean 'oxford_iiit_pet'?" in tfds.stderr and len(tfds.stderr) < 600


def test_resuming_with_other_schedule_arguments_is_refused_naming_them(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["finetune", "--weights", "none", *TINY, "--batch-size", "64", "--output", str(run), "--verbose", "0"]
    # what `swinv2 finetune ... --epochs 3` recorded
    parsed = keras_swinv2_cli.build_parser().parse_args([*args, "--epochs", "3"])
    from keras_swinv2.cli import _finetune_config

    save_run_config(str(run), _finetune_config(parsed))
    before = (run / "config.json").read_text()
    assert keras_swinv2_cli.main([*args, "--epochs", "5", "--lr", "1e-3"]) == 2
    err = capsys.readouterr().err
    assert "swinv2 finetune: error:" in err and "cannot be resumed with these" in err
    assert "epochs: 3 saved, 5 now" in err and "learning_rate: 0.0005 saved, 0.001 now" in err
    assert "to train longer, start a new run in another directory" in err
    assert (run / "config.json").read_text() == before


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_digits_are_not_flipped_unless_asked(task):
    """A mirrored digit is not a digit: `--data digits` trains without flips by default, any other data
    with them; `--flip` / `--no-flip` decide either way."""
    from keras_swinv2.cli import _finetune_config

    def flips(*args):
        parsed = keras_swinv2_cli.build_parser().parse_args(["finetune", "--task", task, "--output", "r", *args])
        return _finetune_config(parsed).augmentation["flip"]

    assert flips("--data", "digits") is False
    assert flips("--data", "tfds:oxford_iiit_pet") is True
    assert flips("--data", "digits", "--flip") is True
    assert flips("--data", "tfds:oxford_iiit_pet", "--no-flip") is False


def test_a_busy_run_directory_is_a_user_error(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["finetune", "--weights", "none", *TINY, "--epochs", "1", "--output", str(run), "--verbose", "0"]
    with lock_run_directory(str(run)):
        assert keras_swinv2_cli.main(args) == 2
    assert f"swinv2 finetune: error: Another process is training in {run}" in capsys.readouterr().err


def test_ctrl_c_stops_with_130_and_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    args = ["finetune", "--weights", "none", *TINY, "--epochs", "40", "--batch-size", "64", "--output", run]
    environment = dict(os.environ, KERAS_BACKEND="tensorflow")
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    code = "import keras_swinv2_cli; keras_swinv2_cli.console()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args), "--verbose", "0"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    # any epoch's state, not state-1.json alone: only the last two states are kept, so on a slow,
    # loaded machine state-1.json can come and go between two polls
    while not list(run.glob("state-*.json")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    time.sleep(0.5)  # into the next epoch

    def newest_epoch():
        return max((int(p.name[6:-5]) for p in run.glob("state-*.json")), default=0)

    process.send_signal(signal.SIGINT)
    # Once (a clean-clone CI run, TensorFlow pass, 2026-12-07) the run went on and finished with
    # exit 0 and nothing on stderr: the SIGINT was lost, presumably inside TensorFlow's runtime.
    # As a user would, press Ctrl-C again when two more epochs finish after it. Losing the first
    # one is a known defect of the CLI (see the issue notes), not what this test checks.
    signalled_at, deadline = newest_epoch(), time.time() + 120
    while process.poll() is None and time.time() < deadline:
        if newest_epoch() > signalled_at + 1:
            process.send_signal(signal.SIGINT)
            signalled_at = newest_epoch()
        time.sleep(0.1)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    done = max(int(p.name[6:-5]) for p in run.glob("state-*.json"))
    assert f"swinv2 finetune: interrupted after epoch {done} of 40; run the same command to resume ({run})." in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert json.loads((run / f"state-{done}.json").read_text())["epoch"] == done
