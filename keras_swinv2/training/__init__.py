"""Training machinery: the fine-tuning optimizer and schedule, freezing modes, resumable fit."""

from keras_swinv2.training.checkpoint import (
    ResumableTraining,
    check_run_config,
    lock_run_directory,
    plot_history,
    save_run_config,
)
from keras_swinv2.training.finetuning import FinetuneConfig, build_model, finetune
from keras_swinv2.training.freezing import TRAINABLE_MODES, set_trainable
from keras_swinv2.training.optimizer import (
    NO_DECAY_KEYWORDS,
    SwinV2AdamW,
    WarmupDecay,
    layer_decay_multipliers,
    layer_id,
    no_weight_decay_paths,
    swinv2_adamw,
)

__all__ = [
    "FinetuneConfig",
    "NO_DECAY_KEYWORDS",
    "ResumableTraining",
    "SwinV2AdamW",
    "TRAINABLE_MODES",
    "WarmupDecay",
    "build_model",
    "check_run_config",
    "finetune",
    "layer_decay_multipliers",
    "layer_id",
    "lock_run_directory",
    "no_weight_decay_paths",
    "plot_history",
    "save_run_config",
    "set_trainable",
    "swinv2_adamw",
]
