"""The fine-tuning recipe: optimizer groups against PyTorch, schedule, freezing modes, digits accuracy."""

import math

import numpy as np
import pytest
import torch

import keras

from helpers import build
from keras_swinv2.training import (
    FinetuneConfig,
    WarmupDecay,
    finetune,
    layer_decay_multipliers,
    layer_id,
    no_weight_decay_paths,
    set_trainable,
    swinv2_adamw,
)


def tiny(classes=5, **kwargs):
    config = dict(
        embed_dim=16, depths=(1, 2), num_heads=(2, 4), window_size=2, input_shape=(16, 16, 3), classes=classes
    )
    config.update(kwargs)
    return build(**config)


@pytest.fixture(scope="module")
def model():
    return tiny()


def test_no_weight_decay_is_the_official_list(model):
    skip = set(no_weight_decay_paths(model.trainable_variables))
    for v in model.trainable_variables:
        official = len(v.shape) == 1 or "logit_scale" in v.path or "/cpb/" in v.path
        assert (v.path in skip) == official, v.path
    assert "stage_0/blocks_0/attn/cpb/fc1/kernel" in skip and "stage_0/blocks_0/attn/logit_scale" in skip
    assert "stage_0/blocks_0/attn/qkv/kernel" not in skip and "head/kernel" not in skip


def test_layer_ids_follow_the_official_numbering(model):
    # official: patch_embed 0, block j of stage i -> sum(depths[:i]) + j + 1, the downsample
    # closing stage i (our merging opening stage i + 1) -> sum(depths[:i + 1]), rest -> L + 1
    expected = {
        "patch_embed/proj/kernel": 0,
        "stage_0/blocks_0/attn/qkv/kernel": 1,
        "stage_1/downsample/reduction/kernel": 1,
        "stage_1/blocks_0/mlp/fc1/kernel": 2,
        "stage_1/blocks_1/norm2/gamma": 3,
        "norm/gamma": 4,
        "head/kernel": 4,
    }
    assert {p: layer_id(p, model.backbone.depths) for p in expected} == expected
    scales = layer_decay_multipliers(model.trainable_variables, model.backbone.depths, 0.5)
    assert scales["head/kernel"] == 1.0 and scales["stage_1/blocks_1/attn/proj/kernel"] == 0.5
    assert scales["patch_embed/norm/beta"] == 0.5**4


def test_schedule_warmup_then_cosine_or_linear():
    for decay in ("cosine", "linear"):
        s = WarmupDecay(
            1e-3, total_steps=110, warmup_steps=10, decay=decay, min_learning_rate=1e-5, warmup_learning_rate=1e-6
        )
        lr = np.array([float(keras.ops.convert_to_numpy(s(i))) for i in range(0, 121)])
        np.testing.assert_allclose(
            lr[[0, 5, 10, 60, 110, 120]],
            [1e-6, 1e-6 + 0.5 * (1e-3 - 1e-6), 1e-3, (1e-3 + 1e-5) / 2, 1e-5, 1e-5],
            rtol=1e-5,
        )
        assert np.all(np.diff(lr[:11]) > 0) and np.all(np.diff(lr[10:111]) < 0)
        if decay == "cosine":  # a half cosine: slow start, fast middle
            assert lr[35] > (1e-3 + 1e-5) / 2 + 0.25 * (1e-3 - 1e-5) * 0.5
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupDecay(1e-3, total_steps=5, warmup_steps=10)


def test_adamw_matches_torch_parameter_groups(model):
    """Three steps of SwinV2AdamW (layer decay, no-decay list) against torch.optim.AdamW groups.

    Keras adds Adam's epsilon before the bias correction (torch after), which only matters for
    gradients near 0; a wrong group (decay 0.7, weight decay 0.3 * lr) moves weights by >= 6e-5.
    """
    variables = model.trainable_variables
    opt = swinv2_adamw(model, 1e-2, weight_decay=0.3, layer_decay=0.7, epsilon=1e-8)
    scales = layer_decay_multipliers(variables, model.backbone.depths, 0.7)
    skip = set(no_weight_decay_paths(variables))
    params = [torch.nn.Parameter(torch.tensor(keras.ops.convert_to_numpy(v))) for v in variables]
    groups = [
        {"params": [p], "lr": 1e-2 * scales[v.path], "weight_decay": 0.0 if v.path in skip else 0.3}
        for p, v in zip(params, variables)
    ]
    ref = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    rng = np.random.default_rng(0)
    for _ in range(3):
        # magnitudes kept away from 0, where the two epsilon placements differ
        grads = [(rng.choice([-1, 1], v.shape) * rng.uniform(0.5, 1.5, v.shape)).astype("float32") for v in variables]
        opt.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        ref.step()
    for v, p in zip(variables, params):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), p.detach().numpy(), atol=1e-6, err_msg=v.path)


def _snapshot(model):
    return {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in model.weights}


@pytest.mark.parametrize("mode", ["attention", "head"])
def test_freezing_modes_train_only_their_part(mode):
    model = tiny(drop_path_rate=0.0)
    for v in model.weights:  # as if pretrained: the res-post-norms start at 0, blocking gradients
        if "/norm1/gamma" in v.path or "/norm2/gamma" in v.path:
            v.assign(np.ones(v.shape, "float32"))
    n = set_trainable(model, mode)
    trainable = {v.path for v in model.trainable_variables}
    assert n == sum(math.prod(v.shape) for v in model.trainable_variables) < model.count_params()
    model.compile(swinv2_adamw(model, 1e-2), "categorical_crossentropy")
    before = _snapshot(model)
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    y = np.eye(5)[np.arange(8) % 5]
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    after = _snapshot(model)
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    assert changed == trainable, changed ^ trainable
    if mode == "attention":
        assert all("/attn/" in p or p.startswith("head/") for p in changed)
        assert any("/attn/cpb/" in p for p in changed) and any("logit_scale" in p for p in changed)
        mlp = [p for p in before if "/mlp/" in p or "/norm" in p or p.startswith("patch_embed")]
        assert mlp and not set(mlp) & changed
    else:
        assert changed == {"head/kernel", "head/bias"}


def test_frozen_stages_and_bad_modes():
    model = tiny()
    set_trainable(model, "full", frozen_stages=1)
    paths = {v.path for v in model.trainable_variables}
    assert not any(p.startswith(("patch_embed/", "stage_0/")) for p in paths)
    assert any(p.startswith("stage_1/") for p in paths)
    with pytest.raises(ValueError, match="mode must be one of"):
        set_trainable(model, "mlp")
    with pytest.raises(ValueError, match="has none \\(a backbone\\)"):
        set_trainable(tiny(include_top=False), "head")


def test_tiny_swinv2_learns_digits(tmp_path, report):
    """The offline dataset: a tiny SwinV2 trained from scratch reaches >= 85% validation accuracy."""
    config = FinetuneConfig(
        data="digits",
        model="tiny",
        image_size=32,
        window_size=4,
        architecture={"embed_dim": 24, "depths": (1, 1, 1), "num_heads": (2, 4, 8)},
        epochs=5,
        batch_size=32,
        learning_rate=2e-3,
        drop_path_rate=0.0,
        augmentation={"crop_scale": (0.6, 1.0), "flip": False, "erasing": None, "mixup": None, "cutmix": None},
    )
    _, data, history = finetune(config, str(tmp_path), verbose=0)
    best = max(row["val_accuracy"] for row in history)
    report(test="digits_tiny", epochs=5, val_accuracy=best, validation_size=data.validation_size)
    assert data.validation_size == 359 and len(history) == 5
    assert best >= 0.85
    assert (tmp_path / "best.keras").exists() and (tmp_path / "curves.png").exists()
    assert (tmp_path / "log.csv").read_text().count("\n") == 6
