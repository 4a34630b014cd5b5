"""Speed of SwinV2 inference and training: this package on each backend vs the PyTorch peers.

    python benchmarks/bench.py                       # both models, all implementations (~50 min on 2 cores)
    python benchmarks/bench.py --models tiny-256-w8 --impls keras-jax hf-torch --modes inference

Each implementation runs in its own process (Keras reads the backend once per process):
it builds the model, warms up (compilation happens here), times `--repeats` steps
and exits before the next implementation starts; the median step gives images/s.
`--interleave` keeps all processes alive and times them round by round instead (drift
of the machine hits all alike; needs every model in memory at once). Inference is
a forward pass without gradients; a training step is forward + backward + AdamW
update. Writes a JSON file and prints a table.

Allocator settings (`--malloc`, Linux with glibc >= 2.35; every worker gets the same):
    default    the environment as it is
    tuned      GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:
               glibc.malloc.trim_threshold=100000000000:glibc.malloc.hugetlb=1 (one string)
               one malloc arena, no mmap'd chunks, no trimming: freed memory stays in the
               process for the next step instead of going back to the kernel and being
               page-faulted in again; and transparent huge pages for the heap. XLA allocates
               each step's temporaries as one buffer (2.2 GB for a SwinV2-T training step at
               batch 8), which glibc maps afresh on every call: ~565k minor page faults and
               ~1.6 s of system CPU time per step.
    mallopt    every worker calls `keras_swinv2.tune_allocator()` first (the same settings but
               the huge pages, made from inside the process with glibc's mallopt: what a
               script or notebook can do).
    `--malloc default mallopt tuned` measures all three.

Implementations:
    keras-tf-graph     TensorFlow, tf.function without XLA
    keras-tf-xla       TensorFlow, tf.function(jit_compile=True)
    keras-jax          JAX, jax.jit
    keras-torch        torch eager
    keras-torch-compile torch.compile (Keras jit_compile=True on the torch backend)
    hf-torch           HF transformers' Swinv2ForImageClassification, torch eager
    hf-torch-compile   the same under torch.compile
    timm-torch         timm's swin_transformer_v2 (skipped where timm does not import)
    onnxruntime        the Keras model exported to ONNX from TensorFlow, run by ONNX Runtime
    onnxruntime-int8   the same after ONNX Runtime's dynamic int8 quantization (weights int8,
                       activations quantized per call)
    openvino           exported to OpenVINO IR from TensorFlow, run by OpenVINO (f32 precision)
    litert             exported to LiteRT from TensorFlow, run by ai-edge-litert's interpreter
    The runtimes measure inference only; they are skipped for training.
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import queue
import resource
import subprocess
import sys
import threading
import time

MODELS = {
    # name: (variant, image size, window, pretrained_window_sizes, batch)
    "tiny-256-w8": ("tiny", 256, 8, None, 8),
    "base-384-w24": ("base", 384, 24, (12, 12, 12, 6), 2),
}
KERAS_IMPLS = {
    "keras-tf-graph": ("tensorflow", False),
    "keras-tf-xla": ("tensorflow", True),
    "keras-jax": ("jax", True),
    "keras-torch": ("torch", False),
    "keras-torch-compile": ("torch", True),
}
# One arena, no mmap (glibc still mmaps a request its arena cannot hold unless there is only the
# main arena), no trim (threshold 100 GB); with hugetlb=1 glibc asks for transparent huge pages.
TUNED_MALLOC = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=100000000000:glibc.malloc.hugetlb=1"
)
MALLOC_SETTINGS = ("default", "mallopt", "tuned")
# the environment variable that has a worker call keras_swinv2.tune_allocator() (--malloc mallopt)
MALLOPT_VARIABLE = "SWINV2_BENCH_MALLOPT"
TORCH_IMPLS = ("hf-torch", "hf-torch-compile", "timm-torch")
# implementation -> (export format, post-training quantization)
RUNTIME_IMPLS = {
    "onnxruntime": ("onnx", None),
    "onnxruntime-int8": ("onnx", "int8"),
    "openvino": ("openvino", None),
    "litert": ("litert", None),
}
IMPLS = tuple(KERAS_IMPLS) + TORCH_IMPLS + tuple(RUNTIME_IMPLS)
ARCH = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}


def keras_model_and_batch(model_name, batch=None):
    """The benchmark's Keras SwinV2 (no stochastic depth, logits out) and a random batch.

    Keras must already be imported with the wanted backend. Returns `(model, images, labels)`;
    `batch` defaults to the model's benchmark batch.
    """
    import numpy as np

    import keras_swinv2

    variant, size, window, pretrained, default_batch = MODELS[model_name]
    batch = batch or default_batch
    model = keras_swinv2.SwinV2(
        variant=variant,
        input_shape=(size, size, 3),
        window_size=window,
        pretrained_window_sizes=pretrained,
        classifier_activation=None,
        drop_path_rate=0.0,
    )
    images = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    return model, images, np.arange(batch) % 1000


def _keras_step(impl, model_name, mode, dtype):
    backend, jit = KERAS_IMPLS[impl]
    os.environ["KERAS_BACKEND"] = backend
    import keras

    if dtype == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    model, x, y = keras_model_and_batch(model_name)
    if mode == "train":
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        step = lambda: model.train_on_batch(x, y)  # noqa: E731
    elif backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda t: model(t, training=False), jit_compile=jit)
        tx = tf.constant(x)
        step = lambda: fn(tx).numpy()  # noqa: E731
    elif backend == "jax":
        import jax

        fn = jax.jit(lambda tv, ntv, t: model.stateless_call(tv, ntv, t, training=False)[0])
        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        step = lambda: fn(tv, ntv, x).block_until_ready()  # noqa: E731
    else:
        import torch

        fn = torch.compile(model) if jit else model
        tx = torch.from_numpy(x)

        def step():
            with torch.no_grad():
                fn(tx, training=False)

    return len(x), step


def hf_model(model_name):
    """HF transformers' `Swinv2ForImageClassification` with the benchmark model's architecture."""
    from transformers import Swinv2Config, Swinv2ForImageClassification

    variant, size, window, pretrained, _ = MODELS[model_name]
    config = Swinv2Config(
        image_size=size,
        window_size=window,
        num_labels=1000,
        pretrained_window_sizes=list(pretrained or (0, 0, 0, 0)),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in ARCH[variant].items()},
    )
    return Swinv2ForImageClassification(config)


def _torch_step(impl, model_name, mode, dtype):
    import torch

    torch.manual_seed(0)
    variant, size, window, pretrained, batch = MODELS[model_name]
    if impl.startswith("hf-torch"):
        model = hf_model(model_name)
        forward = lambda t: model(t).logits  # noqa: E731
    else:
        import timm

        name = (
            f"swinv2_{variant}_window{window}_{size}"
            if not pretrained
            else (f"swinv2_{variant}_window12to{window}_192to{size}")
        )
        model = timm.create_model(name, pretrained=False)
        forward = model
    if impl.endswith("-compile"):
        forward = torch.compile(forward)
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % 1000
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    if mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(forward(x), y)
            loss.backward()
            optimizer.step()
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast:
                forward(x)

    return len(x), step


def _runtime_step(impl, model_name, mode, dtype, threads):
    """An exported artifact in its own runtime (exported from the TensorFlow backend)."""
    import tempfile

    if mode != "inference" or dtype != "float32":
        raise ValueError(f"{impl} measures float32 inference only")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    from keras_swinv2.export import FORMATS, export_model, load_artifact

    fmt, quantization = RUNTIME_IMPLS[impl]
    model, x, _ = keras_model_and_batch(model_name)
    directory = tempfile.mkdtemp(prefix="swinv2-bench-")
    path = export_model(model, os.path.join(directory, "model" + (FORMATS[fmt][0] or "")), fmt)
    if quantization == "int8":
        path = quantize_onnx_int8(path)
    artifact = load_artifact(path, threads=threads)
    return len(x), lambda: artifact(x)


def quantize_onnx_int8(path):
    """ONNX Runtime's dynamic int8 quantization (after its pre-processing); returns the new path."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, quantized = path.replace(".onnx", ".pre.onnx"), path.replace(".onnx", ".int8.onnx")
    quant_pre_process(path, prepared, skip_symbolic_shape=True)
    quantize_dynamic(prepared, quantized, weight_type=QuantType.QInt8)
    return quantized


def malloc_environment(setting, environ):
    """The environment of every worker for a `--malloc` setting.

    Args:
        setting: "default" (`environ` unchanged), "mallopt" (`MALLOPT_VARIABLE` set: the
            worker calls `keras_swinv2.tune_allocator()` first) or "tuned" (`TUNED_MALLOC` put
            in front of any `GLIBC_TUNABLES` already in `environ`, whose own entries then take
            precedence).
        environ: mapping, the environment to start from.

    Returns:
        A new dict.
    """
    if setting not in MALLOC_SETTINGS:
        raise ValueError(f"--malloc must be one of {MALLOC_SETTINGS}; got {setting!r}.")
    env = dict(environ)
    env.pop(MALLOPT_VARIABLE, None)
    if setting == "mallopt":
        env[MALLOPT_VARIABLE] = "1"
    if setting == "tuned":
        libc, version = platform.libc_ver()
        if libc != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
            raise SystemExit(f"--malloc tuned needs glibc >= 2.35 (Linux); this is {libc or 'no glibc'} {version}.")
        env["GLIBC_TUNABLES"] = ":".join(t for t in (TUNED_MALLOC, environ.get("GLIBC_TUNABLES")) if t)
    return env


def transparent_hugepages():
    """The kernel's transparent huge page mode ("always", "madvise", "never"), or None."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


#: Instruction sets that decide CPU matrix-product speed, float32 and bfloat16.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_description(cpuinfo=None):
    """The CPU's model name, family / model numbers and matrix-relevant ISA flags (Linux), or None.

    Args:
        cpuinfo: the text of `/proc/cpuinfo`; read from there when None.

    Returns:
        `{"name", "family", "model", "isa"}` from the first processor entry, `isa` the
        `ISA_FLAGS` it lists; None where there is no `/proc/cpuinfo`. The same machine
        name can be a different CPU from day to day: this is what tells runs apart.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    fields = {}
    for line in cpuinfo.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return dict(
        name=fields.get("model name"),
        family=fields.get("cpu family"),
        model=fields.get("model"),
        isa=[f for f in ISA_FLAGS if f in flags],
    )


def describe_cpu(cpu):
    """One line for the log: model, numbers and ISA, and what the ISA means for bfloat16."""
    if cpu is None:
        return "CPU: unknown (no /proc/cpuinfo)"
    bf16 = any(f in cpu["isa"] for f in ("avx512_bf16", "amx_bf16"))
    isa = " ".join(cpu["isa"]) or "no AVX2 / AVX-512"
    note = "" if bf16 else " (no bfloat16 instructions: bfloat16 matrix products have no hardware support)"
    return f"CPU: {cpu['name']} (family {cpu['family']}, model {cpu['model']}): {isa}{note}"


def worker(args):
    """One implementation in its own process, driven over stdin/stdout.

    Builds the model, runs the warm-up steps (compilation happens there), prints
    `READY {...}`, then answers each `step` line with `TIME <seconds> <minor page faults>
    <system CPU seconds>` until stdin closes. Errors are printed as `ERROR <message>`.
    """
    if os.environ.get(MALLOPT_VARIABLE) == "1":
        # by path: importing the package would import Keras into the PyTorch peers' processes
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "keras_swinv2", "allocator.py")
        spec = importlib.util.spec_from_file_location("keras_swinv2_allocator", path)
        allocator = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(allocator)
        if not allocator.tune_allocator():
            print("ERROR keras_swinv2.tune_allocator() could not tune this allocator", flush=True)
            return 1
    if args.impl in TORCH_IMPLS or args.impl.startswith("keras-torch"):
        import torch

        torch.set_num_threads(args.threads)
    build = _keras_step if args.impl in KERAS_IMPLS else _torch_step
    if args.impl in RUNTIME_IMPLS:
        build = lambda *a: _runtime_step(*a, threads=args.threads)  # noqa: E731
    start = time.perf_counter()
    try:
        batch, step = build(args.impl, args.model, args.mode, args.dtype)
        for _ in range(args.warmup):
            step()
    except Exception as e:  # reported in the table, not fatal to the run
        print(f"ERROR {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
        return 1
    print("READY " + json.dumps(dict(batch=batch, setup_s=time.perf_counter() - start)), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        step()
        seconds, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        print(f"TIME {seconds!r} {after.ru_minflt - before.ru_minflt} {after.ru_stime - before.ru_stime!r}", flush=True)
    return 0


class _Worker:
    """A worker process and its line protocol, with a deadline on every answer."""

    def __init__(self, cmd, env):
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, bufsize=1
        )
        self.stderr = []
        self._stderr_thread = threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True)
        self._stderr_thread.start()
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def answer(self, timeout):
        """The next protocol line (READY/TIME/ERROR ...); raises on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise TimeoutError(f"timed out after {timeout} s") from None
            if line is None:
                self.proc.wait()
                self._stderr_thread.join(timeout=5)
                last = next((line.strip() for line in reversed(self.stderr) if line.strip()), "no output")
                raise RuntimeError(f"worker exited ({self.proc.returncode}): {last[:200]}")
            if line.startswith(("READY ", "TIME ", "ERROR ")):
                return line

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def measure_group(impls, model, mode, dtype, args, env, malloc="default"):
    """Measures `impls` on one (model, mode, dtype).

    Every implementation runs in its own process. By default each one builds,
    warms up, runs all its timed steps and exits before the next starts. With
    `--interleave` all are built first and each round times one step of each in
    turn, so slow drift of the machine hits all of them alike; but every process
    stays resident: SwinV2-T training with 7 of them took 18 of this machine's
    23 GiB and slowed JAX's step 3.5 -> 6.2 s (allocation under memory pressure).
    """
    impls = [i for i in impls if i not in RUNTIME_IMPLS or (mode, dtype) == ("inference", "float32")]
    results = {impl: dict(impl=impl, model=model, mode=mode, dtype=dtype, malloc=malloc) for impl in impls}
    workers = {}

    def start(impl):
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            "--impl",
            impl,
            "--model",
            model,
            "--mode",
            mode,
            "--dtype",
            dtype,
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
        ]
        w = _Worker(cmd, env)
        try:
            line = w.answer(args.timeout)
        except (TimeoutError, RuntimeError) as e:
            w.close() if isinstance(e, RuntimeError) else w.proc.kill()
            results[impl]["error"] = str(e)
            return
        if line.startswith("ERROR "):
            results[impl]["error"] = line[6:]
            w.close()
            return
        results[impl].update(json.loads(line[6:]), times_s=[], page_faults=[], system_s=[])
        workers[impl] = w

    def step(impl):
        w = workers[impl]
        time.sleep(args.pause)  # lets the previous worker's thread pools go idle
        try:
            w.send("step")
            seconds, faults, system = w.answer(args.timeout).split()[1:]
            results[impl]["times_s"].append(float(seconds))
            results[impl]["page_faults"].append(int(faults))
            results[impl]["system_s"].append(float(system))
        except (TimeoutError, RuntimeError, OSError, ValueError) as e:
            results[impl]["error"] = str(e)
            w.proc.kill()
            del workers[impl]

    def finish(impl):
        if impl in workers:
            workers.pop(impl).close()
        r = results[impl]
        if r.get("times_s") and "error" not in r:
            median = _median(r["times_s"])
            r.update(median_s=median, images_per_s=r["batch"] / median)
        print(_row(r), flush=True)

    try:
        if not args.interleave:
            for impl in impls:
                start(impl)
                for _ in range(args.repeats):
                    if impl in workers:
                        step(impl)
                finish(impl)
        else:
            for impl in impls:
                start(impl)
            for _ in range(args.repeats):
                for impl in impls:
                    if impl in workers:
                        step(impl)
            for impl in impls:
                finish(impl)
    finally:
        for w in workers.values():
            w.proc.kill()
    return [results[impl] for impl in impls]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--worker" in argv:
        w = argparse.ArgumentParser()
        for name in ("impl", "model", "mode", "dtype"):
            w.add_argument(f"--{name}")
        for name in ("warmup", "threads"):
            w.add_argument(f"--{name}", type=int)
        w.add_argument("--worker", action="store_true")
        return worker(w.parse_args(argv))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    parser.add_argument("--modes", nargs="+", default=["inference", "train"], choices=["inference", "train"])
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument(
        "--malloc",
        nargs="+",
        default=["default"],
        choices=MALLOC_SETTINGS,
        help="glibc allocator settings of the workers (see above)",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (rounds) per implementation")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--timeout", type=int, default=1200, help="seconds for setup + warm-up, and per step")
    parser.add_argument(
        "--pause",
        type=float,
        default=1.0,
        help="idle seconds before each timed step (spinning threads of the last one settle)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="keep every implementation's process alive and time them round by round "
        "(removes slow drift, but needs all of them in memory at once)",
    )
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/<time>.json)")
    args = parser.parse_args(argv)
    environments = {m: malloc_environment(m, dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")) for m in args.malloc}
    cpu = cpu_description()
    print(describe_cpu(cpu), flush=True)
    results = []
    for model in args.models:
        for mode in args.modes:
            for dtype in args.dtypes:
                for malloc, env in environments.items():
                    results += measure_group(args.impls, model, mode, dtype, args, env, malloc)
    report = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        machine=dict(
            platform=platform.platform(),
            cpu=cpu,
            cpus=os.cpu_count(),
            python=platform.python_version(),
            libc=" ".join(platform.libc_ver()),
            transparent_hugepages=transparent_hugepages(),
        ),
        settings=dict(
            warmup=args.warmup,
            repeats=args.repeats,
            threads=args.threads,
            pause_s=args.pause,
            order="interleaved" if args.interleave else "sequential",
            malloc={
                m: "keras_swinv2.tune_allocator()" if m == "mallopt" else environments[m].get("GLIBC_TUNABLES", "")
                for m in args.malloc
            },
            batches={m: MODELS[m][4] for m in args.models},
        ),
        versions=_versions(),
        results=results,
    )
    out = args.out or os.path.join(
        os.path.dirname(__file__), "results", datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json"
    )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print("\n" + markdown_table(results))
    ratios = ratio_table(results)
    if ratios:
        print("\nOver the fastest PyTorch peer (targets: best / every Keras backend):\n" + ratios)
    print(f"\nwritten {out}")
    return 0


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in (
        "keras",
        "tensorflow-cpu",
        "tensorflow",
        "jax",
        "torch",
        "transformers",
        "timm",
        "onnxruntime",
        "openvino",
        "ai-edge-litert",
    ):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _median(values):
    """The middle value (the upper one of an even count), as the table has always used."""
    return sorted(values)[len(values) // 2]


def _row(r):
    speed = f"{r['images_per_s']:.2f} img/s" if "images_per_s" in r else r.get("error", "?")
    if r.get("page_faults"):
        speed += f"  ({_median(r['page_faults'])} page faults, {_median(r['system_s']):.2f} s system CPU per step)"
    malloc = r.get("malloc", "default")
    return f"{r['model']:14s} {r['mode']:9s} {r['dtype']:8s} {malloc:8s} {r['impl']:20s} {speed}"


def markdown_table(results):
    """One row per (model, mode, dtype, malloc), one column per implementation, images/s."""
    impls = [i for i in IMPLS if any(r["impl"] == i for r in results)]

    def key_of(r):
        return r["model"], r["mode"], r["dtype"], r.get("malloc", "default")

    keys = []
    for r in results:
        if key_of(r) not in keys:
            keys.append(key_of(r))
    lines = ["| model | mode | dtype | malloc | " + " | ".join(impls) + " |", "|---" * (4 + len(impls)) + "|"]
    for key in keys:
        cells = []
        for impl in impls:
            r = next((r for r in results if key_of(r) == key and r["impl"] == impl), None)
            cells.append("" if r is None else f"{r['images_per_s']:.2f}" if "images_per_s" in r else "n/a")
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# mode -> (best Keras backend, every Keras backend): the targets, as ratios to the fastest PyTorch peer
TARGETS = {"inference": (1.25, 0.9), "train": (1.1, 0.8)}


def ratio_table(results):
    """Each Keras implementation's speed over the fastest PyTorch peer measured in the same group.

    One row per (model, mode, dtype, malloc) that has a peer (`TORCH_IMPLS`) and a Keras
    implementation; the last columns say which peer was fastest and whether the targets of
    `TARGETS` are met (the best Keras backend, and every one of them).
    """
    keras_impls = [i for i in KERAS_IMPLS if any(r["impl"] == i and "images_per_s" in r for r in results)]
    lines = [
        "| model | mode | dtype | malloc | " + " | ".join(keras_impls) + " | fastest peer | best | all |",
        "|---" * (7 + len(keras_impls)) + "|",
    ]
    groups = {}
    for r in results:
        if "images_per_s" in r:
            key = (r["model"], r["mode"], r["dtype"], r.get("malloc", "default"))
            groups.setdefault(key, {})[r["impl"]] = r["images_per_s"]
    for key, speeds in groups.items():
        peers = {i: v for i, v in speeds.items() if i in TORCH_IMPLS}
        ours = {i: speeds[i] / max(peers.values()) for i in keras_impls if i in speeds} if peers else {}
        if not ours:
            continue
        peer = max(peers, key=peers.get)
        best_target, all_target = TARGETS[key[1]]
        best, worst = max(ours.values()), min(ours.values())
        cells = [f"{ours[i]:.2f}x" if i in ours else "" for i in keras_impls]
        verdicts = [
            f"{best:.2f}x {'>=' if best >= best_target else '<'} {best_target}",
            f"{worst:.2f}x {'>=' if worst >= all_target else '<'} {all_target}",
        ]
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + f" | {peer} | " + " | ".join(verdicts) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


if __name__ == "__main__":
    sys.exit(main())
