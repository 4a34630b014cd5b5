import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Under pytest-xdist (`make test` runs 2 workers), split the cores between the workers for
# OpenMP (eager torch, and the processes tests start): torch's OpenMP threads spin while they
# wait. With a thread per core in each of two workers the torch pass took 528 s (546 s in one
# process); split, 478 s (2026-12-04, 2 cores). TF and XLA size their own thread pools.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

import json

import numpy as np
import pytest

import keras


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    np.random.seed(0)


@pytest.fixture
def report():
    """Records measured numbers: appended as JSON lines to $SWINV2_REPORT when set."""
    path = os.environ.get("SWINV2_REPORT")

    def write(**fields):
        fields["backend"] = keras.backend.backend()
        print(json.dumps(fields))
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(fields) + "\n")

    return write
