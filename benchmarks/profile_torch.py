"""Where the time of an eager torch SwinV2 step goes: per ATen op, this package beside HF transformers.

    python benchmarks/profile_torch.py                        # SwinV2-T 256/8, batch 8, inference
    python benchmarks/profile_torch.py --mode train --top 20

Builds the Keras model (torch backend) and HF transformers' Swinv2ForImageClassification with
the same architecture, runs two warm-up steps of each, then profiles one step of each with
`torch.profiler` and prints, per model: the step's seconds, and the ATen ops by their self CPU
time (the time spent inside each op on the calling thread, its intra-op threads included). Matrix products
(`addmm`, `mm`, `bmm`) are summed with their FLOPs and GFLOP/s; copies (`copy_`, `clone`, `cat`)
are summed apart, the rest is listed largest first. Both models run in one process, one after
the other, so their rows compare; the profile slows a step by a few percent.
"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["KERAS_BACKEND"] = "torch"
from bench import MODELS, hf_model, keras_model_and_batch  # noqa: E402

PRODUCTS = ("aten::addmm", "aten::mm", "aten::bmm")
COPIES = ("aten::copy_", "aten::clone", "aten::cat")


def _step(forward, parameters, mode, labels):
    import torch

    if mode == "inference":

        def step():
            with torch.no_grad():
                forward()

        return step
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(forward(), labels).backward()
        optimizer.step()

    return step


def profile(step, top):
    """Seconds of one step and its ATen ops: `(seconds, products, copies, others)`."""
    import torch

    for _ in range(2):
        step()
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    with torch.profiler.profile(record_shapes=True, with_flops=True) as prof:
        step()
    products, copies, others = [0.0, 0.0], collections.Counter(), collections.Counter()
    for event in prof.key_averages():
        self_s = event.self_cpu_time_total / 1e6
        if event.key in PRODUCTS:
            products[0] += self_s
            products[1] += event.flops
        elif event.key in COPIES:
            copies[event.key] += self_s
        else:
            others[event.key] += self_s
    return seconds, products, copies, others.most_common(top)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny-256-w8")
    parser.add_argument("--mode", choices=["inference", "train"], default="inference")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    import torch

    keras_model, images, labels = keras_model_and_batch(args.model)
    hf = hf_model(args.model)
    hf.train(args.mode == "train")
    x, nchw = torch.from_numpy(images), torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels).long()
    training = args.mode == "train"
    steps = {
        "keras torch": _step(lambda: keras_model(x, training=training), keras_model.parameters(), args.mode, y),
        "HF transformers": _step(lambda: hf(nchw).logits, hf.parameters(), args.mode, y),
    }
    print(f"{args.model}, batch {len(images)}, float32 {args.mode}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    for name, step in steps.items():
        seconds, (product_s, flops), copies, others = profile(step, args.top)
        print(f"\n{name}: {seconds:.3f} s per step; self CPU time of its ops:")
        print(f"  matrix products {product_s:7.3f} s  {flops / 1e9:6.1f} GFLOP  {flops / product_s / 1e9:5.0f} GFLOP/s")
        print(
            f"  copies          {sum(copies.values()):7.3f} s  "
            + ", ".join(f"{k[6:]} {v:.3f}" for k, v in copies.items())
        )
        for op, self_s in others:
            print(f"  {op[6:] if op.startswith('aten::') else op:15s} {self_s:7.3f} s")


if __name__ == "__main__":
    main()
