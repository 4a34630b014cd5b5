"""Export to deployment formats, and running the artifacts in their own runtimes.

`model.export(path, format=...)` on our models is Keras' own `Model.export`,
with three additions (`export_model`): the format × backend combination is
checked first (a combination that cannot work says why and names those that
do), the artifact is written atomically (into a temporary sibling, renamed at
the end), and the default input signature keeps the batch dynamic.

`load_artifact(path)` runs an artifact in the runtime it was made for: the
SavedModel's `serve` signature through `tf.saved_model.load`, `.onnx` through
onnxruntime, `.tflite` through ai-edge-litert's interpreter, `.xml` through
OpenVINO. `compare` measures it against the Keras model.

What works on this stack (Keras 3.15; see docs/export.md for the numbers):

| format           | tensorflow | jax                   | torch               |
|------------------|------------|-----------------------|---------------------|
| `tf_saved_model` | yes        | yes                   | no (torch_xla)      |
| `onnx`           | yes        | fixed batch (jax2onnx)| yes                 |
| `litert`         | yes        | no                    | no (litert-torch)   |
| `openvino`       | yes        | no (XlaCallModule)    | yes                 |
"""

import os
import shutil
import time

import numpy as np

import keras

from keras_swinv2 import backend
from keras_swinv2.io_utils import temporary_path

# Format -> (file suffix or None for a directory, the Python package of its runtime).
FORMATS = {
    "tf_saved_model": (None, "tensorflow"),
    "onnx": (".onnx", "onnxruntime"),
    "litert": (".tflite", "ai_edge_litert"),
    "openvino": (".xml", "openvino"),
}
BACKENDS = ("tensorflow", "jax", "torch")

# (format, backend) -> why it cannot work here; absent: it works.
UNSUPPORTED = {
    ("tf_saved_model", "torch"): (
        "Keras writes a SavedModel from torch through torch_xla's StableHLO bridge, which has no "
        "CPU build for this torch"
    ),
    ("litert", "jax"): "Keras' LiteRT export has no JAX path",
    ("litert", "torch"): (
        "Keras' LiteRT export from torch needs the `litert-torch` package, which is not installed "
        "(it pins versions of typing_extensions and pydantic that conflict with this environment)"
    ),
    ("openvino", "jax"): (
        "JAX exports through jax2tf, which now always wraps the model in one XlaCallModule op, and "
        "OpenVINO has no conversion for that op"
    ),
}
# (format, backend) -> a limit of a combination that works.
LIMITS = {
    ("onnx", "jax"): (
        "the batch size is fixed (jax2onnx cannot export SwinV2's window reshapes with a symbolic batch): "
        "pass input_signature=[keras.InputSpec(shape=(BATCH, H, W, 3))]"
    ),
    ("litert", "tensorflow"): "height and width are fixed (dynamic sizes need TF Select ops)",
}


def working_backends(fmt):
    """The backends that export `fmt`."""
    return [b for b in BACKENDS if (fmt, b) not in UNSUPPORTED]


def check_format(fmt, backend_name=None):
    """Raises a ValueError saying why `fmt` cannot be exported from the backend, if so."""
    backend_name = backend_name or backend.name()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}; got {fmt!r}.")
    reason = UNSUPPORTED.get((fmt, backend_name))
    if reason:
        others = [f for f in FORMATS if (f, backend_name) not in UNSUPPORTED]
        raise ValueError(
            f"Cannot export format={fmt!r} from the {backend_name} backend: {reason}. "
            f"{fmt!r} exports from: {', '.join(working_backends(fmt))} (KERAS_BACKEND=...; a .keras file "
            f"loads on any backend); from {backend_name}: {', '.join(others)}."
        )


def check_path(filepath, fmt):
    """The path as a string, checked against the format's suffix."""
    filepath = os.fspath(filepath)
    suffix = FORMATS[fmt][0]
    if suffix and not filepath.endswith(suffix):
        raise ValueError(f"A {fmt} artifact is written to a path ending in {suffix!r}; got {filepath!r}.")
    if suffix is None and os.path.isfile(filepath):
        raise ValueError(f"A SavedModel is a directory; {filepath!r} is a file.")
    return filepath


def _artifact_files(filepath, fmt):
    """The files an artifact at `filepath` consists of (OpenVINO: the .xml and its .bin)."""
    if fmt == "openvino":
        return [filepath, filepath[: -len(".xml")] + ".bin"]
    return [filepath]


def _check_dynamic_batch(model, fmt, input_signature):
    if (fmt, backend.name()) != ("onnx", "jax") or input_signature is not None:
        return
    raise ValueError(
        "ONNX export on the JAX backend needs a fixed batch size: "
        f"{LIMITS[('onnx', 'jax')]}, e.g. input_signature=[keras.InputSpec(shape=(1, "
        f"{', '.join(str(d) for d in model.inputs[0].shape[1:])}))]. The TensorFlow and torch backends "
        "export a dynamic batch."
    )


def default_signature(model):
    """The model's inputs with a dynamic batch, as `keras.InputSpec`s (None if it has no known inputs)."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    return [
        keras.InputSpec(shape=(None, *tuple(x.shape)[1:]), dtype=x.dtype, name=getattr(x, "name", None)) for x in inputs
    ]


def _check_sizes(fmt, input_signature):
    """Formats and backends that trace one image size refuse a dynamic height/width."""
    if not input_signature:
        return
    shape = tuple(input_signature[0].shape)
    if None not in shape[1:3]:
        return
    reason = None
    if (fmt, backend.name()) == ("litert", "tensorflow"):
        reason = "LiteRT needs TF Select (Flex) ops for a dynamic height/width"
    elif backend.name() == "torch":
        reason = (
            "the torch exporters trace the model at one image size and keep its padding and window counts as constants"
        )
    if reason:
        raise ValueError(
            f"Cannot export format={fmt!r} from the {backend.name()} backend with a dynamic height/width "
            f"(input shape {shape}): {reason}. Build the model with a fixed input_shape=(H, W, 3) "
            "(any size), or export a dynamic size as tf_saved_model or onnx from the TensorFlow backend "
            "(and tf_saved_model from JAX)."
        )


def export_model(model, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
    """`keras.Model.export`, checked, and written atomically.

    Args:
        model: a built Keras model.
        filepath: the artifact: a directory for "tf_saved_model", a file
            ending in ".onnx", ".tflite" or ".xml" (OpenVINO, with its ".bin"
            beside it) for the others.
        format: "tf_saved_model", "onnx", "litert" or "openvino" (and
            "torch" on the torch backend, passed through to Keras).
        verbose: as `keras.Model.export` (default quiet).
        input_signature: as `keras.Model.export`; by default the model's
            input with a dynamic batch.
        **kwargs: passed on to `keras.Model.export` (e.g. `opset_version`).

    Returns:
        The artifact's path.
    """
    if format == "torch":
        return keras.Model.export(model, filepath, format, verbose, input_signature, **kwargs)
    check_format(format)
    filepath = check_path(filepath, format)
    _check_dynamic_batch(model, format, input_signature)
    if input_signature is None:
        input_signature = default_signature(model)
    _check_sizes(format, input_signature)
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    # Written under a temporary name in the same directory, renamed when complete.
    temporary = temporary_path(filepath)
    if FORMATS[format][0] is None:
        os.remove(temporary)  # a SavedModel is a directory: the unique name is what is needed
    leftovers = _artifact_files(temporary, format)
    try:
        keras.Model.export(model, temporary, format, verbose=bool(verbose), input_signature=input_signature, **kwargs)
        if format == "onnx":
            leftovers += _onnx_external_files(temporary)
            if len(leftovers) > 1:
                _inline_onnx(temporary)
        if format == "tf_saved_model" and os.path.isdir(filepath):
            shutil.rmtree(filepath)
        for source, target in zip(_artifact_files(temporary, format), _artifact_files(filepath, format)):
            if os.path.exists(source):
                os.replace(source, target)
    finally:
        for leftover in leftovers:
            if os.path.isdir(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
            elif os.path.exists(leftover):
                os.remove(leftover)
    return filepath


def _onnx_external_files(path):
    """The external-data files an ONNX file refers to (jax2onnx writes the weights of large models there)."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    names = {e.value for t in graph.initializer for e in t.external_data if e.key == "location"}
    return [os.path.join(os.path.dirname(path), name) for name in sorted(names)]


def _inline_onnx(path):
    """Rewrites an ONNX file with its external weights inside: one self-contained file, whatever it is renamed to."""
    import onnx

    model = onnx.load(path)  # reads the external data
    if model.ByteSize() >= 2**31 - 2**20:
        raise ValueError(
            f"The ONNX model is {model.ByteSize() / 1e9:.1f} GB with its weights, over protobuf's 2 GB for one "
            "file; export from the TensorFlow or torch backend."
        )
    onnx.save(model, path)


class Exportable:
    """Mixin: `model.export` through `export_model` (checked combinations, atomic writes)."""

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        return export_model(self, filepath, format, verbose, input_signature, **kwargs)

    export.__doc__ = export_model.__doc__


# === Running artifacts ===


def detect_format(path):
    """The format of an artifact from its path."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return "tf_saved_model"
    for fmt, (suffix, _) in FORMATS.items():
        if suffix and path.endswith(suffix):
            return fmt
    raise ValueError(
        f"Cannot tell the format of {path!r}: expected a SavedModel directory or a file ending in "
        f"{', '.join(s for s, _ in FORMATS.values() if s)}."
    )


def _require(package, fmt):
    try:
        return __import__(package, fromlist=["_"])
    except ImportError as error:
        pip = {"ai_edge_litert": "ai-edge-litert", "tensorflow": "tensorflow-cpu"}.get(package, package)
        raise ImportError(
            f"Running a {fmt} artifact needs the {package} package: pip install {pip} "
            "(or pip install 'keras-swinv2[export]')."
        ) from error


class Artifact:
    """An exported model loaded in its own runtime.

    Attributes:
        path, format: where it is and what it is.
        inputs: list of `(name, shape)`, None for a dynamic dimension.
        outputs: list of `(name, shape)`.

    Call it on a float32 numpy batch; it returns `{output name: array}`.
    """

    def __init__(self, path, fmt=None, threads=None):
        self.path = os.fspath(path)
        self.format = fmt or detect_format(self.path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"No {self.format} artifact at {self.path!r}.")
        getattr(self, f"_load_{self.format}")(threads)

    def size_bytes(self):
        """Size on disk, all files of the artifact."""
        if os.path.isdir(self.path):
            return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(self.path) for f in files)
        return sum(os.path.getsize(p) for p in _artifact_files(self.path, self.format) if os.path.exists(p))

    def __call__(self, images):
        images = np.ascontiguousarray(images, dtype="float32")
        return self._run(images)

    # --- one loader per runtime ---

    def _load_tf_saved_model(self, threads):
        tf = _require("tensorflow", "tf_saved_model")
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:
                pass  # already initialised; the runtime keeps its setting
        loaded = tf.saved_model.load(self.path)
        serve = loaded.signatures["serving_default"]
        spec = serve.structured_input_signature[1]
        (self._input_name,) = spec
        self.inputs = [(self._input_name, tuple(spec[self._input_name].shape))]
        self.outputs = [(name, tuple(t.shape)) for name, t in sorted(serve.structured_outputs.items())]
        self._loaded = loaded  # keeps the variables alive

        def run(images):
            result = serve(**{self._input_name: tf.constant(images)})
            return {name: value.numpy() for name, value in sorted(result.items())}

        self._run = run

    def _load_onnx(self, threads):
        ort = _require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        dims = lambda shape: tuple(d if isinstance(d, int) else None for d in shape)  # noqa: E731
        self.inputs = [(i.name, dims(i.shape)) for i in session.get_inputs()]
        self.outputs = [(o.name, dims(o.shape)) for o in session.get_outputs()]
        names = [name for name, _ in self.outputs]

        def run(images):
            return dict(zip(names, session.run(names, {self.inputs[0][0]: images})))

        self._run = run

    def _load_litert(self, threads):
        interpreter_module = _require("ai_edge_litert.interpreter", "litert")
        interpreter = interpreter_module.Interpreter(model_path=self.path, num_threads=threads or None)
        interpreter.allocate_tensors()
        (inp,) = interpreter.get_input_details()
        signature = lambda d: tuple(None if s < 0 else int(s) for s in d["shape_signature"])  # noqa: E731
        self.inputs = [(inp["name"], signature(inp))]
        outputs = interpreter.get_output_details()
        self.outputs = [(o["name"], signature(o)) for o in outputs]
        state = {"shape": tuple(inp["shape"])}

        def run(images):
            if images.shape != state["shape"]:
                interpreter.resize_tensor_input(inp["index"], images.shape)
                interpreter.allocate_tensors()
                state["shape"] = images.shape
            interpreter.set_tensor(inp["index"], images)
            interpreter.invoke()
            return {o["name"]: interpreter.get_tensor(o["index"]).copy() for o in outputs}

        self._run = run

    def _load_openvino(self, threads):
        ov = _require("openvino", "openvino")
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(self.path, "CPU", config)

        def shape(port):
            return tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())

        def port_name(port, i, kind):
            names = port.get_names()
            return sorted(names)[0] if names else f"{kind}_{i}"

        self.inputs = [(port_name(p, i, "input"), shape(p)) for i, p in enumerate(compiled.inputs)]
        ports = list(compiled.outputs)
        if any(len(p.get_partial_shape()) for p in ports):
            # OpenVINO's TensorFlow frontend exposes the scalar shape arithmetic of a graph with a
            # dynamic height/width as extra outputs; the model's own outputs are the tensors
            ports = [p for p in ports if len(p.get_partial_shape())]
        self.outputs = [(port_name(p, i, "output"), shape(p)) for i, p in enumerate(ports)]
        request = compiled.create_infer_request()

        def run(images):
            result = request.infer({0: images})
            return {name: np.array(result[port]) for (name, _), port in zip(self.outputs, ports)}

        self._run = run


def load_artifact(path, fmt=None, threads=None):
    """Loads an exported model in its own runtime; see `Artifact`."""
    return Artifact(path, fmt, threads)


def match_outputs(keras_outputs, artifact_outputs):
    """Pairs a Keras model's outputs with an artifact's (by name where they agree, else by shape).

    Args:
        keras_outputs: an array, or a dict of arrays (e.g. pyramid outputs).
        artifact_outputs: `{name: array}` from an `Artifact`.

    Returns:
        list of `(keras key, artifact name, keras array, artifact array)`.
    """
    if not isinstance(keras_outputs, dict):
        keras_outputs = {"output": keras_outputs}
    remaining = dict(artifact_outputs)
    pairs = []
    for key, value in sorted(keras_outputs.items()):
        value = np.asarray(keras.ops.convert_to_numpy(value))
        named = [n for n, a in remaining.items() if key in n and a.shape == value.shape]
        same_shape = [n for n, a in remaining.items() if a.shape == value.shape]
        candidates = named or same_shape
        if not candidates:
            raise ValueError(
                f"The artifact has no output shaped like the model's {key!r} {value.shape}: "
                f"{ {n: a.shape for n, a in artifact_outputs.items()} }."
            )
        name = candidates[0]
        pairs.append((key, name, value, remaining.pop(name)))
    return pairs


def compare(model, artifact, images):
    """Largest absolute difference between the Keras model and the artifact on `images`.

    Returns:
        dict: `max_abs_diff` over all outputs, `outputs` (per output:
        Keras key, artifact name, shape, max difference), `keras_seconds`
        and `artifact_seconds` (one call each, after a warm-up).
    """
    images = np.asarray(images, dtype="float32")
    model.predict_on_batch(images)  # the first call traces; both sides are timed warm
    start = time.perf_counter()
    expected = model.predict_on_batch(images)
    keras_seconds = time.perf_counter() - start
    artifact(images)
    start = time.perf_counter()
    got = artifact(images)
    artifact_seconds = time.perf_counter() - start
    outputs = []
    for key, name, want, have in match_outputs(expected, got):
        outputs.append((key, name, tuple(have.shape), float(np.max(np.abs(want - have)))))
    return {
        "max_abs_diff": max(diff for *_, diff in outputs),
        "outputs": outputs,
        "keras_seconds": keras_seconds,
        "artifact_seconds": artifact_seconds,
    }
