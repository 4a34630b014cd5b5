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


def small_model(seed=0, **overrides):
    config = dict(SMALL, input_shape=(32, 32, 3), classes=5, classifier_activation=None)
    config.update(overrides)
    return randomize_weights(keras_swinv2.SwinV2Model(**config), seed)


def images(shape=(2, 32, 32, 3), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")
