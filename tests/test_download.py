"""Named weights: registry resolution, download over a loopback server, cache, failure modes.

A local HTTP server publishes generated checkpoints in the exact upstream layouts
(timm hub `.safetensors` paths, official GitHub `.pth` file names), reached through
`KERAS_SWINV2_BASE_URL`; nothing leaves the machine.
"""

import dataclasses
import functools
import http.server
import json
import logging
import os
import socket
import sys
import threading
import warnings

import numpy as np
import pytest

import keras
import keras_swinv2
from keras_swinv2.models import VARIANTS
from keras_swinv2 import applications
from keras_swinv2.weights import CHECKPOINTS, SIMMIM, fetch_checkpoint, find_checkpoint
from keras_swinv2.weights.download import sha256_file

from checkpoint_files import hf_to_pytorch_layout, save_checkpoint
from reference import hf_outputs, hf_swinv2, keras_outputs, max_abs_diff, state_dict_numpy

TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
SUPERVISED = [c for c in CHECKPOINTS.values() if c.name not in SIMMIM]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the publish folder; `/truncated/...` sends half the file under a full Content-Length."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith("/truncated/"):
            path = self.translate_path(self.path[len("/truncated") :])
            data = open(path, "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.root = root
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()


@pytest.fixture
def env(monkeypatch, tmp_path, server):
    monkeypatch.setenv("KERAS_SWINV2_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_SWINV2_BASE_URL", server.url)
    monkeypatch.delenv("KERAS_SWINV2_SOURCE", raising=False)
    return tmp_path / "cache"


def _publish(server, relative_path, state):
    path = server.root / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state, path)
    return path


def _free_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _cache_files(cache):
    """The cache's files, lock files aside (they hold nothing)."""
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and p.parent.name != "locks")


# ------------------------------------------------------------------ registry resolution


class _Built(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    """Replaces the model class in the builders to capture the resolved arguments."""
    calls = []

    def fake_backbone(**kwargs):
        calls.append(kwargs)
        return object()

    def fake_classifier(backbone, num_classes, **kwargs):
        calls[-1]["classes"] = num_classes
        raise _Built

    monkeypatch.setattr(applications, "SwinV2Backbone", fake_backbone)
    monkeypatch.setattr(applications, "SwinV2ImageClassifier", fake_classifier)
    return calls


@pytest.mark.parametrize("checkpoint", SUPERVISED, ids=lambda c: c.name)
def test_every_registry_entry_resolves_to_its_architecture(checkpoint, captured):
    builder = getattr(keras_swinv2, f"SwinV2{checkpoint.variant.capitalize()}")
    with pytest.raises(_Built):
        builder(
            weights=checkpoint.weights,
            window_size=checkpoint.window_size,
            input_shape=(checkpoint.image_size, checkpoint.image_size, 3),
        )
    config = captured[0]
    arch = VARIANTS[checkpoint.variant]
    assert (config["embed_dim"], config["depths"], config["num_heads"]) == (
        arch["embed_dim"],
        arch["depths"],
        arch["num_heads"],
    )
    assert config["window_size"] == checkpoint.window_size
    assert config["image_shape"] == (checkpoint.image_size, checkpoint.image_size, 3)
    assert config["pretrained_window_sizes"] == checkpoint.pretrained_window_sizes
    assert config["classes"] == checkpoint.classes
    # by name, and with the geometry defaulted
    assert find_checkpoint(checkpoint.variant, checkpoint.name) is checkpoint


def test_defaults_and_transfer_geometry(captured):
    with pytest.raises(_Built):
        keras_swinv2.SwinV2Base(weights="imagenet22k")
    assert (captured[-1]["image_shape"], captured[-1]["window_size"], captured[-1]["classes"]) == (
        (192, 192, 3),
        12,
        21841,
    )
    # fine-tuning geometry: the CPB keeps the 22k training windows
    with pytest.raises(_Built):
        keras_swinv2.SwinV2Base(weights="imagenet22k", input_shape=(256, 256, 3), window_size=16, classes=10)
    assert captured[-1]["pretrained_window_sizes"] == (12, 12, 12, 6) and captured[-1]["classes"] == 10
    with pytest.raises(_Built):
        keras_swinv2.SwinV2Tiny(weights="imagenet1k", window_size=16)
    assert captured[-1]["window_size"] == 16 and captured[-1]["pretrained_window_sizes"] is None
    with pytest.raises(_Built):  # no 512 px checkpoint: window 8 weights, larger map
        keras_swinv2.SwinV2Tiny(weights="imagenet1k", input_shape=(512, 512, 3))
    assert captured[-1]["pretrained_window_sizes"] == (8, 8, 8, 8)


def test_unknown_or_impossible_weights_list_what_exists():
    with pytest.raises(ValueError, match=r"No checkpoint 'imagenet22k' for SwinV2-tiny(.|\n)*swinv2_tiny_window8_256"):
        keras_swinv2.SwinV2Tiny(weights="imagenet22k")
    with pytest.raises(ValueError, match=r"No checkpoint 'imagenet21k' for SwinV2-base"):
        keras_swinv2.SwinV2Base(weights="imagenet21k")
    with pytest.raises(ValueError, match=r"is a SwinV2-base, not a SwinV2-tiny"):
        keras_swinv2.SwinV2Tiny(weights="swinv2_base_window8_256")


# ------------------------------------------------------------------ end to end, per layout


@pytest.fixture(scope="module")
def tiny_w8():
    reference = hf_swinv2((256, 256), window_size=8, num_labels=1000, **TINY)
    images = np.random.default_rng(3).normal(size=(1, 256, 256, 3)).astype("float32")
    return reference, images, hf_outputs(reference, images)


def _assert_matches(model, images, expected):
    logits, stages = keras_outputs(model, images)
    assert max_abs_diff(logits, expected[0]) <= 1e-4
    for ours, theirs in zip(stages, expected[1]):
        assert max_abs_diff(ours, theirs) <= 1e-4


def test_timm_download_then_offline_cache_hit(env, server, tiny_w8):
    reference, images, expected = tiny_w8
    checkpoint = CHECKPOINTS["swinv2_tiny_window8_256"]
    published = _publish(
        server,
        f"{checkpoint.timm_id}/resolve/main/model.safetensors",
        hf_to_pytorch_layout(state_dict_numpy(reference), "timm"),
    )
    before = len(server.requests)
    model = keras_swinv2.SwinV2Tiny(weights="imagenet1k", classifier_activation=None)
    assert len(server.requests) == before + 1
    _assert_matches(model, images, expected)
    record = json.loads((env / "converted" / "swinv2_tiny_window8_256.json").read_text())
    assert record["source"] == "timm" and (record["sha256"], record["size"]) == sha256_file(published)
    converted = env / "converted" / "swinv2_tiny_window8_256.safetensors"
    assert (record["file_sha256"], record["file_size"]) == sha256_file(converted)
    assert _cache_files(env) == [
        "converted/swinv2_tiny_window8_256.json",
        "converted/swinv2_tiny_window8_256.safetensors",
    ]

    os.environ["KERAS_SWINV2_BASE_URL"] = _free_port_url()  # offline now
    again = keras_swinv2.SwinV2Tiny(weights="imagenet1k", classifier_activation=None)
    assert len(server.requests) == before + 1  # no request: served from the cache
    _assert_matches(again, images, expected)
    # the keras-hub idiom, by registry name, from the same cache
    classifier = keras_swinv2.SwinV2ImageClassifier.from_preset("swinv2_tiny_window8_256")
    assert classifier.num_classes == 1000 and classifier.activation is None
    _assert_matches(classifier, images, expected)
    backbone = keras_swinv2.SwinV2Backbone.from_preset("swinv2_tiny_window8_256")
    _, stages = keras_outputs(backbone, images)
    for ours, theirs in zip(stages, expected[1]):
        assert max_abs_diff(ours, theirs) <= 1e-4
    assert len(server.requests) == before + 1


def test_official_pth_source(env, server, monkeypatch):
    reference = hf_swinv2((256, 256), window_size=16, num_labels=1000, seed=5, **TINY)
    images = np.random.default_rng(4).normal(size=(1, 256, 256, 3)).astype("float32")
    checkpoint = CHECKPOINTS["swinv2_tiny_window16_256"]
    _publish(server, checkpoint.official_file, hf_to_pytorch_layout(state_dict_numpy(reference), "official"))
    monkeypatch.setenv("KERAS_SWINV2_SOURCE", "official")
    model = keras_swinv2.SwinV2Tiny(weights="imagenet1k", window_size=16, classifier_activation=None)
    _assert_matches(model, images, hf_outputs(reference, images))


def test_transfer_to_other_classes_window_and_no_top(env, server, tiny_w8, caplog):
    reference, images, expected = tiny_w8
    checkpoint = CHECKPOINTS["swinv2_tiny_window8_256"]
    _publish(
        server,
        f"{checkpoint.timm_id}/resolve/main/model.safetensors",
        hf_to_pytorch_layout(state_dict_numpy(reference), "timm"),
    )
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="keras_swinv2"):
        warnings.simplefilter("error")  # a new head on purpose is reported, not warned about
        model = keras_swinv2.SwinV2Tiny(weights="imagenet1k", classes=10, classifier_activation=None)
    assert "1000 classes and model 'swinv2_tiny' has 10: the head is left freshly initialised" in caplog.text
    _, stages = keras_outputs(model, images)
    assert max_abs_diff(stages[0], expected[1][0]) <= 1e-4
    backbone = keras_swinv2.SwinV2Tiny(weights="imagenet1k", include_top=False)
    _, stages = keras_outputs(backbone, images)
    assert all(max_abs_diff(a, b) <= 1e-4 for a, b in zip(stages, expected[1]))
    # no window-12 checkpoint: the window-8 one transfers through the CPB
    wider = keras_swinv2.SwinV2Tiny(weights="imagenet1k", window_size=12, include_top=False)
    assert wider.pretrained_window_sizes == (8, 8, 8, 8)
    assert [b.window for b in wider.stages[0].blocks] == [12, 12]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(wider.stages[0].blocks[0].attn.bias_layer.fc1.kernel),
        keras.ops.convert_to_numpy(backbone.stages[0].blocks[0].attn.bias_layer.fc1.kernel),
    )
    assert np.isfinite(keras.ops.convert_to_numpy(wider(images))).all()


# ------------------------------------------------------------------ failure modes (small files)


@pytest.fixture(scope="module")
def small_state():
    rng = np.random.default_rng(0)
    return {
        "patch_embed.proj.weight": rng.normal(size=(8, 3, 4, 4)).astype("float32"),
        "layers.1.downsample.reduction.weight": rng.normal(size=(16, 32)).astype("float32"),
    }


def _fake(name, **changes):
    base = CHECKPOINTS["swinv2_tiny_window8_256"]
    return dataclasses.replace(base, name=name, timm_id=f"timm/{name}.test", **changes)


def test_hash_mismatch_leaves_nothing(env, server, small_state):
    checkpoint = _fake("hash_mismatch", sha256={"timm": "0" * 64}, official_file=None)
    _publish(server, f"{checkpoint.timm_id}/resolve/main/model.safetensors", small_state)
    with pytest.raises(OSError, match=r"sha256 is [0-9a-f]{64} \(\d+ bytes\), expected 0{64}"):
        fetch_checkpoint(checkpoint)
    assert _cache_files(env) == []
    good = dataclasses.replace(
        checkpoint, sha256={"timm": sha256_file(server.root / checkpoint.timm_id / "resolve/main/model.safetensors")[0]}
    )
    state = fetch_checkpoint(good)
    np.testing.assert_array_equal(state["patch_embed.proj.weight"], small_state["patch_embed.proj.weight"])


def test_truncated_transfer_leaves_nothing(env, server, small_state, monkeypatch):
    checkpoint = _fake("truncated", official_file=None)
    _publish(server, f"{checkpoint.timm_id}/resolve/main/model.safetensors", small_state)
    monkeypatch.setenv("KERAS_SWINV2_BASE_URL", server.url + "/truncated")
    monkeypatch.setattr(sys.modules["keras_swinv2.weights.download"], "BACKOFF_SECONDS", 0.01)
    before = len(server.requests)
    with pytest.raises(OSError, match=r"failed after 3 attempt\(s\): short read: \d+ of \d+ bytes"):
        fetch_checkpoint(checkpoint)
    assert len(server.requests) == before + 3  # a short read is transient: retried twice
    assert _cache_files(env) == []


def test_404_and_offline_say_which_url_and_where_to_put_the_file(env, server, small_state, monkeypatch):
    checkpoint = _fake("not_published")
    with pytest.raises(OSError) as info:
        fetch_checkpoint(checkpoint)
    message = str(info.value)
    assert f"{server.url}/timm/not_published.test/resolve/main/model.safetensors failed: HTTP 404" in message
    assert "404" in message and f"{server.url}/{checkpoint.official_file}" in message
    manual = env / "downloads" / "not_published.test.safetensors"
    assert str(manual) in message

    monkeypatch.setenv("KERAS_SWINV2_BASE_URL", _free_port_url())
    with pytest.raises(OSError, match=r"Offline\? Download one of these files by hand"):
        fetch_checkpoint(checkpoint)
    assert _cache_files(env) == []
    # the file put by hand is used without any network
    manual.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(small_state, manual)
    state = fetch_checkpoint(checkpoint)
    assert set(state) == set(small_state)
    assert not manual.exists()  # converted, then the download is removed


def test_corrupt_files_are_never_trusted(env, server, small_state):
    checkpoint = _fake("corrupt", official_file=None)
    manual = env / "downloads" / "corrupt.test.safetensors"
    manual.parent.mkdir(parents=True)
    manual.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(OSError, match=r"not a readable safetensors file"):
        fetch_checkpoint(checkpoint)
    assert not manual.exists()
    # a damaged converted cache entry is rebuilt from the source
    _publish(server, f"{checkpoint.timm_id}/resolve/main/model.safetensors", small_state)
    fetch_checkpoint(checkpoint)
    converted = env / "converted" / "corrupt.safetensors"
    converted.write_bytes(converted.read_bytes()[:50])
    before = len(server.requests)
    state = fetch_checkpoint(checkpoint)
    assert len(server.requests) == before + 1
    np.testing.assert_array_equal(state["patch_embed.proj.weight"], small_state["patch_embed.proj.weight"])


def test_predict_command_prints_named_top5(env, server, tiny_w8, tmp_path, capsys):
    from PIL import Image

    from keras_swinv2.cli import main

    reference, _, _ = tiny_w8
    checkpoint = CHECKPOINTS["swinv2_tiny_window8_256"]
    _publish(
        server,
        f"{checkpoint.timm_id}/resolve/main/model.safetensors",
        hf_to_pytorch_layout(state_dict_numpy(reference), "timm"),
    )
    paths = []
    for i, size in enumerate([(300, 400), (500, 260)]):
        pixels = np.random.default_rng(i).integers(0, 256, size=size + (3,), dtype=np.uint8)
        paths.append(str(tmp_path / f"image{i}.png"))
        Image.fromarray(pixels).save(paths[-1])
    assert main(["predict", *paths, "--model", "tiny", "--weights", "imagenet1k"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    lines = lines[lines.index(f"{paths[0]}:") :]
    assert lines[0] == f"{paths[0]}:" and lines[6] == f"{paths[1]}:"
    scores = [float(line.split("%")[0].split(".", 1)[1]) for line in lines[1:6]]
    assert scores == sorted(scores, reverse=True)
    names = {name for _, name in keras_swinv2.imagenet_classes("imagenet1k")}
    assert all(line.split("%  ", 1)[1].rsplit(" (", 1)[0] in names for line in lines[1:6])
