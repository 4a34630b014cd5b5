"""SwinV2 building blocks, one mechanism per module (in data-path order)."""

from keras_swinv2.backend import l2_normalize
from keras_swinv2.layers.initializers import TruncatedNormal
from keras_swinv2.layers.attention import WindowAttention
from keras_swinv2.layers.block import BlockOptions, DropPath, Mlp, SwinV2Block
from keras_swinv2.layers.linear import LayerNorm, Linear
from keras_swinv2.layers.patch_embedding import PatchEmbedding
from keras_swinv2.layers.patch_merging import PatchMerging
from keras_swinv2.layers.pyramid import AdaptiveAveragePooling, ResizeLike
from keras_swinv2.layers.position_bias import (
    ContinuousPositionBias,
    RelativePositionBiasTable,
    relative_coords_table,
    relative_position_index,
    relative_position_table_window,
    resize_relative_position_table,
)
from keras_swinv2.layers.stage import SwinV2Stage
from keras_swinv2.layers.windows import (
    effective_window,
    region_mask,
    shifted_window_mask,
    shifted_window_regions,
    stage_geometry,
    window_merge,
    window_partition,
)

__all__ = [
    "TruncatedNormal",
    "l2_normalize",
    "WindowAttention",
    "BlockOptions",
    "DropPath",
    "Mlp",
    "SwinV2Block",
    "LayerNorm",
    "Linear",
    "PatchEmbedding",
    "PatchMerging",
    "ContinuousPositionBias",
    "RelativePositionBiasTable",
    "relative_coords_table",
    "relative_position_index",
    "relative_position_table_window",
    "resize_relative_position_table",
    "SwinV2Stage",
    "AdaptiveAveragePooling",
    "ResizeLike",
    "effective_window",
    "region_mask",
    "shifted_window_mask",
    "shifted_window_regions",
    "stage_geometry",
    "window_merge",
    "window_partition",
]
