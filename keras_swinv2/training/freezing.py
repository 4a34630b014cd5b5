"""Which parts of a SwinV2 train: full fine-tuning, attention-only, linear probing, frozen stages."""

import math

from keras_swinv2.layers.attention import WindowAttention

TRAINABLE_MODES = ("full", "attention", "head")


def set_trainable(model, mode="full", frozen_stages=0):
    """Chooses what a `SwinV2Model` fine-tunes, in place.

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
        model: a `SwinV2Model`.
        mode: one of `TRAINABLE_MODES`.
        frozen_stages: int, additionally freeze the patch embedding and the
            first `frozen_stages` stages (backbone freezing), whatever the mode.

    Returns:
        The number of trainable parameters after the change.
    """
    if mode not in TRAINABLE_MODES:
        raise ValueError(f"mode must be one of {TRAINABLE_MODES}; got {mode!r}.")
    if not 0 <= frozen_stages <= len(model.depths):
        raise ValueError(f"frozen_stages must be in [0, {len(model.depths)}]; got {frozen_stages}.")
    head = model.get_layer("head") if model.include_top else None
    if mode != "full" and head is None:
        raise ValueError(f"mode={mode!r} trains the classifier head, but the model was built with include_top=False.")
    model.trainable = True
    for layer in model.layers:
        layer.trainable = True
        if layer is head or mode == "full":
            continue
        if mode == "attention" and layer in model.stages:
            _freeze_all_but_attention(layer)
        else:
            layer.trainable = False
    if frozen_stages:
        model.get_layer("patch_embed").trainable = False
        for stage in model.stages[:frozen_stages]:
            stage.trainable = False
    return sum(math.prod(v.shape) for v in model.trainable_variables)


def _freeze_all_but_attention(layer):
    """Freezes every sublayer of `layer` that neither is nor contains a `WindowAttention`."""
    for child in layer._flatten_layers(include_self=False, recursive=False):
        if isinstance(child, WindowAttention):
            child.trainable = True
        elif any(isinstance(x, WindowAttention) for x in child._flatten_layers(include_self=False)):
            child.trainable = True
            _freeze_all_but_attention(child)
        else:
            child.trainable = False
