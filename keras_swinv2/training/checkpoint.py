"""Fault-tolerant `model.fit`: exact resume after a kill, best model, CSV log and curves."""

import contextlib
import csv
import dataclasses
import io
import json
import os

import numpy as np

import keras

from keras_swinv2.backend import seed_generator_states
from keras_swinv2.io_utils import atomic_write

STATE_FILE = "state.json"


def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def save_run_config(output, config):
    """Records a run's settings in `output/config.json`; refuses to resume a run made with others.

    Args:
        output: str, the run directory (created).
        config: a dataclass of settings; `epochs` may grow on resume.
    """
    path = os.path.join(output, "config.json")
    settings = json.loads(json.dumps(dataclasses.asdict(config)))
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v and k != "epochs"}
        if changed:
            raise ValueError(
                f"{output} holds a run with other settings; resuming it with these would not continue "
                f"it. Differences (saved, now): {changed}. Use another output directory."
            )
    os.makedirs(output, exist_ok=True)
    _write_text(path, json.dumps(settings, indent=2))


class ResumableTraining(keras.callbacks.Callback):
    """Keeps everything `fit` needs to continue exactly where a killed run stopped.

    At the end of every epoch it commits, atomically (write to a temporary
    file, then `os.replace`), into `directory`:

    - `state-<epoch>.weights.h5`: model weights and optimizer state
      (moments, step count, EMA copies);
    - `state.json`: the commit record: epochs done, the random-generator
      states of the model's layers (DropPath/Dropout seeds, which
      `save_weights` leaves out), the best monitored value and the per-epoch
      logs;
    - `best.keras`: the whole model when `monitor` improved (with EMA weights
      when the optimizer keeps them), written before the commit;
    - `log.csv` and, with matplotlib, `curves.png`: derived from the logs.

    A run killed mid-epoch loses only that epoch's unfinished work: call
    `restore()` before `fit` and pass its return value as `initial_epoch`.
    With data that depend only on (seed, epoch) (see
    `keras_swinv2.data.training_stream`) the resumed run ends with the same
    weights as an uninterrupted one.

    Args:
        directory: str, created if needed; one training run per directory.
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

    @property
    def best_path(self):
        return os.path.join(self.directory, "best.keras")

    def restore(self, model):
        """Loads the last committed state into a compiled, built `model`.

        Returns:
            The number of epochs already done (0 when there is no state): pass
            it to `fit(initial_epoch=...)`.
        """
        path = os.path.join(self.directory, STATE_FILE)
        if not os.path.exists(path):
            return 0
        try:
            with open(path) as f:
                state = json.load(f)
            weights = os.path.join(self.directory, state["weights"])
        except (ValueError, KeyError) as e:
            raise ValueError(f"The training state {path} is unreadable ({e}); delete {self.directory} to start over.")
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(weights)
        except Exception as e:
            raise ValueError(
                f"Cannot resume from {weights}: {e}. The model or optimizer differs from the one that "
                f"saved it; use the same settings, or another output directory to start over."
            ) from e
        seeds = seed_generator_states(model)
        if len(seeds) != len(state["seed_states"]):
            raise ValueError(
                f"The saved state has {len(state['seed_states'])} random-generator states, the model "
                f"{len(seeds)}: it was saved by a different architecture."
            )
        for variable, value in zip(seeds, state["seed_states"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        self.history = state["history"]
        self.best = state["best"]
        return state["epoch"]

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
        atomic_write(os.path.join(self.directory, name), self.model.save_weights)
        state = {
            "epoch": epoch + 1,
            "weights": name,
            "seed_states": [np.asarray(v.numpy()).tolist() for v in seed_generator_states(self.model)],
            "best": self.best,
            "monitor": self.monitor,
            "history": self.history,
        }
        _write_text(os.path.join(self.directory, STATE_FILE), json.dumps(state))
        for old in os.listdir(self.directory):
            if old.startswith("state-") and old.endswith(".weights.h5") and old != name:
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


def plot_history(history, path):
    """Draws loss and metric curves (train and validation) from per-epoch logs into a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    metrics = sorted({k.removeprefix("val_") for row in history for k in row if k not in ("epoch", "learning_rate")})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
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
    plt.close(fig)
