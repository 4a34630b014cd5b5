"""Every layer: from_config(get_config()) rebuilds it; with copied weights, same outputs."""

import json

import numpy as np
import pytest

import keras

from keras_swinv2.layers import (
    ContinuousPositionBias,
    DropPath,
    Mlp,
    PatchEmbedding,
    PatchMerging,
    RelativePositionBiasTable,
    SwinV2Block,
    SwinV2Stage,
    WindowAttention,
)

from swin_layer_helpers import randomize_keras, to_numpy


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


# name: (factory, input shape; None for the bias layers, which take no input)
CASES = {
    "PatchEmbedding": (
        lambda: PatchEmbedding(6, patch_size=4, in_channels=3, name="pe"),
        (1, 10, 13, 3),
    ),
    "WindowAttention-cosine": (
        lambda: WindowAttention(8, 2, 4, pretrained_window_size=6, name="wa"),
        (6, 16, 8),
    ),
    "WindowAttention-dot": (
        lambda: WindowAttention(
            8,
            2,
            4,
            attention="dot",
            position_bias="table",
            key_bias=True,
            attention_dropout_rate=0.1,
            dropout_rate=0.2,
        ),
        (6, 16, 8),
    ),
    "ContinuousPositionBias": (
        lambda: ContinuousPositionBias(3, (2, 4), (4, 6), mode="linear", hidden_dim=16),
        None,
    ),
    "RelativePositionBiasTable": (lambda: RelativePositionBiasTable(2, (3, 2)), None),
    "SwinV2Block": (
        lambda: SwinV2Block(
            8,
            2,
            window_size=4,
            shift_size=2,
            pretrained_window_size=3,
            mlp_ratio=2.0,
            drop_path_rate=0.1,
            extra_norm=True,
        ),
        (1, 6, 10, 8),
    ),
    "SwinV2Block-v1": (
        lambda: SwinV2Block(
            8,
            2,
            window_size=4,
            shift_size=2,
            norm_position="pre",
            attention="dot",
            position_bias="table",
            key_bias=True,
        ),
        (1, 6, 10, 8),
    ),
    "PatchMerging": (lambda: PatchMerging(3, version="v1", out_dim=6), (1, 5, 7, 3)),
    "SwinV2Stage": (
        lambda: SwinV2Stage(
            8,
            depth=2,
            num_heads=2,
            window_size=4,
            downsample=True,
            drop_path_rates=[0.0, 0.1],
            extra_norm_period=2,
            mlp_ratio=2.0,
            pretrained_window_size=6,
            norm_position="post",
        ),
        (1, 12, 20, 4),
    ),
    "DropPath": (lambda: DropPath(0.3, seed=4), (8, 3, 2)),
    "Mlp": (lambda: Mlp(6, 10, dropout_rate=0.1), (2, 3, 6)),
}


def _run(layer, shape):
    if shape is None:
        return to_numpy(layer.bias())
    return to_numpy(layer(_x(shape, seed=1), training=False))


def _build(layer, shape):
    if shape is None:
        layer.build()
    else:
        layer.build(shape)


@pytest.mark.parametrize("name", list(CASES))
def test_from_config_rebuilds_equivalent_layer(name):
    factory, shape = CASES[name]
    layer = factory()
    _build(layer, shape)
    randomize_keras(layer, seed=2)
    expected = _run(layer, shape)

    config = layer.get_config()
    # The config survives JSON (tuples become lists, as in a saved .keras file).
    config = json.loads(json.dumps(config))
    clone = type(layer).from_config(config)
    assert json.loads(json.dumps(clone.get_config())) == config
    _build(clone, shape)
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in layer.weights]
    assert len(layer.weights) > 0 or name == "DropPath"
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(_run(clone, shape), expected)
    if name == "DropPath":
        # Same seed, same first draw of the per-sample mask.
        x = np.ones((64, 3, 2), dtype="float32")
        dropped = to_numpy(layer(x, training=True))
        assert 0 < (dropped == 0).sum() < dropped.size
        np.testing.assert_array_equal(to_numpy(clone(x, training=True)), dropped)

    # Registered: the generic Keras (de)serialisation finds the class.
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("keras_swinv2>")
    again = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(again) is type(layer)
    if not again.built:  # a build_config in the serialised dict builds it already
        _build(again, shape)
    again.set_weights(layer.get_weights())
    np.testing.assert_array_equal(_run(again, shape), expected)


def test_stage_in_a_saved_model_round_trip(tmp_path):
    inputs = keras.Input((12, 20, 4))
    outputs = SwinV2Stage(8, depth=2, num_heads=2, window_size=4, downsample=True)(inputs)
    model = keras.Model(inputs, outputs)
    randomize_keras(model, seed=3)
    x = _x((1, 12, 20, 4), seed=4)
    path = tmp_path / "stage.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(restored(x)), to_numpy(model(x)))
