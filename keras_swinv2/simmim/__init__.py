"""SimMIM masked image modelling (Xie et al., CVPR 2022) with a SwinV2 encoder."""

from keras_swinv2.simmim.masking import MaskGenerator
from keras_swinv2.simmim.model import (
    MaskToken,
    SwinV2SimMIM,
    masked_l1_loss,
    pixel_shuffle,
)
from keras_swinv2.simmim.pretrain import PretrainConfig, pretrain

__all__ = [
    "MaskGenerator",
    "MaskToken",
    "PretrainConfig",
    "SwinV2SimMIM",
    "masked_l1_loss",
    "pixel_shuffle",
    "pretrain",
]
