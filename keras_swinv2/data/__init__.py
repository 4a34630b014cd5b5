from keras_swinv2.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, load_image, preprocess_input
from keras_swinv2.data.labels import decode_predictions, imagenet_classes
from keras_swinv2.data.dense import (
    IGNORE_LABEL,
    DenseAugmentation,
    DenseData,
    check_boxes,
    check_masks,
    digit_scenes,
    load_dense_data,
    tfds_dense_data,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_image",
    "preprocess_input",
    "decode_predictions",
    "imagenet_classes",
    "IGNORE_LABEL",
    "DenseAugmentation",
    "DenseData",
    "check_boxes",
    "check_masks",
    "digit_scenes",
    "load_dense_data",
    "tfds_dense_data",
]
