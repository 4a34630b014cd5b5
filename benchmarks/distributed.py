"""Optimizer-state memory per device and step time: data parallel vs ZeRO-1, TF and JAX.

    python benchmarks/distributed.py                          # SwinV2-T, 64 px, 2 and 4 CPU devices
    python benchmarks/distributed.py --variant base --size 256 --devices 8

Each (backend, devices, option) runs in its own process. Devices are simulated on CPU
(TF logical devices; JAX `--xla_force_host_platform_device_count`) unless GPUs are visible,
so step times on CPU only compare the options with each other.
    tensorflow  `DistributedTrainer` under `MirroredStrategy`: plain Keras optimizer state
                (mirrored, a full copy per device) vs `shard_optimizer_state=True`
    jax         `model.fit` under `keras.distribution.DataParallel`, without and with
                `shard_optimizer_state`
Bytes are read from the arrays each device really holds. The optimizer is AdamW (two slots
per parameter). Step time: median of --steps steps after one warm-up step.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _tf_worker(args, model, x, y, zero):
    import numpy as np
    import tensorflow as tf

    import keras

    from keras_swinv2.distribute.tf_training import DistributedTrainer

    strategy = (
        tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.devices)])
        if args.devices > 1
        else tf.distribute.get_strategy()
    )
    with strategy.scope():
        model = model()
        optimizer = keras.optimizers.AdamW(1e-4)
    trainer = DistributedTrainer(
        model, optimizer, "sparse_categorical_crossentropy", strategy, shard_optimizer_state=zero
    )
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).repeat()
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        trainer.fit(data, epochs=1, steps_per_epoch=1)
        times.append(time.perf_counter() - start)
    if zero:
        per_device = trainer.optimizer.state_bytes_per_device()
    else:  # mirrored: every device holds every optimizer variable
        total = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in optimizer.variables)
        per_device = {f"/cpu:{i}": total for i in range(args.devices)}
    return per_device, times


def _jax_worker(args, model, x, y, zero):
    import keras

    from keras_swinv2.distribute.jax_zero import bytes_per_device, shard_optimizer_state

    keras.distribution.set_distribution(keras.distribution.DataParallel())
    model = model()
    optimizer = keras.optimizers.AdamW(1e-4)
    if zero:
        optimizer = shard_optimizer_state(optimizer)
    model.compile(optimizer, "sparse_categorical_crossentropy")
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        model.train_on_batch(x[: args.batch], y[: args.batch])
        times.append(time.perf_counter() - start)
    return bytes_per_device(model.optimizer.variables), times


def worker(args):
    import numpy as np

    import keras

    import keras_swinv2

    if keras.backend.backend() == "tensorflow" and args.devices > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices)

    def model():
        return keras_swinv2.SwinV2(
            variant=args.variant,
            input_shape=(args.size, args.size, 3),
            window_size=args.window,
            classes=100,
            classifier_activation="softmax",
        )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 100, size=(args.batch,))
    run = _tf_worker if keras.backend.backend() == "tensorflow" else _jax_worker
    per_device, times = run(args, model, x, y, args.option == "zero1")
    values = list(per_device.values())
    print(
        "RESULT "
        + json.dumps(
            dict(
                backend=keras.backend.backend(),
                devices=args.devices,
                option=args.option,
                variant=args.variant,
                size=args.size,
                batch=args.batch,
                optimizer_bytes_per_device=max(values),
                optimizer_bytes_all_devices=sum(values),
                step_seconds=float(np.median(times[1:])),
            )
        ),
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="global batch")
    parser.add_argument("--devices", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--output", default="benchmarks/results/distributed.jsonl")
    parser.add_argument("--option", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.devices = args.devices[0]
        return worker(args)

    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    rows = ["| backend | devices | option | optimizer MiB per device | of the unsharded | step s |", "|---" * 6 + "|"]
    for backend in args.backends:
        for devices in args.devices:
            plain = None
            for option in ("data-parallel", "zero1"):
                env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
                if backend == "jax":
                    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
                command = [sys.executable, __file__, "--worker", "--option", option, "--devices", str(devices)]
                for name in ("variant", "size", "window", "batch", "steps"):
                    command += [f"--{name}", str(getattr(args, name))]
                proc = subprocess.run(command, env=env, capture_output=True, text=True)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if not lines:
                    rows.append(f"| {backend} | {devices} | {option} | error: {proc.stderr.strip()[-200:]} | | |")
                    print(rows[-1], flush=True)
                    continue
                result = json.loads(lines[0][len("RESULT ") :])
                with open(args.output, "a") as f:
                    f.write(json.dumps(result) + "\n")
                per_device = result["optimizer_bytes_per_device"]
                plain = plain or per_device
                rows.append(
                    f"| {backend} | {devices} | {option} | {per_device / 2**20:.2f} | {per_device / plain:.3f} | "
                    f"{result['step_seconds']:.2f} |"
                )
                print(rows[-1], flush=True)
    print(f"\nSwinV2 {args.variant}, {args.size} px, global batch {args.batch}, AdamW")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
