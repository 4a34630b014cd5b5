"""Gradient checkpointing and sequential (chunked) window attention: same numbers, less memory."""

import numpy as np
import pytest

import keras

from helpers import build
from keras_swinv2.layers import SwinV2Block

TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4, input_shape=(24, 24, 3), classes=5)


def _data(batch=4, size=24, classes=5):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 3)).astype("float32")
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes, batch)]
    return x, y


def _fit_with_sgd(drop_path_rate=0.5, **options):
    """Two SGD(lr=1) steps through `model.fit`: the weight change is the summed gradients."""
    keras.utils.set_random_seed(1)  # same weights and same DropPath seeds for every variant
    model = build(drop_path_rate=drop_path_rate, **TINY, **options)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="categorical_crossentropy")
    x, y = _data()
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    return history.history["loss"], [keras.ops.convert_to_numpy(w) for w in model.weights]


@pytest.mark.parametrize(
    "options",
    [
        dict(gradient_checkpointing=True),
        dict(attention_chunk_size=2),
        dict(gradient_checkpointing=True, attention_chunk_size=3),
    ],
    ids=["checkpointing", "sequential", "both"],
)
def test_training_equals_plain_model_with_drop_path(options, report):
    # (24 px -> 6x6 tokens, window 4: padding, 4 windows, shifted blocks with masks; DropPath 0.5)
    plain_loss, plain_weights = _fit_with_sgd()
    loss, weights = _fit_with_sgd(**options)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(plain_weights, weights))
    report(test="memory_option_gradients", options=str(options), max_abs_gradient_diff=diff)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-5)
    assert diff <= 1e-5
    # the DropPath masks were really active: without them the weights end elsewhere
    _, deterministic_weights = _fit_with_sgd(drop_path_rate=0.0, **options)
    assert max(float(np.abs(a - b).max()) for a, b in zip(deterministic_weights, weights)) > 1e-3


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_sequential_attention_inference_is_identical(chunk):
    keras.utils.set_random_seed(2)
    plain = build(**TINY)
    chunked = build(attention_chunk_size=chunk, **TINY)
    chunked.set_weights(plain.get_weights())
    x, _ = _data(batch=3)
    # 4 windows in stage 1: chunk 3 falls back to the largest divisor, 2
    assert chunked.backbone.get_layer("stage_0").blocks[0].chunk == (1 if chunk == 1 else 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(chunked(x)), keras.ops.convert_to_numpy(plain(x)), atol=1e-6)


def test_options_serialise():
    model = build(gradient_checkpointing=True, attention_chunk_size=2, **TINY)
    clone = type(model).from_config(model.get_config())
    block = clone.backbone.get_layer("stage_1").blocks[1]
    assert block.options.gradient_checkpointing and block.options.attention_chunk_size == 2
    restored = SwinV2Block.from_config(block.get_config())
    assert restored.options == block.options


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="needs dropout_rate=0 and attention_dropout_rate=0"):
        build(gradient_checkpointing=True, dropout_rate=0.1, **TINY)
    with pytest.raises(ValueError, match="attention_chunk_size must be an int >= 0"):
        build(attention_chunk_size=-1, **TINY)
    with pytest.raises(ValueError, match="needs a static resolution"):
        build(attention_chunk_size=2, **dict(TINY, input_shape=(None, None, 3)))


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="XLA buffer assignment is read on JAX")
def test_checkpointing_shrinks_compiled_training_step(report):
    """XLA's buffer assignment for a jitted training step, with and without checkpointing.

    (With plain `jax.checkpoint`, XLA on CPU keeps every activation anyway: see
    `keras_swinv2.backend.remat`.)
    """
    import jax

    config = dict(
        embed_dim=32,
        depths=(2, 4),
        num_heads=(2, 4),
        window_size=8,
        input_shape=(128, 128, 3),
        classes=10,
        drop_path_rate=0.1,
    )
    x = np.zeros((4, 128, 128, 3), "float32")
    y = np.zeros((4,), "int32")
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def temp_bytes(**options):
        model = build(**config, **options)
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(trainable, non_trainable, x, y):
            out, _ = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(y, out)

        step = jax.jit(jax.grad(loss))
        return step.lower(trainable, non_trainable, x, y).compile().memory_analysis().temp_size_in_bytes

    plain, checkpointed = temp_bytes(), temp_bytes(gradient_checkpointing=True)
    report(test="compiled_training_memory", plain=plain, checkpointed=checkpointed)
    assert checkpointed < 0.5 * plain
