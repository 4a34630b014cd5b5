"""Copying weights between SwinV2 models: a backbone under a new head, a model at a new window."""

import os

import numpy as np

import keras

from keras_swinv2.layers.position_bias import (
    relative_position_table_window,
    resize_relative_position_table,
)
from keras_swinv2.weights.io import check_finite, h5_arrays, read_state_dict
from keras_swinv2.weights.loader import TABLE, keras_weight_map, load_state_dict, model_parts


def _layer_of(name):
    """The backbone layer a canonical tensor name belongs to ("patch_embed", "stage_1", ...)."""
    parts = name.split(".")
    if parts[0] == "layers":
        # canonical stage i holds the merging that starts our stage i (timm layout)
        return f"stage_{parts[1]}"
    return parts[0]


def copy_encoder_weights(source, target, head=False):
    """Copies the backbone weights of `source` into the backbone of `target`.

    Works on backbones, classifiers and SimMIM models alike (anything with a
    SwinV2 backbone). Tensor by tensor, matched by their checkpoint names;
    everything is checked before anything is assigned. The target's head is
    left as it is unless `head=True`, so a classifier gets the pre-trained
    backbone and keeps its fresh head. The windows may differ: the continuous
    position bias MLP transfers as it is, V1 position tables are resized
    bicubically. The architecture (embed dim, depths, heads, switches) may not.

    Args:
        source: the pre-trained model (a `SwinV2Backbone`, a task model or a
            `SwinV2SimMIM`).
        target: the model to initialise.
        head: bool, also copy the classifier head (both need one, with the
            same number of classes).

    Returns:
        The names of the layers copied (`patch_embed`, `stage_0`, ..., `norm`,
        and `head`).

    Raises:
        ValueError: naming the first weight whose name or shape differs
            (expected: the source's; got: the target's), or the stage counts.
    """
    source_backbone, source_head = model_parts(source)
    target_backbone, target_head = model_parts(target)
    if len(source_backbone.depths) != len(target_backbone.depths):
        raise ValueError(
            f"copy_encoder_weights: the source has {len(source_backbone.depths)} stages "
            f"(depths {tuple(source_backbone.depths)}) but '{target.name}' has "
            f"{len(target_backbone.depths)} (depths {tuple(target_backbone.depths)})."
        )
    if head and not (source_head is not None and target_head is not None and source_head.units == target_head.units):
        raise ValueError(
            "copy_encoder_weights(head=True) needs two classifiers with the same number of classes; got "
            f"'{source.name}' ({source_head.units if source_head is not None else 'no'} classes) and "
            f"'{target.name}' ({target_head.units if target_head is not None else 'no'} classes)."
        )
    expected = keras_weight_map(source)
    got = keras_weight_map(target)

    def keep(name):
        return head or not name.startswith("head.")

    def describe(entry):
        return "nothing" if entry is None else f"{entry[0].path} {tuple(entry[0].shape)}"

    pairs = []
    for name in [n for n in got if keep(n)] + [n for n in expected if keep(n) and n not in got]:
        src, dst = expected.get(name), got.get(name)
        windows = None
        if src is not None and dst is not None and tuple(src[0].shape) != tuple(dst[0].shape):
            windows = _table_windows(src, dst)
            if windows is None:
                src = (src[0], "mismatch")
        if src is None or dst is None or src[1] == "mismatch":
            raise ValueError(
                f"copy_encoder_weights: '{target.name}' does not have the source's architecture: "
                f"layer {_layer_of(name)}, tensor {name}: expected {describe(src)} (from '{source.name}'), "
                f"got {describe(dst)}."
            )
        pairs.append((src[0], dst[0], windows))
    for src, dst, windows in pairs:
        value = np.asarray(keras.ops.convert_to_numpy(src))
        if windows is not None:
            value = resize_relative_position_table(value, *windows)
        dst.assign(value.astype(dst.dtype))
    layers = []
    for name in got:
        if keep(name) and _layer_of(name) not in layers:
            layers.append(_layer_of(name))
    return layers


def _table_windows(source, target):
    """`(source window, target window)` of two V1 position tables, else None."""
    (src, kind), (dst, _) = source, target
    if kind != TABLE or tuple(src.shape[1:]) != tuple(dst.shape[1:]):
        return None
    sides = tuple(relative_position_table_window(v.shape[0]) for v in (src, dst))
    return None if None in sides else sides


def load_keras_file(path, allow_nonfinite=None):
    """`keras.saving.load_model(path, compile=False)`, refusing weights that hold NaN or infinity.

    Raises:
        ValueError: naming the non-finite variables, unless `allow_nonfinite`
            (None: `$KERAS_SWINV2_ALLOW_NONFINITE`).
    """
    model = keras.saving.load_model(path, compile=False)
    check_finite(((v.path, keras.ops.convert_to_numpy(v)) for v in model.weights), path, allow_nonfinite)
    return model


def load_weights(model, weights, layout=None, allow_nonfinite=None):
    """Loads `weights` into `model`.

    Args:
        model: a `SwinV2Backbone` or a task model on one (`SwinV2ImageClassifier`).
        weights: path to a Keras file or a PyTorch checkpoint (`.safetensors`,
            `.pth`, `.pt`, `.bin`, `.npz`) in the official, timm or HF
            transformers layout. A `.weights.h5` file must come from a model
            of the same class and architecture; a `.keras` file may hold any
            SwinV2 model of the same architecture (backbone, classifier, SimMIM):
            its backbone is copied, and its head too when both have one with
            the same number of classes.
        layout: force a layout instead of detecting it.
        allow_nonfinite: load tensors holding NaN or infinity; by default
            (None: unless `$KERAS_SWINV2_ALLOW_NONFINITE=1`) they raise a
            `ValueError` naming them, before anything is assigned.

    Returns:
        `model`.
    """
    path = os.fspath(weights)
    if path.endswith((".weights.h5", ".keras")) and not os.path.isfile(path):
        raise FileNotFoundError(f"No weights file at {path!r}.")
    if path.endswith(".weights.h5"):
        check_finite(h5_arrays(path), path, allow_nonfinite)
        model.load_weights(path)
        return model
    if path.endswith(".keras"):
        source = load_keras_file(path, allow_nonfinite)
        try:
            model_parts(source)
        except TypeError:
            raise ValueError(
                f"{path} holds a {type(source).__name__} '{source.name}', not a SwinV2 model "
                "(a SwinV2Backbone, a task model on one, or a SwinV2SimMIM)."
            ) from None
        _, source_head = model_parts(source)
        _, head = model_parts(model)
        same_head = source_head is not None and head is not None and source_head.units == head.units
        copy_encoder_weights(source, model, head=same_head)
        return model
    load_state_dict(model, read_state_dict(path), layout=layout, allow_nonfinite=allow_nonfinite, source=path)
    return model
