"""The set-up the tutorial notebooks share: `import tutorial; tutorial.setup()` in their first cell.

It chooses the Keras backend, keeps TensorFlow's start-up notices out of the notebook, fixes the
seeds and prints the versions. Everything after it in a notebook is ordinary Keras.
"""

import logging
import os
import warnings


def setup(seed=0, backend="tensorflow", logical_cpus=None):
    """Call before `import keras`. `logical_cpus=n` splits the CPU into n TensorFlow devices."""
    os.environ.setdefault("KERAS_BACKEND", backend)  # Keras reads it once, at its first import
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ log: errors only
    import absl.logging

    absl.logging.set_verbosity("error")  # absl's Python log (used by TensorFlow and Keras)
    # tqdm.auto, imported by transformers (notebook 09), asks for ipywidgets, which the notebooks don't use
    warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")

    # Some C++ start-up notices ignore TF_CPP_MIN_LOG_LEVEL and write straight to file
    # descriptor 2, which the notebook shows: point it at /dev/null while TensorFlow starts.
    saved_stderr, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras

        if logical_cpus:  # must happen before the first tensor fixes the devices
            import tensorflow as tf

            cpu = tf.config.list_physical_devices("CPU")[0]
            devices = [tf.config.LogicalDeviceConfiguration()] * logical_cpus
            tf.config.set_logical_device_configuration(cpu, devices)
        keras.ops.zeros(1)  # the first tensor: the backend initialises its devices here
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # tf.distribute's INFO lines

    keras.utils.set_random_seed(seed)  # seeds Python's `random`, NumPy and the backend
    print("Keras", keras.__version__, "backend", keras.backend.backend())
