"""`SwinV2ImageSegmenter` (UperNet): equal to HF transformers' PyTorch UperNet on a Swinv2
backbone, trainable on every backend (auxiliary head, gradient checkpointing, sizes that are not
window multiples), `.keras` round trip, export, and clear errors.

Every model is tiny (one block per stage, 16 head channels); one HF comparison per backend.
"""

import warnings

import numpy as np
import pytest
import torch

import keras

from keras_swinv2 import SwinV2Backbone, SwinV2ImageSegmenter
from keras_swinv2.layers import AdaptiveAveragePooling, ResizeLike
from keras_swinv2.weights import load_state_dict

from reference import max_abs_diff, randomize_, state_dict_numpy

BACKEND = keras.backend.backend()
ARCH = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0)
HEAD = dict(head_channels=16, auxiliary_channels=8)
NUM_CLASSES = 5
LEVELS = ("P2", "P3", "P4", "P5")


def _backbone(image_shape=(64, 64, 3), **overrides):
    return SwinV2Backbone(**dict(ARCH, **overrides), image_shape=image_shape)


def _images(shape, batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


# --- the reference -------------------------------------------------------------------------


def _hf_upernet(image_size, seed=0):
    """HF UperNet on an HF Swinv2Backbone, every parameter and BatchNorm statistic random."""
    from transformers import Swinv2Config, UperNetConfig, UperNetForSemanticSegmentation

    backbone_config = Swinv2Config(
        image_size=image_size,
        patch_size=4,
        embed_dim=ARCH["embed_dim"],
        depths=list(ARCH["depths"]),
        num_heads=list(ARCH["num_heads"]),
        window_size=ARCH["window_size"],
        drop_path_rate=0.0,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = UperNetConfig(
        backbone_config=backbone_config,
        hidden_size=HEAD["head_channels"],
        num_labels=NUM_CLASSES,
        pool_scales=[1, 2, 3, 6],
        use_auxiliary_head=True,
        auxiliary_channels=HEAD["auxiliary_channels"],
        auxiliary_num_convs=1,
        auxiliary_concat_input=False,
    )
    model = randomize_(UperNetForSemanticSegmentation(config), seed).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model


def _conv_module(state, prefix, name):
    """HF `UperNetConvModule` (conv, batch_norm) -> our `<name>_conv` / `<name>_bn` weights."""
    return {
        f"{name}_conv": [state[f"{prefix}.conv.weight"].transpose(2, 3, 1, 0)],
        f"{name}_bn": [state[f"{prefix}.batch_norm.{k}"] for k in ("weight", "bias", "running_mean", "running_var")],
    }


def _load_hf_upernet(segmenter, reference):
    """Copies HF UperNet weights into `segmenter`: the backbone through the package's HF-layout
    loader, the head layer by layer (HF's Swinv2Backbone has no final LayerNorm: ours is unused)."""
    state = state_dict_numpy(reference)
    backbone_state = {f"swinv2.{k[len('backbone.') :]}": v for k, v in state.items() if k.startswith("backbone.")}
    channels = segmenter.backbone.num_features
    backbone_state["swinv2.layernorm.weight"] = np.ones(channels, "float32")
    backbone_state["swinv2.layernorm.bias"] = np.zeros(channels, "float32")
    load_state_dict(segmenter.backbone, backbone_state, layout="hf")

    head = {}
    for i, scale in enumerate(segmenter.pool_scales):
        head.update(_conv_module(state, f"decode_head.psp_modules.{i}.1", f"ppm_{scale}"))
    head.update(_conv_module(state, "decode_head.bottleneck", "ppm_bottleneck"))
    for i, level in enumerate(LEVELS[:-1]):
        head.update(_conv_module(state, f"decode_head.lateral_convs.{i}", f"lateral_{level}"))
        head.update(_conv_module(state, f"decode_head.fpn_convs.{i}", f"fpn_{level}"))
    head.update(_conv_module(state, "decode_head.fpn_bottleneck", "fpn_bottleneck"))
    head.update(_conv_module(state, "auxiliary_head.convs.0", "aux"))
    for ours, theirs in (("classifier", "decode_head.classifier"), ("aux_classifier", "auxiliary_head.classifier")):
        head[ours] = [state[f"{theirs}.weight"].transpose(2, 3, 1, 0), state[f"{theirs}.bias"]]
    for name, weights in head.items():
        segmenter.get_layer(name).set_weights(weights)


def _with_level_norms(reference, segmenter):
    """Makes the HF backbone hand on LayerNorm'd levels with the segmenter's norm weights (HF's
    Swinv2Backbone has no per-level norms; the official dense-prediction Swin backbones do)."""
    norms = [[torch.from_numpy(_numpy(w)) for w in segmenter.get_layer(f"{k}_norm").weights] for k in LEVELS]

    def hook(module, inputs, output):
        maps = []
        for feature_map, (gamma, beta) in zip(output.feature_maps, norms):
            x = feature_map.permute(0, 2, 3, 1)
            x = torch.nn.functional.layer_norm(x, x.shape[-1:], gamma, beta, eps=1e-5)
            maps.append(x.permute(0, 3, 1, 2))
        output.feature_maps = tuple(maps)
        return output

    return reference.backbone.register_forward_hook(hook)


def test_upernet_matches_hf_transformers(report):
    """Logits and auxiliary logits equal HF's UperNetForSemanticSegmentation (pyramid pooling
    at 1/2/3/6 incl. bins larger than P5's 2x2 map, FPN, upsampling), eval-mode BatchNorm."""
    size = 64
    reference = _hf_upernet(size)
    segmenter = SwinV2ImageSegmenter(_backbone((size, size, 3)), NUM_CLASSES, auxiliary_head=True, **HEAD)
    _load_hf_upernet(segmenter, reference)
    rng = np.random.default_rng(3)
    for k in LEVELS:  # non-trivial level norms
        norm = segmenter.get_layer(f"{k}_norm")
        norm.set_weights([1 + 0.2 * rng.normal(size=w.shape).astype("float32") for w in norm.get_weights()])
    images = _images((size, size, 3))
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    hook = _with_level_norms(reference, segmenter)
    try:
        with torch.no_grad():
            logits = reference(pixels).logits
            # HF returns the auxiliary logits only inside its loss: run that head as its forward does
            auxiliary = reference.auxiliary_head(reference.backbone(pixels).feature_maps)
            auxiliary = torch.nn.functional.interpolate(auxiliary, size=images.shape[1:3], mode="bilinear")
    finally:
        hook.remove()
    ours = segmenter.predict(images, verbose=0)
    diffs = {
        "logits": max_abs_diff(_numpy(ours["logits"]), logits.numpy().transpose(0, 2, 3, 1)),
        "auxiliary_logits": max_abs_diff(_numpy(ours["auxiliary_logits"]), auxiliary.numpy().transpose(0, 2, 3, 1)),
    }
    scale = float(np.abs(logits.numpy()).max())
    report(test="upernet_vs_hf", logit_scale=scale, **diffs)
    assert scale > 1.0  # the comparison is not between near-zero tensors
    assert diffs["logits"] < 1e-4 * scale and diffs["auxiliary_logits"] < 1e-4 * scale, diffs


# --- training ------------------------------------------------------------------------------


def test_segmenter_trains_and_round_trips(tmp_path):
    """72x56 input (not a multiple of the 4-px windows at any stage: P5 is 3x2, smaller than the
    6x6 pooling bins), auxiliary head, gradient checkpointing, masks with ignored pixels: one SGD
    step moves the backbone and both heads; the `.keras` file predicts the same."""
    shape = (72, 56, 3)
    segmenter = SwinV2ImageSegmenter(
        _backbone(shape, gradient_checkpointing=True), NUM_CLASSES, auxiliary_head=True, **HEAD
    )
    segmenter.compile(optimizer=keras.optimizers.SGD(0.1))
    images = _images(shape)
    masks = np.random.default_rng(1).integers(0, NUM_CLASSES, size=(2, *shape[:2]))
    masks[:, :10] = 255  # ignored rows
    watched = ["stage_0", "P2_norm", "fpn_bottleneck_conv", "classifier", "aux_classifier"]
    before = {name: [_numpy(w).copy() for w in _layer(segmenter, name).trainable_weights] for name in watched}
    logs = segmenter.train_on_batch(images, masks, return_dict=True)
    assert set(logs) >= {"loss", "logits_loss", "auxiliary_logits_loss", "logits_mean_iou"}, logs
    assert np.isfinite(logs["loss"]) and logs["loss"] > logs["logits_loss"] > 0, logs
    for name in watched:
        after = [_numpy(w) for w in _layer(segmenter, name).trainable_weights]
        assert any(np.abs(a - b).max() > 0 for a, b in zip(after, before[name])), f"{name} did not train"

    predictions = segmenter.predict(images, verbose=0)
    assert _numpy(predictions["logits"]).shape == (2, *shape[:2], NUM_CLASSES)
    inference = segmenter.inference_model()
    np.testing.assert_allclose(_numpy(inference.predict(images, verbose=0)), _numpy(predictions["logits"]), atol=1e-5)

    path = tmp_path / "segmenter.keras"
    segmenter.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. Keras' "compile() was not called as part of loading"
        restored = keras.saving.load_model(path)
    assert isinstance(restored, SwinV2ImageSegmenter) and restored.auxiliary_head
    np.testing.assert_allclose(
        _numpy(restored.predict(images, verbose=0)["logits"]), _numpy(predictions["logits"]), atol=1e-5
    )
    # compiled as saved: the optimizer (and its step count), the weighted auxiliary loss, the ignore label
    assert type(restored.optimizer).__name__ == "SGD" and int(_numpy(restored.optimizer.iterations)) == 1
    again = restored.train_on_batch(images, masks, return_dict=True)
    assert set(again) == set(logs) and np.isfinite(again["loss"]), again
    with pytest.raises(ValueError, match="label"):
        restored.train_on_batch(images, np.full_like(masks, NUM_CLASSES))


def _layer(segmenter, name):
    return segmenter.backbone.get_layer(name) if name.startswith("stage_") else segmenter.get_layer(name)


def test_segmenter_any_size_and_mixed_precision():
    """A backbone built for any size segments 40x56 images at their size (padded windows, a 2x2
    P5 pooled to 6x6); under mixed_bfloat16 the logits are float32."""
    segmenter = SwinV2ImageSegmenter(_backbone((None, None, 3)), NUM_CLASSES, **HEAD)
    for shape in ((40, 56, 3),):
        assert _numpy(segmenter.predict(_images(shape, batch=1), verbose=0)).shape == (1, *shape[:2], NUM_CLASSES)
    mixed = SwinV2ImageSegmenter(_backbone((32, 32, 3), dtype="mixed_bfloat16"), NUM_CLASSES, **HEAD)
    logits = mixed.predict(_images((32, 32, 3), batch=1), verbose=0)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(_numpy(logits)))


# --- layers --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 8, 11, 5), (1, 3, 2, 4), (1, 13, 7, 3)])
def test_adaptive_average_pooling_matches_torch(shape):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    for size in (1, 2, 3, 6):
        expected = torch.nn.AdaptiveAvgPool2d(size)(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        np.testing.assert_allclose(_numpy(AdaptiveAveragePooling(size)(x)), expected.transpose(0, 2, 3, 1), atol=1e-6)


def test_resize_like_matches_torch_bilinear():
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 4)).astype("float32")
    reference = np.zeros((2, 8, 11, 1), "float32")
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(8, 11), mode="bilinear", align_corners=False
    ).numpy()
    np.testing.assert_allclose(_numpy(ResizeLike()(x, reference)), expected.transpose(0, 2, 3, 1), atol=1e-6)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent, runs once")
def test_segmenter_arguments_are_checked():
    backbone = _backbone((32, 32, 3))
    with pytest.raises(TypeError, match="backbone must be a SwinV2Backbone; got Sequential"):
        SwinV2ImageSegmenter(keras.Sequential([keras.layers.Dense(2)]), NUM_CLASSES)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2; got 1"):
        SwinV2ImageSegmenter(backbone, 1)
    with pytest.raises(ValueError, match="Each pool scale must be an int >= 1; got 0"):
        SwinV2ImageSegmenter(backbone, NUM_CLASSES, pool_scales=(1, 0))
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\); got 1.5"):
        SwinV2ImageSegmenter(backbone, NUM_CLASSES, dropout=1.5)
    with pytest.raises(ValueError, match="build it with pooling=None; got 'avg'"):
        SwinV2ImageSegmenter(_backbone((32, 32, 3), pooling="avg"), NUM_CLASSES)
    three_stages = SwinV2Backbone(
        embed_dim=16, depths=(1, 1, 1), num_heads=(1, 2, 2), window_size=4, image_shape=(32, 32, 3)
    )
    with pytest.raises(ValueError, match="four pyramid levels P2..P5; the backbone has 3 stages"):
        SwinV2ImageSegmenter(three_stages, NUM_CLASSES)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent, runs once")
def test_bad_masks_are_refused_before_training():
    segmenter = SwinV2ImageSegmenter(_backbone((32, 32, 3)), NUM_CLASSES, **HEAD)
    segmenter.compile()
    images = _images((32, 32, 3))
    masks = np.zeros((2, 32, 32), "int32")
    masks[0, :2, :3] = 7
    with pytest.raises(
        ValueError, match=r"mask labels must be in \[0, 5\) or the ignore label 255; found 7 \(6 pixels\)"
    ):
        segmenter.fit(images, masks, epochs=1, verbose=0)
    with pytest.raises(
        ValueError,
        match=r"masks must be \(batch, H, W\) class ids matching the images \(2, 32, 32, 3\); got shape \(2, 16, 16\)",
    ):
        segmenter.train_on_batch(images, np.zeros((2, 16, 16), "int32"))


def test_segmenter_exports_and_matches_in_the_runtime(tmp_path):
    """`segmenter.export` as for the classifier: the artifact, run by its own runtime (onnxruntime
    or TF's SavedModel loader), gives the Keras logits at another batch size."""
    from keras_swinv2.export import compare, load_artifact

    segmenter = SwinV2ImageSegmenter(_backbone((40, 56, 3)), NUM_CLASSES, **HEAD)
    fmt, name = {"tensorflow": ("onnx", "m.onnx"), "jax": ("tf_saved_model", "m"), "torch": ("onnx", "m.onnx")}[BACKEND]
    path = str(tmp_path / name)
    segmenter.export(path, format=fmt)
    result = compare(segmenter, load_artifact(path), _images((40, 56, 3), batch=3))
    assert [tuple(output[2]) for output in result["outputs"]] == [(3, 40, 56, NUM_CLASSES)], result
    assert result["max_abs_diff"] <= 1e-4, result
