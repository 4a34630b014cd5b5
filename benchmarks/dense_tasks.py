"""Training-step time of the dense-prediction tasks on each Keras backend.

    python benchmarks/dense_tasks.py                                   # SwinV2-T, 256 px, batch 2
    python benchmarks/dense_tasks.py --backends jax --tasks detection --batch 4

For each backend (one process each: Keras reads the backend once per process) and each task it
builds the model on a SwinV2 backbone (random weights), compiles it with the task's defaults
(segmenter: AdamW, sparse cross-entropy ignoring 255, mean IoU; detector: keras-hub's focal +
smooth-L1 losses, AdamW) and runs `fit` on random images with masks or boxes for
`--warmup + --repeats` steps; a callback times every step, the first `--warmup` (compilation)
are dropped and the median of the rest is reported, with images/s. Writes a JSON file under
benchmarks/results and prints a table with the CPU.

Tasks:
    segmentation   SwinV2ImageSegmenter, UperNet with 512 channels (the ADE20K head), 150 classes
    detection      swinv2_retinanet, 4 convolutions per head (RetinaNet's), 20 classes (VOC)
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import cpu_description, describe_cpu  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")
TASKS = ("segmentation", "detection")


def _model(task, args):
    import keras

    import keras_swinv2

    backbone = keras_swinv2.SwinV2Backbone.from_preset(
        args.variant, weights=None, input_shape=(args.image_size, args.image_size, 3), window_size=args.window_size
    )
    if task == "segmentation":
        model = keras_swinv2.SwinV2ImageSegmenter(backbone, num_classes=150)
        model.compile()
        return model
    model = keras_swinv2.swinv2_retinanet(backbone, num_classes=20)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4))
    return model


def _data(task, args):
    rng = np.random.default_rng(0)
    steps = args.warmup + args.repeats
    images = rng.uniform(-2, 2, (args.batch * steps, args.image_size, args.image_size, 3)).astype("float32")
    if task == "segmentation":
        return images, rng.integers(0, 150, images.shape[:3]).astype("int32")
    n, side = len(images), args.image_size
    corner = rng.uniform(0, side / 2, (n, 3, 2))
    size = rng.uniform(side / 8, side / 2, (n, 3, 2))
    boxes = np.concatenate([corner, corner + size], axis=-1).astype("float32")  # yxyx pixels
    labels = rng.integers(0, 20, (n, 3)).astype("float32")
    labels[:, 2] = -1  # one padding box per image
    boxes[:, 2] = 0
    return images, {"boxes": boxes, "labels": labels}


def worker(args):
    """One backend: times every task, prints one JSON line per task."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    for task in args.tasks:
        keras.utils.set_random_seed(0)
        model = _model(task, args)
        x, y = _data(task, args)
        timer = StepTimer()
        timer.times = []
        model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
        timed = timer.times[args.warmup :]
        step = float(np.median(timed))
        print(
            "RESULT "
            + json.dumps(
                dict(
                    backend=keras.backend.backend(),
                    task=task,
                    step_s=step,
                    images_per_s=args.batch / step,
                    first_step_s=timer.times[0],
                    steps_s=timed,
                    parameters=model.count_params(),
                )
            ),
            flush=True,
        )
        del model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--variant", default="tiny", help="SwinV2 variant of the backbone")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--window-size", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="first steps dropped (compilation)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per backend")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/dense-<time>.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    cpu = cpu_description()
    print(describe_cpu(cpu), flush=True)
    results = []
    for backend in args.backends:
        command = [sys.executable, os.path.abspath(__file__), "--worker", "--tasks", *args.tasks]
        for name in ("variant", "image_size", "window_size", "batch", "warmup", "repeats"):
            command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        try:
            run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{backend}: timed out after {args.timeout} s", flush=True)
            continue
        lines = [line[7:] for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode != 0 and not lines:
            print(f"{backend}: failed (exit {run.returncode}):\n{run.stderr[-2000:]}", flush=True)
            continue
        for line in lines:
            result = json.loads(line)
            results.append(result)
            print(
                f"{backend:10s} {result['task']:12s} {result['step_s']:7.2f} s/step  "
                f"{result['images_per_s']:6.2f} img/s  (first step {result['first_step_s']:.0f} s)",
                flush=True,
            )
    stamp = datetime.datetime.now(datetime.timezone.utc)
    out = args.out or os.path.join(HERE, "results", f"dense-{stamp:%Y%m%d-%H%M%S}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    record = dict(
        date=stamp.isoformat(timespec="seconds"),
        cpu=cpu,
        cores=os.cpu_count(),
        python=platform.python_version(),
        settings={k: v for k, v in vars(args).items() if k not in ("worker", "out", "timeout")},
        results=results,
    )
    temporary = out + ".tmp"
    with open(temporary, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(temporary, out)
    print(f"wrote {out}")
    print("\n| backend | task | s/step | images/s |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['task']} | {r['step_s']:.2f} | {r['images_per_s']:.2f} |")
    return 0 if len(results) == len(args.backends) * len(args.tasks) else 1


if __name__ == "__main__":
    sys.exit(main())
