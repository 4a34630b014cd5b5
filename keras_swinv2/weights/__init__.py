"""Checkpoint reading, layout ports (official / timm / HF) and loading."""

from keras_swinv2.weights.io import check_finite, read_state_dict
from keras_swinv2.weights.layouts import (
    LAYOUTS,
    detect_layout,
    from_hf,
    from_official,
    from_timm,
    infer_config,
    to_canonical,
)
from keras_swinv2.weights.loader import keras_weight_map, load_state_dict, model_parts
from keras_swinv2.weights.download import default_cache_dir, download, fetch_checkpoint, source_url
from keras_swinv2.weights.registry import CHECKPOINTS, SIMMIM, Checkpoint, find_checkpoint
from keras_swinv2.weights.transfer import copy_encoder_weights, load_keras_file, load_weights

__all__ = [
    "check_finite",
    "read_state_dict",
    "LAYOUTS",
    "detect_layout",
    "from_hf",
    "from_official",
    "from_timm",
    "infer_config",
    "to_canonical",
    "keras_weight_map",
    "load_state_dict",
    "model_parts",
    "default_cache_dir",
    "download",
    "fetch_checkpoint",
    "source_url",
    "CHECKPOINTS",
    "SIMMIM",
    "Checkpoint",
    "find_checkpoint",
    "copy_encoder_weights",
    "load_keras_file",
    "load_weights",
]
