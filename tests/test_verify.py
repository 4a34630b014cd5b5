"""`conversion/verify.py`: the side-by-side check of a converted model against HF transformers.

Checkpoints come from randomised HF models (`reference.py`), written in the timm and
official layouts by the converter in THIS file (independent of
`keras_swinv2.weights.layouts` and of verify.py's own canonical -> HF mapping), or
saved as they are (HF layout). Tiny architectures: SwinV2 with embed dim 16, depths
(2, 2, 2, 2), 64 px, window 4 (stage maps 16, 8, 4, 2: shifted windows, a window equal
to the map and a clamped window); Swin V1 with two stages at 32 px (HF's V1 fails on
stages smaller than the window).
"""

import importlib.util
import pathlib
import re

import numpy as np
import pytest
import torch

import keras

from reference import hf_swin_v1, hf_swinv2, state_dict_numpy

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARCH = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
SIZE, WINDOW, CLASSES, TOL = 64, 4, 10, 1e-4
V1_ARCH = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2))
V1_SIZE = 32
GEOMETRY = ["--window-size", str(WINDOW), "--input-size", str(SIZE)]
ROW = re.compile(r"^(P\d|norm|logits)\s+(\(.*?\)|-)\s+(\S+)\s+(.+)$", re.M)


def _load(name):
    spec = importlib.util.spec_from_file_location(f"swinv2_{name}", ROOT / "conversion" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def verify():
    return _load("verify")


@pytest.fixture(scope="module")
def convert():
    return _load("convert")


def hf_to_layout(hf_state, layout, size=SIZE, window=WINDOW):
    """A SwinV2 HF state dict in timm's layout (merging at the start of stage i + 1, `head.fc`)
    or the official one (merging at the end of stage i, `head`, with the shape-bearing buffers
    `relative_position_index` and `attn_mask` the official code stores)."""
    sd = {re.sub(r"^swinv2\.", "", k): np.asarray(v) for k, v in hf_state.items()}
    out = {
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "patch_embed.norm.weight": sd["embeddings.norm.weight"],
        "patch_embed.norm.bias": sd["embeddings.norm.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    depths = []
    while f"encoder.layers.{len(depths)}.blocks.0.layernorm_before.weight" in sd:
        i = len(depths)
        depths.append(len({k.split(".")[4] for k in sd if k.startswith(f"encoder.layers.{i}.blocks.")}))
    res = size // 4
    for i, depth in enumerate(depths):
        w = min(res, window)
        for j in range(depth):
            h, o = f"encoder.layers.{i}.blocks.{j}.", f"layers.{i}.blocks.{j}."
            s = h + "attention.self."
            out[o + "attn.qkv.weight"] = np.concatenate([sd[s + n + ".weight"] for n in ("query", "key", "value")])
            out[o + "attn.q_bias"] = sd[s + "query.bias"]
            out[o + "attn.v_bias"] = sd[s + "value.bias"]
            out[o + "attn.logit_scale"] = sd[s + "logit_scale"]
            for n in ("0.weight", "0.bias", "2.weight"):
                out[o + "attn.cpb_mlp." + n] = sd[s + "continuous_position_bias_mlp." + n]
            for src, dst in (
                ("attention.output.dense", "attn.proj"),
                ("intermediate.dense", "mlp.fc1"),
                ("output.dense", "mlp.fc2"),
                ("layernorm_before", "norm1"),
                ("layernorm_after", "norm2"),
            ):
                out[o + dst + ".weight"] = sd[h + src + ".weight"]
                out[o + dst + ".bias"] = sd[h + src + ".bias"]
            if layout == "official":
                out[o + "attn.relative_position_index"] = np.zeros((w * w, w * w), "int64")
                if j % 2 and res > w:
                    out[o + "attn_mask"] = np.zeros(((res // w) ** 2, w * w, w * w), "float32")
        if i < len(depths) - 1:
            stage = i if layout == "official" else i + 1
            for n in ("reduction.weight", "norm.weight", "norm.bias"):
                out[f"layers.{stage}.downsample.{n}"] = sd[f"encoder.layers.{i}.downsample.{n}"]
        res //= 2
    if "classifier.weight" in sd:
        head = "head." if layout == "official" else "head.fc."
        out[head + "weight"] = sd["classifier.weight"]
        out[head + "bias"] = sd["classifier.bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def save(state, path):
    path = pathlib.Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(state, str(path))
    else:
        torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """SwinV2 checkpoints (timm, HF, HF headless, official) and a Swin V1 one (HF layout)."""
    d = tmp_path_factory.mktemp("ckpts")
    v2 = state_dict_numpy(hf_swinv2(SIZE, window_size=WINDOW, num_labels=CLASSES, seed=0, **ARCH))
    backbone = {k[len("swinv2.") :]: v for k, v in v2.items() if k.startswith("swinv2.")}
    v1 = state_dict_numpy(hf_swin_v1(V1_SIZE, window_size=WINDOW, num_labels=CLASSES, seed=1, **V1_ARCH))
    return dict(
        timm=save(hf_to_layout(v2, "timm"), d / "timm.safetensors"),
        hf=save(v2, d / "hf.safetensors"),
        headless=save(backbone, d / "headless.safetensors"),
        official=save(hf_to_layout(v2, "official"), d / "official.pth"),
        v1=save(v1, d / "v1.safetensors"),
        dir=d,
    )


@pytest.fixture(scope="module")
def converted(convert, ckpts):
    """The timm checkpoint converted to .keras (window 4, 64 px, softmax head)."""
    dst = str(ckpts["dir"] / "model.keras")
    assert convert.main([ckpts["timm"], dst, *GEOMETRY]) == 0
    return dst


def test_convert_writes_a_classifier_or_a_backbone(convert, ckpts, converted, capsys):
    """A checkpoint with a head becomes a SwinV2ImageClassifier around a SwinV2Backbone;
    --no-top, or a checkpoint without a head, gives the SwinV2Backbone alone."""
    from keras_swinv2 import SwinV2Backbone, SwinV2ImageClassifier

    model = keras.saving.load_model(converted)
    assert isinstance(model, SwinV2ImageClassifier) and isinstance(model.backbone, SwinV2Backbone)
    assert model.head.units == CLASSES and model.activation == "softmax"
    backbone = model.backbone
    assert (backbone.window_size, backbone.image_shape, backbone.pretrained_window_sizes) == (
        WINDOW,
        (SIZE, SIZE, 3),
        (0, 0, 0, 0),
    )
    assert (backbone.embed_dim, backbone.depths, backbone.num_heads) == tuple(ARCH.values())
    assert (backbone.options.norm_position, backbone.patch_merging) == ("post", "v2")

    for src, argv in ((ckpts["timm"], ["--no-top"]), (ckpts["headless"], [])):
        capsys.readouterr()
        dst = str(ckpts["dir"] / "converted_backbone.keras")
        assert convert.main([src, dst, *GEOMETRY, *argv]) == 0
        out = capsys.readouterr().out
        assert "model:        SwinV2Backbone" in out
        assert ("dropped: --no-top" if argv else "checkpoint has none") in out
        loaded = keras.saving.load_model(dst)
        assert type(loaded) is SwinV2Backbone and loaded.pooling is None
        assert loaded.output.shape == (None, SIZE // 32, SIZE // 32, 8 * ARCH["embed_dim"])


def run(verify, capsys, argv):
    """verify.main(argv): `(exit code, {row: (diff or None, status)}, stdout, stderr)`."""
    code = verify.main(argv)
    out, err = capsys.readouterr()
    rows = {}
    for name, _shape, diff, status in ROW.findall(out):
        rows[name] = (None if diff == "-" else float(diff), status.strip())
    return code, rows, out, err


def assert_passes(code, rows, out, names=("P2", "P3", "P4", "P5", "norm", "logits")):
    assert code == 0, out
    assert set(rows) >= set(names), out
    for name in names:
        diff, status = rows[name]
        assert diff is not None and diff <= TOL and status == "ok", (name, out)
    assert "PASS" in out


def test_on_the_fly_timm_checkpoint(verify, ckpts, capsys):
    # Batch 1 throughout: every run shares its shapes (JAX compiles each new one op by op).
    code, rows, out, _ = run(verify, capsys, [ckpts["timm"], *GEOMETRY, "--seed", "3"])
    assert_passes(code, rows, out)
    assert "timm layout" in out and "Swinv2ForImageClassification" in out and "on the fly" in out
    assert "(1, 16, 16, 16)" in out and "seed 3" in out  # P2 at stride 4
    assert f"backend {keras.backend.backend()}" in out


def test_converted_keras_file_takes_its_geometry(verify, ckpts, converted, capsys):
    """Without flags the reference follows the converted model's window and size; the softmax
    head is compared on its logits."""
    code, rows, out, _ = run(verify, capsys, [ckpts["hf"], "--keras", converted])
    assert_passes(code, rows, out)
    assert "hf layout" in out and "(.keras, SwinV2ImageClassifier)" in out
    assert re.search(r"window:\s+4\s+\[converted model\]", out) and "64x64  [converted model]" in out
    # A flag that contradicts the converted model cannot be honoured.
    code, _, _, err = run(verify, capsys, [ckpts["hf"], "--keras", converted, "--window-size", "8"])
    assert code == 2 and "contradicts" in err


def test_converted_weights_h5_without_top_against_headless_reference(verify, convert, ckpts, capsys):
    dst = str(ckpts["dir"] / "backbone.weights.h5")
    assert convert.main([ckpts["official"], dst, "--no-top"]) == 0
    # The official checkpoint's buffers give window and size: no geometry flags anywhere.
    code, rows, out, _ = run(verify, capsys, [ckpts["official"], "--keras", dst])
    assert_passes(code, rows, out, names=("P2", "P3", "P4", "P5", "norm"))
    assert rows["logits"] == (None, "skipped (no head on one side)")
    assert "official layout" in out and "--no-top" in out
    assert "[checkpoint (derived buffers)]" in out and "64x64  [checkpoint (shift mask)]" in out

    code, rows, out, _ = run(verify, capsys, [ckpts["headless"], "--keras", dst, *GEOMETRY])
    assert_passes(code, rows, out, names=("P2", "P3", "P4", "P5", "norm"))
    assert "Swinv2Model" in out and "no head" in out


def test_converted_backbone_keras_file_and_a_pooled_backbone(verify, convert, ckpts, capsys, tmp_path):
    """A .keras SwinV2Backbone (--no-top) is compared up to the final LayerNorm; one that pools
    its output is compared with the reference's final map pooled the same way."""
    from keras_swinv2 import SwinV2Backbone

    dst = str(tmp_path / "backbone.keras")
    assert convert.main([ckpts["timm"], dst, *GEOMETRY, "--no-top"]) == 0
    code, rows, out, _ = run(verify, capsys, [ckpts["timm"], "--keras", dst])
    assert_passes(code, rows, out, names=("P2", "P3", "P4", "P5", "norm"))
    assert rows["logits"] == (None, "skipped (no head on one side)")
    assert "(.keras, SwinV2Backbone)" in out and "Swinv2ForImageClassification" in out

    backbone = keras.saving.load_model(dst)
    pooled = SwinV2Backbone.from_config({**backbone.get_config(), "pooling": "avg"})
    pooled.set_weights(backbone.get_weights())
    pooled.save(str(tmp_path / "pooled.keras"))
    code, rows, out, _ = run(verify, capsys, [ckpts["headless"], "--keras", str(tmp_path / "pooled.keras")])
    assert_passes(code, rows, out, names=("P2", "P3", "P4", "P5", "norm"))
    assert "pooling='avg'" in out and re.search(r"^norm\s+\(1, 128\)", out, re.M)


def test_corrupted_converted_file_fails_from_the_corrupted_stage_on(verify, ckpts, converted, capsys, tmp_path):
    model = keras.saving.load_model(converted)
    kernel = model.backbone.stages[2].blocks[0].mlp.fc2.kernel  # stage 3 (P4)
    value = keras.ops.convert_to_numpy(kernel).copy()
    value[0, 0] += 0.5
    kernel.assign(value)
    bad = str(tmp_path / "corrupted.keras")
    model.save(bad)

    code, rows, out, _ = run(verify, capsys, [ckpts["timm"], "--keras", bad])
    assert code == 1, out
    assert rows["P2"][1] == "ok" and rows["P3"][1] == "ok"
    for name in ("P4", "P5", "norm", "logits"):
        assert rows[name][0] > TOL and rows[name][1] == "FAIL", out
    assert "FAIL: P4, P5, norm, logits exceed tolerance" in out


def test_swin_v1_on_the_fly_and_converted(verify, convert, ckpts, capsys, tmp_path):
    code, rows, out, _ = run(verify, capsys, [ckpts["v1"], "--input-size", str(V1_SIZE)])
    assert_passes(code, rows, out, names=("P2", "P3", "norm", "logits"))
    assert "P4" not in rows and "SwinForImageClassification" in out and "Swin V1" in out
    assert "[checkpoint (V1 table)]" in out

    dst = str(tmp_path / "v1.keras")
    assert convert.main([ckpts["v1"], dst, "--input-size", str(V1_SIZE), "--classifier-activation", "none"]) == 0
    code, rows, out, _ = run(verify, capsys, [ckpts["v1"], "--keras", dst])
    assert_passes(code, rows, out, names=("P2", "P3", "norm", "logits"))

    # A V1 converted model is not the SwinV2 checkpoint's model.
    code, _, out, _ = run(verify, capsys, [ckpts["timm"], "--keras", dst])
    assert code == 1 and "architecture differs" in out and "attention" in out


def test_canonical_to_hf_inverts_from_hf(verify, ckpts):
    """The mapping alone: canonical -> HF -> canonical is the identity, HF names included."""
    from keras_swinv2.weights import from_hf, read_state_dict, to_canonical

    hf = read_state_dict(ckpts["hf"])
    canonical = to_canonical(read_state_dict(ckpts["timm"]))
    mapped = verify.canonical_to_hf(canonical, prefix="swinv2.")
    assert sorted(mapped) == sorted(
        k for k in hf if not k.endswith(("relative_coords_table", "relative_position_index"))
    )
    for key, value in mapped.items():
        np.testing.assert_array_equal(value, hf[key])
    back = from_hf(mapped)
    assert sorted(back) == sorted(canonical)
    with pytest.raises(verify.VerifyError, match="norm3"):
        verify.canonical_to_hf({"layers.0.blocks.5.norm3.weight": np.zeros(4)})


def test_bad_arguments(verify, ckpts, capsys, tmp_path):
    assert verify.main([str(tmp_path / "absent.pth")]) == 2
    assert "absent.pth" in capsys.readouterr().err
    assert verify.main([ckpts["timm"], "--pretrained-window-sizes", "4", "4"]) == 2
    assert "4 values" in capsys.readouterr().err
    assert verify.main([ckpts["timm"], "--keras", str(tmp_path / "absent.keras")]) == 2
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save(str(tmp_path / "other.keras"))
    assert verify.main([ckpts["timm"], "--keras", str(tmp_path / "other.keras")]) == 2
    assert "not a keras_swinv2 model" in capsys.readouterr().err
    for argv in (["--keras", "model.h5"], ["--input-size", "1", "2", "3"], ["--batch", "0"]):
        with pytest.raises(SystemExit):
            verify.main([ckpts["timm"], *argv])
