"""From a variant, a weights name, a registry name or a file to a built, loaded backbone.

The builders (`keras_swinv2.SwinV2Tiny`, ...) and the `from_preset` class
methods share these steps: `plan_model` decides the architecture and where the
weights come from, the caller builds the model (a backbone, or a task model
on one), and `load_planned_weights` fills it. The backbone class is passed in
(this module sits below `backbone.py`, whose `from_preset` calls it).
"""

import dataclasses
import difflib
import inspect
import os

from keras_swinv2.models.variants import VARIANTS
from keras_swinv2.weights import (
    CHECKPOINTS,
    fetch_checkpoint,
    find_checkpoint,
    infer_config,
    load_keras_file,
    load_state_dict,
    load_weights,
    read_state_dict,
)

# Suffixes that make a `weights=` / preset string a file path.
FILE_SUFFIXES = (".h5", ".keras", ".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".npz")
# Backbone arguments that are not `**architecture` of a builder (they are builder arguments).
_NOT_ARCHITECTURE = ("self", "image_shape", "pooling", "input_tensor", "name", "trainable")


def architecture_args(backbone_cls):
    """The backbone arguments a builder takes as `**architecture` (`window_size`, `dtype`, ...)."""
    return tuple(p for p in inspect.signature(backbone_cls.__init__).parameters if p not in _NOT_ARCHITECTURE)


def check_keywords(caller, kwargs, allowed):
    """Raises `TypeError` naming the first keyword of `kwargs` not in `allowed`."""
    for key in kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f". Accepted: {', '.join(sorted(allowed))}."
            raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}{hint}")


def is_file_path(weights):
    """Whether a `weights=` / preset string names a file rather than a registry entry."""
    weights = os.fspath(weights)
    return os.path.sep in weights or os.path.exists(weights) or weights.endswith(FILE_SUFFIXES)


@dataclasses.dataclass
class Plan:
    """What to build and what to load into it.

    Attributes:
        config: `SwinV2Backbone` keyword arguments (without `pooling`, `name`).
        checkpoint: the registry `Checkpoint` to load, or None.
        weights_file: a local weights file to load, or None.
        state: the file's tensors when they were read already (to infer the
            architecture), else None.
        classes: the number of classes of the weights' head (None: unknown,
            0: no head).
    """

    config: dict
    checkpoint: object = None
    weights_file: str = None
    state: dict = None
    classes: int = None


def plan_model(variant=None, weights=None, input_shape=None, input_tensor=None, **architecture):
    """Decides the architecture and the weights of a builder call.

    Args:
        variant: "tiny".."giant" or None (the architecture then comes from
            `architecture`, a registry name, or the tensors of a weights file).
        weights: None, a weights name ("imagenet1k", ...), a registry name or a
            file path.
        input_shape: `(height, width, channels)`, default the checkpoint's or
            the variant's size.
        input_tensor: optional Keras tensor for the image input.
        **architecture: `SwinV2Backbone` arguments overriding the variant's.

    Returns:
        A `Plan`.
    """
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}; got {variant!r}.")
    config = dict(VARIANTS[variant]) if variant is not None else {}
    default_size = config.pop("default_size", 256)
    plan = Plan(config=config)
    if weights is not None and is_file_path(weights):
        plan.weights_file = os.fspath(weights)
        if variant is None and not architecture and not plan.weights_file.endswith((".h5", ".keras")):
            plan.state = read_state_dict(plan.weights_file)
            inferred = infer_config(plan.state)
            plan.classes = inferred.pop("num_classes")
            channels = inferred.pop("in_channels")
            config.update(inferred)
            if input_shape is None and input_tensor is None:
                input_shape = (default_size, default_size, channels)
    elif weights is not None:
        if variant is None and weights not in CHECKPOINTS:
            raise ValueError(
                f"weights={weights!r} is neither a file nor a registry name; pass a variant with a "
                "weights name such as 'imagenet1k', or a checkpoint name from "
                "keras_swinv2.weights.CHECKPOINTS."
            )
        if input_tensor is not None:
            input_shape = tuple(input_tensor.shape[1:])
        size = input_shape[0] if input_shape is not None else None
        checkpoint = find_checkpoint(variant, weights, window_size=architecture.get("window_size"), image_size=size)
        if variant is None:
            config = dict(VARIANTS[checkpoint.variant])
            config.pop("default_size")
            plan.config = config
        plan.checkpoint = checkpoint
        plan.classes = checkpoint.classes
        default_size = checkpoint.image_size
        config["window_size"] = architecture.get("window_size", checkpoint.window_size)
    config.update(architecture)
    if input_shape is None and input_tensor is None:
        input_shape = (default_size, default_size, 3)
    checkpoint = plan.checkpoint
    if checkpoint is not None and "pretrained_window_sizes" not in architecture:
        shape = tuple(input_tensor.shape[1:]) if input_tensor is not None else tuple(input_shape)
        same_geometry = config["window_size"] == checkpoint.window_size and shape[:2] == (checkpoint.image_size,) * 2
        config["pretrained_window_sizes"] = (
            checkpoint.pretrained_window_sizes if same_geometry else checkpoint.cpb_windows()
        )
    if input_tensor is not None:
        config["input_tensor"] = input_tensor
    else:
        config["image_shape"] = tuple(input_shape)
    return plan


def build_backbone(backbone_cls, plan, pooling=None, name="swinv2_backbone"):
    """The backbone (a `SwinV2Backbone`) a `Plan` describes, weights not loaded yet."""
    return backbone_cls(**plan.config, pooling=pooling, name=name)


def load_planned_weights(model, plan):
    """Loads the plan's weights (if any) into `model`, a backbone or a task model on one."""
    if plan.checkpoint is not None:
        load_state_dict(model, fetch_checkpoint(plan.checkpoint), layout="timm", source=plan.checkpoint.name)
    elif plan.state is not None:
        load_state_dict(model, plan.state, source=plan.weights_file)
    elif plan.weights_file is not None:
        load_weights(model, plan.weights_file)
    return model


def preset_arguments(preset, kwargs):
    """Turns a preset into builder arguments: `(variant, kwargs)`, or a loaded `.keras` model.

    Returns:
        `(variant or None, kwargs with "weights" set, loaded model or None)`.
    """
    kwargs = dict(kwargs)
    preset = os.fspath(preset)
    if preset.endswith(".keras") and os.path.isfile(preset):
        return None, kwargs, load_keras_file(preset)
    if is_file_path(preset):
        if not os.path.exists(preset):
            raise FileNotFoundError(f"No preset file at {preset!r}.")
        kwargs["weights"] = preset
        return kwargs.pop("variant", None), kwargs, None
    name = preset.removeprefix("swinv2_")
    if name in VARIANTS:
        return name, kwargs, None
    if preset in CHECKPOINTS:
        kwargs["weights"] = preset
        return CHECKPOINTS[preset].variant, kwargs, None
    raise ValueError(
        f"Unknown preset {preset!r}: expected a checkpoint name from keras_swinv2.weights.CHECKPOINTS "
        f"(e.g. 'swinv2_tiny_window8_256'), a variant ({', '.join(f'swinv2_{v}' for v in VARIANTS)}), "
        "or a path to a .keras / .safetensors / .pth / .bin / .npz file."
    )


def backbone_from_preset(backbone_cls, preset, **kwargs):
    """`SwinV2Backbone.from_preset`: see there."""
    variant, kwargs, loaded = preset_arguments(preset, kwargs)
    if loaded is not None:
        check_keywords("SwinV2Backbone.from_preset", kwargs, ())
        backbone = getattr(loaded, "backbone", loaded)
        if not isinstance(backbone, backbone_cls):
            raise ValueError(f"{preset} holds a {type(loaded).__name__}, not a SwinV2 model.")
        return backbone
    allowed = ("weights", "input_shape", "input_tensor", "pooling", "name", *architecture_args(backbone_cls))
    check_keywords("SwinV2Backbone.from_preset", kwargs, allowed)
    pooling = kwargs.pop("pooling", None)
    name = kwargs.pop("name", f"swinv2_{variant}_backbone" if variant else "swinv2_backbone")
    plan = plan_model(variant, **kwargs)
    return load_planned_weights(build_backbone(backbone_cls, plan, pooling=pooling, name=name), plan)
