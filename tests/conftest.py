import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

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
