"""Small models with every weight randomised, shared by the model-level tests."""

import numpy as np

import keras_swinv2

SMALL = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4)


def randomize_weights(model, seed=0):
    """Replaces every weight with random values (post-norms start at zero otherwise)."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [(rng.normal(size=w.shape) * 0.2 + (1.0 if w.ndim == 1 else 0.0)).astype(w.dtype) for w in model.get_weights()]
    )
    return model


def build(
    include_top=True,
    classes=1000,
    classifier_activation="softmax",
    input_shape=(256, 256, 3),
    pooling=None,
    name=None,
    **architecture,
):
    """A `SwinV2ImageClassifier` (or with `include_top=False` a `SwinV2Backbone`) from one flat config."""
    backbone = keras_swinv2.SwinV2Backbone(
        **architecture,
        image_shape=input_shape,
        pooling=None if include_top else pooling,
        **({"name": name} if name and not include_top else {}),
    )
    if not include_top:
        return backbone
    return keras_swinv2.SwinV2ImageClassifier(
        backbone, classes, activation=classifier_activation, **({"name": name} if name else {})
    )


def small_model(seed=0, **overrides):
    config = dict(SMALL, input_shape=(32, 32, 3), classes=5, classifier_activation=None)
    config.update(overrides)
    return randomize_weights(build(**config), seed)


def images(shape=(2, 32, 32, 3), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")
