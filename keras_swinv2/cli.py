"""The `swinv2` commands. Arguments, messages and exit codes are in the top-level `keras_swinv2_cli`
module, which imports this one only once the arguments are valid (so `--help` needs no Keras)."""

from keras_swinv2_cli import main  # noqa: F401  (the entry point, also as `keras_swinv2.cli.main`)


DEMO_ARCHITECTURE = {"embed_dim": 32, "depths": (2, 2, 2), "num_heads": (2, 4, 8)}


def _architecture(args):
    """The custom-size overrides given on the command line (--embed-dim, --depths, --num-heads)."""
    given = (("embed_dim", args.embed_dim), ("depths", args.depths), ("num_heads", args.num_heads))
    return {key: value for key, value in given if value is not None}


def _finetune_config(args, **fixed):
    from keras_swinv2.training import FinetuneConfig

    architecture = _architecture(args)
    task = getattr(args, "task", "classification")
    head = {}
    flip = args.data != "digits" if args.flip is None else args.flip
    if task == "classification":
        augmentation = {
            "crop_scale": tuple(args.crop_scale) if args.crop_scale else None,
            "flip": flip,
            "randaugment": args.randaugment or None,
            "erasing": args.erasing or None,
            "mixup": args.mixup or None,
            "cutmix": args.cutmix or None,
        }
    else:
        augmentation = {"flip": flip, "scale": tuple(args.scale_jitter) if args.scale_jitter else None}
    for option, value, wanted in (
        (
            "--head-channels",
            getattr(args, "head_channels", None),
            {"head_channels": getattr(args, "head_channels", None)},
        ),
        ("--auxiliary-head", getattr(args, "auxiliary_head", False), {"auxiliary_head": True}),
    ):
        if value:
            if task != "segmentation":
                raise ValueError(f"{option} is an option of --task segmentation; got --task {task}.")
            head.update(wanted)
    settings = dict(
        task=task,
        head=head or None,
        data=args.data,
        data_dir=args.data_dir,
        model=getattr(args, "model", "tiny"),
        weights=None if args.weights in (None, "none") else args.weights,
        image_size=args.image_size,
        window_size=args.window_size,
        architecture=architecture or None,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        layer_decay=args.layer_decay,
        warmup_epochs=args.warmup_epochs,
        decay=args.decay,
        min_learning_rate=args.min_lr,
        drop_path_rate=args.drop_path,
        label_smoothing=args.label_smoothing,
        ema=args.ema,
        clipnorm=args.clipnorm or None,
        mode=args.mode,
        frozen_stages=args.frozen_stages,
        augmentation=augmentation,
        seed=args.seed,
    )
    settings.update(fixed)
    return FinetuneConfig(**settings)


def finetune(args):
    """Fine-tunes a SwinV2 on an image dataset with model.fit; resumes an interrupted run."""
    import keras

    from keras_swinv2.training import finetune as run

    config = _finetune_config(args)
    print(f"Backend: {keras.backend.backend()}; output: {args.output}")
    model, data, history = run(config, args.output, verbose=args.verbose)
    _report(history, args.output, config.task)
    return 0


def pretrain(args):
    """SimMIM pre-training of a SwinV2 encoder with model.fit; resumes an interrupted run."""
    import keras

    from keras_swinv2.simmim import PretrainConfig
    from keras_swinv2.simmim import pretrain as run

    architecture = _architecture(args)
    config = PretrainConfig(
        data=args.data,
        data_dir=args.data_dir,
        model=args.model,
        architecture=architecture or None,
        image_size=args.image_size,
        window_size=args.window_size,
        mask_patch_size=args.mask_patch_size,
        mask_ratio=args.mask_ratio,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        min_learning_rate=args.min_lr,
        clipnorm=args.clipnorm or None,
        drop_path_rate=args.drop_path,
        crop_scale=tuple(args.crop_scale),
        seed=args.seed,
    )
    print(f"Backend: {keras.backend.backend()}; output: {args.output}")
    _, history = run(config, args.output, verbose=args.verbose)
    best = min(history, key=lambda row: row.get("val_loss", float("inf")))
    print(
        f"\nSimMIM loss {history[0]['loss']:.4f} (epoch 1) -> {history[-1]['loss']:.4f} (epoch {len(history)}); "
        f"best validation loss {best['val_loss']:.4f}.\nEncoder saved to {args.output}/encoder.keras: "
        f"fine-tune it with `swinv2 finetune --model {args.output}/encoder.keras --weights none`."
    )
    return 0


def _report(history, output, task="classification"):
    from keras_swinv2.training.finetuning import MONITORS

    monitor = MONITORS[task]
    name = {"val_accuracy": "accuracy", "val_mean_iou": "mean IoU", "val_ap50": "AP@0.5"}[monitor]
    best = max(history, key=lambda row: row.get(monitor, -1.0))
    print(
        f"\nBest validation {name} {best[monitor]:.2%} (epoch {best['epoch']} of "
        f"{len(history)}); saved {output}/best.keras, log.csv, curves.png"
    )
    return best


def demo(args):
    """The main job: fine-tunes a SwinV2 on scikit-learn's digits, then classifies held-out images."""
    import time

    import keras

    from keras_swinv2.training import finetune as run

    start = time.time()
    if args.weights in (None, "none"):
        print(
            "Training a small SwinV2 (embed 32, depths 2-2-2, window 4) from random initialisation on "
            "scikit-learn's handwritten digits (1797 images, 8x8 px upscaled to 32 px), offline.\n"
            "Pass --weights imagenet1k (network access) to fine-tune the pretrained SwinV2-T instead."
        )
        config = _finetune_config(
            args, model="tiny", weights=None, image_size=32, window_size=4, architecture=DEMO_ARCHITECTURE
        )
    else:
        print(f"Fine-tuning SwinV2-T ({args.weights}) on scikit-learn's digits at 128 px, window 8.")
        config = _finetune_config(
            args,
            model="tiny",
            weights=args.weights,
            image_size=128,
            window_size=8,
            architecture=None,
            layer_decay=0.85,
        )
    print(f"Backend: {keras.backend.backend()}; output: {args.output}")
    _, data, history = run(config, args.output, verbose=args.verbose)
    best = _report(history, args.output)

    model = keras.saving.load_model(f"{args.output}/best.keras")
    from keras_swinv2.data import pipeline

    images, labels = next(iter(data.validation.batch(args.show)))
    size = model.backbone.image_shape[0]
    batch = next(iter(pipeline.validation_batches(data, size, args.show, config.crop_ratio, cache=False)))[0]
    probs = keras.ops.convert_to_numpy(model.predict(batch, verbose=0))
    print(f"\nHeld-out digits classified by the saved model ({args.output}/best.keras):")
    pixels = images.numpy()[..., 0]
    for row in range(pixels.shape[1]):
        print("   ".join("".join(" .:-=+*#%@"[int(v) * 9 // 255] * 2 for v in image[row]) for image in pixels))
    print("   ".join(f"true {int(t)} pred {int(p.argmax())}".ljust(16) for t, p in zip(labels.numpy(), probs)))
    print("   ".join(f"  ({p.max():.0%})".ljust(16) for p in probs))
    correct = int((probs.argmax(-1) == labels.numpy()).sum())
    print(
        f"\n{correct}/{len(probs)} correct; validation accuracy {best['val_accuracy']:.2%} on "
        f"{data.validation_size} held-out images; wall time {time.time() - start:.0f} s."
    )
    return 0


def predict(args):
    """Classifies images with a pretrained SwinV2 and prints the top-k with names."""
    import numpy as np
    import keras

    import keras_swinv2
    from keras_swinv2.data import decode_predictions, load_image, preprocess_input
    from keras_swinv2.models.presets import is_file_path
    from keras_swinv2.weights import find_checkpoint

    overrides = {}
    if args.window_size:
        overrides["window_size"] = args.window_size
    input_shape = (args.image_size, args.image_size, 3) if args.image_size else None
    builder = getattr(keras_swinv2, f"SwinV2{args.model.capitalize()}")
    model = builder(weights=args.weights, input_shape=input_shape, **overrides)
    size = model.backbone.image_shape[0]
    crop = True
    if not is_file_path(args.weights):
        checkpoint = find_checkpoint(args.model, args.weights, args.window_size, args.image_size)
        crop = checkpoint.crop and size == checkpoint.image_size
    images = np.stack([load_image(path, size, crop=crop) for path in args.images])
    probs = keras.ops.convert_to_numpy(model.predict(preprocess_input(images), verbose=0))
    label_set = {1000: "imagenet1k", 21841: "imagenet22k"}.get(probs.shape[-1])
    for path, top in zip(args.images, decode_predictions(probs, top=args.top, label_set=label_set)):
        print(f"{path}:")
        for rank, (synset, name, score) in enumerate(top, 1):
            print(f"  {rank}. {score:7.2%}  {name} ({synset})")
    return 0


def _export_model(args):
    """The model `swinv2 export` writes: a named variant with weights, or a .keras file."""
    import keras

    import keras_swinv2
    from keras_swinv2.models.variants import VARIANTS
    from keras_swinv2.tasks.image_classifier import SwinV2ImageClassifier
    from keras_swinv2.training.finetuning import rebuild_backbone
    from keras_swinv2.weights import copy_encoder_weights, load_keras_file, model_parts

    side = None if args.dynamic_size else args.image_size
    if args.model.endswith(".keras"):
        if args.weights not in (None, "none"):
            raise ValueError(f"--weights applies to a named model; {args.model} holds its own weights.")
        source = load_keras_file(args.model)
        try:
            backbone, head = model_parts(source)
        except TypeError:
            raise ValueError(f"{args.model} holds a {type(source).__name__}, not a SwinV2 model.") from None
        model = source
        resize = args.dynamic_size or args.image_size or args.window_size
        if resize:
            overrides = {"window_size": args.window_size} if args.window_size else {}
            backbone = rebuild_backbone(backbone, (side, side, backbone.image_shape[-1]), **overrides)
            model = backbone
        if head is not None and (resize or args.logits) and not args.features:
            activation = None if args.logits else source.get_config().get("activation")
            model = SwinV2ImageClassifier(backbone, head.units, activation=activation)
        if model is not source:
            copy_encoder_weights(source, model, head=head is not None and model is not backbone)
    else:
        overrides = {"window_size": args.window_size} if args.window_size else {}
        if args.model not in VARIANTS:
            raise ValueError(f"--model must be one of {sorted(VARIANTS)} or a .keras file; got {args.model!r}.")
        builder = getattr(keras_swinv2, f"SwinV2{args.model.capitalize()}")
        input_shape = (side, side, 3) if (side or args.dynamic_size) else None
        weights = None if args.weights in (None, "none") else args.weights
        model = builder(
            weights=weights,
            input_shape=input_shape,
            classifier_activation=None if args.logits else "softmax",
            **overrides,
        )
    backbone = model_parts(model)[0]
    if args.features:
        model = keras.Model(backbone.inputs, backbone.pyramid_outputs, name=f"{backbone.name}_features")
    return model, backbone


def export(args):
    """Exports a SwinV2 and checks the artifact in its own runtime against the Keras model."""
    import os
    import time

    import numpy as np
    import keras

    from keras_swinv2 import export as exporting

    exporting.check_format(args.format)
    exporting.check_path(args.output, args.format)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1; got {args.batch_size}.")
    backend = keras.backend.backend()
    model, backbone = _export_model(args)
    shape = tuple(model.inputs[0].shape[1:])
    signature = None
    if (args.format, backend) == ("onnx", "jax"):
        signature = [keras.InputSpec(shape=(args.batch_size, *shape), dtype="float32", name="images")]
    start = time.perf_counter()
    exporting.export_model(model, args.output, args.format, input_signature=signature)
    seconds = time.perf_counter() - start
    artifact = exporting.load_artifact(args.output, args.format)
    print(
        f"Wrote {args.output} ({args.format}, {artifact.size_bytes() / 1e6:.1f} MB) from {model.name} on the "
        f"{backend} backend in {seconds:.1f} s."
    )
    for kind, ports in (("input ", artifact.inputs), ("output", artifact.outputs)):
        for name, port_shape in ports:
            print(f"  {kind} {name}: {tuple(port_shape)}")
    sizes = [shape[:2]]
    if None in shape[:2]:  # two sizes, the second not a multiple of the 32-pixel stride (windows are padded)
        side = args.image_size or 224
        sizes = [(side, side), (side + 40, side + 8)]
    rng = np.random.default_rng(0)
    worst = 0.0
    runtime = {"tf_saved_model": "TensorFlow", "onnx": "onnxruntime", "litert": "LiteRT", "openvino": "OpenVINO"}
    for height, width in sizes:
        images = rng.normal(size=(args.batch_size, height, width, shape[-1])).astype("float32")
        result = exporting.compare(model, artifact, images)
        worst = max(worst, result["max_abs_diff"])
        detail = ", ".join(f"{key} {diff:.1e}" for key, _, _, diff in result["outputs"])
        print(
            f"Checked in {runtime[args.format]} on {args.batch_size} random {height}x{width} images: "
            f"max |difference| to Keras {result['max_abs_diff']:.1e} ({detail}); "
            f"{result['artifact_seconds'] * 1e3:.0f} ms per batch there, {result['keras_seconds'] * 1e3:.0f} ms in Keras."
        )
    if None in shape[:2]:
        _note_dynamic_windows(backbone, sizes)
    if not np.isfinite(worst) or worst > args.tolerance:
        print(
            f"swinv2 export: the artifact differs from the Keras model by {worst:.1e} > --tolerance {args.tolerance}."
        )
        return 1
    print(f"OK: within {args.tolerance:g}. {os.path.abspath(args.output)}")
    return 0


def _note_dynamic_windows(backbone, sizes):
    """Says where a dynamic-size model computes another function than a fixed-size model of that size."""
    from keras_swinv2.layers.windows import stage_geometry

    window, stages, patch = backbone.window_size, len(backbone.depths), backbone.patch_size
    for size in sizes:
        fixed = stage_geometry(size, window, stages, patch)
        differ = [
            f"stage {i + 1} ({h}x{w} tokens: window {win}, shift {shift})"
            for i, ((h, w), win, shift) in enumerate(fixed)
            if (win, shift) != (window, window // 2)
        ]
        if differ:
            print(
                f"note: a dynamic-size model keeps window {window} and shift {window // 2} in every stage; at "
                f"{size[0]}x{size[1]} px a model built for that size uses {', '.join(differ)}, so their outputs "
                f"differ there (export with --image-size {size[0]} to reproduce it; docs/export.md)."
            )
