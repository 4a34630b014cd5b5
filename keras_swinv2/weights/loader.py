"""Assigning canonical-layout checkpoints to a SwinV2 backbone or classifier.

The loader finds the parts by duck typing: a model with a `backbone`
attribute is a task model (its `head`, if any, is a Dense classifier);
otherwise the model is the backbone itself (`stages` and the layers
`patch_embed` and `norm`).
"""

import logging

import numpy as np

from keras_swinv2.layers.position_bias import (
    relative_position_table_window,
    resize_relative_position_table,
)
from keras_swinv2.weights.io import check_finite
from keras_swinv2.weights.layouts import to_canonical

logger = logging.getLogger("keras_swinv2")

# How a PyTorch tensor becomes a Keras variable.
LINEAR, CONV, PLAIN, TABLE = "linear", "conv", "plain", "table"


def _dense(out, prefix, layer, bias=True):
    out[prefix + ".weight"] = (layer.kernel, LINEAR)
    if bias:
        out[prefix + ".bias"] = (layer.bias, PLAIN)


def _norm(out, prefix, layer):
    out[prefix + ".weight"] = (layer.gamma, PLAIN)
    out[prefix + ".bias"] = (layer.beta, PLAIN)


def keras_weight_map(model):
    """Maps canonical checkpoint names to the model's variables.

    Returns:
        dict `name -> (variable, kind)`, kind one of "linear" (transpose),
        "conv" (`(out, in, kh, kw)` -> `(kh, kw, in, out)`), "plain", "table"
        (V1 position table, resized when its window differs).
    """
    out = {}
    backbone, head = model_parts(model)
    patch = backbone.get_layer("patch_embed")
    out["patch_embed.proj.weight"] = (patch.proj.kernel, CONV)
    out["patch_embed.proj.bias"] = (patch.proj.bias, PLAIN)
    if patch.norm is not None:
        _norm(out, "patch_embed.norm", patch.norm)
    for i, stage in enumerate(backbone.stages):
        if stage.merge is not None:
            _dense(out, f"layers.{i}.downsample.reduction", stage.merge.reduction, bias=False)
            _norm(out, f"layers.{i}.downsample.norm", stage.merge.norm)
        for j, block in enumerate(stage.blocks):
            p = f"layers.{i}.blocks.{j}."
            _norm(out, p + "norm1", block.norm1)
            _norm(out, p + "norm2", block.norm2)
            if block.norm3 is not None:
                _norm(out, p + "norm3", block.norm3)
            attn = block.attn
            _dense(out, p + "attn.qkv", attn.qkv, bias=False)
            if attn.qkv_bias:
                out[p + "attn.q_bias"] = (attn.q_bias, PLAIN)
                out[p + "attn.v_bias"] = (attn.v_bias, PLAIN)
                if attn.key_bias:
                    out[p + "attn.k_bias"] = (attn.k_bias, PLAIN)
            if attn.attention == "cosine":
                out[p + "attn.logit_scale"] = (attn.logit_scale, PLAIN)
            if attn.position_bias == "table":
                out[p + "attn.relative_position_bias_table"] = (attn.bias_layer.table, TABLE)
            else:
                _dense(out, p + "attn.cpb_mlp.0", attn.bias_layer.fc1)
                _dense(out, p + "attn.cpb_mlp.2", attn.bias_layer.fc2, bias=False)
            _dense(out, p + "attn.proj", attn.proj)
            _dense(out, p + "mlp.fc1", block.mlp.fc1)
            _dense(out, p + "mlp.fc2", block.mlp.fc2)
    _norm(out, "norm", backbone.get_layer("norm"))
    if head is not None:
        _dense(out, "head.fc", head)
    return out


def model_parts(model):
    """`(backbone, head)` of a backbone (head None) or of a task model with a Dense `head`.

    A keras-hub task's backbone that wraps ours as its `image_encoder` (RetinaNet) counts as ours.
    """
    backbone = getattr(model, "backbone", model)
    backbone = getattr(backbone, "image_encoder", backbone)
    head = getattr(model, "head", None) if backbone is not model else None
    if not hasattr(backbone, "stages"):
        raise TypeError(
            f"Expected a SwinV2Backbone or a task model on one; got {type(model).__name__} "
            f"'{getattr(model, 'name', '?')}'."
        )
    return backbone, head


def _to_keras(array, kind, target_shape):
    if kind == LINEAR:
        return array.T if array.ndim == 2 else array
    if kind == CONV:
        return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array
    if kind == TABLE and array.ndim == 2 and array.shape != tuple(target_shape):
        if array.shape[1] != target_shape[1]:
            return array  # wrong head count: reported as a shape mismatch
        source = relative_position_table_window(array.shape[0])
        target = relative_position_table_window(target_shape[0])
        if source is None or target is None:
            return array  # not a square window's table: reported as a shape mismatch
        return resize_relative_position_table(array, source, target)
    return array


def load_state_dict(model, state, layout=None, allow_nonfinite=None, source="The checkpoint"):
    """Loads a PyTorch-layout state dict (numpy arrays) into `model`.

    The layout ("official", "timm", "hf") is detected when None. Derived
    buffers are ignored; V1 position tables are resized bicubically to the
    model's window. Head weights are skipped when the model has no top.
    Everything is checked before anything is assigned: a missing, unexpected
    or mis-shaped tensor raises a `ValueError` that names each one (with both
    shapes) and leaves the model unchanged; so does a tensor holding NaN or
    infinity, unless `allow_nonfinite` (None: `$KERAS_SWINV2_ALLOW_NONFINITE`).
    `source` names the checkpoint in messages.
    """
    canonical = to_canonical(state, layout)
    target = keras_weight_map(model)
    # Renames keep the array objects: trace canonical names back to the file's keys.
    file_keys = {id(v): k for k, v in state.items()}

    def named(key):
        original = file_keys.get(id(canonical.get(key)))
        return key if original in (None, key) else f"{key} (checkpoint key {original})"

    _, head = model_parts(model)
    if head is None:
        canonical = {k: v for k, v in canonical.items() if not k.startswith("head.")}
    elif "head.fc.weight" not in canonical or canonical["head.fc.weight"].shape[0] != head.units:
        found = canonical.get("head.fc.weight")
        logger.info(
            "The checkpoint's classifier has %s and model '%s' has %d: the head is left freshly "
            "initialised (train it before use).",
            "no head" if found is None else f"{found.shape[0]} classes",
            model.name,
            head.units,
        )
        canonical = {k: v for k, v in canonical.items() if not k.startswith("head.")}
        target = {k: v for k, v in target.items() if not k.startswith("head.")}
    missing = [k for k in target if k not in canonical]
    unexpected = [k for k in canonical if k not in target]
    problems = [f"missing in checkpoint: {k} (model expects shape {tuple(target[k][0].shape)})" for k in missing]
    problems += [f"unexpected in checkpoint: {named(k)} (shape {tuple(canonical[k].shape)})" for k in unexpected]
    values = {}
    for name, (variable, kind) in target.items():
        if name not in canonical:
            continue
        value = _to_keras(np.asarray(canonical[name]), kind, variable.shape)
        if tuple(value.shape) != tuple(variable.shape):
            problems.append(
                f"shape mismatch for {named(name)}: checkpoint {tuple(canonical[name].shape)} "
                f"(as Keras {tuple(value.shape)}), model {tuple(variable.shape)}"
            )
        values[name] = value
    if problems:
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise ValueError(
            f"The checkpoint does not fit model '{model.name}' ({len(problems)} problem(s)):\n  {shown}{more}"
        )
    check_finite(((named(k), canonical[k]) for k in values), source, allow_nonfinite)
    for name, (variable, _) in target.items():
        variable.assign(values[name].astype(variable.dtype))
