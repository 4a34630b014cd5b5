"""Fault-tolerant `model.fit`: exact resume after a kill, best model, CSV log and curves."""

import contextlib
import csv
import dataclasses
import io
import hashlib
import json
import logging
import os
import re

import numpy as np

import keras

from keras_swinv2.backend import seed_generator_states
from keras_swinv2.io_utils import atomic_write, file_lock, remove_stale_temporaries, sha256_file
from keras_swinv2.weights.io import check_finite, h5_arrays

logger = logging.getLogger("keras_swinv2")

STATE_FILE = "state.json"  # the single commit record of earlier versions (still read)
_RECORD = re.compile(r"^state-(\d+)\.json$")
KEEP_STATES = 2  # the last good state, and the one before it in case the last is damaged


def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def check_run_config(output, config):
    """Refuses, before any work, to continue a run in `output` that was made with other settings.

    Every setting counts, `epochs` included: the learning-rate schedule is
    laid out over all epochs, so a resumed run with another count would not
    continue the saved one. Nothing is written.

    Args:
        output: str, the run directory (may not exist yet).
        config: a dataclass of settings.

    Raises:
        ValueError: naming each differing setting with its saved and new value.
    """
    path = os.path.join(output, "config.json")
    settings = json.loads(json.dumps(dataclasses.asdict(config)))
    if not os.path.exists(path):
        return settings
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e}); delete it (or use another output directory).") from e
    changed = [f"{k}: {saved.get(k)!r} saved, {v!r} now" for k, v in settings.items() if saved.get(k) != v]
    if changed:
        hint = (
            " The learning-rate schedule spans all epochs: to train longer, start a new run in another "
            "directory from this run's best.keras."
            if any(c.startswith("epochs:") for c in changed)
            else ""
        )
        raise ValueError(
            f"{output} holds a run made with other settings, so it cannot be resumed with these: "
            + "; ".join(changed)
            + f". Rerun with the saved settings to resume, or use another output directory.{hint}"
        )
    return settings


def save_run_config(output, config):
    """Records a run's settings in `output/config.json` (created); refuses a run made with others.

    Args:
        output: str, the run directory (created).
        config: a dataclass of settings (see `check_run_config`).
    """
    settings = check_run_config(output, config)
    os.makedirs(output, exist_ok=True)
    _write_text(os.path.join(output, "config.json"), json.dumps(settings, indent=2))


class ResumableTraining(keras.callbacks.Callback):
    """Keeps everything `fit` needs to continue exactly where a killed run stopped.

    At the end of every epoch N it commits, atomically (write to a temporary
    file, then `os.replace`), into `directory`:

    - `state-N.weights.h5`: model weights and optimizer state (moments, step
      count, EMA copies);
    - `state-N.json`: the commit record: epochs done, the sha256 and size of
      the weights file, the random-generator states of the model's layers
      (DropPath/Dropout seeds, which `save_weights` leaves out), the best
      monitored value, the per-epoch logs, and a checksum of the record itself;
    - `best.keras`: the whole model when `monitor` improved (with EMA weights
      when the optimizer keeps them), written before the commit;
    - `log.csv` and, with matplotlib, `curves.png`: derived from the logs.

    The last two states are kept. `restore()` verifies the newest against its
    checksums: a damaged one (bit rot, a truncated copy) is named in a warning
    and the run resumes from the one before it, which loses one epoch of work
    and nothing else; with no intact state left the error says which files are
    damaged. Temporaries left by a killed writer are removed when the callback
    is created.

    A run killed mid-epoch loses only that epoch's unfinished work: call
    `restore()` before `fit` and pass its return value as `initial_epoch`.
    With data that depend only on (seed, epoch) (see
    `keras_swinv2.data.training_stream`) the resumed run ends with the same
    weights as an uninterrupted one.

    Args:
        directory: str, created if needed; one training run per directory
            (see `lock_run_directory`).
        monitor: str, the log to pick the best model by.
        mode: "max" or "min".
        plot: bool, draw `curves.png` (needs matplotlib).
    """

    def __init__(self, directory, monitor="val_accuracy", mode="max", plot=True):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}.")
        self.directory = directory
        self.monitor = monitor
        self.mode = mode
        self.plot = plot
        self.history = []
        self.best = None
        os.makedirs(directory, exist_ok=True)
        remove_stale_temporaries(directory)

    @property
    def best_path(self):
        return os.path.join(self.directory, "best.keras")

    def committed_epochs(self):
        """The epochs with a commit record in the directory, newest first."""
        epochs = [int(m[1]) for m in map(_RECORD.match, os.listdir(self.directory)) if m]
        return sorted(epochs, reverse=True)

    def restore(self, model, allow_nonfinite=None):
        """Loads the newest intact committed state into a compiled, built `model`.

        Args:
            model: the model `fit` will train, built and compiled as when saved.
            allow_nonfinite: accept a state holding NaN or infinity (by
                default, unless `$KERAS_SWINV2_ALLOW_NONFINITE=1`, it raises a
                `ValueError` naming the tensors).

        Returns:
            The number of epochs already done (0 when there is no state): pass
            it to `fit(initial_epoch=...)`.

        Raises:
            ValueError: every saved state is damaged (naming each file and
                what is wrong), or the state does not fit `model`.
        """
        candidates = [(e, os.path.join(self.directory, f"state-{e}.json")) for e in self.committed_epochs()]
        legacy = os.path.join(self.directory, STATE_FILE)
        if not candidates and os.path.exists(legacy):
            candidates = [(None, legacy)]
        if not candidates:
            return 0
        damaged = []
        for _, path in candidates:
            state, problem = self._verified(path)
            if problem is None:
                break
            damaged.append(problem)
        else:
            raise ValueError(
                f"The training state in {self.directory} is damaged and no intact earlier state is left:\n  "
                + "\n  ".join(damaged)
                + f"\nDelete {self.directory} (or use another output directory) to start over."
            )
        if damaged:
            logger.warning(
                "%s; resuming from the previous state (epoch %d) instead: one epoch is trained again.",
                "; ".join(damaged),
                state["epoch"],
            )
        weights = os.path.join(self.directory, state["weights"])
        check_finite(h5_arrays(weights), weights, allow_nonfinite)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(weights)
        except Exception as e:
            raise ValueError(
                f"Cannot resume from {weights}: {e}. The file is intact (its checksum matches), so the model "
                f"or optimizer differs from the one that saved it; use the same settings, or another output "
                f"directory to start over."
            ) from e
        seeds = seed_generator_states(model)
        if len(seeds) != len(state["seed_states"]):
            raise ValueError(
                f"The saved state has {len(state['seed_states'])} random-generator states, the model "
                f"{len(seeds)}: it was saved by a different architecture."
            )
        for variable, value in zip(seeds, state["seed_states"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        self.history = [row for row in state["history"] if row["epoch"] <= state["epoch"]]
        self.best = state["best"]
        return state["epoch"]

    def _verified(self, path):
        """`(record, None)` if the record at `path` and its weights file are intact, else `(None, problem)`."""
        try:
            with open(path, "rb") as f:
                record = json.loads(f.read().decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            checksum = record.pop("checksum", None)
            if checksum is not None and checksum != _checksum(record):
                raise ValueError("its checksum does not match its content")
            weights = os.path.join(self.directory, record["weights"])
            epoch = record["epoch"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return None, f"the state record {path} is damaged ({e})"
        if not os.path.exists(weights):
            return None, f"{weights} (epoch {epoch}) is missing"
        if "weights_sha256" in record:
            digest, size = sha256_file(weights)
            if (digest, size) != (record["weights_sha256"], record["weights_size"]):
                return None, (
                    f"{weights} (epoch {epoch}) is damaged: sha256 {digest} ({size} bytes), "
                    f"recorded {record['weights_sha256']} ({record['weights_size']} bytes)"
                )
        return record, None

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.history.append({"epoch": epoch + 1, **logs})
        value = logs.get(self.monitor)
        if value is not None and (
            self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        ):
            self.best = value
            with self._ema_weights():
                atomic_write(self.best_path, self.model.save)
        name = f"state-{epoch + 1}.weights.h5"
        weights = os.path.join(self.directory, name)
        atomic_write(weights, self.model.save_weights)
        digest, size = sha256_file(weights)
        record = {
            "epoch": epoch + 1,
            "weights": name,
            "weights_sha256": digest,
            "weights_size": size,
            "seed_states": [np.asarray(v.numpy()).tolist() for v in seed_generator_states(self.model)],
            "best": self.best,
            "monitor": self.monitor,
            "history": self.history,
        }
        record["checksum"] = _checksum(record)
        _write_text(os.path.join(self.directory, f"state-{epoch + 1}.json"), json.dumps(record))
        keep = set(range(epoch + 2 - KEEP_STATES, epoch + 2))
        for old in os.listdir(self.directory):
            match = re.match(r"^state-(\d+)\.(json|weights\.h5)$", old)
            if (match and int(match[1]) not in keep) or old == STATE_FILE:
                os.remove(os.path.join(self.directory, old))
        self._write_log()

    @contextlib.contextmanager
    def _ema_weights(self):
        """Puts the optimizer's EMA weights into the model for the duration (when it has them)."""
        optimizer = self.model.optimizer
        if optimizer is None or not getattr(optimizer, "use_ema", False):
            yield
            return
        pairs = [
            (v, a)
            for v, a in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average)
            if a is not None
        ]
        raw = [v.numpy() for v, _ in pairs]
        for v, a in pairs:
            v.assign(a)
        try:
            yield
        finally:
            for (v, _), value in zip(pairs, raw):
                v.assign(value)

    def _write_log(self):
        keys = ["epoch"] + sorted({k for row in self.history for k in row} - {"epoch"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        _write_text(os.path.join(self.directory, "log.csv"), buffer.getvalue())
        if self.plot:
            plot_history(self.history, os.path.join(self.directory, "curves.png"))


def _checksum(record):
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()


class RunDirectoryInUse(RuntimeError):
    """Another live process is training in the run directory."""


@contextlib.contextmanager
def lock_run_directory(directory):
    """Holds `directory` (created) for one training process; a second one gets a clear error.

    Raises:
        RunDirectoryInUse: another live process is training in `directory`.
    """
    os.makedirs(directory, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(os.path.join(directory, ".lock"), blocking=False))
        except BlockingIOError:
            raise RunDirectoryInUse(
                f"Another process is training in {directory}; wait for it to finish (or stop it), "
                "or use another output directory."
            ) from None
        yield


def plot_history(history, path):
    """Draws loss and metric curves (train and validation) from per-epoch logs into a PNG.

    Uses matplotlib's object API (no pyplot), so a notebook's plotting backend
    and open figures are left alone. Does nothing without matplotlib.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return
    metrics = sorted({k.removeprefix("val_") for row in history for k in row if k not in ("epoch", "learning_rate")})
    fig = Figure(figsize=(4.5 * len(metrics), 3.5))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    epochs = [row["epoch"] for row in history]
    for ax, metric in zip(axes[0], metrics):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if any(key in row for row in history):
                ax.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=label)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
