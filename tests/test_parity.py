"""Parity with HF transformers' PyTorch Swinv2 / Swin (V1), every parameter randomised.

Each case compares the logits and the four stage outputs (P2..P5, before the
final LayerNorm); float32, max abs difference <= 1e-4. Runs on whichever
backend KERAS_BACKEND selects; `make test` runs it on all three.
"""

import numpy as np
import pytest

from keras_swinv2 import SwinV2Model
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

    model = SwinV2Model(
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

    model = SwinV2Model(
        **arch,
        window_size=7,
        attention="dot",
        norm="pre",
        position_bias="table",
        patch_merging=1,
        key_bias=True,
        input_shape=(224, 224, 3),
        classes=10,
        classifier_activation=None,
    )
    diffs = compare(model, reference, images)
    report(test="parity", case="swin-v1-tiny-224-w7", **diffs)
    assert max(diffs.values()) <= 1e-4, diffs
