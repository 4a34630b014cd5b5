"""Every format x backend cell of `model.export`: exported with `swinv2 export`, checked in its runtime.

    python benchmarks/export_matrix.py --weights CKPT            # SwinV2-T 256/8, all cells (~10 min)
    python benchmarks/export_matrix.py --make-reference CKPT     # first: a checkpoint to use

`--make-reference` writes an official-layout SwinV2-T 256/8 checkpoint whose every parameter is
random at the magnitudes of trained weights (the HF transformers model of tests/reference.py),
so the logits are as large as a real model's and the differences mean something offline. Each
cell runs `swinv2 export --model tiny --weights CKPT --logits --format F` on its backend in a
fresh process and reads its report: export time, size on disk, largest difference to Keras.
Writes a JSON file and prints a markdown table.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

from bench import cpu_description, describe_cpu

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FORMATS = {"tf_saved_model": "", "onnx": ".onnx", "litert": ".tflite", "openvino": ".xml"}
BACKENDS = ("tensorflow", "jax", "torch")


def make_reference(path):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from checkpoint_files import hf_to_pytorch_layout, save_checkpoint
    from reference import hf_swinv2, state_dict_numpy

    tiny = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    reference = hf_swinv2((256, 256), window_size=8, num_labels=1000, **tiny)
    save_checkpoint(hf_to_pytorch_layout(state_dict_numpy(reference), "official", buffers="real"), path)


def run_cell(backend, fmt, weights, directory, batch):
    output = os.path.join(directory, f"{backend}-{fmt}{FORMATS[fmt]}")
    command = [sys.executable, "-m", "keras_swinv2_cli", "export", "--model", "tiny", "--weights", weights]
    command += ["--logits", "--format", fmt, "--output", output, "--batch-size", str(batch)]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    cell = dict(backend=backend, format=fmt, exit_code=done.returncode)
    wrote = re.search(r"\((\S+), ([\d.]+) MB\) .* in ([\d.]+) s", done.stdout)
    diffs = re.findall(r"max \|difference\| to Keras ([\d.e+-]+)", done.stdout)
    if wrote and diffs:
        cell.update(size_mb=float(wrote[2]), export_s=float(wrote[3]), max_abs_diff=max(map(float, diffs)))
    else:
        lines = (done.stderr or done.stdout).strip().splitlines()
        cell["error"] = lines[-1] if lines else "no output"
    return cell


def markdown(cells):
    lines = ["| format | " + " | ".join(BACKENDS) + " |", "|---" * (1 + len(BACKENDS)) + "|"]
    for fmt in FORMATS:
        row = []
        for backend in BACKENDS:
            cell = next(c for c in cells if (c["backend"], c["format"]) == (backend, fmt))
            if "max_abs_diff" in cell:
                row.append(f"{cell['max_abs_diff']:.1e} ({cell['size_mb']:.0f} MB, {cell['export_s']:.0f} s)")
            else:
                row.append("no (see docs/export.md)")
        lines.append(f"| `{fmt}` | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="checkpoint for `swinv2 export --weights`")
    parser.add_argument("--make-reference", metavar="PATH", help="write the reference checkpoint and exit")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--out", default=None, help="JSON output (default benchmarks/results/export-matrix-<time>.json)"
    )
    args = parser.parse_args(argv)
    if args.make_reference:
        make_reference(args.make_reference)
        print(f"wrote {args.make_reference}")
        return 0
    if not args.weights:
        parser.error("--weights CKPT is required (see --make-reference)")
    cpu = cpu_description()
    print(describe_cpu(cpu), flush=True)
    cells = []
    with tempfile.TemporaryDirectory(prefix="swinv2-export-") as directory:
        for backend in args.backends:
            for fmt in args.formats:
                cell = run_cell(backend, fmt, os.path.abspath(args.weights), directory, args.batch_size)
                print(json.dumps(cell), flush=True)
                cells.append(cell)
    out = args.out or os.path.join(
        HERE, "results", "export-matrix-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(date=datetime.datetime.now().isoformat(timespec="seconds"), cpu=cpu, cells=cells), f, indent=2)
    if set(args.backends) == set(BACKENDS) and set(args.formats) == set(FORMATS):
        print("\n" + markdown(cells))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
