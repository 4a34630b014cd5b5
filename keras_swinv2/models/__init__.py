"""The SwinV2 backbone, the variants' architectures and presets."""

from keras_swinv2.models.backbone import SwinV2Backbone
from keras_swinv2.models.variants import VARIANTS

__all__ = [
    "SwinV2Backbone",
    "VARIANTS",
]
