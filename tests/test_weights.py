"""Checkpoint loading: official / timm / HF layouts, file formats, config inference, errors,
Keras formats, and the `conversion/convert.py` command-line tool.

Every checkpoint here is made from a randomised HF transformers model (see
`reference.py`) by converters written in THIS file, independently of
`keras_swinv2.weights.layouts`, and every successful load is checked against
the HF model's outputs (logits or final features, and all four stage outputs;
max abs difference <= 1e-4). The architecture is tiny (embed dim 16, depths
(2, 2, 2, 2), 64 px, window 4: stage resolutions 16, 8, 4, 2 exercise the
shifted windows, the window == resolution case and a clamped window of 2).
"""

import logging
import importlib.util
import os
import pathlib
import re
import types

import numpy as np
import pytest
import torch

import keras

import keras_swinv2
from keras_swinv2.layers import resize_relative_position_table
from keras_swinv2.weights import detect_layout, infer_config, load_state_dict, load_weights, read_state_dict

import helpers
from checkpoint_files import SIZE, V1_SIZE, WINDOW, hf_to_pytorch_layout, save_checkpoint
from reference import hf_outputs, hf_swin_v1, hf_swinv2, keras_outputs, max_abs_diff, state_dict_numpy

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARCH = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
V1_SWITCHES = dict(attention="dot", norm_position="pre", position_bias="table", patch_merging="v1", key_bias=True)
CLASSES, BATCH, TOL = 10, 2, 1e-4
# Swin V1: two stages at 32 px (maps 8 and 4: a shifted stage, then one exactly one window).
# HF's Swin V1 (transformers 5) fails when a stage is SMALLER than the window, so no V1 case
# has a clamped window.
V1_ARCH = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2))
FORMATS = ("safetensors", "pth", "npz")


# --------------------------------------------------------------------------------------
# References (module-scoped: each HF model runs once) and Keras models.
# --------------------------------------------------------------------------------------


def _reference(model, backbone, size=SIZE):
    images = np.random.default_rng(7).normal(size=(BATCH, size, size, 3)).astype("float32")
    logits, stages = hf_outputs(model, images)
    with torch.no_grad():
        hidden = backbone(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).last_hidden_state.numpy()
    side = size // 2 ** (len(stages) + 1)
    return types.SimpleNamespace(
        hf=state_dict_numpy(model),
        images=images,
        logits=logits,
        stages=stages,
        features=hidden.reshape(BATCH, side, side, -1),
    )


@pytest.fixture(scope="module")
def v2():
    model = hf_swinv2(SIZE, window_size=WINDOW, num_labels=CLASSES, seed=1, **ARCH)
    return _reference(model, model.swinv2)


@pytest.fixture(scope="module")
def v1():
    model = hf_swin_v1(V1_SIZE, window_size=WINDOW, num_labels=CLASSES, seed=2, **V1_ARCH)
    return _reference(model, model.swin, V1_SIZE)


def build(include_top=True, v1=False, window=WINDOW, **kwargs):
    return helpers.build(
        **(dict(V1_ARCH, **V1_SWITCHES) if v1 else ARCH),
        window_size=window,
        input_shape=(V1_SIZE, V1_SIZE, 3) if v1 else (SIZE, SIZE, 3),
        classes=CLASSES,
        classifier_activation=None,
        include_top=include_top,
        **kwargs,
    )


_MODELS = {}


def cached_model(include_top=True, v1=False):
    """One model per kind per backend session, its weights scrambled before each use."""
    key = (include_top, v1)
    if key not in _MODELS:
        _MODELS[key] = build(include_top=include_top, v1=v1)
    model = _MODELS[key]
    rng = np.random.default_rng(123)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def assert_matches(model, ref, top=True):
    out, stages = keras_outputs(model, ref.images)
    diffs = {"logits": max_abs_diff(out, ref.logits)} if top else {"features": max_abs_diff(out, ref.features)}
    for i, (ours, theirs) in enumerate(zip(stages, ref.stages)):
        diffs[f"P{i + 2}"] = max_abs_diff(ours, theirs)
    assert len(stages) == len(ref.stages) == len(getattr(model, "backbone", model).depths)
    assert max(diffs.values()) <= TOL, diffs
    return diffs


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def assert_unchanged(before, model):
    after = model.get_weights()
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------
# Layouts x formats.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", ["official", "timm"])
def test_v2_official_and_timm_layouts_load(layout, fmt, v2, tmp_path, report):
    state = hf_to_pytorch_layout(v2.hf, layout)
    merges = sorted(k.split(".")[1] for k in state if k.endswith("downsample.reduction.weight"))
    assert merges == (["0", "1", "2"] if layout == "official" else ["1", "2", "3"])
    assert ("head.weight" if layout == "official" else "head.fc.weight") in state
    for buffer in ("attn.relative_coords_table", "attn.relative_position_index", "attn_mask"):
        assert any(k.endswith(buffer) for k in state), buffer  # random contents: must be ignored
    path = save_checkpoint(state, tmp_path / f"ckpt.{fmt}")
    model = cached_model()
    assert load_weights(model, path) is model
    diffs = assert_matches(model, v2)
    report(test="weights", case=f"v2-{layout}-{fmt}", **diffs)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_v2_hf_layout_loads(fmt, v2, tmp_path):
    path = save_checkpoint(v2.hf, tmp_path / f"model.{fmt}")
    model = cached_model()
    load_weights(model, path)
    assert_matches(model, v2)


@pytest.mark.parametrize("layout", ["hf", "official", "timm"])
def test_v1_loads(layout, v1, tmp_path):
    """HF Swin V1, and V1 in the official/timm layout (fused `attn.qkv.bias`)."""
    state = v1.hf if layout == "hf" else hf_to_pytorch_layout(v1.hf, layout)
    path = save_checkpoint(state, tmp_path / ("v1.safetensors" if layout == "hf" else "v1.pth"))
    model = cached_model(v1=True)
    load_weights(model, path)
    assert_matches(model, v1)


def test_simmim_keys_load(v2, tmp_path):
    """SimMIM's old official keys: `encoder.` prefix, `rpe_mlp` for the CPB MLP, no head."""
    state = hf_to_pytorch_layout(v2.hf, "official", prefix="encoder.", cpb_name="rpe_mlp", head=False)
    assert any(".attn.rpe_mlp.0.weight" in k for k in state)
    assert detect_layout(state) == "official"
    model = cached_model(include_top=False)
    load_weights(model, save_checkpoint(state, tmp_path / "simmim.pth"))
    assert_matches(model, v2, top=False)


def test_simmim_pretraining_checkpoint_loads(v2, tmp_path):
    """A SimMIM pre-training checkpoint as saved holds the decoder and the mask token too.

    The official `load_pretrained` of SimMIM keeps only the `encoder.*` keys and
    strips the prefix; `encoder.mask_token` and `decoder.*` are not backbone weights.
    """
    state = hf_to_pytorch_layout(v2.hf, "official", prefix="encoder.", cpb_name="rpe_mlp", head=False)
    state["encoder.mask_token"] = np.zeros((1, 1, ARCH["embed_dim"]), "float32")
    state["decoder.0.weight"] = np.zeros((4**2 * 32 * 3, 128, 1, 1), "float32")
    state["decoder.0.bias"] = np.zeros((4**2 * 32 * 3,), "float32")
    model = cached_model(include_top=False)
    load_weights(model, save_checkpoint(state, tmp_path / "simmim_full.pth"))
    assert_matches(model, v2, top=False)


def test_module_prefix_loads(v2):
    """DistributedDataParallel checkpoints prefix every key with `module.`."""
    state = hf_to_pytorch_layout(v2.hf, "official", prefix="module.")
    model = cached_model()
    load_state_dict(model, state)
    assert_matches(model, v2)


# --------------------------------------------------------------------------------------
# detect_layout / infer_config.
# --------------------------------------------------------------------------------------


def test_detect_layout(v2, v1):
    assert detect_layout(hf_to_pytorch_layout(v2.hf, "official")) == "official"
    assert detect_layout(hf_to_pytorch_layout(v2.hf, "timm")) == "timm"
    assert detect_layout(hf_to_pytorch_layout(v2.hf, "official", head=False)) == "official"
    assert detect_layout(hf_to_pytorch_layout(v2.hf, "timm", head=False)) == "timm"
    assert detect_layout(hf_to_pytorch_layout(v2.hf, "official", buffers=None)) == "official"
    assert detect_layout(v2.hf) == "hf"
    assert detect_layout(v1.hf) == "hf"
    assert detect_layout(hf_to_pytorch_layout(v1.hf, "official")) == "official"
    assert detect_layout(hf_to_pytorch_layout(v1.hf, "timm")) == "timm"


@pytest.mark.parametrize(
    "state",
    [{"conv1.weight": np.zeros((8, 3, 3, 3)), "fc.weight": np.zeros((10, 8))}, {}],
    ids=["resnet", "empty"],
)
def test_detect_layout_unknown_raises(state, tmp_path):
    with pytest.raises(ValueError, match="known layout"):
        detect_layout(state)
    if state:
        path = save_checkpoint(state, tmp_path / "other.safetensors")
        with pytest.raises(ValueError):
            load_weights(cached_model(), path)


V2_EXPECTED = dict(
    embed_dim=16,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 4, 8),
    patch_size=4,
    in_channels=3,
    mlp_ratio=4.0,
    qkv_bias=True,
    key_bias=False,
    attention="cosine",
    norm_position="post",
    position_bias="log_cpb",
    patch_merging="v2",
    extra_norm_period=0,
    num_classes=CLASSES,
)
V1_EXPECTED = dict(
    V2_EXPECTED,
    depths=V1_ARCH["depths"],
    num_heads=V1_ARCH["num_heads"],
    key_bias=True,
    attention="dot",
    norm_position="pre",
    position_bias="table",
    patch_merging="v1",
    window_size=WINDOW,
)


def _from_inferred(config, **kwargs):
    config = dict(config)
    config.pop("in_channels")
    classes = config.pop("num_classes")
    return helpers.build(**config, classes=classes, classifier_activation=None, **kwargs)


@pytest.mark.parametrize("layout", ["official", "timm", "hf"])
def test_infer_config_v2(layout, v2):
    state = v2.hf if layout == "hf" else hf_to_pytorch_layout(v2.hf, layout)
    config = infer_config(state)
    assert config == V2_EXPECTED
    assert isinstance(config["mlp_ratio"], float)
    model = _from_inferred(config, window_size=WINDOW, input_shape=(SIZE, SIZE, 3))
    load_state_dict(model, state)
    assert_matches(model, v2)


@pytest.mark.parametrize("layout", ["official", "hf"])
def test_infer_config_v1(layout, v1):
    state = v1.hf if layout == "hf" else hf_to_pytorch_layout(v1.hf, layout)
    config = infer_config(state)
    assert config == V1_EXPECTED
    model = _from_inferred(config, input_shape=(V1_SIZE, V1_SIZE, 3))
    load_state_dict(model, state)
    assert_matches(model, v1)


def test_infer_config_without_head(v2):
    config = infer_config(hf_to_pytorch_layout(v2.hf, "official", prefix="encoder.", head=False))
    assert config["num_classes"] == 0
    assert config["depths"] == ARCH["depths"] and config["num_heads"] == ARCH["num_heads"]


# --------------------------------------------------------------------------------------
# Errors: each names the tensor, and a failed load changes nothing.
# --------------------------------------------------------------------------------------


def test_missing_tensor_raises_and_leaves_model_unchanged(v2):
    state = hf_to_pytorch_layout(v2.hf, "official")
    del state["layers.2.blocks.1.mlp.fc1.bias"]
    model = cached_model()
    before = weights_of(model)
    with pytest.raises(ValueError, match=re.escape("layers.2.blocks.1.mlp.fc1.bias")) as info:
        load_state_dict(model, state)
    assert "missing" in str(info.value)
    assert_unchanged(before, model)


def test_unexpected_tensor_raises_and_leaves_model_unchanged(v2):
    state = hf_to_pytorch_layout(v2.hf, "official")
    state["layers.1.blocks.0.attn.gate.weight"] = np.zeros((4, 4), "float32")
    model = cached_model()
    before = weights_of(model)
    with pytest.raises(ValueError, match=re.escape("layers.1.blocks.0.attn.gate.weight")) as info:
        load_state_dict(model, state)
    assert "unexpected" in str(info.value)
    assert_unchanged(before, model)


@pytest.mark.parametrize(
    "name, shape, model_shape",
    [
        ("norm.weight", (7,), (128,)),
        # a Linear (out, in) = (60, 16) where the model's Keras kernel is (in, out) = (16, 64)
        ("layers.0.blocks.1.mlp.fc1.weight", (60, 16), (16, 64)),
        ("layers.3.blocks.0.attn.logit_scale", (4, 1, 1), (8, 1, 1)),
    ],
)
def test_misshaped_tensor_raises_and_leaves_model_unchanged(name, shape, model_shape, v2):
    state = hf_to_pytorch_layout(v2.hf, "official")
    state[name] = np.zeros(shape, "float32")
    model = cached_model()
    before = weights_of(model)
    with pytest.raises(ValueError) as info:
        load_state_dict(model, state)
    message = str(info.value)
    assert name in message and str(shape) in message and str(model_shape) in message, message
    assert_unchanged(before, model)


def test_errors_name_tensors_as_the_checkpoint_does(v2):
    """In the official layout stage i's merging is `layers.{i}.downsample`; the canonical
    layout calls it `layers.{i+1}.downsample`, which in a 4-stage official checkpoint is a
    DIFFERENT tensor that exists. The message must name the key found in the file."""
    state = hf_to_pytorch_layout(v2.hf, "official")
    state["layers.0.downsample.reduction.weight"] = np.zeros((32, 60), "float32")
    with pytest.raises(ValueError) as info:
        load_state_dict(cached_model(), state)
    assert "layers.0.downsample.reduction.weight" in str(info.value), str(info.value)


def test_hf_checkpoint_without_key_projection_raises(v2):
    state = dict(v2.hf)
    del state["swinv2.encoder.layers.0.blocks.0.attention.self.key.weight"]
    with pytest.raises(ValueError, match="layers.0.blocks.0"):
        load_state_dict(cached_model(), state)


def test_head_missing_for_model_with_top_is_reported_and_keeps_head(v2, caplog):
    model = cached_model()
    head = [w.copy() for w in model.head.get_weights()]
    with caplog.at_level(logging.INFO, logger="keras_swinv2"):
        load_state_dict(model, hf_to_pytorch_layout(v2.hf, "official", head=False))
    assert re.search(r"classifier has no head.*head is left freshly initialised", caplog.text)
    for a, b in zip(head, model.head.get_weights()):
        np.testing.assert_array_equal(a, b)
    _, stages = keras_outputs(model, v2.images)  # the backbone did load
    for ours, theirs in zip(stages, v2.stages):
        assert max_abs_diff(ours, theirs) <= TOL


@pytest.mark.parametrize(
    "name", ["absent.safetensors", "absent.pth", "absent.npz", "absent.weights.h5", "absent.keras"]
)
def test_missing_file_raises_file_not_found(name, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights(cached_model(), tmp_path / name)


def test_truncated_safetensors_raises_value_error(v2, tmp_path):
    path = save_checkpoint(hf_to_pytorch_layout(v2.hf, "official"), tmp_path / "full.safetensors")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file" * 8)
    model = cached_model()
    before = weights_of(model)
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            load_weights(model, bad)
    assert_unchanged(before, model)


@pytest.mark.parametrize("fmt", ["pth", "npz"])
def test_truncated_pth_and_npz_raise_value_error(fmt, v2, tmp_path):
    path = save_checkpoint(hf_to_pytorch_layout(v2.hf, "official"), tmp_path / f"full.{fmt}")
    data = path.read_bytes()
    truncated = tmp_path / f"truncated.{fmt}"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        read_state_dict(truncated)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_half_precision_checkpoints_read_as_float32(fmt, dtype, tmp_path):
    """`read_state_dict` promises float32 for bfloat16/float16 tensors, whatever the format."""
    values = torch.tensor([1.0, -2.5, 0.375, 3.0e4])
    tensors = {"w": values.to(getattr(torch, dtype)), "index": torch.arange(4)}
    path = tmp_path / f"half.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, str(path))
    state = read_state_dict(path)
    assert state["w"].dtype == np.float32, state["w"].dtype
    np.testing.assert_array_equal(state["w"], tensors["w"].float().numpy())
    assert state["index"].dtype == np.int64


@pytest.mark.parametrize("name", ["weights.h5", "model.onnx", "ckpt.tar", "noext"])
def test_unknown_extension_raises_value_error(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="Unknown checkpoint format"):
        load_weights(cached_model(), path)


def test_wrapper_without_state_dict_raises(tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"optimizer": {"lr": 0.1}, "epoch": 3}, str(path))
    with pytest.raises(ValueError, match="wrapped.pth"):
        read_state_dict(path)


# --------------------------------------------------------------------------------------
# Heads, windows, Keras formats.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["official", "timm", "hf"])
def test_model_without_top_ignores_checkpoint_head(layout, v2):
    state = v2.hf if layout == "hf" else hf_to_pytorch_layout(v2.hf, layout)
    model = cached_model(include_top=False)
    load_state_dict(model, state)
    assert_matches(model, v2, top=False)


@pytest.mark.parametrize("layout", ["hf", "official"])
def test_v1_table_resized_to_another_window(layout, v1):
    """A window-4 V1 checkpoint in a window-8 model: stage 1 (map 8) gets its tables resized
    4 -> 8, stage 2 (map 4, window clamped to 4) keeps the checkpoint's."""
    state = v1.hf if layout == "hf" else hf_to_pytorch_layout(v1.hf, layout)
    model = build(v1=True, window=8)
    load_state_dict(model, state)
    hf_key = "swin.encoder.layers.{}.blocks.{}.attention.relative_position_bias.relative_position_bias_table"
    for i, (window, source) in enumerate(zip((8, 4), (4, 4))):
        for j in range(V1_ARCH["depths"][i]):
            table = keras.ops.convert_to_numpy(model.backbone.stages[i].blocks[j].attn.bias_layer.table)
            original = v1.hf[hf_key.format(i, j)]
            assert original.shape[0] == (2 * source - 1) ** 2
            assert table.shape == ((2 * window - 1) ** 2, V1_ARCH["num_heads"][i])
            np.testing.assert_allclose(table, resize_relative_position_table(original, source, window), atol=1e-6)


def test_keras_formats_round_trip(v2, tmp_path):
    model = cached_model()
    load_weights(model, save_checkpoint(hf_to_pytorch_layout(v2.hf, "official"), tmp_path / "c.safetensors"))
    model.save_weights(str(tmp_path / "m.weights.h5"))
    model.save(str(tmp_path / "m.keras"))
    for path in (tmp_path / "m.weights.h5", tmp_path / "m.keras", str(tmp_path / "m.keras")):
        fresh = build()
        assert load_weights(fresh, path) is fresh
        assert_matches(fresh, v2)
    loaded = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert isinstance(loaded, keras_swinv2.SwinV2ImageClassifier)
    assert_matches(loaded, v2)
    # a classifier's .keras file also initialises a bare backbone (the head is not needed)
    backbone = cached_model(include_top=False)
    load_weights(backbone, tmp_path / "m.keras")
    assert_matches(backbone, v2, top=False)


# --------------------------------------------------------------------------------------
# conversion/convert.py
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def convert():
    spec = importlib.util.spec_from_file_location("swinv2_convert", ROOT / "conversion" / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_convert_to_keras_file(convert, v2, tmp_path, capsys):
    src = save_checkpoint(hf_to_pytorch_layout(v2.hf, "official"), tmp_path / "ckpt.pth")
    dst = tmp_path / "out" / "model.keras"
    assert convert.main([str(src), str(dst), "--window-size", "4", "--input-size", "64"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "warning" not in captured.err  # the geometry came from the flags
    assert "official" in printed and "(2, 2, 2, 2)" in printed and "(1, 2, 4, 8)" in printed
    assert "parameters" in printed
    assert [p.name for p in dst.parent.iterdir()] == ["model.keras"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert dst.stat().st_mode & 0o777 == 0o666 & ~umask

    model = keras.saving.load_model(str(dst))
    assert isinstance(model, keras_swinv2.SwinV2ImageClassifier)
    assert f"{model.count_params():,}" in printed
    probs, stages = keras_outputs(model, v2.images)
    assert max_abs_diff(probs, _softmax(v2.logits.astype("float64")).astype("float32")) <= TOL
    for ours, theirs in zip(stages, v2.stages):
        assert max_abs_diff(ours, theirs) <= TOL


def test_convert_hf_to_weights_h5_without_top(convert, v2, tmp_path):
    src = save_checkpoint(v2.hf, tmp_path / "model.safetensors")
    dst = tmp_path / "backbone.weights.h5"
    dst.write_bytes(b"old contents, replaced atomically")
    argv = [
        str(src),
        str(dst),
        "--layout",
        "hf",
        "--window-size",
        "4",
        "--input-size",
        "64",
        "64",
        "--pretrained-window-sizes",
        "0",
        "0",
        "0",
        "0",
        "--no-top",
    ]
    assert convert.main(argv) == 0
    model = cached_model(include_top=False)
    load_weights(model, dst)
    assert_matches(model, v2, top=False)


def test_convert_reads_geometry_from_official_buffers(convert, tmp_path, capsys):
    """Official checkpoints carry the window, the CPB's pretrained windows and the image size
    in their derived buffers; with no flags the converter recovers all three."""
    pretrained = (3, 3, 3, 2)
    reference = hf_swinv2(
        SIZE, window_size=WINDOW, pretrained_window_sizes=pretrained, num_labels=CLASSES, seed=3, **ARCH
    )
    ref = _reference(reference, reference.swinv2)
    state = hf_to_pytorch_layout(ref.hf, "official", buffers="real", pretrained_window_sizes=pretrained)
    assert convert.infer_geometry(state) == {
        "window_size": WINDOW,
        "pretrained_window_sizes": pretrained,
        "input_size": (SIZE, SIZE),
    }
    dst = tmp_path / "model.keras"
    convert.main(
        [str(save_checkpoint(state, tmp_path / "ckpt.safetensors")), str(dst), "--classifier-activation", "none"]
    )
    captured = capsys.readouterr()
    assert "derived buffers" in captured.out and "warning" not in captured.err
    model = keras.saving.load_model(str(dst))
    assert (model.backbone.window_size, model.backbone.pretrained_window_sizes, model.backbone.image_shape) == (
        WINDOW,
        pretrained,
        (SIZE, SIZE, 3),
    )
    assert_matches(model, ref)


def test_convert_warns_when_the_geometry_is_a_default(convert, v2, tmp_path, capsys):
    """HF files record neither window nor image size: the converter says it guessed both."""
    src = save_checkpoint(v2.hf, tmp_path / "model.safetensors")
    assert convert.main([str(src), str(tmp_path / "model.keras")]) == 0
    err = capsys.readouterr().err
    assert "window_size or input_size" in err and "--window-size / --input-size" in err
    assert convert.main([str(src), str(tmp_path / "model.keras"), "--window-size", "4"]) == 0
    err = capsys.readouterr().err
    assert "does not record input_size; used the default 256" in err and "--window-size" not in err


def test_convert_geometry_trusts_buffer_shapes_not_random_contents(convert, v2):
    """Shapes give window and image size; random coordinate tables give no pretrained windows."""
    random_buffers = hf_to_pytorch_layout(v2.hf, "official", buffers="random")
    assert convert.infer_geometry(random_buffers) == {"window_size": WINDOW, "input_size": (SIZE, SIZE)}
    assert convert.infer_geometry(hf_to_pytorch_layout(v2.hf, "official", buffers=None)) == {}
    assert convert.infer_geometry(v2.hf) == {}


def test_convert_rejects_bad_arguments(convert, v2, tmp_path):
    src = save_checkpoint(hf_to_pytorch_layout(v2.hf, "official"), tmp_path / "ckpt.npz")
    with pytest.raises(SystemExit):
        convert.main([str(src), str(tmp_path / "out.h5")])
    with pytest.raises(SystemExit):
        convert.main([str(src), str(tmp_path / "out.keras"), "--input-size", "64", "64", "64"])
    with pytest.raises(SystemExit):
        convert.main([str(src), str(tmp_path / "out.keras"), "--pretrained-window-sizes", "4", "4"])
    with pytest.raises(FileNotFoundError):
        convert.main([str(tmp_path / "absent.pth"), str(tmp_path / "out.keras")])
    assert not (tmp_path / "out.keras").exists() and not (tmp_path / "out.h5").exists()
