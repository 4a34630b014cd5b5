"""Object detection on a `SwinV2Backbone`: keras-hub's RetinaNet with defaults for the input size."""

import math

import keras
from keras import ops

from keras_swinv2.models.backbone import SwinV2Backbone

SUPPRESSION_ARGUMENTS = (
    "bounding_box_format",
    "from_logits",
    "iou_threshold",
    "confidence_threshold",
    "max_detections",
)
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


@keras.saving.register_keras_serializable(package="keras_swinv2")
class DetectionDecoder(keras.layers.Layer):
    """keras-hub's `NonMaxSuppression` for batches of any size.

    keras-hub 0.32's non-maximum suppression needs the batch size as a Python
    int. A TensorFlow `predict` has none once a second batch size has been seen
    (its `tf.function` then retraces with the batch dimension relaxed to None:
    a last, smaller batch is enough), and fails with "Expected int32, but got
    None". With an unknown batch this layer runs keras-hub's suppression image
    by image (`keras.ops.map`); with a known one it calls it once, unchanged.
    The arguments are `NonMaxSuppression`'s.

    Args:
        bounding_box_format: keras-hub format of the boxes in and out.
        from_logits: whether the class predictions are logits.
        iou_threshold: suppression IoU.
        confidence_threshold: detections below it are dropped.
        max_detections: detections kept per image.
        **kwargs: `keras.layers.Layer` arguments (name, dtype).
    """

    def __init__(
        self,
        bounding_box_format,
        from_logits=True,
        iou_threshold=0.5,
        confidence_threshold=0.05,
        max_detections=100,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Layers ===
        self.suppression = _keras_hub().layers.NonMaxSuppression(
            bounding_box_format=bounding_box_format,
            from_logits=from_logits,
            iou_threshold=iou_threshold,
            confidence_threshold=confidence_threshold,
            max_detections=max_detections,
            dtype=self.dtype_policy,
            name="suppression",
        )
        self.built = True

    @property
    def bounding_box_format(self):
        """The box format (RetinaNet checks that its decoder's matches its own)."""
        return self.suppression.bounding_box_format

    def call(self, box_prediction, class_prediction, images=None):
        if box_prediction.shape[0] is not None:
            return self.suppression(box_prediction, class_prediction, images=images)

        def one_image(elements):
            batch = [ops.expand_dims(x, 0) for x in elements]
            detections = self.suppression(batch[0], batch[1], images=batch[2] if len(batch) > 2 else None)
            return {key: value[0] for key, value in detections.items()}

        elements = (box_prediction, class_prediction) + (() if images is None else (images,))
        return ops.map(one_image, elements)

    def get_config(self):
        config = super().get_config()
        config.update({key: getattr(self.suppression, key) for key in SUPPRESSION_ARGUMENTS})
        return config


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
    prior_probability=0.01,
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

    The heads start as in RetinaNet (Lin et al., 2017): convolution kernels
    from N(0, 0.01), the box output's bias 0, the class output's bias
    -log((1 - pi) / pi), so every anchor starts as background with
    probability 1 - pi and the background's focal loss does not swamp the
    few positive anchors in the first steps. keras-hub 0.32's own
    initialisation gives the prior bias to the box head instead (class
    probability 0.5 everywhere; every box shrunk to exp(-4.6) = 1% of its
    anchor) and draws kernels from N(0, 0.05); `tutorials/12` measures the
    difference. A detector re-created from its config alone (no weights)
    gets keras-hub's initialisation.

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
        prior_probability: the class probability every anchor starts with
            (RetinaNet's pi = 0.01; see below).
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
    if not 0.0 < prior_probability < 1.0:
        raise ValueError(f"prior_probability must be in (0, 1); got {prior_probability!r}.")
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
    decoder = DetectionDecoder(
        bounding_box_format=bounding_box_format,
        from_logits=True,
        iou_threshold=iou_threshold,
        confidence_threshold=confidence_threshold,
        max_detections=max_detections,
        name="prediction_decoder",
    )
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=retinanet_backbone,
        num_classes=num_classes,
        bounding_box_format=bounding_box_format,
        anchor_generator=anchor_generator,
        pre_logits_num_conv_layers=head_conv_layers,
        prediction_decoder=decoder,
        name=name,
    )
    _initialise_heads(detector, prior_probability)
    return detector


def _initialise_heads(detector, prior_probability):
    """RetinaNet's head initialisation (see `swinv2_retinanet`), drawn from Keras' seeded generator."""
    kernels = keras.initializers.RandomNormal(mean=0.0, stddev=0.01)
    for head in (detector.classification_head, detector.box_head):
        for conv in [*head.conv_layers, head.prediction_layer]:
            conv.kernel.assign(kernels(conv.kernel.shape, conv.kernel.dtype))
            conv.bias.assign(ops.zeros(conv.bias.shape, conv.bias.dtype))
    bias = detector.classification_head.prediction_layer.bias
    bias.assign(ops.full(bias.shape, -math.log((1.0 - prior_probability) / prior_probability), bias.dtype))
