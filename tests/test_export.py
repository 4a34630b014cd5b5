"""Export: every format this backend supports, run in its own runtime, equal to the Keras model.

Each artifact is loaded by the runtime it is made for (`tf.saved_model.load`,
onnxruntime, ai-edge-litert's interpreter, OpenVINO) and run at a batch size
other than the one traced; dynamic heights and widths are run at two sizes,
one not a multiple of the window. Runs on each backend's pass; the real-size
check (SwinV2-T 256/8 from an official-layout checkpoint, against HF
transformers' logits) runs once, on the TensorFlow pass.
"""

import os

import numpy as np
import pytest

import keras

from helpers import images, small_model
from keras_swinv2 import export as exporting
from keras_swinv2.export import FORMATS, UNSUPPORTED, load_artifact

BACKEND = keras.backend.backend()
SUPPORTED = [fmt for fmt in FORMATS if (fmt, BACKEND) not in UNSUPPORTED]
NAMES = {"tf_saved_model": "saved_model", "onnx": "model.onnx", "litert": "model.tflite", "openvino": "model.xml"}
TOLERANCE = 1e-4


def _signature(shape, batch=None):
    """A fixed batch where the format needs one (ONNX from JAX)."""
    if BACKEND == "jax":
        return [keras.InputSpec(shape=(batch, *shape), dtype="float32", name="images")]
    return None


def _export(model, tmp_path, fmt, batch=2):
    signature = _signature(tuple(model.inputs[0].shape[1:]), batch) if fmt == "onnx" else None
    path = os.fspath(tmp_path / NAMES[fmt])
    assert model.export(path, format=fmt, input_signature=signature) == path
    return path


def _diff(model, artifact, x):
    result = exporting.compare(model, artifact, x)
    return result["max_abs_diff"], result


@pytest.mark.parametrize("fmt", SUPPORTED)
def test_artifact_in_its_runtime_equals_keras(fmt, tmp_path):
    model = small_model()  # 32 x 32, window 4: shifted windows, a masked block, patch merging
    path = _export(model, tmp_path, fmt)
    # nothing else left beside the artifact (written under a temporary name, then renamed)
    expected = {NAMES[fmt]} | ({"model.bin"} if fmt == "openvino" else set())
    assert set(os.listdir(tmp_path)) == expected
    artifact = load_artifact(path)
    assert artifact.format == fmt and artifact.size_bytes() > 0
    dynamic_batch = not (fmt == "onnx" and BACKEND == "jax")
    assert (artifact.inputs[0][1][0] is None) == dynamic_batch, artifact.inputs
    batch = 3 if dynamic_batch else 2  # the trace used batch 1 (Keras' stand-in for None)
    diff, result = _diff(model, artifact, images((batch, 32, 32, 3)))
    assert result["outputs"][0][2] == (batch, 5)
    assert diff <= TOLERANCE, result


DYNAMIC = {"tensorflow": ["tf_saved_model", "onnx", "openvino"], "jax": ["tf_saved_model"], "torch": []}[BACKEND]


@pytest.mark.parametrize("fmt", DYNAMIC)
def test_dynamic_height_and_width(fmt, tmp_path):
    model = small_model(input_shape=(None, None, 3))
    artifact = load_artifact(_export(model, tmp_path, fmt))
    assert artifact.inputs[0][1] == (None, None, None, 3)
    # 32 px: a window multiple at every stage; 40 x 56 px: 10 x 14 tokens, padded to 12 x 16 (window 4)
    for shape in [(2, 32, 32, 3), (1, 40, 56, 3)]:
        diff, result = _diff(model, artifact, images(shape, seed=shape[1]))
        assert diff <= TOLERANCE, (shape, result)


def test_backbone_exports_its_pyramid_outputs(tmp_path):
    backbone = small_model(include_top=False)
    features = keras.Model(backbone.inputs, backbone.pyramid_outputs)
    fmt = {"tensorflow": "onnx", "jax": "tf_saved_model", "torch": "onnx"}[BACKEND]
    path = os.fspath(tmp_path / NAMES[fmt])
    exporting.export_model(features, path, fmt)
    artifact = load_artifact(path)
    assert len(artifact.outputs) == 2, artifact.outputs  # SMALL has two stages: P2, P3
    diff, result = _diff(features, artifact, images((3, 32, 32, 3)))
    assert sorted(key for key, *_ in result["outputs"]) == ["P2", "P3"]
    assert diff <= TOLERANCE, result


@pytest.mark.parametrize("fmt", [fmt for fmt in FORMATS if (fmt, BACKEND) in UNSUPPORTED] or [None])
def test_unsupported_combination_says_why_and_what_works(fmt, tmp_path):
    if fmt is None:
        pytest.skip(f"every format exports from {BACKEND}")
    model = small_model()
    path = tmp_path / NAMES[fmt]
    with pytest.raises(ValueError, match=f"Cannot export format='{fmt}' from the {BACKEND} backend") as info:
        model.export(path, format=fmt)
    message = str(info.value)
    assert f"'{fmt}' exports from: " in message and f"from {BACKEND}: " in message
    assert not os.listdir(tmp_path)


def test_bad_requests_are_clear_errors(tmp_path):
    model = small_model()
    with pytest.raises(ValueError, match=r"path ending in '\.onnx'; got .*model\.bin"):
        model.export(tmp_path / "model.bin", format="onnx")
    with pytest.raises(ValueError, match="format must be one of"):
        model.export(tmp_path / "m", format="coreml")
    if BACKEND == "jax":
        with pytest.raises(ValueError, match="ONNX export on the JAX backend needs a fixed batch size"):
            model.export(tmp_path / "m.onnx", format="onnx")
    if BACKEND != "jax":
        fmt = "litert" if BACKEND == "tensorflow" else "onnx"
        dynamic = small_model(input_shape=(None, None, 3))
        with pytest.raises(ValueError, match="with a dynamic height/width"):
            dynamic.export(tmp_path / NAMES[fmt], format=fmt)
    assert not os.listdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="No onnx artifact"):
        load_artifact(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="Cannot tell the format"):
        load_artifact(tmp_path / "model.pt")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="one real-size export, on the TensorFlow pass")
def test_real_size_tiny_from_official_checkpoint_matches_pytorch_in_onnxruntime(tmp_path):
    """SwinV2-T 256/8 from an official-layout .pth, exported to ONNX: onnxruntime's logits vs HF's."""
    import torch

    import keras_swinv2
    from checkpoint_files import hf_to_pytorch_layout, save_checkpoint
    from reference import hf_swinv2, state_dict_numpy

    tiny = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    reference = hf_swinv2((256, 256), window_size=8, num_labels=1000, **tiny)
    official = hf_to_pytorch_layout(state_dict_numpy(reference), "official", buffers="real")
    checkpoint = tmp_path / "swinv2_tiny_patch4_window8_256.pth"
    save_checkpoint(official, checkpoint)

    model = keras_swinv2.SwinV2Tiny(weights=os.fspath(checkpoint), classifier_activation=None)
    artifact = load_artifact(_export(model, tmp_path, "onnx"))
    x = np.random.default_rng(3).normal(size=(2, 256, 256, 3)).astype("float32")
    got = next(iter(artifact(x).values()))
    with torch.no_grad():
        want = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).logits.numpy()
    assert got.shape == (2, 1000)
    assert np.max(np.abs(got - want)) <= TOLERANCE


def test_cli_export_writes_checks_and_reports(tmp_path, capsys):
    """`swinv2 export` of a saved .keras classifier: the artifact, its ports, its size and the difference."""
    from keras_swinv2.cli import main

    small_model().save(tmp_path / "small.keras")
    fmt = "onnx"
    output = tmp_path / NAMES[fmt]
    args = ["export", "--model", str(tmp_path / "small.keras"), "--format", fmt, "--output", str(output)]
    assert main([*args, "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    assert output.exists() and f"Wrote {output} (onnx, " in out
    assert "input  images: (" in out and "Checked in onnxruntime on 3 random 32x32 images" in out
    assert "OK: within 0.0001." in out
    if BACKEND == "tensorflow":  # a dynamic size, checked at two sizes
        assert main([*args, "--dynamic-size", "--image-size", "32", "--features"]) == 0
        out = capsys.readouterr().out
        assert "32x32 images" in out and "72x40 images" in out and "P2" in out and "P3" in out
        # at 32 px stage 2's 4 x 4 map is one window: a fixed-size model does not shift there
        assert "note: a dynamic-size model keeps window 4 and shift 2" in out
        assert "stage 2 (4x4 tokens: window 4, shift 0)" in out and "72x40 px" not in out


def test_cli_export_user_errors_are_one_line_exit_2(tmp_path, capsys):
    from keras_swinv2.cli import main

    assert main(["export", "--model", "tiny", "--format", "onnx", "--output", str(tmp_path / "m.tflite")]) == 2
    assert "path ending in '.onnx'" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "none.keras"), "--format", "onnx", "--output", "m.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.keras" in err
    assert not os.listdir(tmp_path)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent, runs once")
def test_onnx_external_weights_are_pulled_into_the_file(tmp_path):
    """jax2onnx writes a large model's weights to a side file named after the temporary path: inlined."""
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(4096, dtype="float32").reshape(64, 64), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 64])],
        [weight],
    )
    path = tmp_path / ".m.partial.onnx"
    onnx.save(helper.make_model(graph), path, save_as_external_data=True, size_threshold=0, location="w.bin")
    assert exporting._onnx_external_files(str(path)) == [str(tmp_path / "w.bin")]
    exporting._inline_onnx(str(path))
    os.remove(tmp_path / "w.bin")
    os.replace(path, tmp_path / "m.onnx")
    assert exporting._onnx_external_files(str(tmp_path / "m.onnx")) == []
    x = np.ones((2, 64), "float32")
    np.testing.assert_allclose(load_artifact(tmp_path / "m.onnx")(x)["y"], x @ numpy_helper.to_array(weight))
