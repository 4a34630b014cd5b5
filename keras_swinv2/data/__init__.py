from keras_swinv2.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, load_image, preprocess_input
from keras_swinv2.data.labels import decode_predictions, imagenet_classes

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_image",
    "preprocess_input",
    "decode_predictions",
    "imagenet_classes",
]
