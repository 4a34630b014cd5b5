"""The `swinv2` command line."""

import argparse
import sys


def demo(args):
    """Builds a SwinV2, runs it on a photo and prints the summary and top-5."""
    import keras

    import keras_swinv2
    from keras_swinv2.data import decode_predictions, load_image, preprocess_input

    builder = getattr(keras_swinv2, f"SwinV2{args.variant.capitalize()}")
    model = builder(weights=args.weights)
    model.summary()
    size = model.image_shape[0]
    if args.image is None:
        from skimage import data

        image, source = data.chelsea(), "scikit-image's bundled photo 'chelsea' (a cat)"
    else:
        image, source = args.image, args.image
    pixels = load_image(image, size)[None]
    probs = keras.ops.convert_to_numpy(model.predict(preprocess_input(pixels), verbose=0))
    print(f"\nImage: {source}, resized and centre-cropped to {size}x{size}; "
          f"backend: {keras.backend.backend()}")
    if args.weights is None:
        print(
            "Weights: RANDOM initialisation (no checkpoint loaded), so these top-5 classes "
            "are meaningless; they show the data path runs end to end."
        )
    else:
        print(f"Weights: {args.weights}")
    print("Top-5:")
    for synset, name, score in decode_predictions(probs, top=5)[0]:
        print(f"  {score:7.2%}  {name} ({synset})")
    return 0


def predict(args):
    """Classifies images with a pretrained SwinV2 and prints the top-k with names."""
    import numpy as np
    import keras

    import keras_swinv2
    from keras_swinv2.data import decode_predictions, load_image, preprocess_input
    from keras_swinv2.models.variants import _is_file_path
    from keras_swinv2.weights import find_checkpoint

    overrides = {}
    if args.window_size:
        overrides["window_size"] = args.window_size
    input_shape = (args.image_size, args.image_size, 3) if args.image_size else None
    builder = getattr(keras_swinv2, f"SwinV2{args.model.capitalize()}")
    model = builder(weights=args.weights, input_shape=input_shape, **overrides)
    size = model.image_shape[0]
    crop = True
    if not _is_file_path(args.weights):
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="swinv2", description="Swin Transformer V2 for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build a SwinV2, run it on a photo, print summary and top-5")
    p.add_argument("--variant", default="tiny", choices=["tiny", "small", "base", "large"])
    p.add_argument("--image", default=None, help="image file (default: a bundled photo)")
    p.add_argument("--weights", default=None, help="checkpoint file to load (default: random)")
    p.set_defaults(func=demo)
    p = sub.add_parser("predict", help="classify images with pretrained weights, print the top-k")
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
    p.set_defaults(func=predict)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
