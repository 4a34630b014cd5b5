"""Input normalisation the official checkpoints were trained with."""

from keras import ops

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def preprocess_input(images):
    """Normalises RGB images in [0, 255] with the ImageNet mean and std.

    Args:
        images: array or tensor `(..., 3)`, RGB, values in [0, 255].

    Returns:
        float32 tensor of the same shape, `(images - mean) / std` per channel.
    """
    images = ops.cast(images, "float32")
    return (images - ops.convert_to_tensor(IMAGENET_MEAN)) / ops.convert_to_tensor(IMAGENET_STD)
