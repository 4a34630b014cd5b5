"""SwinV2-T/S/B/L/H/G: the keras.applications-style builders."""

import os

from keras_swinv2.models.swinv2 import SwinV2Model

FILE_SUFFIXES = (".h5", ".keras", ".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".npz")

# Architecture of each variant. T/S/B/L as published; H and G follow the paper's
# widths and depths with 32-channel heads and a main-branch LayerNorm every 6
# blocks. `default_size` and `window_size` match each variant's first official
# checkpoint (T/S/B: 256 px window 8; L: 192 px window 12).
VARIANTS = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                 drop_path_rate=0.2, default_size=256, window_size=8),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                  drop_path_rate=0.3, default_size=256, window_size=8),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                 drop_path_rate=0.5, default_size=256, window_size=8),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48),
                  drop_path_rate=0.2, default_size=192, window_size=12),
    "huge": dict(embed_dim=352, depths=(2, 2, 18, 2), num_heads=(11, 22, 44, 88),
                 extra_norm_period=6, drop_path_rate=0.2, default_size=192, window_size=12),
    "giant": dict(embed_dim=512, depths=(2, 2, 42, 2), num_heads=(16, 32, 64, 128),
                  extra_norm_period=6, drop_path_rate=0.2, default_size=192, window_size=12),
}


def SwinV2(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation="softmax",
    variant=None,
    name="swinv2",
    **kwargs,
):
    """Builds a SwinV2 model, optionally loading weights.

    Args:
        include_top, input_tensor, pooling, classifier_activation:
            the keras.applications contract (see `SwinV2Model`).
        weights: None (random initialisation); a weights name, "imagenet1k",
            "imagenet22k", "imagenet22k-ft1k" or "simmim-<data>-<iters>"
            (or a registry name from `keras_swinv2.weights.CHECKPOINTS`):
            downloaded once, converted and cached, then loaded offline; or a
            path to a checkpoint: `.weights.h5` / `.keras` (Keras), or
            `.safetensors` / `.pth` / `.bin` / `.npz` in the official
            Microsoft, timm or HF transformers layout (detected from the
            keys). With a weights name, `window_size` and `input_shape`
            default to the checkpoint's; another window or size transfers
            through the continuous position bias (`pretrained_window_sizes`
            is set to the checkpoint's training windows), another `classes`
            leaves the head freshly initialised (with a warning).
        classes: classifier outputs; default the checkpoint's (1000 or
            21841 for "imagenet22k"), else 1000.
        input_shape: `(height, width, 3)`, default the variant's image size;
            `(None, None, 3)` for any size.
        variant: one of "tiny", "small", "base", "large", "huge", "giant"
            to start from that architecture; other keyword arguments
            (`window_size`, `pretrained_window_sizes`, `drop_path_rate`,
            `embed_dim`, `depths`, `num_heads`, the ablation switches, ...)
            override it.
        name: model name.

    Returns:
        A `SwinV2Model`.
    """
    config = {}
    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f"Unknown variant {variant!r}; expected one of {sorted(VARIANTS)}.")
        config.update(VARIANTS[variant])
    config.update(kwargs)
    default_size = config.pop("default_size", 256)
    checkpoint = None
    if weights is not None and not _is_file_path(weights):
        checkpoint = _resolve_checkpoint(variant, weights, kwargs, input_shape, input_tensor)
        default_size = checkpoint.image_size
        config["window_size"] = kwargs.get("window_size", checkpoint.window_size)
        if classes is None and checkpoint.classes:
            classes = checkpoint.classes
    if input_shape is None and input_tensor is None:
        input_shape = (default_size, default_size, config.get("in_channels", 3))
    if checkpoint is not None and "pretrained_window_sizes" not in kwargs:
        same_geometry = (
            config["window_size"] == checkpoint.window_size
            and tuple(input_shape[:2]) == (checkpoint.image_size,) * 2
        )
        config["pretrained_window_sizes"] = (
            checkpoint.pretrained_window_sizes if same_geometry else checkpoint.cpb_windows()
        )
    model = SwinV2Model(
        include_top=include_top,
        pooling=pooling,
        classes=1000 if classes is None else classes,
        classifier_activation=classifier_activation,
        input_shape=input_shape,
        input_tensor=input_tensor,
        name=name,
        **config,
    )
    if checkpoint is not None:
        from keras_swinv2.weights import fetch_checkpoint, load_state_dict

        load_state_dict(model, fetch_checkpoint(checkpoint), layout="timm")
    elif weights is not None:
        from keras_swinv2.weights import load_weights

        load_weights(model, weights)
    return model


def _is_file_path(weights):
    weights = os.fspath(weights)
    return os.path.sep in weights or os.path.exists(weights) or weights.endswith(FILE_SUFFIXES)


def _resolve_checkpoint(variant, weights, kwargs, input_shape, input_tensor):
    from keras_swinv2.weights.registry import CHECKPOINTS, find_checkpoint

    if variant is None:
        if weights not in CHECKPOINTS:
            raise ValueError(
                f"weights={weights!r} is neither a file nor a registry name; pass `variant=` with a "
                "weights name such as 'imagenet1k', or a checkpoint name from "
                "keras_swinv2.weights.CHECKPOINTS."
            )
        variant = CHECKPOINTS[weights].variant
    if input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    size = input_shape[0] if input_shape is not None else None
    return find_checkpoint(variant, weights, window_size=kwargs.get("window_size"), image_size=size)


def _variant_builder(variant):
    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=None,
        classifier_activation="softmax",
        name=f"swinv2_{variant}",
        **kwargs,
    ):
        return SwinV2(
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            variant=variant,
            name=name,
            **kwargs,
        )

    arch = VARIANTS[variant]
    builder.__name__ = f"SwinV2{variant.capitalize()}"
    builder.__doc__ = (
        f"SwinV2-{variant[0].upper()}: embed_dim {arch['embed_dim']}, depths {arch['depths']}, "
        f"heads {arch['num_heads']}, {arch['default_size']} px, window {arch['window_size']} "
        "by default.\n\n    Arguments as for `keras_swinv2.SwinV2`; any architecture keyword "
        "(`window_size`, `pretrained_window_sizes`, `drop_path_rate`, ...) overrides the "
        "variant's.\n\n    Example:\n\n    >>> model = keras_swinv2.SwinV2"
        f"{variant.capitalize()}(include_top=False, input_shape=(256, 256, 3))\n"
    )
    return builder


SwinV2Tiny = _variant_builder("tiny")
SwinV2Small = _variant_builder("small")
SwinV2Base = _variant_builder("base")
SwinV2Large = _variant_builder("large")
SwinV2Huge = _variant_builder("huge")
SwinV2Giant = _variant_builder("giant")
