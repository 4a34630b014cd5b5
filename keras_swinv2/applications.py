"""SwinV2-T/S/B/L/H/G: the keras.applications-style builders.

`include_top=True` returns a `SwinV2ImageClassifier`, `include_top=False` a
`SwinV2Backbone` (with `pooling=` giving pooled features).
"""

from keras_swinv2.models import presets
from keras_swinv2.models.backbone import SwinV2Backbone
from keras_swinv2.tasks.image_classifier import SwinV2ImageClassifier

# The keywords a builder accepts as `**architecture`.
ARCHITECTURE_ARGS = presets.architecture_args(SwinV2Backbone)


def SwinV2(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation="softmax",
    variant=None,
    name=None,
    **architecture,
):
    """Builds a SwinV2 classifier or backbone, optionally with pretrained weights.

    The common implementation of `SwinV2Tiny` ... `SwinV2Giant`, which take
    the same arguments (without `variant`).

    Args:
        include_top: bool. True: a `SwinV2ImageClassifier` (pooling and a
            Dense head on the backbone); False: the `SwinV2Backbone` alone.
        weights: None (random initialisation); a weights name, "imagenet1k",
            "imagenet22k", "imagenet22k-ft1k" or "simmim-<data>-<iters>", or a
            registry name from `keras_swinv2.weights.CHECKPOINTS`: downloaded
            once, converted and cached, then loaded offline; or a path to a
            checkpoint: `.weights.h5` / `.keras` (Keras), or `.safetensors` /
            `.pth` / `.bin` / `.npz` in the official, timm or HF transformers
            layout (detected from the keys). With a weights name, `window_size`
            and `input_shape` default to the checkpoint's; another window or
            size transfers through the continuous position bias
            (`pretrained_window_sizes` is set to the checkpoint's training
            windows), another `classes` leaves the head freshly initialised
            (with a warning).
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: `(height, width, 3)`, default the checkpoint's or the
            variant's size; `(None, None, 3)` for any size.
        pooling: with `include_top=False`: None (the final feature map), "avg"
            or "max" (pooled features).
        classes: classifier outputs; default the checkpoint's (1000, or 21841
            for "imagenet22k"), else 1000.
        classifier_activation: activation of the head ("softmax", or None for
            logits).
        variant: None or one of "tiny", "small", "base", "large", "huge",
            "giant" to start from that architecture. With None, the
            architecture comes from `architecture`, from a registry name in
            `weights`, or from the tensors of a PyTorch checkpoint file in
            `weights`.
        name: model name, default "swinv2_<variant>".
        **architecture: `SwinV2Backbone` arguments overriding the variant's
            (`window_size`, `pretrained_window_sizes`, `drop_path_rate`,
            `gradient_checkpointing`, `dtype`, the ablation switches, ...).
            Anything else raises `TypeError`.

    Returns:
        A `SwinV2ImageClassifier` (`include_top=True`) or a `SwinV2Backbone`.

    Example:

    >>> model = keras_swinv2.SwinV2Base(weights="imagenet22k")    # 192 px, window 12, 21841 classes
    >>> backbone = keras_swinv2.SwinV2Tiny(include_top=False, input_shape=(256, 256, 3))
    """
    caller = f"SwinV2{variant.capitalize()}" if variant else "SwinV2"
    presets.check_keywords(caller, architecture, ARCHITECTURE_ARGS)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max'; got {pooling!r}.")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise ValueError(f"classes must be an int >= 1; got {classes!r}.")
    plan = presets.plan_model(variant, weights, input_shape, input_tensor, **architecture)
    if name is None:
        name = f"swinv2_{variant}" if variant else "swinv2"
    if not include_top:
        model = presets.build_backbone(SwinV2Backbone, plan, pooling=pooling, name=name)
    else:
        backbone = presets.build_backbone(SwinV2Backbone, plan, name=f"{name}_backbone")
        num_classes = classes if classes is not None else (plan.classes or 1000)
        model = SwinV2ImageClassifier(backbone, num_classes, activation=classifier_activation, name=name)
    return presets.load_planned_weights(model, plan)


def SwinV2Tiny(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation="softmax",
    name="swinv2_tiny",
    **architecture,
):
    """SwinV2-T: embed dim 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24); 256 px, window 8 by default.

    Arguments and return value as for `SwinV2` (this builder fixes `variant`).
    """
    return SwinV2(
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        variant="tiny",
        name=name,
        **architecture,
    )


def SwinV2Small(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation="softmax",
    name="swinv2_small",
    **architecture,
):
    """SwinV2-S: embed dim 96, depths (2, 2, 18, 2), heads (3, 6, 12, 24); 256 px, window 8 by default.

    Arguments and return value as for `SwinV2` (this builder fixes `variant`).
    """
    return SwinV2(
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        variant="small",
        name=name,
        **architecture,
    )


def SwinV2Base(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation="softmax",
    name="swinv2_base",
    **architecture,
):
    """SwinV2-B: embed dim 128, depths (2, 2, 18, 2), heads (4, 8, 16, 32); 256 px, window 8 by default.

    Arguments and return value as for `SwinV2` (this builder fixes `variant`).
    """
    return SwinV2(
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        variant="base",
        name=name,
        **architecture,
    )


def SwinV2Large(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation="softmax",
    name="swinv2_large",
    **architecture,
):
    """SwinV2-L: embed dim 192, depths (2, 2, 18, 2), heads (6, 12, 24, 48); 192 px, window 12 by default.

    Arguments and return value as for `SwinV2` (this builder fixes `variant`).
    """
    return SwinV2(
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        variant="large",
        name=name,
        **architecture,
    )


def SwinV2Huge(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation="softmax",
    name="swinv2_huge",
    **architecture,
):
    """SwinV2-H: embed dim 352, depths (2, 2, 18, 2), heads (11, 22, 44, 88), a main-branch LayerNorm every
    6 blocks; 192 px, window 12 by default. No published weights.

    Arguments and return value as for `SwinV2` (this builder fixes `variant`).
    """
    return SwinV2(
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        variant="huge",
        name=name,
        **architecture,
    )


def SwinV2Giant(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation="softmax",
    name="swinv2_giant",
    **architecture,
):
    """SwinV2-G: embed dim 512, depths (2, 2, 42, 2), heads (16, 32, 64, 128), a main-branch LayerNorm every
    6 blocks; 192 px, window 12 by default. No published weights.

    Arguments and return value as for `SwinV2` (this builder fixes `variant`).
    """
    return SwinV2(
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        variant="giant",
        name=name,
        **architecture,
    )
