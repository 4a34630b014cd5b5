"""The `swinv2` command line."""

import argparse
import sys


def _load_image(path, size):
    import numpy as np
    from keras import ops

    if path is None:
        from skimage import data

        image, source = data.chelsea(), "scikit-image's bundled photo 'chelsea' (a cat)"
    else:
        from PIL import Image

        image, source = np.asarray(Image.open(path).convert("RGB")), path
    resized = ops.image.resize(image[None].astype("float32"), (size, size), interpolation="bicubic")
    return ops.clip(resized, 0.0, 255.0), source


def demo(args):
    """Builds a SwinV2, runs it on a photo and prints the summary and top-5."""
    import numpy as np
    import keras

    import keras_swinv2
    from keras_swinv2.data import preprocess_input

    builder = getattr(keras_swinv2, f"SwinV2{args.variant.capitalize()}")
    model = builder(weights=args.weights)
    model.summary()
    size = model.image_shape[0]
    image, source = _load_image(args.image, size)
    probs = keras.ops.convert_to_numpy(model.predict(preprocess_input(image), verbose=0))[0]
    print(f"\nImage: {source}, resized to {size}x{size}; backend: {keras.backend.backend()}")
    if args.weights is None:
        print(
            "Weights: RANDOM initialisation (no checkpoint loaded), so these top-5 classes "
            "are meaningless; they show the data path runs end to end."
        )
    else:
        print(f"Weights: {args.weights}")
    print("Top-5 (ImageNet-1k class index: probability):")
    for index in np.argsort(probs)[::-1][:5]:
        print(f"  class {index:4d}: {probs[index]:.4f}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="swinv2", description="Swin Transformer V2 for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build a SwinV2, run it on a photo, print summary and top-5")
    p.add_argument("--variant", default="tiny", choices=["tiny", "small", "base", "large"])
    p.add_argument("--image", default=None, help="image file (default: a bundled photo)")
    p.add_argument("--weights", default=None, help="checkpoint file to load (default: random)")
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
