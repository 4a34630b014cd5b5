"""keras-swinv2: the Swin Transformer V2 family for Keras 3 (TensorFlow, JAX, PyTorch)."""

from keras_swinv2 import distribute, export, layers, metrics, simmim, training
from keras_swinv2.allocator import tune_allocator
from keras_swinv2.applications import (
    SwinV2,
    SwinV2Base,
    SwinV2Giant,
    SwinV2Huge,
    SwinV2Large,
    SwinV2Small,
    SwinV2Tiny,
)
from keras_swinv2.data import decode_predictions, imagenet_classes, preprocess_input
from keras_swinv2.models import SwinV2Backbone
from keras_swinv2.simmim import SwinV2SimMIM
from keras_swinv2.tasks import SwinV2ImageClassifier, SwinV2ImageSegmenter, swinv2_retinanet
from keras_swinv2.training import set_trainable, swinv2_adamw
from keras_swinv2.version import __version__
from keras_swinv2.weights import copy_encoder_weights, load_weights

__all__ = [
    "SwinV2",
    "SwinV2Backbone",
    "SwinV2ImageClassifier",
    "SwinV2ImageSegmenter",
    "SwinV2Tiny",
    "SwinV2Small",
    "SwinV2Base",
    "SwinV2Large",
    "SwinV2Huge",
    "SwinV2Giant",
    "SwinV2SimMIM",
    "copy_encoder_weights",
    "distribute",
    "export",
    "layers",
    "metrics",
    "swinv2_retinanet",
    "set_trainable",
    "simmim",
    "swinv2_adamw",
    "training",
    "tune_allocator",
    "decode_predictions",
    "imagenet_classes",
    "preprocess_input",
    "load_weights",
    "__version__",
]
