"""Speed of SwinV2 inference and training: this package on each backend vs the PyTorch peers.

    python benchmarks/bench.py                       # both models, all implementations (~50 min on 2 cores)
    python benchmarks/bench.py --models tiny-256-w8 --impls keras-jax hf-torch --modes inference

Each measurement runs in its own process (Keras reads the backend once per process):
build the model, warm up (compilation happens here), then time `--repeats` steps and
report the median images/s. Inference is a forward pass without gradients; a training
step is forward + backward + AdamW update. Writes a JSON file and prints a table.

Implementations:
    keras-tf-graph     TensorFlow, tf.function without XLA
    keras-tf-xla       TensorFlow, tf.function(jit_compile=True)
    keras-jax          JAX, jax.jit
    keras-torch        torch eager
    keras-torch-compile torch.compile (Keras jit_compile=True on the torch backend)
    hf-torch           HF transformers' Swinv2ForImageClassification, torch eager
    hf-torch-compile   the same under torch.compile
    timm-torch         timm's swin_transformer_v2 (skipped where timm does not import)
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

MODELS = {
    # name: (variant, image size, window, pretrained_window_sizes, batch)
    "tiny-256-w8": ("tiny", 256, 8, None, 8),
    "base-384-w24": ("base", 384, 24, (12, 12, 12, 6), 2),
}
KERAS_IMPLS = {
    "keras-tf-graph": ("tensorflow", False),
    "keras-tf-xla": ("tensorflow", True),
    "keras-jax": ("jax", True),
    "keras-torch": ("torch", False),
    "keras-torch-compile": ("torch", True),
}
TORCH_IMPLS = ("hf-torch", "hf-torch-compile", "timm-torch")
IMPLS = tuple(KERAS_IMPLS) + TORCH_IMPLS
ARCH = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}


def _timed(step, warmup, repeats):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], times


def _keras_worker(impl, model_name, mode, dtype, warmup, repeats):
    backend, jit = KERAS_IMPLS[impl]
    os.environ["KERAS_BACKEND"] = backend
    import numpy as np
    import keras

    import keras_swinv2

    if dtype == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    variant, size, window, pretrained, batch = MODELS[model_name]
    model = keras_swinv2.SwinV2(
        variant=variant, input_shape=(size, size, 3), window_size=window,
        pretrained_window_sizes=pretrained, classifier_activation=None, drop_path_rate=0.0,
    )
    x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    y = np.arange(batch) % 1000
    if mode == "train":
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        step = lambda: model.train_on_batch(x, y)  # noqa: E731
    elif backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda t: model(t, training=False), jit_compile=jit)
        tx = tf.constant(x)
        step = lambda: fn(tx).numpy()  # noqa: E731
    elif backend == "jax":
        import jax

        fn = jax.jit(lambda tv, ntv, t: model.stateless_call(tv, ntv, t, training=False)[0])
        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        step = lambda: fn(tv, ntv, x).block_until_ready()  # noqa: E731
    else:
        import torch

        fn = torch.compile(model) if jit else model
        tx = torch.from_numpy(x)

        def step():
            with torch.no_grad():
                fn(tx, training=False)

    return batch, _timed(step, warmup, repeats)


def _torch_worker(impl, model_name, mode, dtype, warmup, repeats):
    import torch

    torch.manual_seed(0)
    variant, size, window, pretrained, batch = MODELS[model_name]
    if impl.startswith("hf-torch"):
        from transformers import Swinv2Config, Swinv2ForImageClassification

        config = Swinv2Config(
            image_size=size, window_size=window, num_labels=1000,
            pretrained_window_sizes=list(pretrained or (0, 0, 0, 0)), **{k: list(v) if isinstance(v, tuple) else v for k, v in ARCH[variant].items()},
        )
        model = Swinv2ForImageClassification(config)
        forward = lambda t: model(t).logits  # noqa: E731
    else:
        import timm

        name = f"swinv2_{variant}_window{window}_{size}" if not pretrained else (
            f"swinv2_{variant}_window12to{window}_192to{size}")
        model = timm.create_model(name, pretrained=False)
        forward = model
    if impl.endswith("-compile"):
        forward = torch.compile(forward)
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % 1000
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    if mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(forward(x), y)
            loss.backward()
            optimizer.step()
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast:
                forward(x)

    return batch, _timed(step, warmup, repeats)


def worker(args):
    fn = _keras_worker if args.impl in KERAS_IMPLS else _torch_worker
    if args.impl in TORCH_IMPLS or args.impl.startswith("keras-torch"):
        import torch

        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        batch, (median, times) = fn(args.impl, args.model, args.mode, args.dtype, args.warmup, args.repeats)
        result = dict(images_per_s=batch / median, median_s=median, batch=batch, times_s=times)
    except Exception as e:  # reported in the table, not fatal to the run
        result = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    result.update(impl=args.impl, model=args.model, mode=args.mode, dtype=args.dtype,
                  wall_s=time.perf_counter() - start)
    print("RESULT " + json.dumps(result), flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--worker" in argv:
        w = argparse.ArgumentParser()
        for name in ("impl", "model", "mode", "dtype"):
            w.add_argument(f"--{name}")
        for name in ("warmup", "repeats", "threads"):
            w.add_argument(f"--{name}", type=int)
        w.add_argument("--worker", action="store_true")
        return worker(w.parse_args(argv))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    parser.add_argument("--modes", nargs="+", default=["inference", "train"], choices=["inference", "train"])
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per measurement")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/<time>.json)")
    args = parser.parse_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    results = []
    for model in args.models:
        for mode in args.modes:
            for dtype in args.dtypes:
                for impl in args.impls:
                    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--model", model, "--mode", mode,
                           "--dtype", dtype, "--warmup", str(args.warmup), "--repeats", str(args.repeats),
                           "--threads", str(args.threads)]
                    try:
                        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
                        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
                        result = json.loads(lines[-1][7:]) if lines else dict(
                            error=(proc.stderr.strip().splitlines() or ["no output"])[-1][:200])
                    except subprocess.TimeoutExpired:
                        result = dict(error=f"timed out after {args.timeout} s")
                    result.update(impl=impl, model=model, mode=mode, dtype=dtype)
                    results.append(result)
                    print(_row(result), flush=True)
    report = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                     python=platform.python_version()),
        settings=dict(warmup=args.warmup, repeats=args.repeats, threads=args.threads,
                      batches={m: MODELS[m][4] for m in args.models}),
        versions=_versions(),
        results=results,
    )
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print("\n" + markdown_table(results))
    print(f"\nwritten {out}")
    return 0


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("keras", "tensorflow-cpu", "tensorflow", "jax", "torch", "transformers", "timm"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _row(r):
    speed = f"{r['images_per_s']:.2f} img/s" if "images_per_s" in r else r.get("error", "?")
    return f"{r['model']:14s} {r['mode']:9s} {r['dtype']:8s} {r['impl']:20s} {speed}"


def markdown_table(results):
    """One row per (model, mode, dtype), one column per implementation, images/s."""
    impls = [i for i in IMPLS if any(r["impl"] == i for r in results)]
    keys = []
    for r in results:
        key = (r["model"], r["mode"], r["dtype"])
        if key not in keys:
            keys.append(key)
    lines = ["| model | mode | dtype | " + " | ".join(impls) + " |", "|---" * (3 + len(impls)) + "|"]
    for key in keys:
        cells = []
        for impl in impls:
            r = next((r for r in results if (r["model"], r["mode"], r["dtype"], r["impl"]) == key + (impl,)), None)
            cells.append("" if r is None else f"{r['images_per_s']:.2f}" if "images_per_s" in r else "n/a")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
