"""Task models on a `SwinV2Backbone`: each wraps the backbone and never reaches into it."""

from keras_swinv2.tasks.image_classifier import SwinV2ImageClassifier

__all__ = [
    "SwinV2ImageClassifier",
]
