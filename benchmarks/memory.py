"""Peak memory and step time of the train-big options against the plain model.

    python benchmarks/memory.py                                  # SwinV2-B, 384 px, window 24, training
    python benchmarks/memory.py --mode inference --size 1536 --options plain sequential
    python benchmarks/memory.py --backends jax --no-run          # JAX compiled estimates only

Options (each measured in its own process, on each backend):
    plain          float32, no memory option
    checkpointing  gradient_checkpointing=True (training only)
    sequential     attention_chunk_size=--chunk windows at a time
    both           checkpointing + sequential
    bf16, fp16     mixed_bfloat16 / mixed_float16 policies (fp16 trains with loss scaling)

Memory, by backend:
    jax    `compiled.memory_analysis()` of the jitted step (temporaries + arguments + outputs
           - aliased); on CPU this is XLA's buffer assignment, not a measured RSS. Also
           measured on GPU, where it is the same buffer assignment.
    tensorflow, torch
           on CPU: the growth of the process' peak RSS (ru_maxrss) over the steps, after the
           model, optimizer and batch exist; on GPU: the allocator's peak
           (`tf.config.experimental.get_memory_info`, `torch.cuda.max_memory_allocated`).
Step time is the median of --repeats steps after one warm-up step (compilation).
A training step is forward + backward + AdamW update (TF: tf.function graph; JAX: jit;
torch: eager), via `model.train_on_batch`; inference is `model.predict_on_batch`.
Prints a table and writes the JSON lines to --output.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

OPTIONS = {
    "plain": {},
    "checkpointing": {"gradient_checkpointing": True},
    "sequential": {"attention_chunk_size": None},  # filled from --chunk
    "both": {"gradient_checkpointing": True, "attention_chunk_size": None},
    "bf16": {"dtype": "mixed_bfloat16"},
    "fp16": {"dtype": "mixed_float16"},
}


def _model_kwargs(args, option):
    kwargs = dict(OPTIONS[option])
    if "attention_chunk_size" in kwargs:
        kwargs["attention_chunk_size"] = args.chunk
    return kwargs


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _gpu_peak(backend):
    """Allocator peak in bytes on the first GPU, or None on CPU."""
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return None


def _jax_compiled_bytes(model, x, y, training):
    """XLA's buffer assignment for one jitted step: (peak estimate, temporaries)."""
    import jax
    import keras

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def forward(trainable, non_trainable, x, y):
        logits, _ = model.stateless_call(trainable, non_trainable, x, training=training)
        return loss_fn(y, logits)

    step = jax.jit(jax.value_and_grad(forward) if training else forward)
    analysis = step.lower(trainable, non_trainable, x, y).compile().memory_analysis()
    total = (
        analysis.temp_size_in_bytes
        + analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        - analysis.alias_size_in_bytes
    )
    return total, analysis.temp_size_in_bytes


def worker(args):
    """Measures one (backend, option) in this process; prints one JSON line."""
    import numpy as np

    import keras

    import keras_swinv2

    backend = keras.backend.backend()
    option = args.options[0]
    kwargs = _model_kwargs(args, option)
    training = args.mode == "training"
    model = keras_swinv2.SwinV2(
        variant=args.variant,
        input_shape=(args.size, args.size, 3),
        window_size=args.window,
        classifier_activation=None,
        drop_path_rate=0.1 if training else 0.0,
        **kwargs,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 1000, size=(args.batch,))
    result = dict(
        backend=backend,
        option=option,
        mode=args.mode,
        variant=args.variant,
        size=args.size,
        window=args.window,
        batch=args.batch,
        chunk=kwargs.get("attention_chunk_size", 0),
        parameters=model.count_params(),
    )
    if backend == "jax":
        total, temp = _jax_compiled_bytes(model, x, y, training)
        result.update(compiled_bytes=total, compiled_temp_bytes=temp)
    if not args.no_run:
        if training:
            model.compile(
                optimizer=keras.optimizers.AdamW(1e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            model.optimizer.build(model.trainable_variables)
            step = lambda: model.train_on_batch(x, y)  # noqa: E731
        else:
            step = lambda: model.predict_on_batch(x)  # noqa: E731
        baseline = _peak_rss()
        times = []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            out = step()
            keras.ops.convert_to_numpy(out)
            times.append(time.perf_counter() - start)
        result.update(
            step_seconds=float(np.median(times[1:])),
            first_step_seconds=times[0],
            rss_growth_bytes=_peak_rss() - baseline,
            peak_rss_bytes=_peak_rss(),
            gpu_peak_bytes=_gpu_peak(backend),
        )
    print("RESULT " + json.dumps(result), flush=True)


def _run(args, backend, option):
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--mode",
        args.mode,
        "--variant",
        args.variant,
        "--size",
        str(args.size),
        "--window",
        str(args.window),
        "--batch",
        str(args.batch),
        "--chunk",
        str(args.chunk),
        "--repeats",
        str(args.repeats),
        "--options",
        option,
    ] + (["--no-run"] if args.no_run else [])
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    output = (proc.stderr or proc.stdout).strip()[-600:]
    return dict(backend=backend, option=option, error=output or f"worker exited with status {proc.returncode}")


def _gib(value):
    return "-" if value is None else f"{value / 2**30:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("training", "inference"), default="training")
    parser.add_argument("--variant", default="base")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--window", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=4, help="windows per attention chunk")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    parser.add_argument("--options", nargs="+", default=["plain", "checkpointing", "sequential", "both", "bf16"])
    parser.add_argument("--no-run", action="store_true", help="JAX compiled estimates only, no steps")
    parser.add_argument("--output", default="benchmarks/results/memory.jsonl")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    header = "| backend | option | JAX compiled GiB | RSS growth GiB | GPU peak GiB | step s |"
    rows = [header, "|---" * 6 + "|"]
    for backend in args.backends:
        for option in args.options:
            if option in ("checkpointing", "both") and args.mode == "inference":
                continue
            result = _run(args, backend, option)
            with open(args.output, "a") as f:
                f.write(json.dumps(result) + "\n")
            if "error" in result:
                row = f"| {backend} | {option} | error: {result['error'].splitlines()[-1][:80]} | | | |"
            else:
                step = result.get("step_seconds")
                row = (
                    f"| {backend} | {option} | {_gib(result.get('compiled_bytes'))} | "
                    f"{_gib(result.get('rss_growth_bytes'))} | {_gib(result.get('gpu_peak_bytes'))} | "
                    f"{'-' if step is None else f'{step:.2f}'} |"
                )
            print(row, flush=True)
            rows.append(row)
    print(f"\n{args.variant} {args.size} px, window {args.window}, batch {args.batch}, {args.mode}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
