"""`SwinV2ImageSegmenter`: UperNet semantic segmentation on a `SwinV2Backbone`'s feature pyramid."""

import keras
import numpy as np

from keras_swinv2.data.dense import check_masks
from keras_swinv2.export import Exportable
from keras_swinv2.layers.linear import LayerNorm
from keras_swinv2.layers.patch_embedding import LAYER_NORM_EPSILON
from keras_swinv2.layers.pyramid import AdaptiveAveragePooling, ResizeLike
from keras_swinv2.models.backbone import SwinV2Backbone, head_policy

IGNORE_LABEL = 255
LEVELS = ("P2", "P3", "P4", "P5")


def _conv_norm_relu(filters, kernel_size, policy, name):
    """UperNet's conv module: conv (no bias) -> BatchNorm -> ReLU, PyTorch's BatchNorm constants."""
    return [
        keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, dtype=policy, name=f"{name}_conv"),
        keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=policy, name=f"{name}_bn"),
        keras.layers.ReLU(dtype=policy, name=f"{name}_relu"),
    ]


def _apply(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")


@keras.saving.register_keras_serializable(package="keras_swinv2")
class SwinV2ImageSegmenter(Exportable, keras.Model):
    """Semantic segmentation on a SwinV2 backbone: the UperNet head of SwinV2's ADE20K setup.

    Data path: the backbone's pyramid P2..P5 (strides 4..32), each through a
    LayerNorm (dense-prediction Swin backbones normalise every output they
    hand on) -> pyramid pooling on P5 (average pooled to 1x1, 2x2, 3x3 and
    6x6, 1x1 conv each, upsampled and concatenated with P5, 3x3 conv) ->
    FPN: 1x1 lateral convs on P2..P4, top-down sums, a 3x3 conv per level ->
    all levels upsampled to P2 and concatenated -> 3x3 conv -> dropout ->
    1x1 conv to class logits -> bilinear upsampling to the input size. Every
    conv but the last is conv -> BatchNorm -> ReLU.

    With `auxiliary_head`, an FCN head on P4 (3x3 conv module, dropout, 1x1
    conv, upsampled) adds a second output used only for the training loss:
    the model then returns `{"logits": ..., "auxiliary_logits": ...}`, and
    `compile` weights the auxiliary loss by `auxiliary_loss_weight` (0.4 in
    the official setup). `segmenter.inference_model()` is the same model with
    the logits only.

    Outputs are logits `(batch, height, width, num_classes)` at the input
    size, float32 under a mixed dtype policy. Any input size the backbone
    accepts works, window multiples or not; a backbone built with
    `image_shape=(None, None, 3)` gives a segmenter for any size.

    Args:
        backbone: a `SwinV2Backbone` (pooling=None); shared, not copied.
            Its final LayerNorm is not used (P5 is normalised by the
            segmenter's own LayerNorm, as in the official dense setup).
        num_classes: int >= 2, classes including the background.
        head_channels: int, channels of the pyramid pooling and FPN (512
            in the official setup).
        pool_scales: output sides of the pyramid pooling on P5.
        auxiliary_head: bool, add the FCN head on P4.
        auxiliary_channels: int, channels of the auxiliary head (256).
        dropout: float in [0, 1), dropout before each 1x1 classifier (0.1).
        name: model name.

    Example:

    >>> backbone = SwinV2Backbone(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
    ...                           window_size=4, image_shape=(64, 64, 3))
    >>> segmenter = SwinV2ImageSegmenter(backbone, num_classes=5, head_channels=32)
    >>> segmenter(np.zeros((2, 64, 64, 3))).shape
    (2, 64, 64, 5)
    """

    def __init__(
        self,
        backbone,
        num_classes,
        head_channels=512,
        pool_scales=(1, 2, 3, 6),
        auxiliary_head=False,
        auxiliary_channels=256,
        dropout=0.1,
        name="swinv2_image_segmenter",
        trainable=True,
        dtype=None,
    ):
        if not isinstance(backbone, SwinV2Backbone):
            raise TypeError(f"backbone must be a SwinV2Backbone; got {type(backbone).__name__}.")
        if backbone.pooling is not None:
            raise ValueError(
                f"The segmenter needs the backbone's feature maps: build it with pooling=None; got {backbone.pooling!r}."
            )
        if len(backbone.depths) != len(LEVELS):
            raise ValueError(
                f"UperNet fuses the four pyramid levels P2..P5; the backbone has {len(backbone.depths)} stages "
                f"(depths={backbone.depths})."
            )
        _check_int("num_classes", num_classes, 2)
        _check_int("head_channels", head_channels)
        _check_int("auxiliary_channels", auxiliary_channels)
        pool_scales = tuple(pool_scales)
        if not pool_scales:
            raise ValueError("pool_scales must name at least one output side; got ().")
        for scale in pool_scales:
            _check_int("Each pool scale", scale)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a float in [0, 1); got {dropout!r}.")
        policy = backbone.dtype_policy if dtype is None else keras.dtype_policies.get(dtype)
        logits_policy = head_policy(policy)

        # === Layers ===
        # (locals until the functional model exists: a torch-backend layer is a torch Module)
        extractor = keras.Model(
            backbone.inputs, [backbone.pyramid_outputs[k] for k in LEVELS], name=f"{backbone.name}_pyramid"
        )
        norms = [LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=policy, name=f"{k}_norm") for k in LEVELS]
        resize = ResizeLike(dtype=policy, name="resize")
        pools = [AdaptiveAveragePooling(s, dtype=policy, name=f"ppm_pool_{s}") for s in pool_scales]
        ppm_convs = [_conv_norm_relu(head_channels, 1, policy, f"ppm_{s}") for s in pool_scales]
        ppm_bottleneck = _conv_norm_relu(head_channels, 3, policy, "ppm_bottleneck")
        laterals = [_conv_norm_relu(head_channels, 1, policy, f"lateral_{k}") for k in LEVELS[:-1]]
        fpn_convs = [_conv_norm_relu(head_channels, 3, policy, f"fpn_{k}") for k in LEVELS[:-1]]
        fpn_bottleneck = _conv_norm_relu(head_channels, 3, policy, "fpn_bottleneck")
        head_dropout = keras.layers.Dropout(dropout, dtype=policy, name="head_dropout")
        classifier = keras.layers.Conv2D(num_classes, 1, dtype=logits_policy, name="classifier")
        upsample = ResizeLike(dtype=logits_policy, name="upsample_logits")

        # === Functional model ===
        images = backbone.inputs[0]
        pyramid = [norm(level) for norm, level in zip(norms, extractor(images))]

        top = pyramid[-1]
        pooled = [resize(_apply(conv, pool(top)), top) for pool, conv in zip(pools, ppm_convs)]
        concatenated = keras.layers.Concatenate(dtype=policy, name="ppm_concat")([top, *pooled])
        merged = [_apply(lateral, level) for lateral, level in zip(laterals, pyramid)]
        merged.append(_apply(ppm_bottleneck, concatenated))
        for i in range(len(merged) - 1, 0, -1):  # top-down
            merged[i - 1] = keras.layers.Add(dtype=policy, name=f"top_down_{LEVELS[i - 1]}")(
                [merged[i - 1], resize(merged[i], merged[i - 1])]
            )
        outputs = [_apply(conv, level) for conv, level in zip(fpn_convs, merged)] + [merged[-1]]
        fused = keras.layers.Concatenate(dtype=policy, name="fpn_concat")(
            [outputs[0]] + [resize(level, outputs[0]) for level in outputs[1:]]
        )
        x = _apply(fpn_bottleneck, fused)
        if dropout:
            x = head_dropout(x)
        logits = upsample(classifier(x), images)

        aux_layers = None
        if auxiliary_head:
            aux_layers = _conv_norm_relu(auxiliary_channels, 3, policy, "aux")
            aux_layers.append(keras.layers.Dropout(dropout, dtype=policy, name="aux_dropout"))
            aux_layers.append(keras.layers.Conv2D(num_classes, 1, dtype=logits_policy, name="aux_classifier"))
            auxiliary_logits = upsample(_apply(aux_layers, pyramid[LEVELS.index("P4")]), images)
            model_outputs = {"logits": logits, "auxiliary_logits": auxiliary_logits}
        else:
            model_outputs = logits
        super().__init__(inputs=backbone.inputs, outputs=model_outputs, name=name, trainable=trainable)
        # The backbone's layers are tracked through `extractor`; the backbone itself is kept
        # untracked so that its unused final LayerNorm is not among the trainable weights (it
        # would get no gradient) nor saved with the segmenter.
        object.__setattr__(self, "backbone", backbone)
        self.pyramid_extractor = extractor

        # === Config ===
        self.dtype_policy = policy
        self.num_classes = num_classes
        self.head_channels = head_channels
        self.pool_scales = pool_scales
        self.auxiliary_head = bool(auxiliary_head)
        self.auxiliary_channels = auxiliary_channels
        self.dropout = dropout
        self._logits = logits
        self._ignore_label = IGNORE_LABEL

    def inference_model(self):
        """The segmenter without its auxiliary head: logits only, same layers and weights."""
        if not self.auxiliary_head:
            return self
        return keras.Model(self.inputs, self._logits, name=f"{self.name}_inference")

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        ignore_label=IGNORE_LABEL,
        auxiliary_loss_weight=0.4,
        **kwargs,
    ):
        """Configures training; the defaults train on integer masks `(batch, height, width)`.

        Args:
            optimizer: "auto" (AdamW, learning rate 6e-5, weight decay 0.01:
                the official UperNet schedule's peak) or a Keras optimizer.
            loss: "auto" (sparse categorical cross-entropy on logits that
                skips pixels labelled `ignore_label`) or a Keras loss.
            metrics: "auto" (mean IoU over classes, skipping `ignore_label`,
                named "mean_iou") or a list of metrics.
            ignore_label: int, the mask value that marks unlabelled pixels.
            auxiliary_loss_weight: float, weight of the auxiliary head's loss.
            **kwargs: passed to `keras.Model.compile`.
        """
        self._ignore_label = ignore_label
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(6e-5, weight_decay=0.01)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore_label)
        if metrics == "auto":
            metrics = [
                keras.metrics.MeanIoU(self.num_classes, ignore_class=ignore_label, sparse_y_pred=False, name="mean_iou")
            ]
        if self.auxiliary_head:
            loss = {"logits": loss, "auxiliary_logits": loss}
            kwargs["loss_weights"] = {"logits": 1.0, "auxiliary_logits": auxiliary_loss_weight}
            metrics = {"logits": metrics} if metrics is not None else None
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config["ignore_label"] = self._ignore_label
        return config

    def compile_from_config(self, config):
        """Restores `compile` from a `.keras` file: the stored arguments are the final ones
        (defaults filled in, auxiliary losses mapped), so they go to `keras.Model.compile` as they are."""
        config = dict(config)
        self._ignore_label = config.pop("ignore_label", IGNORE_LABEL)
        super().compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # === Target checks ===
    # Masks given as arrays are checked before Keras sees them: a label outside [0, num_classes)
    # would otherwise train on garbage silently on some backends. (Datasets are the pipeline's
    # job: `keras_swinv2.data.check_masks`.)

    def _check_masks(self, x, y):
        if isinstance(y, dict):
            y = y.get("logits")
        if y is None or not hasattr(y, "shape") or hasattr(y, "element_spec"):
            return
        image_shape = tuple(x.shape) if hasattr(x, "shape") and len(x.shape) == 4 else None
        check_masks(np.asarray(keras.ops.convert_to_numpy(y)), self.num_classes, self._ignore_label, image_shape)

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_masks(x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_masks(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        self._check_masks(x, y)
        return super().train_on_batch(x, y, *args, **kwargs)

    def _targets(self, y, y_pred):
        # one mask trains both heads: the auxiliary output's target is the same mask
        if isinstance(y_pred, dict) and y is not None and not isinstance(y, dict):
            return {key: y for key in y_pred}
        return y

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(
            x=x, y=self._targets(y, y_pred), y_pred=y_pred, sample_weight=sample_weight, training=training
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, self._targets(y, y_pred), y_pred, sample_weight=sample_weight)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "head_channels": self.head_channels,
            "pool_scales": self.pool_scales,
            "auxiliary_head": self.auxiliary_head,
            "auxiliary_channels": self.auxiliary_channels,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
