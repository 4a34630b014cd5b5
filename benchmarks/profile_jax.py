"""Where the time of a JAX training step goes: per XLA op, joined with the compiled HLO.

    python benchmarks/profile_jax.py                          # SwinV2-T 256/8, batch 8
    python benchmarks/profile_jax.py --model base-384-w24 --top 40

Times the jitted loss alone and the jitted gradient of the loss (forward + backward,
no optimizer), then profiles two gradient steps with `jax.profiler.trace` and adds up
the time of every op the XLA CPU runtime ran. Each op is matched to its line in the
compiled HLO (`.lower().compile().as_text()`), which gives its shape, the model
layer it came from (`op_name`) and, for fusions with a dot, its FLOPs. Prints:
    - forward and forward + backward seconds (median of --repeats),
    - matrix products (fusions with a dot): total time and GFLOP/s,
    - every other op, grouped by pass (fwd / bwd) and layer path, largest first,
    - the --top single ops with their shapes and GFLOP/s.
The profile itself slows the step (by ~5%); compare its totals with each other, and
the timed seconds with runs of this script.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import MODELS, keras_model_and_batch  # noqa: E402


def parse_hlo(text):
    """The compiled module as `{computation: [instruction lines]}`."""
    computations, current = {}, None
    for line in text.splitlines():
        if not line.startswith(" ") and line.endswith("{"):
            current = line.removeprefix("ENTRY ").split()[0].lstrip("%")
            computations[current] = []
        elif current is not None:
            computations[current].append(line)
    return computations


_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\w+)\[([\d,]*)\]\S* (\w+)\(")


def _shapes(lines):
    shapes = {}
    for line in lines:
        m = _INSTRUCTION.match(line)
        if m:
            shapes[m.group(1)] = [int(d) for d in m.group(3).split(",") if d]
    return shapes


def dot_flops(line, shapes):
    """FLOPs of one HLO dot: 2 x output size x contracted size (`shapes`: its computation's)."""
    m = _INSTRUCTION.match(line)
    if not m or m.group(4) != "dot":
        return 0
    lhs = re.search(r"dot\(%([\w.\-]+),", line).group(1)
    size = 2
    for d in shapes[m.group(1)]:
        size *= d
    for i in re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1).split(","):
        size *= shapes[lhs][int(i)] if i else 1
    return size


def describe(hlo_text):
    """`{op name: (shape, layer path, pass, flops)}` for every instruction of the module."""
    computations = parse_hlo(hlo_text)
    shapes = {name: _shapes(lines) for name, lines in computations.items()}
    ops = {}
    for computation, lines in computations.items():
        for line in lines:
            m = _INSTRUCTION.match(line)
            if not m:
                continue
            name, dtype, dims, _ = m.groups()
            callee = re.search(r"calls=%([\w.\-]+)", line)
            if callee and callee.group(1) in computations:
                flops = sum(dot_flops(op, shapes[callee.group(1)]) for op in computations[callee.group(1)])
            else:
                flops = dot_flops(line, shapes[computation])
            op_name = re.search(r'op_name="([^"]*)"', line)
            path = op_name.group(1) if op_name else "?"
            stage = "bwd" if "transpose(" in path else "fwd"
            path = re.sub(r"jit\([^)]*\)/|transpose\(|jvp\(|\)", "", path)
            ops[name] = (f"{dtype}[{dims}]", path, stage, flops)
    return ops


def op_times(trace_dir, steps):
    """Mean time per step (seconds) of every event in the profile, by name."""
    path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    totals = collections.Counter()
    for event in events:
        if event.get("ph") == "X":
            totals[event["name"]] += event.get("dur", 0) / 1e6 / steps
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny-256-w8")
    parser.add_argument("--batch", type=int, help="default: the benchmark's batch for the model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--mode",
        choices=["train", "inference"],
        default="train",
        help="profile the gradient of the loss (train) or the forward pass with training=False (inference)",
    )
    args = parser.parse_args()

    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import numpy as np

    import keras

    model, images, labels = keras_model_and_batch(args.model, args.batch)
    batch = len(images)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(trainable, images, labels):
        logits, _ = model.stateless_call(trainable, non_trainable, images, training=True)
        return loss_fn(labels, logits)

    def predict(trainable, images, labels):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    forward = jax.jit(loss)
    gradient = jax.jit(jax.grad(loss)) if args.mode == "train" else jax.jit(predict)
    compiled = gradient.lower(trainable, images, labels).compile()
    hlo = describe(compiled.as_text())

    def median_seconds(fn):
        for _ in range(2):
            jax.block_until_ready(fn(trainable, images, labels))
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(trainable, images, labels))
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    t_forward, t_gradient = median_seconds(forward), median_seconds(gradient)
    print(f"{args.model}, batch {batch}, float32, JAX {jax.__version__}, {os.cpu_count()} CPUs")
    profiled = "forward + backward" if args.mode == "train" else "inference"
    print(f"forward {t_forward:.3f} s, {profiled} {t_gradient:.3f} s (median of {args.repeats})")

    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(2):
                jax.block_until_ready(gradient(trainable, images, labels))
        times = op_times(trace_dir, steps=2)
    ops = {name: (t, *hlo[name]) for name, t in times.items() if name in hlo}
    total = sum(t for t, *_ in ops.values())
    dots = [(t, flops) for t, _, _, _, flops in ops.values() if flops]
    dot_time = sum(t for t, _ in dots)
    print(f"profiled ops: {total:.3f} s per step")
    print(
        f"  matrix products: {dot_time:.3f} s, {sum(f for _, f in dots) / 1e9:.1f} GFLOP, "
        f"{sum(f for _, f in dots) / dot_time / 1e9:.0f} GFLOP/s"
    )
    groups, counts = collections.Counter(), collections.Counter()
    for t, _, path, stage, flops in ops.values():
        if not flops:
            layer = "/".join(p for p in re.sub(r"stage_\d+|blocks_\d+", "", path).split("/") if p)
            groups[f"{stage} {layer}"] += t
            counts[f"{stage} {layer}"] += 1
    print(f"  everything else: {total - dot_time:.3f} s; by pass and layer (all stages and blocks summed):")
    for key, t in groups.most_common(args.top):
        print(f"    {t * 1e3:8.1f} ms  x{counts[key]:<4d} {key}")
    print(f"  the {args.top} slowest ops:")
    for name, (t, shape, path, stage, flops) in sorted(ops.items(), key=lambda kv: -kv[1][0])[: args.top]:
        rate = f"{flops / t / 1e9:5.0f} GFLOP/s" if flops else " " * 13
        print(f"    {t * 1e3:8.2f} ms  {rate}  {shape:26s} {stage} {path[-70:]}")


if __name__ == "__main__":
    main()
