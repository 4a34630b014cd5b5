"""Task models on a `SwinV2Backbone`: each wraps the backbone and never reaches into it."""

from keras_swinv2.tasks.image_classifier import SwinV2ImageClassifier
from keras_swinv2.tasks.image_segmenter import SwinV2ImageSegmenter
from keras_swinv2.tasks.object_detector import DetectionDecoder, swinv2_retinanet

__all__ = [
    "DetectionDecoder",
    "SwinV2ImageClassifier",
    "SwinV2ImageSegmenter",
    "swinv2_retinanet",
]
