"""How long building a model takes, per backend: `SwinV2Tiny()` and a SwinV2-B backbone, no weights.

    python benchmarks/construction.py [--backends tensorflow jax torch] [--repeats 3]

Each measurement runs in a fresh process (the first build in a process is what a user waits for:
it includes any compilation of the weight initialisation), after `import keras_swinv2`, which is
timed separately. Prints one JSON line per backend with the median of `--repeats` processes, the
date and the CPU. Targets: SwinV2-T <= 3 s, SwinV2-B backbone <= 6 s on every backend.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench import cpu_description  # benchmarks/bench.py: name and ISA flags

CHILD = """
import time
start = time.perf_counter()
import keras, keras_swinv2
imported = time.perf_counter()
keras_swinv2.SwinV2Tiny()
tiny = time.perf_counter()
keras_swinv2.SwinV2Base(include_top=False)
base = time.perf_counter()
print(imported - start, tiny - imported, base - tiny)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
            runs.append([float(v) for v in out.stdout.split()[-3:]])
        import_s, tiny_s, base_s = (statistics.median(column) for column in zip(*runs))
        print(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "cpu": cpu_description(),
                    "backend": backend,
                    "import_s": round(import_s, 2),
                    "tiny_s": round(tiny_s, 2),
                    "base_backbone_s": round(base_s, 2),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
