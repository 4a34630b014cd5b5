from keras_swinv2.models.swinv2 import SwinV2Model
from keras_swinv2.models.variants import (
    VARIANTS,
    SwinV2,
    SwinV2Base,
    SwinV2Giant,
    SwinV2Huge,
    SwinV2Large,
    SwinV2Small,
    SwinV2Tiny,
)
