"""Which parts of a SwinV2 train: full fine-tuning, attention-only, linear probing, frozen stages."""

import math

from keras_swinv2.backend import sublayers
from keras_swinv2.layers.attention import WindowAttention
from keras_swinv2.weights.loader import model_parts

TRAINABLE_MODES = ("full", "attention", "head")


def set_trainable(model, mode="full", frozen_stages=0):
    """Chooses what a SwinV2 classifier (or backbone) fine-tunes, in place.

    Modes:
        "full": every layer trains (the default recipe).
        "attention": only the `WindowAttention` layers (qkv, projection, q/v
            biases, `logit_scale`, CPB MLP) and the head train; MLPs, norms,
            patch embedding and patch merging stay frozen. Touvron et al.,
            "Three things everyone should know about Vision Transformers"
            (arXiv 2203.09795), find this as accurate as full fine-tuning
            while the optimizer keeps state for about a third of the weights.
        "head": linear probing, only the classifier trains.

    Args:
        model: a `SwinV2ImageClassifier` (or another task model on a
            backbone); a bare `SwinV2Backbone` supports mode "full" only.
        mode: one of `TRAINABLE_MODES`.
        frozen_stages: int, additionally freeze the patch embedding and the
            first `frozen_stages` stages (backbone freezing), whatever the mode.

    Returns:
        The number of trainable parameters after the change.
    """
    if mode not in TRAINABLE_MODES:
        raise ValueError(f"mode must be one of {TRAINABLE_MODES}; got {mode!r}.")
    backbone, head = model_parts(model)
    if not 0 <= frozen_stages <= len(backbone.depths):
        raise ValueError(f"frozen_stages must be in [0, {len(backbone.depths)}]; got {frozen_stages}.")
    if mode != "full" and head is None:
        raise ValueError(f"mode={mode!r} trains the classifier head, but '{model.name}' has none (a backbone).")
    model.trainable = True
    stages = backbone.stages
    for layer in backbone.layers:
        layer.trainable = True
        if mode == "full":
            continue
        if mode == "attention" and layer in stages:
            _freeze_all_but_attention(layer)
        else:
            layer.trainable = False
    if frozen_stages:
        backbone.get_layer("patch_embed").trainable = False
        for stage in stages[:frozen_stages]:
            stage.trainable = False
    return sum(math.prod(v.shape) for v in model.trainable_variables)


def _freeze_all_but_attention(layer):
    """Freezes every sublayer of `layer` that neither is nor contains a `WindowAttention`."""
    for child in sublayers(layer):
        if isinstance(child, WindowAttention):
            child.trainable = True
        elif any(isinstance(x, WindowAttention) for x in sublayers(child, recursive=True)):
            child.trainable = True
            _freeze_all_but_attention(child)
        else:
            child.trainable = False
