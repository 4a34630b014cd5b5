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


def load_image(path_or_image, image_size=256, crop=True, crop_ratio=224 / 256):
    """Loads an image with the official evaluation resize/crop, as float32 RGB in [0, 255].

    The official evaluation (microsoft/Swin-Transformer data/build.py):
    with `crop`, a bicubic resize of the shorter side to
    `int(image_size / crop_ratio)` (292 px for 256, 219 for 192) and a centre
    crop to `image_size`; without (the 384 px checkpoints), a bicubic squash
    resize to `image_size` x `image_size`. Done with PIL, whose bicubic filter
    is what torchvision applies to PIL images. `Checkpoint.eval_resize()` gives
    the geometry of each registry checkpoint. Follow with `preprocess_input`.

    Args:
        path_or_image: file path, `PIL.Image.Image`, or uint8 array `(H, W, 3)`.
        image_size: int, output side.
        crop: bool, resize-and-centre-crop (True) or squash (False).
        crop_ratio: float, crop side / resized shorter side.

    Returns:
        float32 numpy array `(image_size, image_size, 3)`.
    """
    import numpy as np
    from PIL import Image

    if isinstance(path_or_image, Image.Image):
        image = path_or_image
    elif isinstance(path_or_image, np.ndarray):
        image = Image.fromarray(np.asarray(path_or_image, dtype=np.uint8))
    else:
        image = Image.open(path_or_image)
    image = image.convert("RGB")
    if not crop:
        return np.asarray(image.resize((image_size, image_size), Image.BICUBIC), dtype="float32")
    short = int(image_size / crop_ratio)
    width, height = image.size
    if width <= height:
        size = (short, int(short * height / width))
    else:
        size = (int(short * width / height), short)
    image = image.resize(size, Image.BICUBIC)
    left = int(round((size[0] - image_size) / 2.0))
    top = int(round((size[1] - image_size) / 2.0))
    image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image, dtype="float32")
