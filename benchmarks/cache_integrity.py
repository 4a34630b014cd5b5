"""What verifying the weights cache costs: a SwinV2-sized converted file read with and without its sha256 check.

    python benchmarks/cache_integrity.py [--params 87.9e6] [--repeats 5]

Writes a converted-cache entry of random float32 tensors with as many parameters as the model
(SwinV2-B: 87.9 M, 352 MB), then times, alternating, a plain `safetensors.numpy.load_file` and the
cache's verified read (sha256 + size against the record, then the same load). The file is in the
page cache for both, as on any second load; the numbers are the median of `--repeats` runs.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "numpy")

from safetensors.numpy import load_file, save_file  # noqa: E402

import keras_swinv2.weights  # noqa: E402,F401
from bench import cpu_description  # noqa: E402  (benchmarks/bench.py: name and ISA flags)

download = sys.modules["keras_swinv2.weights.download"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=float, default=87.9e6, help="parameters (default: SwinV2-B's 87.9e6)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    count = int(args.params)
    chunk = 1 << 20
    state = {
        f"tensor_{i}": rng.standard_normal(min(chunk, count - i * chunk), dtype=np.float32)
        for i in range(-(-count // chunk))
    }
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "converted", "model.safetensors")
        os.makedirs(os.path.dirname(path))
        save_file(state, path)
        download._write_record(path, {"checkpoint": "model"})
        plain, verified = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            load_file(path)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            _, problem = download._read_verified(path)
            verified.append(time.perf_counter() - start)
            assert problem is None, problem
        size = os.path.getsize(path)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_description(),
        "file_mb": round(size / 1e6, 1),
        "load_s": round(statistics.median(plain), 3),
        "verified_load_s": round(statistics.median(verified), 3),
    }
    result["check_s"] = round(result["verified_load_s"] - result["load_s"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
