"""The `swinv2` commands: the main job behind `make demo`, pretrain -> finetune (`predict` is tested with the downloads)."""

import numpy as np

import keras

import keras_swinv2

from keras_swinv2.cli import main
from keras_swinv2.training import FinetuneConfig, build_model

TINY = ["--image-size", "32", "--window-size", "4", "--embed-dim", "16", "--depths", "1", "1", "--num-heads", "2", "4"]


def test_demo_trains_on_digits_and_classifies_held_out_images(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--output", str(tmp_path), "--verbose", "0", "--show", "4"]) == 0
    out = capsys.readouterr().out
    assert "random initialisation" in out and "Best validation accuracy" in out
    assert out.count("true ") == 4 and "correct; validation accuracy" in out
    for name in ("best.keras", "log.csv", "curves.png", "config.json", "state-1.json", "state-1.weights.h5"):
        assert (tmp_path / name).exists(), name


def test_pretrain_then_finetune_from_the_encoder(tmp_path, capsys):
    pre = tmp_path / "pre"
    args = ["pretrain", *TINY, "--mask-patch-size", "8", "--epochs", "2", "--warmup-epochs", "0", "--batch-size", "64"]
    assert main([*args, "--output", str(pre), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "SimMIM loss" in out and (pre / "encoder.keras").exists()
    encoder = keras.saving.load_model(pre / "encoder.keras", compile=False)
    model = build_model(FinetuneConfig(model=str(pre / "encoder.keras"), image_size=32, window_size=4), 10)
    assert isinstance(model, keras_swinv2.SwinV2ImageClassifier) and model.num_classes == 10
    for layer in ("patch_embed", "stage_0", "stage_1", "norm"):
        for a, b in zip(encoder.get_layer(layer).weights, model.backbone.get_layer(layer).weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_finetune_from_a_one_channel_keras_file_keeps_its_channels(tmp_path):
    from helpers import build

    source = build(
        embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4, input_shape=(16, 16, 1), include_top=False
    )
    source.save(tmp_path / "gray.keras")
    model = build_model(FinetuneConfig(model=str(tmp_path / "gray.keras"), image_size=32, window_size=8), 5)
    assert model.backbone.image_shape == (32, 32, 1) and model.num_classes == 5
