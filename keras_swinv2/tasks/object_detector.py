"""Object detection on a `SwinV2Backbone`: keras-hub's RetinaNet with defaults for the input size."""

from keras_swinv2.models.backbone import SwinV2Backbone

BOX_FORMATS = ("yxyx", "xyxy", "xywh", "center_xywh", "center_yxhw", "rel_yxyx", "rel_xyxy", "rel_xywh")


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            "Object detection uses keras-hub's RetinaNet: pip install keras-hub (or 'keras-swinv2[hub]'); "
            "`make venv` installs it."
        ) from error
    return keras_hub


def default_anchor_size(image_shape):
    """keras-hub's `anchor_size` (level-l anchors are `anchor_size * 2**l` px) for an input size.

    RetinaNet's anchors (`anchor_size=4`: 32 px at P3 up to 512 px at P7,
    four strides wide) suit inputs of 512 px and more. Smaller inputs get
    proportionally smaller anchors down to `anchor_size=2` (two strides wide,
    16 px at P3) at 256 px and below; smaller still, too few anchors overlap
    an object by the 0.5 IoU a positive needs (on the 64-px digit scenes:
    0.15 positive anchors per object at `anchor_size=0.5`, 4.2 at 2, none at
    4). Unknown sizes keep 4.
    """
    sides = [s for s in image_shape[:2] if s is not None]
    if len(sides) < 2:
        return 4.0
    return min(4.0, max(2.0, 4.0 * min(sides) / 512))


def swinv2_retinanet(
    backbone,
    num_classes,
    bounding_box_format="yxyx",
    min_level=3,
    max_level=7,
    anchor_size=None,
    num_scales=3,
    aspect_ratios=(0.5, 1.0, 2.0),
    head_conv_layers=4,
    confidence_threshold=0.05,
    iou_threshold=0.5,
    max_detections=100,
    name="swinv2_retinanet",
):
    """A keras-hub `RetinaNetObjectDetector` on a SwinV2 backbone.

    keras-hub's FPN takes the backbone's P3..P5 (strides 8..32) and adds P6
    and P7 by strided convolutions; each level gets `num_scales *
    len(aspect_ratios)` anchors per location, classified (focal loss) and
    regressed (smooth L1) by the shared heads. The model trains with
    `fit(images, {"boxes": (batch, max_boxes, 4), "labels": (batch,
    max_boxes)})` (labels -1 pad) and `predict` returns keras-hub's
    detections: `{"boxes", "confidence", "labels", "num_detections"}` after
    non-maximum suppression. The backbone is shared, not copied.

    Args:
        backbone: a `SwinV2Backbone` with four stages (P2..P5) and pooling None.
        num_classes: int >= 1, object classes (no background class).
        bounding_box_format: keras-hub format of the targets and detections
            ("yxyx": absolute `(ymin, xmin, ymax, xmax)` pixels).
        min_level: lowest pyramid level with heads (3, RetinaNet's).
        max_level: highest level (7, RetinaNet's; above 5 keras-hub adds them).
        anchor_size: base anchor size; None: `default_anchor_size`.
        num_scales: anchor scales per location.
        aspect_ratios: anchor aspect ratios per location.
        head_conv_layers: convolutions before each head's output (4).
        confidence_threshold: detections below are dropped (0.05, as for
            COCO evaluation; raise it for display).
        iou_threshold: non-maximum suppression IoU.
        max_detections: detections kept per image.
        name: model name.

    Returns:
        A `keras_hub.models.RetinaNetObjectDetector`; `.keras` files of it
        load wherever keras-hub and keras-swinv2 are importable.
    """
    keras_hub = _keras_hub()
    if not isinstance(backbone, SwinV2Backbone):
        raise TypeError(f"backbone must be a SwinV2Backbone; got {type(backbone).__name__}.")
    if backbone.pooling is not None:
        raise ValueError(
            f"The detector needs the backbone's feature maps: build it with pooling=None; got {backbone.pooling!r}."
        )
    if len(backbone.depths) != 4:
        raise ValueError(
            f"RetinaNet reads the pyramid levels P3..P5; the backbone has {len(backbone.depths)} stages "
            f"(depths={backbone.depths}), so its deepest level is P{len(backbone.depths) + 1}."
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1; got {num_classes!r}.")
    if bounding_box_format not in BOX_FORMATS:
        raise ValueError(f"bounding_box_format must be one of {BOX_FORMATS}; got {bounding_box_format!r}.")
    if not 3 <= min_level <= 5 or max_level < max(min_level, 5):
        raise ValueError(
            "min_level must be 3, 4 or 5 (the backbone gives P3..P5) and max_level >= 5 (keras-hub's FPN "
            f"adds levels above P5); got min_level={min_level}, max_level={max_level}."
        )
    if anchor_size is None:
        anchor_size = default_anchor_size(backbone.image_shape)

    retinanet_backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=backbone,
        min_level=min_level,
        max_level=max_level,
        use_p5=False,  # P6 from the backbone's last stage, as in RetinaNet
        image_shape=backbone.image_shape,
        dtype=backbone.dtype_policy,
    )
    anchor_generator = keras_hub.layers.AnchorGenerator(
        bounding_box_format=bounding_box_format,
        min_level=min_level,
        max_level=max_level,
        num_scales=num_scales,
        aspect_ratios=list(aspect_ratios),
        anchor_size=anchor_size,
    )
    decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format=bounding_box_format,
        from_logits=True,
        iou_threshold=iou_threshold,
        confidence_threshold=confidence_threshold,
        max_detections=max_detections,
    )
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=retinanet_backbone,
        num_classes=num_classes,
        bounding_box_format=bounding_box_format,
        anchor_generator=anchor_generator,
        pre_logits_num_conv_layers=head_conv_layers,
        prediction_decoder=decoder,
        name=name,
    )
