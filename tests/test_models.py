"""The keras.applications contract, serialisation round trips and compiled execution."""

import numpy as np
import pytest

import keras
from keras import ops

import keras_swinv2
from keras_swinv2.models import VARIANTS

from helpers import SMALL, build, images, randomize_weights, small_model

BACKEND = keras.backend.backend()


def numpy(x):
    return ops.convert_to_numpy(x)


def test_keras_file_round_trip(tmp_path):
    model = small_model()
    x = images()
    expected = numpy(model(x))
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, keras_swinv2.SwinV2ImageClassifier)
    assert isinstance(restored.backbone, keras_swinv2.SwinV2Backbone)
    np.testing.assert_array_equal(numpy(restored(x)), expected)
    assert sorted(restored.backbone.pyramid_outputs) == ["P2", "P3"]
    assert restored.get_config() == model.get_config()
    # the backbone alone round-trips too, pyramid included
    model.backbone.save(tmp_path / "backbone.keras")
    backbone = keras.saving.load_model(tmp_path / "backbone.keras")
    assert isinstance(backbone, keras_swinv2.SwinV2Backbone)
    assert backbone.get_config() == model.backbone.get_config()
    np.testing.assert_array_equal(numpy(backbone(x)), numpy(model.backbone(x)))
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)
    assert numpy(pyramid(x)["P3"]).shape == (2, 4, 4, 32)


def test_weights_h5_round_trip(tmp_path):
    model = small_model()
    x = images()
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    fresh = build(**SMALL, input_shape=(32, 32, 3), classes=5, classifier_activation=None)
    assert not np.allclose(numpy(fresh(x)), numpy(model(x)))
    keras_swinv2.load_weights(fresh, path)
    np.testing.assert_array_equal(numpy(fresh(x)), numpy(model(x)))


def test_compiled_execution_matches_eager():
    model = small_model()
    x = images()
    eager = numpy(model(x, training=False))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(lambda t: model(t, training=False), jit_compile=True)
        out = numpy(compiled(tf.constant(x)))
    elif BACKEND == "jax":
        import jax

        @jax.jit
        def compiled(trainable, non_trainable, t):
            return model.stateless_call(trainable, non_trainable, t, training=False)[0]

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        out = numpy(compiled(trainable, non_trainable, x))
    else:
        import torch

        # One graph: every break (e.g. a numpy constant read in `forward`) makes dynamo
        # resume inside Keras' Layer.__call__, recompile per layer and fall back to eager.
        explained = torch._dynamo.explain(lambda t: model(t, training=False))(torch.from_numpy(x))
        assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
        with torch.no_grad():
            out = numpy(model(torch.from_numpy(x), training=False))
    np.testing.assert_allclose(out, eager, atol=1e-5)
    # model.predict runs the backend's compiled path (XLA / jax.jit / torch.compile)
    model.compile(jit_compile=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, atol=1e-5)


def test_compiled_training_matches_eager():
    """Two SGD steps with `jit_compile=True` (XLA / jax.jit / torch.compile) == eager.

    SGD keeps the weights linear in the gradients (Adam would turn float32 rounding
    of near-zero gradients into lr-sized steps). No stochastic depth: Keras' torch
    random ops are excluded from dynamo, so they break the graph.
    """
    x, y = images(), np.arange(2) % 5
    weights = {}
    for jit in (False, True):
        model = small_model(drop_path_rate=0.0)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        for _ in range(2):
            model.train_on_batch(x, y)
        weights[jit] = [numpy(w) for w in model.trainable_weights]
    for eager, compiled in zip(weights[False], weights[True]):
        np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_dynamic_input_shape_accepts_any_size():
    static = small_model(input_shape=(64, 64, 3))
    dynamic = build(**SMALL, input_shape=(None, None, 3), classes=5, classifier_activation=None)
    dynamic.set_weights(static.get_weights())
    x = images((1, 64, 64, 3))
    # 64 px: every stage is larger than the window, so both models use the same windows
    np.testing.assert_allclose(numpy(dynamic(x)), numpy(static(x)), atol=1e-5)
    for shape in [(2, 40, 48, 3), (1, 50, 36, 3)]:  # needs padding to patch and window multiples
        out = numpy(dynamic(images(shape)))
        assert out.shape == (shape[0], 5) and np.isfinite(out).all()


@pytest.mark.skipif(BACKEND != "tensorflow", reason="graph with unknown spatial dims is TensorFlow-specific")
def test_tf_graph_with_unknown_spatial_dims():
    import tensorflow as tf

    model = randomize_weights(build(**SMALL, input_shape=(None, None, 3), classes=5, classifier_activation=None))
    fn = tf.function(
        lambda t: model(t, training=False), input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)]
    )
    for shape in [(1, 40, 44, 3), (2, 64, 64, 3)]:
        x = images(shape)
        np.testing.assert_allclose(numpy(fn(tf.constant(x))), numpy(model(x)), atol=1e-5)


def test_backbone_outputs_and_pooling():
    x = images((2, 64, 64, 3))
    arch = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=2, input_shape=(64, 64, 3))
    features = build(**arch, include_top=False)
    assert features.output.shape == (None, 2, 2, 128)
    shapes = {k: tuple(v.shape) for k, v in features.pyramid_outputs.items()}
    assert shapes == {
        "P2": (None, 16, 16, 16),
        "P3": (None, 8, 8, 32),
        "P4": (None, 4, 4, 64),
        "P5": (None, 2, 2, 128),
    }
    pyramid = keras.Model(features.input, features.pyramid_outputs)
    assert numpy(pyramid(x)["P4"]).shape == (2, 4, 4, 64)
    feature_map = numpy(features(x))
    avg = build(**arch, include_top=False, pooling="avg")
    avg.set_weights(features.get_weights())
    np.testing.assert_allclose(numpy(avg(x)), feature_map.mean(axis=(1, 2)), atol=1e-5)
    mx = build(**arch, include_top=False, pooling="max")
    mx.set_weights(features.get_weights())
    np.testing.assert_allclose(numpy(mx(x)), feature_map.max(axis=(1, 2)), atol=1e-5)


def test_input_tensor_and_classifier_activation():
    inputs = keras.Input((32, 32, 3))
    model = keras_swinv2.SwinV2(input_tensor=inputs, classes=7, **SMALL)
    assert model.input is inputs
    probs = numpy(model(images()))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)  # softmax by default


def test_variant_builders_and_window_clamping():
    tiny = keras_swinv2.SwinV2Tiny()
    assert isinstance(tiny, keras_swinv2.SwinV2ImageClassifier) and tiny.name == "swinv2_tiny"
    assert tiny.backbone.image_shape == (256, 256, 3) and tiny.count_params() == 28_347_154
    stages = tiny.backbone.stages
    assert [(b.window, b.shift) for b in stages[3].blocks] == [(8, 0), (8, 0)]  # 8x8 map
    assert [(b.window, b.shift) for b in stages[0].blocks] == [(8, 0), (8, 4)]
    # SwinV2-B 22k geometry: 192 px, window 12 -> stage 3 (12x12) unshifted, stage 4 window 6
    base = keras_swinv2.SwinV2Base(include_top=False, input_shape=(192, 192, 3), window_size=12)
    assert isinstance(base, keras_swinv2.SwinV2Backbone)
    assert [(b.window, b.shift) for b in base.stages[2].blocks[:2]] == [(12, 0), (12, 0)]
    assert [(b.window, b.shift) for b in base.stages[3].blocks] == [(6, 0), (6, 0)]
    assert [(b.window, b.shift) for b in base.stages[1].blocks] == [(12, 0), (12, 6)]


def test_huge_giant_configs():
    for name in ("huge", "giant"):
        arch = VARIANTS[name]
        assert arch["extra_norm_period"] == 6
        assert all(arch["embed_dim"] * 2**i // h == 32 for i, h in enumerate(arch["num_heads"]))
    # the extra main-branch norm on every 2nd block of a stage, at small scale
    model = small_model(depths=(4, 2), extra_norm_period=2)
    norms = [[b.norm3 is not None for b in s.blocks] for s in model.backbone.stages]
    assert norms == [[False, True, False, True], [False, True]]


def test_fit_with_stochastic_depth():
    model = build(**SMALL, input_shape=(32, 32, 3), classes=3, drop_path_rate=0.3, classifier_activation=None)
    model.compile(optimizer="adamw", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = images((8, 32, 32, 3))
    y = np.arange(8) % 3
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    # every layer is built once the model is: an unbuilt one (DropPath was) makes Keras run a
    # symbolic forward pass of the whole model again on every train_on_batch
    assert [layer.name for layer in model._flatten_layers() if not layer.built] == []


@pytest.mark.parametrize("size", [200, 256, 100])
def test_stage_geometry_is_what_the_model_builds(size):
    """One rule for every caller: sides round up (at 200 px stage 4 is 7 wide, not 6)."""
    from keras_swinv2.layers import stage_geometry

    backbone = build(
        embed_dim=8,
        depths=(2, 2, 2, 2),
        num_heads=(1, 1, 1, 1),
        window_size=7,
        input_shape=(size, size, 3),
        include_top=False,
    )
    geometry = stage_geometry(size, 7)
    built = [(tuple(s.output.shape[1:3]), s.blocks[1].window, s.blocks[1].shift) for s in backbone.stages]
    assert built == geometry
    if size == 200:
        assert geometry[3] == ((7, 7), 7, 0)


def test_builders_and_constructors_reject_unknown_keywords():
    with pytest.raises(TypeError, match="'windowsize'; did you mean 'window_size'"):
        keras_swinv2.SwinV2Tiny(windowsize=8)
    with pytest.raises(TypeError, match="'include_tops'"):
        keras_swinv2.SwinV2Backbone.from_preset("tiny", include_tops=False)
    with pytest.raises(TypeError, match="'classes'"):
        keras_swinv2.SwinV2Backbone(**SMALL, image_shape=(32, 32, 3), classes=3)
    with pytest.raises(TypeError, match="'in_channels'"):
        keras_swinv2.SwinV2ImageClassifier(build(**SMALL, input_shape=(32, 32, 3), include_top=False), 3, in_channels=3)


def test_bad_arguments_name_the_argument():
    backbone = build(**SMALL, input_shape=(32, 32, 3), include_top=False)
    for kwargs, message in [
        (dict(num_classes=0), "num_classes must be an int >= 1; got 0"),
        (dict(num_classes=3, pooling="mean"), "pooling must be one of"),
        (dict(num_classes=3, dropout=1.0), "dropout must be a float in"),
    ]:
        with pytest.raises(ValueError, match=message):
            keras_swinv2.SwinV2ImageClassifier(backbone, **kwargs)
    with pytest.raises(ValueError, match=r"drop_path_rate must be a float in \[0, 1\); got 1.5"):
        keras_swinv2.SwinV2Tiny(drop_path_rate=1.5)
    with pytest.raises(ValueError, match="classes must be an int >= 1; got 0"):
        keras_swinv2.SwinV2Tiny(classes=0)
    with pytest.raises(ValueError, match="norm_position must be one of"):
        keras_swinv2.SwinV2Backbone(**SMALL, image_shape=(32, 32, 3), norm_position="middle")
    with pytest.raises(TypeError, match="backbone must be a SwinV2Backbone"):
        keras_swinv2.SwinV2ImageClassifier(keras.Sequential([keras.layers.Dense(2)]), 3)
    pooled = build(**SMALL, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    with pytest.raises(ValueError, match="pooling=None"):
        keras_swinv2.SwinV2ImageClassifier(pooled, 3)


def test_classifier_wraps_the_backbone_it_is_given():
    backbone = randomize_weights(build(**SMALL, input_shape=(32, 32, 3), include_top=False))
    classifier = keras_swinv2.SwinV2ImageClassifier(backbone, 4, activation="softmax")
    assert classifier.backbone is backbone
    x = images()
    features = numpy(backbone(x)).mean(axis=(1, 2))
    kernel, bias = (numpy(w) for w in classifier.head.weights)
    logits = features @ kernel + bias
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(numpy(classifier(x)), expected, atol=1e-5)
    # training the classifier trains the backbone it shares
    assert len(classifier.trainable_variables) == len(backbone.trainable_variables) + 2


def test_from_preset_with_a_variant_and_a_file(tmp_path):
    backbone = keras_swinv2.SwinV2Backbone.from_preset("swinv2_tiny", input_shape=(64, 64, 3), window_size=4)
    assert isinstance(backbone, keras_swinv2.SwinV2Backbone) and backbone.embed_dim == 96
    assert backbone.image_shape == (64, 64, 3) and backbone.window_size == 4
    classifier = keras_swinv2.SwinV2ImageClassifier.from_preset(
        "tiny", input_shape=(64, 64, 3), window_size=4, num_classes=3
    )
    assert classifier.num_classes == 3 and classifier.backbone.depths == (2, 2, 6, 2)
    model = small_model()
    model.save(tmp_path / "m.keras")
    restored = keras_swinv2.SwinV2ImageClassifier.from_preset(str(tmp_path / "m.keras"))
    np.testing.assert_array_equal(numpy(restored(images())), numpy(model(images())))
    only_backbone = keras_swinv2.SwinV2Backbone.from_preset(str(tmp_path / "m.keras"))
    assert isinstance(only_backbone, keras_swinv2.SwinV2Backbone)
    with pytest.raises(ValueError, match="Unknown preset 'swinv2_tinny'"):
        keras_swinv2.SwinV2Backbone.from_preset("swinv2_tinny")
