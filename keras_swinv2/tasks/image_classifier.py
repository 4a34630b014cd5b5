"""`SwinV2ImageClassifier`: a classification head on a `SwinV2Backbone`."""

import keras

from keras_swinv2.export import Exportable
from keras_swinv2.models import presets
from keras_swinv2.models.backbone import SwinV2Backbone, head_policy
from keras_swinv2.layers.initializers import TruncatedNormal

POOLING_TYPES = ("avg", "max")


@keras.saving.register_keras_serializable(package="keras_swinv2")
class SwinV2ImageClassifier(Exportable, keras.Model):
    """Image classification on a SwinV2 backbone: pool -> [dropout] -> Dense.

    The official head: global average pooling of the backbone's final
    normalised feature map, then a Dense layer (truncated-normal init, std
    0.02). Under a mixed dtype policy the head runs in float32.

    Args:
        backbone: a `SwinV2Backbone` built with `pooling=None`; it becomes a
            sub-model (`classifier.backbone`), shared, not copied.
        num_classes: int >= 1, classifier outputs.
        pooling: "avg" (official) or "max".
        activation: None (logits), "softmax" or any Keras activation.
        dropout: float in [0, 1), dropout before the Dense layer.
        name: model name.

    Example:

    >>> backbone = SwinV2Backbone(embed_dim=32, depths=(1, 1), num_heads=(2, 4),
    ...                           window_size=4, image_shape=(32, 32, 3))
    >>> classifier = SwinV2ImageClassifier(backbone, num_classes=10)
    >>> classifier(np.zeros((2, 32, 32, 3))).shape
    (2, 10)
    """

    def __init__(
        self,
        backbone,
        num_classes,
        pooling="avg",
        activation=None,
        dropout=0.0,
        name="swinv2_image_classifier",
        trainable=True,
        dtype=None,
    ):
        if not isinstance(backbone, SwinV2Backbone):
            raise TypeError(f"backbone must be a SwinV2Backbone; got {type(backbone).__name__}.")
        if backbone.pooling is not None:
            raise ValueError(
                "The classifier pools the backbone's feature map itself: build the backbone with "
                f"pooling=None; got pooling={backbone.pooling!r}."
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1; got {num_classes!r}.")
        if pooling not in POOLING_TYPES:
            raise ValueError(f"pooling must be one of {POOLING_TYPES}; got {pooling!r}.")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a float in [0, 1); got {dropout!r}.")
        policy = head_policy(backbone.dtype_policy if dtype is None else dtype)

        # === Layers ===
        # Locals until the functional model exists: on the torch backend a Keras layer is a
        # torch Module, which cannot be assigned as an attribute before Module.__init__.
        pool_layer = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
        pooler = pool_layer(dtype=policy, name=f"{pooling}_pool")
        output_dropout = keras.layers.Dropout(dropout, dtype=policy, name="output_dropout")
        head = keras.layers.Dense(
            num_classes,
            activation=activation,
            kernel_initializer=TruncatedNormal(stddev=0.02),
            dtype=policy,
            name="head",
        )

        # === Functional model ===
        inputs = backbone.input
        x = pooler(backbone(inputs))
        if dropout:
            x = output_dropout(x)
        outputs = head(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, trainable=trainable)
        self.backbone = backbone
        self.pooler = pooler
        self.output_dropout = output_dropout if dropout else None
        self.head = head

        # === Config ===
        self.dtype_policy = backbone.dtype_policy
        self.num_classes = num_classes
        self.pooling = pooling
        self.activation = activation
        self.dropout = dropout

    def get_config(self):
        activation = self.activation
        if activation is not None and not isinstance(activation, str):
            activation = keras.activations.serialize(keras.activations.get(activation))
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "activation": activation,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if isinstance(config.get("activation"), dict):
            config["activation"] = keras.activations.deserialize(config["activation"])
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """A classifier from a preset: a registry name, a variant, or a local file.

        Args:
            preset: as for `SwinV2Backbone.from_preset`; the checkpoint's head
                is loaded when it has one with `num_classes` outputs.
            **kwargs: `weights`, `num_classes` (default: the checkpoint's, else
                1000), `activation`, `pooling`, `dropout`, `input_shape`,
                `input_tensor`, `name` and architecture overrides
                (`window_size`, ...).

        Returns:
            A `SwinV2ImageClassifier`.
        """
        variant, kwargs, loaded = presets.preset_arguments(preset, kwargs)
        if loaded is not None:
            presets.check_keywords(f"{cls.__name__}.from_preset", kwargs, ())
            if not isinstance(loaded, cls):
                raise ValueError(f"{preset} holds a {type(loaded).__name__}, not a {cls.__name__}.")
            return loaded
        head_args = ("num_classes", "activation", "pooling", "dropout", "name")
        architecture = presets.architecture_args(SwinV2Backbone)
        allowed = ("weights", "input_shape", "input_tensor", *head_args, *architecture)
        presets.check_keywords(f"{cls.__name__}.from_preset", kwargs, allowed)
        head = {k: kwargs.pop(k) for k in head_args if k in kwargs}
        plan = presets.plan_model(variant, **kwargs)
        name = head.pop("name", f"swinv2_{variant}" if variant else "swinv2_image_classifier")
        num_classes = head.pop("num_classes", None) or plan.classes or 1000
        backbone = presets.build_backbone(SwinV2Backbone, plan, name=f"{name}_backbone")
        model = cls(backbone, num_classes, name=name, **head)
        return presets.load_planned_weights(model, plan)
