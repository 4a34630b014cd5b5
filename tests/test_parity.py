"""Parity with HF transformers' PyTorch Swinv2 / Swin (V1), every parameter randomised.

Each case compares the logits and the four stage outputs (P2..P5, before the
final LayerNorm); float32, max abs difference <= 1e-4. One small model also
compares every weight gradient of a training step. Runs on whichever
backend KERAS_BACKEND selects; `make test` runs it on all three.
"""

import numpy as np
import pytest
import torch

import keras

from helpers import build
from keras_swinv2.weights import load_state_dict

from reference import hf_outputs, hf_swin_v1, hf_swinv2, keras_outputs, max_abs_diff, state_dict_numpy

pytestmark = pytest.mark.parity

TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))

CASES = {
    # name: (architecture, (height, width), window, pretrained_window_sizes, batch)
    "tiny-256-w8": (TINY, (256, 256), 8, None, 2),
    "tiny-256-w16": (TINY, (256, 256), 16, None, 2),
    # stage 3 fits one 12-window (no shift); stage 4 (6x6) clamps the window to 6
    "base-192-w12": (BASE, (192, 192), 12, None, 1),
    # 22k->1k fine-tune geometry: window 24 on CPB trained at 12 (stage 4: window 12, pretrained 6)
    "base-384-w24-pt12": (BASE, (384, 384), 24, (12, 12, 12, 6), 1),
    # non-square: stage 3 is 12x16 (pads 12->16 under a shift), stage 4 6x8 (window 6, pads 8->12)
    "tiny-192x256-w8": (TINY, (192, 256), 8, None, 1),
    # 224 px at window 8: stage 2 (28) pads to 32 with a shift, stage 3 (14) to 16, stage 4 window 7
    "tiny-224-w8-padded": (TINY, (224, 224), 8, None, 1),
}


def compare(model, reference, images):
    """Loads the reference's weights into `model`; max abs differences of logits and P2..P5."""
    ref_logits, ref_stages = hf_outputs(reference, images)
    load_state_dict(model, state_dict_numpy(reference))
    logits, stages = keras_outputs(model, images)
    diffs = {"logits": max_abs_diff(logits, ref_logits)}
    for i, (ours, ref) in enumerate(zip(stages, ref_stages)):
        diffs[f"P{i + 2}"] = max_abs_diff(ours, ref)
    return diffs


@pytest.mark.parametrize("case", list(CASES))
def test_swinv2_matches_hf(case, report):
    arch, (height, width), window, pretrained, batch = CASES[case]
    reference = hf_swinv2((height, width), window_size=window, pretrained_window_sizes=pretrained, **arch)
    images = np.random.default_rng(1).normal(size=(batch, height, width, 3)).astype("float32")

    model = build(
        **arch,
        window_size=window,
        pretrained_window_sizes=pretrained,
        input_shape=(height, width, 3),
        classes=10,
        classifier_activation=None,
    )
    diffs = compare(model, reference, images)
    report(test="parity", case=case, **diffs)
    assert max(diffs.values()) <= 1e-4, diffs


def test_v1_switches_equal_hf_swin(report):
    """Every V1 switch set: the model is Swin V1 and matches HF's SwinModel."""
    arch = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    reference = hf_swin_v1(224, window_size=7, **arch)
    images = np.random.default_rng(2).normal(size=(2, 224, 224, 3)).astype("float32")

    model = build(
        **arch,
        window_size=7,
        attention="dot",
        norm_position="pre",
        position_bias="table",
        patch_merging="v1",
        key_bias=True,
        input_shape=(224, 224, 3),
        classes=10,
        classifier_activation=None,
    )
    diffs = compare(model, reference, images)
    report(test="parity", case="swin-v1-tiny-224-w7", **diffs)
    assert max(diffs.values()) <= 1e-4, diffs


def keras_gradients(model, images, weights):
    """Gradients of `sum(logits * weights)` for every trainable variable, by variable path."""
    variables = model.trainable_variables
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(images, training=True) * weights)
        grads = tape.gradient(loss, variables)
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            logits, _ = model.stateless_call(trainable, non_trainable, images, training=True)
            return (logits * weights).sum()

        grads = jax.grad(loss)([v.value for v in variables])
    else:
        loss = (model(images, training=True) * torch.from_numpy(weights)).sum()
        loss.backward()
        grads = [v.value.grad for v in variables]
    return {v.path: keras.ops.convert_to_numpy(g) for v, g in zip(variables, grads)}


def test_gradients_match_hf(report):
    """Every weight gradient of a training forward + backward equals HF's autograd.

    The backward pass is ours to get right too: JAX takes hand-written gradients
    (the attention bias) and reshaped products (`Linear`). A small SwinV2 with a
    shifted, masked stage and a CPB scaled to a pretrained window; HF's
    parameter gradients, passed through the same checkpoint conversion as its
    weights, land in the Keras layout (every conversion step is linear).
    """
    arch = dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4))
    reference = hf_swinv2((64, 64), window_size=8, pretrained_window_sizes=(4, 4), **arch).train()
    images = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype("float32")
    weights = np.random.default_rng(4).normal(size=(2, 10)).astype("float32")
    kwargs = dict(
        **arch,
        window_size=8,
        pretrained_window_sizes=(4, 4),
        input_shape=(64, 64, 3),
        classes=10,
        classifier_activation=None,
        drop_path_rate=0.0,
    )
    model, from_hf = build(**kwargs), build(**kwargs)
    load_state_dict(model, state_dict_numpy(reference))
    ours = keras_gradients(model, images, weights)

    logits = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).logits
    (logits * torch.from_numpy(weights)).sum().backward()
    grads = {k: p.grad.numpy() for k, p in reference.named_parameters()}
    load_state_dict(from_hf, {**state_dict_numpy(reference), **grads})
    expected = {v.path: keras.ops.convert_to_numpy(v) for v in from_hf.trainable_variables}

    assert ours.keys() == expected.keys()
    errors = {k: max_abs_diff(ours[k], expected[k]) / max(float(np.abs(expected[k]).max()), 1e-6) for k in ours}
    worst = max(errors, key=errors.get)
    report(test="gradients_vs_hf", variables=len(errors), worst=worst, relative_error=errors[worst])
    assert errors[worst] <= 1e-4, (worst, errors[worst])
    # the check is not vacuous: the CPB, the temperatures and the shifted blocks all get gradients
    assert all(np.abs(expected[k]).max() > 0 for k in expected), [k for k in expected if not expected[k].any()]
