"""AdamW as the SwinV2 authors fine-tune: no decay on norms, biases, temperatures and the CPB
MLP; layer-wise learning-rate decay; linear warmup then cosine or linear decay."""

import math
import re

import keras
from keras import ops

from keras_swinv2.weights.loader import model_parts

# The official no-decay rule: every 1-D parameter (LayerNorm scales and shifts, biases, q/v
# biases) plus the parameters named here, whatever their rank (`logit_scale` is
# (heads, 1, 1), the CPB MLP kernels are 2-D, SimMIM's mask token is a vector anyway).
NO_DECAY_KEYWORDS = ("logit_scale", "cpb", "relative_position_bias_table", "mask_token")

_STAGE = re.compile(r"(?:^|/)stage_(\d+)/(?:blocks_(\d+)|downsample)/")


def no_weight_decay_paths(variables):
    """Paths of the variables AdamW must not decay (official Swin rule).

    Args:
        variables: iterable of Keras variables (e.g. `model.trainable_variables`).

    Returns:
        A sorted list of variable paths.
    """
    return sorted(v.path for v in variables if len(v.shape) <= 1 or any(word in v.path for word in NO_DECAY_KEYWORDS))


def layer_id(path, depths):
    """Depth index of a SwinV2 variable for layer-wise learning-rate decay.

    The official/SimMIM numbering: 0 for the patch embedding (and mask
    token), `sum(depths[:i]) + j + 1` for block j of stage i, the id of the
    last block before it for a stage's patch merging, and
    `sum(depths) + 1` for everything after the stages (final norm, head).

    Args:
        path: variable path, e.g. "stage_2/blocks_3/attn/qkv/kernel".
        depths: blocks per stage of the model.
    """
    if re.search(r"(^|/)patch_embed/", path) or "mask_token" in path:
        return 0
    match = _STAGE.search(path)
    if match is None:
        return sum(depths) + 1
    stage, block = int(match.group(1)), match.group(2)
    if block is None:  # patch merging at the start of this stage
        return sum(depths[:stage])
    return sum(depths[:stage]) + int(block) + 1


def layer_decay_multipliers(variables, depths, layer_decay):
    """Learning-rate multiplier per variable path: `layer_decay ** (L + 1 - id)`.

    With `L = sum(depths)`, the head and final norm get 1, the last block
    `layer_decay`, ..., the patch embedding `layer_decay ** (L + 1)`.
    """
    top = sum(depths) + 1
    return {v.path: float(layer_decay ** (top - layer_id(v.path, depths))) for v in variables}


@keras.saving.register_keras_serializable(package="keras_swinv2")
class SwinV2AdamW(keras.optimizers.AdamW):
    """AdamW with per-variable learning-rate multipliers and a no-decay list.

    Each variable's step and its decoupled weight decay use
    `learning_rate * lr_multipliers.get(path, 1)`, like PyTorch parameter
    groups with their own `lr` (timm, the official Swin code). Variables whose
    path is in `no_weight_decay` are not decayed. Everything else (EMA,
    gradient clipping, accumulation, loss scaling) is `keras.optimizers.AdamW`.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        weight_decay: float, decoupled decay per step (times the learning rate).
        lr_multipliers: dict, variable path -> learning-rate multiplier.
        no_weight_decay: iterable of variable paths not to decay.
        **kwargs: the arguments of `keras.optimizers.AdamW`.

    Example:

    >>> model = keras_swinv2.SwinV2Tiny()
    >>> optimizer = swinv2_adamw(model, 1e-3, layer_decay=0.9, total_steps=1000)
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.05, lr_multipliers=None, no_weight_decay=(), **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        self.no_weight_decay = sorted(no_weight_decay)

    def build(self, var_list):
        super().build(var_list)
        skip = set(self.no_weight_decay)
        self._scales = [self.lr_multipliers.get(v.path, 1.0) for v in var_list]
        self._decays = [v.path not in skip for v in var_list]

    def _apply_weight_decay(self, variables):
        # Applied per variable in `update_step`, with that variable's learning rate.
        return

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        scale = self._scales[index]
        if scale != 1.0:
            learning_rate = ops.multiply(learning_rate, scale)
        if self.weight_decay and self._decays[index]:
            decay = ops.cast(self.weight_decay, variable.dtype) * ops.cast(learning_rate, variable.dtype)
            self.assign(variable, variable - variable * decay)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(lr_multipliers=self.lr_multipliers, no_weight_decay=self.no_weight_decay)
        return config


@keras.saving.register_keras_serializable(package="keras_swinv2")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from `warmup_learning_rate` to `learning_rate`, then decay to `min_learning_rate`.

    Steps `0 .. warmup_steps` ramp linearly; the remaining
    `total_steps - warmup_steps` follow a half cosine ("cosine") or a
    straight line ("linear") down to `min_learning_rate`, which is then kept.

    Args:
        learning_rate: float, peak rate.
        total_steps: int, length of the whole schedule.
        warmup_steps: int.
        decay: "cosine" or "linear".
        min_learning_rate: float, final rate.
        warmup_learning_rate: float, rate at step 0.
    """

    def __init__(
        self,
        learning_rate,
        total_steps,
        warmup_steps=0,
        decay="cosine",
        min_learning_rate=0.0,
        warmup_learning_rate=0.0,
    ):
        if decay not in ("cosine", "linear"):
            raise ValueError(f"decay must be 'cosine' or 'linear'; got {decay!r}.")
        if not 0 <= warmup_steps <= total_steps or total_steps < 1:
            raise ValueError(
                f"Need 0 <= warmup_steps <= total_steps and total_steps >= 1; got "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}."
            )
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.min_learning_rate = float(min_learning_rate)
        self.warmup_learning_rate = float(warmup_learning_rate)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = max(self.warmup_steps, 1)
        warm = self.warmup_learning_rate + (self.learning_rate - self.warmup_learning_rate) * step / warmup
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        if self.decay == "cosine":
            shape = 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
        decayed = self.min_learning_rate + (self.learning_rate - self.min_learning_rate) * shape
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "min_learning_rate": self.min_learning_rate,
            "warmup_learning_rate": self.warmup_learning_rate,
        }


def swinv2_adamw(
    model,
    learning_rate,
    weight_decay=0.05,
    layer_decay=None,
    total_steps=None,
    warmup_steps=0,
    decay="cosine",
    min_learning_rate=0.0,
    warmup_learning_rate=0.0,
    **kwargs,
):
    """The fine-tuning optimizer of the official recipe, for a SwinV2 model.

    Args:
        model: a `SwinV2Backbone`, a task model on one, or a `SwinV2SimMIM`;
            its trainable variables define the groups.
        learning_rate: float, peak learning rate.
        weight_decay: float (official fine-tuning: 0.05; 1e-8 for SwinV2
            22k->1k fine-tuning).
        layer_decay: float in (0, 1], layer-wise learning-rate decay
            (0.75-0.9 for fine-tuning pretrained weights); None for none.
        total_steps: int, with it the rate follows `WarmupDecay`; without, it
            is constant.
        warmup_steps: int, see `WarmupDecay`.
        decay: "cosine" or "linear", see `WarmupDecay`.
        min_learning_rate: float, see `WarmupDecay`.
        warmup_learning_rate: float, see `WarmupDecay`.
        **kwargs: passed to `SwinV2AdamW` (e.g. `use_ema=True`,
            `ema_momentum`, `global_clipnorm=5.0`, `beta_2`).

    Returns:
        A `SwinV2AdamW`.
    """
    variables = model.trainable_variables
    multipliers = None
    if layer_decay is not None:
        if not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1]; got {layer_decay}.")
        depths = model_parts(model)[0].depths
        multipliers = layer_decay_multipliers(variables, depths, layer_decay)
    schedule = learning_rate
    if total_steps is not None:
        schedule = WarmupDecay(learning_rate, total_steps, warmup_steps, decay, min_learning_rate, warmup_learning_rate)
    return SwinV2AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        lr_multipliers=multipliers,
        no_weight_decay=no_weight_decay_paths(variables),
        **kwargs,
    )
