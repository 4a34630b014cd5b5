"""The `swinv2` command line: arguments, messages and exit codes.

This module lives outside the `keras_swinv2` package on purpose: importing the package loads Keras
and a backend (seconds), and `swinv2 --help` or `swinv2 --version` should answer at once. The
commands themselves are in `keras_swinv2.cli`, imported only once the arguments are valid.

Exit codes: 0 success; 2 a usage or user error (bad arguments, a missing file, no network, a run
directory made with other settings), reported as one line on stderr (`--debug` adds the
traceback); 130 interrupted (Ctrl-C), with how to resume; 1 an unexpected error (a bug: the
traceback is printed).
"""

import argparse
import os
import re
import sys

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
DEMO_OUTPUT = "runs/demo"


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, except where there is none (None, False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(map(str, default))
        return f"{text} (default: {default})" if text else f"(default: {default})"


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("keras-swinv2")
    except PackageNotFoundError:  # running from a source tree that is not installed
        ours = "unknown"
    try:
        keras = version("keras")
    except PackageNotFoundError:
        keras = "not installed"
    return f"swinv2 (keras-swinv2) {ours}; keras {keras}"


def _add_data_and_architecture_arguments(p):
    """Arguments `finetune`, `demo` and `pretrain` share: the data and a custom architecture."""
    p.add_argument("--data", default="digits", help="digits | tfds:NAME | tfds:folder:PATH | an image folder")
    p.add_argument("--data-dir", default=None, help="TFDS data directory")
    p.add_argument("--embed-dim", type=int, default=None, help="custom architecture: channels")
    p.add_argument("--depths", type=int, nargs="+", default=None, help="custom architecture: blocks per stage")
    p.add_argument("--num-heads", type=int, nargs="+", default=None, help="custom architecture: heads per stage")


def _add_run_arguments(p):
    """The seed and the progress display, shared by the training commands."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Keras progress bars (1) or lines (2)")


def _add_training_arguments(p, **defaults):
    _add_data_and_architecture_arguments(p)
    p.add_argument("--image-size", type=int, default=None, help="input side (default: the checkpoint's)")
    p.add_argument("--window-size", type=int, default=None, help="window (default: the checkpoint's)")
    p.add_argument("--epochs", type=int, default=30, help="epochs in all (the schedule spans them)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--layer-decay", type=float, default=None, help="layer-wise LR decay, e.g. 0.85")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--decay", choices=["cosine", "linear"], default="cosine", help="learning-rate decay")
    p.add_argument("--min-lr", type=float, default=1e-6, help="final learning rate")
    p.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=None, help="EMA momentum of the weights, e.g. 0.9998")
    p.add_argument("--clipnorm", type=float, default=5.0, help="global gradient-norm clip (0: off)")
    p.add_argument(
        "--mode",
        choices=["full", "attention", "head"],
        default="full",
        help="what trains: everything, attention layers + head, or the head (linear probe)",
    )
    p.add_argument("--frozen-stages", type=int, default=0, help="freeze patch embedding + the first k stages")
    p.add_argument("--crop-scale", type=float, nargs=2, default=(0.08, 1.0), help="random resized crop area range")
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (default: on, but off for --data digits: a mirrored digit is not a digit)",
    )
    p.add_argument("--randaugment", type=float, default=0.0, help="RandAugment factor (official 0.9; 0: off)")
    p.add_argument("--erasing", type=float, default=0.25, help="RandomErasing probability (0: off)")
    p.add_argument("--mixup", type=float, default=0.8, help="MixUp alpha (0: off)")
    p.add_argument("--cutmix", type=float, default=1.0, help="CutMix factor (0: off)")
    _add_run_arguments(p)
    p.set_defaults(**defaults)


def build_parser():
    """The `swinv2` argument parser (no heavy imports)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="print the traceback of an error")
    parser = argparse.ArgumentParser(
        prog="swinv2",
        description="Swin Transformer V2 for Keras 3: train, fine-tune and run SwinV2 models.",
        epilog="The backend is Keras' (KERAS_BACKEND=tensorflow|jax|torch). `swinv2 COMMAND --help` for a command.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, **texts):
        return sub.add_parser(name, parents=[common], formatter_class=_HelpFormatter, **texts)

    p = command(
        "demo",
        help="the main job: train a small SwinV2 on digits (about a minute on a CPU), classify held-out images",
        description="Trains a small SwinV2 (embed 32, depths 2-2-2, window 4, 32 px) on scikit-learn's digits "
        "from scratch, offline; or, with --weights, fine-tunes the pretrained SwinV2-T at 128 px (downloads "
        "the weights). Then classifies held-out digits with the saved best model. Rerun to resume.",
    )
    p.add_argument("--weights", default=None, help="imagenet1k etc.: start from SwinV2-T (needs network)")
    p.add_argument(
        "--output",
        default=None,
        help=f"run directory; an unfinished run resumes (default: {DEMO_OUTPUT}, or {DEMO_OUTPUT}-WEIGHTS)",
    )
    p.add_argument("--show", type=int, default=8, help="held-out images to classify at the end")
    _add_training_arguments(
        p,
        data="digits",
        epochs=12,
        batch_size=32,
        lr=2e-3,
        drop_path=0.05,
        crop_scale=(0.6, 1.0),
        mixup=0.0,
        cutmix=0.0,
        erasing=0.0,
    )

    p = command(
        "finetune",
        help="fine-tune a SwinV2 with model.fit (resumable)",
        description="Fine-tunes (or trains) a SwinV2 classifier with model.fit. Kill it at any point and "
        "rerun the same command: it resumes after the last finished epoch.",
    )
    p.add_argument(
        "--task",
        choices=["classification", "segmentation", "detection"],
        default="classification",
        help="classifier; UperNet segmenter (--data digits: digit scenes, tfds:oxford_iiit_pet); RetinaNet "
        "detector (digits, tfds:voc/2007, tfds:oxford_iiit_pet)",
    )
    p.add_argument("--model", default="tiny", help="tiny | small | base | large | huge | giant | a .keras file")
    p.add_argument("--weights", default="imagenet1k", help="imagenet1k | imagenet22k | ... | a checkpoint file | none")
    p.add_argument("--output", required=True, help="run directory (an unfinished run there resumes)")
    p.add_argument("--head-channels", type=int, default=None, help="segmentation: UperNet channels (default 512)")
    p.add_argument("--auxiliary-head", action="store_true", help="segmentation: train with the FCN head on P4")
    p.add_argument(
        "--scale-jitter",
        type=float,
        nargs=2,
        default=(0.75, 1.25),
        help="segmentation/detection: random rescale range (the crop-scale/mixup/... options are for classification)",
    )
    _add_training_arguments(p)

    p = command(
        "pretrain",
        help="SimMIM masked-image pre-training of a SwinV2 encoder (resumable)",
        description="SimMIM pre-training on unlabelled images; writes OUTPUT/encoder.keras for `swinv2 finetune "
        "--model OUTPUT/encoder.keras --weights none`. Rerun to resume.",
    )
    p.add_argument("--model", default="tiny", choices=["tiny", "small", "base", "large", "huge", "giant"])
    _add_data_and_architecture_arguments(p)
    p.add_argument("--image-size", type=int, default=192)
    p.add_argument("--window-size", type=int, default=12)
    p.add_argument("--mask-patch-size", type=int, default=32)
    p.add_argument("--mask-ratio", type=float, default=0.6)
    p.add_argument("--epochs", type=int, default=100, help="epochs in all (the schedule spans them)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=10.0)
    p.add_argument("--min-lr", type=float, default=1e-5, help="final learning rate")
    p.add_argument("--clipnorm", type=float, default=5.0, help="global gradient-norm clip (0: off)")
    p.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate")
    p.add_argument("--crop-scale", type=float, nargs=2, default=(0.67, 1.0), help="random resized crop area range")
    _add_run_arguments(p)
    p.add_argument("--output", required=True, help="run directory (an unfinished run there resumes)")

    p = command(
        "export",
        help="export a SwinV2 to tf_saved_model, onnx, litert or openvino and check it in that runtime",
        description="Writes the model as a deployment artifact (Keras' model.export), then loads it in its own "
        "runtime (TensorFlow, onnxruntime, ai-edge-litert, OpenVINO), runs it on random images next to the "
        "Keras model and prints its inputs, outputs, size on disk and the largest difference. Which formats "
        "each backend exports: docs/export.md.",
    )
    p.add_argument("--model", default="tiny", help="tiny | small | base | large | huge | giant | a .keras file")
    p.add_argument(
        "--weights", default="none", help="imagenet1k | imagenet22k | ... | a checkpoint file | none (named models)"
    )
    p.add_argument(
        "--format", required=True, choices=["tf_saved_model", "onnx", "litert", "openvino"], help="artifact format"
    )
    p.add_argument(
        "--output", required=True, help="artifact path: a directory (tf_saved_model) or .onnx / .tflite / .xml"
    )
    p.add_argument("--image-size", type=int, default=None, help="input side (default: the checkpoint's or model's)")
    p.add_argument("--window-size", type=int, default=None, help="window (named models; default: the checkpoint's)")
    p.add_argument(
        "--dynamic-size", action="store_true", help="accept any height and width (tf_saved_model, onnx from TF)"
    )
    p.add_argument("--features", action="store_true", help="export the backbone's pyramid outputs P2..P5")
    p.add_argument("--logits", action="store_true", help="a classifier outputs logits, not softmax probabilities")
    p.add_argument(
        "--batch-size",
        type=int,
        default=2,
        help="images in the check (the exported batch is dynamic; fixed to this for onnx from JAX)",
    )
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest difference accepted in the check")

    p = command(
        "predict",
        help="classify images with pretrained weights, print the top-k",
        description="Classifies images with a pretrained SwinV2 (the weights are downloaded once and cached).",
    )
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", default="tiny", choices=["tiny", "small", "base", "large"])
    p.add_argument(
        "--weights",
        default="imagenet1k",
        help="imagenet1k | imagenet22k | imagenet22k-ft1k | a registry name | a checkpoint file",
    )
    p.add_argument("--window-size", type=int, default=None, help="window (default: the checkpoint's)")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: the checkpoint's)")
    p.add_argument("--top", type=int, default=5)
    return parser


def _quiet():
    """Keeps TensorFlow's C++ start-up notices out of the terminal, unless the user asked for them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _configure_output(debug):
    """The package's log messages and Python warnings as plain lines on stderr; returns an undo."""
    import logging
    import warnings

    logger = logging.getLogger("keras_swinv2")
    saved = (list(logger.handlers), logger.level, logger.propagate, warnings.showwarning)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False

    def show(message, category, filename, lineno, file=None, line=None):
        if debug:
            print(f"warning: {message} ({category.__name__} at {filename}:{lineno})", file=sys.stderr)
        else:
            print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show

    def undo():
        logger.handlers[:], logger.level, logger.propagate, warnings.showwarning = saved

    return undo


def _epochs_done(output):
    """The newest committed epoch in a run directory (its `state-N.json` record), 0 if none."""
    try:
        names = os.listdir(output)
    except OSError:
        return 0
    return max((int(m[1]) for m in (re.match(r"^state-(\d+)\.json$", n) for n in names) if m), default=0)


def _is_user_error(error):
    """Errors the user can fix from the message alone: bad values, files, network, a busy run directory."""
    if isinstance(error, (ValueError, OSError, ImportError)):
        return True
    checkpoint = sys.modules.get("keras_swinv2.training.checkpoint")
    return checkpoint is not None and isinstance(error, checkpoint.RunDirectoryInUse)


def main(argv=None):
    """Runs `swinv2 ARGS`; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet()
    undo = _configure_output(args.debug)
    try:
        return _run(args)
    finally:
        undo()


def _run(args):
    if args.command == "demo" and args.output is None:
        args.output = DEMO_OUTPUT if args.weights in (None, "none") else f"{DEMO_OUTPUT}-{args.weights}"
    try:
        from keras_swinv2 import cli

        return getattr(cli, args.command)(args)
    except KeyboardInterrupt:
        if hasattr(args, "epochs"):
            done = _epochs_done(args.output)
            where = f"after epoch {done} of {args.epochs}" if done else "before the first epoch finished"
            print(
                f"\nswinv2 {args.command}: interrupted {where}; run the same command to resume ({args.output}).",
                file=sys.stderr,
            )
        else:
            print(f"\nswinv2 {args.command}: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if not _is_user_error(e):
            raise
        if args.debug:
            import traceback

            traceback.print_exc()
        message = str(e).strip() or type(e).__name__
        hint = "" if args.debug else " (--debug shows the traceback)"
        print(f"swinv2 {args.command}: error: {message}{hint}", file=sys.stderr)
        return EXIT_USER_ERROR


def console():
    """The `swinv2` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console()
