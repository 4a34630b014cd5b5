"""SimMIM: masks, parity with HF `Swinv2ForMaskedImageModeling`, training, transfer, saving.

Tiny configs throughout (JAX builds models slowly): 32 px images, patch 4,
two stages (encoder stride 8), 8 px mask squares.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import torch

import keras

import keras_swinv2

from helpers import build
from keras_swinv2.simmim import (
    MaskGenerator,
    MaskToken,
    SwinV2SimMIM,
    masked_l1_loss,
    pixel_shuffle,
)
from keras_swinv2.weights import copy_encoder_weights, load_state_dict

from reference import max_abs_diff, randomize_, state_dict_numpy

SIZE = 32
ARCH = dict(embed_dim=16, num_heads=(2, 4), window_size=4)


def encoder(depths=(1, 1), **overrides):
    config = dict(ARCH, depths=depths, input_shape=(SIZE, SIZE, 3), include_top=False, drop_path_rate=0.0)
    config.update(overrides)
    return build(**config)


def synthetic_images(n, size=SIZE, seed=0):
    """Smooth colour gradients with one flat rectangle each: predictable from context."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), "float32")
    for k in range(n):
        a, b = rng.uniform(-3, 3, 2)
        phase = rng.uniform(0, 2 * np.pi, 3)
        for c in range(3):
            out[k, :, :, c] = np.sin(2 * a * xx + 2 * b * yy + phase[c])
        y0, x0 = rng.integers(0, size - 8, 2)
        h, w = rng.integers(4, 12, 2)
        out[k, y0 : y0 + h, x0 : x0 + w, :] = rng.uniform(-1, 1, 3)
    return out


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# --------------------------------------------------------------------------- masks


def check_mask(gen, mask):
    """One token mask: 0/1, constant on each square, exactly mask_count squares."""
    mask = np.asarray(mask)
    assert mask.shape == gen.mask_shape
    assert set(np.unique(mask)) <= {0.0, 1.0}
    (gh, gw), s = gen.grid_shape, gen.scale
    blocks = mask.reshape(gh, s, gw, s)
    assert np.all(blocks.max(axis=(1, 3)) == blocks.min(axis=(1, 3))), "a square is partly masked"
    coarse = blocks[:, 0, :, 0]
    np.testing.assert_array_equal(mask, np.repeat(np.repeat(coarse, s, 0), s, 1))
    assert coarse.sum() == gen.mask_count
    return coarse


GEOMETRIES = [
    # input_size, mask_patch_size, model_patch_size, mask_ratio
    (192, 32, 4, 0.6),
    (32, 8, 4, 0.5),
    ((64, 32), 16, 4, 0.6),
    (224, 32, 4, 0.6),  # 49 squares: ceil(29.4) = 30, where round() would give 29
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_mask_counts_and_structure(geometry):
    input_size, mask_patch, model_patch, ratio = geometry
    gen = MaskGenerator(input_size, mask_patch, model_patch, ratio)
    height, width = input_size if isinstance(input_size, tuple) else (input_size, input_size)
    assert gen.mask_shape == (height // model_patch, width // model_patch)
    assert gen.grid_shape == (height // mask_patch, width // mask_patch)
    squares = gen.grid_shape[0] * gen.grid_shape[1]
    assert gen.mask_count == math.ceil(ratio * squares - 1e-9)

    rng = np.random.default_rng(0)
    seen = np.zeros(gen.grid_shape)
    for _ in range(40):
        seen += check_mask(gen, gen.sample(rng))
    # uniform over squares: every square is sometimes masked and sometimes not
    assert seen.min() > 0 and seen.max() < 40

    for mask in to_numpy(gen.sample_tf(tf.constant([3, 4]), batch_size=5)):
        check_mask(gen, mask)
    check_mask(gen, to_numpy(gen.sample_tf(tf.constant([3, 4]))))


def test_mask_defaults_match_simmim():
    gen = MaskGenerator()
    assert gen.mask_shape == (48, 48) and gen.grid_shape == (6, 6) and gen.mask_count == 22
    assert check_mask(gen, gen.sample(np.random.default_rng(1))).sum() == 22


def test_tf_masks_follow_the_seed():
    gen = MaskGenerator(SIZE, 8, 4, 0.6)
    a = to_numpy(gen.sample_tf(tf.constant([1, 2])))
    np.testing.assert_array_equal(a, to_numpy(gen.sample_tf(tf.constant([1, 2]))))
    assert not np.array_equal(a, to_numpy(gen.sample_tf(tf.constant([1, 3]))))
    batch = to_numpy(gen.sample_tf(tf.constant([1, 2]), batch_size=4))
    assert len({m.tobytes() for m in batch}) == 4, "masks in a batch must be independent"


def masks_of(dataset):
    return np.stack([to_numpy(element["mask"]) for element in dataset])


def test_add_masks_is_reproducible_per_element():
    gen = MaskGenerator(SIZE, 8, 4, 0.6)
    images = synthetic_images(12)
    labels = np.arange(12)

    def pipeline(seed, **kwargs):
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        return gen.add_masks(ds, seed=seed, **kwargs)

    ds = pipeline(7)
    assert set(ds.element_spec) == {"images", "mask"}  # labels dropped
    first = masks_of(ds)
    assert first.shape == (12,) + gen.mask_shape
    for mask in first:
        check_mask(gen, mask)
    assert len({m.tobytes() for m in first}) > 6, "elements must get different masks"
    np.testing.assert_array_equal(first, masks_of(ds))  # second pass: same masks
    np.testing.assert_array_equal(first, masks_of(pipeline(7)))  # re-created: same masks
    assert not np.array_equal(first, masks_of(pipeline(8)))
    np.testing.assert_array_equal(np.stack([to_numpy(e["images"]) for e in ds]), images)

    fresh = pipeline(7, new_masks_each_epoch=True)
    epoch1, epoch2 = masks_of(fresh), masks_of(fresh)
    assert not np.array_equal(epoch1, epoch2)
    np.testing.assert_array_equal(epoch1, masks_of(pipeline(7, new_masks_each_epoch=True)))

    # batched elements and dict elements
    batched = gen.add_masks(tf.data.Dataset.from_tensor_slices({"images": images}).batch(4), seed=1)
    masks = masks_of(batched)
    assert masks.shape == (3, 4) + gen.mask_shape
    for mask in masks.reshape((-1,) + gen.mask_shape):
        check_mask(gen, mask)

    with pytest.raises(ValueError, match="made for 32x32"):
        gen.add_masks(tf.data.Dataset.from_tensor_slices(np.zeros((2, 64, 64, 3), "float32")), seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_size=200, mask_patch_size=32), "not divisible by mask_patch_size 32"),
        (dict(input_size=(192, 100), mask_patch_size=32), "192x100 px is not divisible"),
        (dict(mask_patch_size=32, model_patch_size=6), "not divisible by model_patch_size 6"),
        (dict(mask_ratio=0.0), "strictly between 0 and 1"),
        (dict(mask_ratio=1.0), "strictly between 0 and 1"),
        (dict(mask_ratio=1.5), "strictly between 0 and 1"),
        (dict(input_size=(192, 192, 3)), r"\(height, width\) pair"),
        (dict(mask_patch_size=0), "positive int"),
    ],
)
def test_mask_generator_rejects_impossible_geometry(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskGenerator(**kwargs)


# --------------------------------------------------------------------------- building blocks


def test_pixel_shuffle_matches_torch():
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 3 * 4 * 4)).astype("float32")
    ours = to_numpy(pixel_shuffle(keras.ops.convert_to_tensor(x), 4))
    nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    ref = torch.nn.PixelShuffle(4)(nchw).numpy().transpose(0, 2, 3, 1)
    assert ours.shape == (2, 12, 20, 3)
    np.testing.assert_array_equal(ours, ref)


def test_mask_token_replaces_only_masked_tokens():
    layer = MaskToken(name="mt")
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")
    mask = np.zeros((2, 4, 4), "float32")
    mask[0, 1, 2] = mask[1, 3, 0] = 1
    out = to_numpy(layer(x, mask))
    token = to_numpy(layer.mask_token)
    assert layer.mask_token.path.endswith("mask_token") and token.shape == (8,)
    np.testing.assert_allclose(out[0, 1, 2], token, atol=1e-7)
    np.testing.assert_allclose(out[1, 3, 0], token, atol=1e-7)
    keep = mask == 0
    np.testing.assert_array_equal(out[keep], x[keep])
    clone = MaskToken.from_config(layer.get_config())
    assert clone.stddev == layer.stddev and clone.name == "mt"


def test_masked_l1_loss_is_float32_and_ignores_visible_pixels():
    rng = np.random.default_rng(0)
    images = (rng.integers(-8, 8, size=(2, 8, 8, 3)) / 4).astype("float32")  # exact in bfloat16
    mask = np.zeros((2, 2, 2), "float32")
    mask[0, 0, 1] = 1
    rec = images.copy()
    rec[:, :4, :4] += 5.0  # token (0, 0) only: not masked
    rec[0, :4, 4:] += 2.0  # the masked token of image 0
    bf16 = keras.ops.cast(images, "bfloat16"), keras.ops.cast(rec, "bfloat16")
    loss = masked_l1_loss(*bf16, mask, patch_size=4)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    np.testing.assert_allclose(float(to_numpy(loss)), 2.0 * 16 * 3 / (16 + 1e-5) / 3, rtol=1e-6)


def test_simmim_rejects_unusable_encoders():
    with pytest.raises(ValueError, match="needs a SwinV2Backbone encoder; got SwinV2ImageClassifier"):
        SwinV2SimMIM(encoder(include_top=True, classes=3))
    with pytest.raises(ValueError, match="pooling=None; got pooling='avg'"):
        SwinV2SimMIM(encoder(pooling="avg"))
    with pytest.raises(ValueError, match="multiples of the encoder stride 8"):
        SwinV2SimMIM(encoder(input_shape=(36, 36, 3)))
    with pytest.raises(ValueError, match="needs a SwinV2Backbone"):
        SwinV2SimMIM(keras.Sequential([keras.layers.Dense(2)]))


# --------------------------------------------------------------------------- parity with HF


@pytest.fixture(scope="module")
def hf_pair():
    """HF Swinv2ForMaskedImageModeling (random weights) and a SwinV2SimMIM ported from it."""
    from transformers import Swinv2Config, Swinv2ForMaskedImageModeling

    depths = (2, 2)  # stage 1 has a shifted block; encoder stride 8 > patch size 4
    config = Swinv2Config(
        image_size=SIZE,
        patch_size=4,
        embed_dim=ARCH["embed_dim"],
        depths=list(depths),
        num_heads=list(ARCH["num_heads"]),
        window_size=ARCH["window_size"],
        encoder_stride=4 * 2 ** (len(depths) - 1),
        drop_path_rate=0.0,
    )
    reference = randomize_(Swinv2ForMaskedImageModeling(config), seed=3).eval()
    state = state_dict_numpy(reference)

    model = SwinV2SimMIM(encoder(depths))
    assert model.encoder_stride == config.encoder_stride
    load_state_dict(model.encoder, {k: v for k, v in state.items() if k.startswith("swinv2.")}, layout="hf")
    model.mask_token.mask_token.assign(state["swinv2.embeddings.mask_token"].reshape(-1))
    model.decoder.kernel.assign(state["decoder.0.weight"].transpose(2, 3, 1, 0))
    model.decoder.bias.assign(state["decoder.0.bias"])
    return reference, model


def hf_run(reference, images, mask):
    with torch.no_grad():
        out = reference(
            torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
            bool_masked_pos=torch.from_numpy(mask.reshape(len(mask), -1)).bool(),
        )
    return out.reconstruction.numpy().transpose(0, 2, 3, 1), float(out.loss)


@pytest.mark.parity
def test_parity_with_hf_masked_image_modeling(hf_pair, report):
    reference, model = hf_pair
    gen = model.mask_generator(mask_patch_size=8, mask_ratio=0.6)
    rng = np.random.default_rng(5)
    images = rng.normal(size=(2, SIZE, SIZE, 3)).astype("float32")
    mask = gen.sample_batch(2, rng)

    ref_rec, ref_loss = hf_run(reference, images, mask)
    inputs = {"images": images, "mask": mask}
    rec = to_numpy(model(inputs, training=False))
    loss = float(to_numpy(model.compute_loss(inputs, None, rec, training=False)))
    loss_recomputed = float(to_numpy(model.compute_loss(inputs, training=False)))  # y_pred from x

    rec_diff, loss_diff = max_abs_diff(rec, ref_rec), abs(loss - ref_loss)
    report(test="simmim_parity", reconstruction=rec_diff, loss=loss_diff, hf_loss=ref_loss)
    assert rec_diff <= 1e-4 and loss_diff <= 1e-4, (rec_diff, loss_diff)
    assert abs(loss_recomputed - loss) <= 1e-6

    # the mask matters (so the comparison above is not vacuous), and the same way in both
    unmasked_ref, _ = hf_run(reference, images, np.zeros_like(mask))
    assert max_abs_diff(unmasked_ref, ref_rec) > 1e-2
    unmasked = to_numpy(model({"images": images, "mask": np.zeros_like(mask)}, training=False))
    assert max_abs_diff(unmasked, unmasked_ref) <= 1e-4


def test_bad_inputs_name_the_expected_shapes(hf_pair):
    _, model = hf_pair
    images = np.zeros((1, SIZE, SIZE, 3), "float32")
    with pytest.raises(ValueError, match=r"shape \(batch, 8, 8\)"):
        model({"images": images, "mask": np.zeros((1, 4, 4), "float32")})
    with pytest.raises(ValueError, match='"mask"'):
        model({"images": images})


# --------------------------------------------------------------------------- training and transfer


EPOCHS = 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = SwinV2SimMIM(encoder())
    gen = model.mask_generator(mask_patch_size=8, mask_ratio=0.6)
    dataset = gen.add_masks(tf.data.Dataset.from_tensor_slices(synthetic_images(64)), seed=0).batch(8)
    before = {w.path: to_numpy(w).copy() for w in model.weights}
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=2e-3))
    # With tf.data feeding it and HF transformers imported, torch's 2-thread pool contends
    # with TensorFlow's threads on this 2-core machine (measured: fit 20 s instead of 1.3 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history = model.fit(dataset, epochs=EPOCHS, shuffle=False, verbose=0)
    finally:
        torch.set_num_threads(threads)
    return dict(
        model=model, history=history.history, before=before, dataset=dataset, tmp=tmp_path_factory.mktemp("simmim")
    )


def test_fit_reduces_the_masked_loss(trained, report):
    losses = trained["history"]["loss"]
    report(test="simmim_fit", first_epoch_loss=losses[0], last_epoch_loss=losses[-1])
    assert len(losses) == EPOCHS and all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0], losses


def test_fit_trains_the_encoder_in_place(trained):
    model = trained["model"]
    changed = {w.path for w in model.weights if not np.array_equal(to_numpy(w), trained["before"][w.path])}
    for layer in ("patch_embed", "stage_0", "stage_1", "norm"):
        assert any(p.startswith(layer + "/") for p in changed), f"{layer} was not trained"
    assert any("mask_token" in p for p in changed) and any(p.startswith("decoder/") for p in changed)
    # the encoder is the shared backbone object, with every one of its weights in the model
    encoder_ids = {id(w) for w in model.encoder.weights}
    assert encoder_ids <= {id(w) for w in model.weights}


def test_copy_encoder_weights_into_a_classifier(trained):
    model = trained["model"]
    classifier = build(**ARCH, depths=(1, 1), input_shape=(SIZE, SIZE, 3), classes=3)
    head_before = [to_numpy(w).copy() for w in classifier.head.weights]

    copied = copy_encoder_weights(model, classifier)  # the SimMIM model or its encoder
    assert copied == ["patch_embed", "stage_0", "stage_1", "norm"]
    for name in copied:
        ours, theirs = model.encoder.get_layer(name).weights, classifier.backbone.get_layer(name).weights
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    for a, b in zip(head_before, classifier.head.weights):
        np.testing.assert_array_equal(a, to_numpy(b))
    # the classifier now computes the pre-trained features
    images = synthetic_images(2, seed=9)
    backbone = classifier.backbone
    np.testing.assert_allclose(to_numpy(backbone(images)), to_numpy(model.encoder(images)), atol=1e-6)

    more_heads = build(**dict(ARCH, num_heads=(4, 4)), depths=(1, 1), input_shape=(SIZE, SIZE, 3), classes=3)
    expected = r"expected stage_0/blocks_0/attn/logit_scale \(2, 1, 1\).*got \S+ \(4, 1, 1\)"
    with pytest.raises(ValueError, match=expected):
        copy_encoder_weights(model.encoder, more_heads)
    deeper = build(**ARCH, depths=(1, 2), input_shape=(SIZE, SIZE, 3), classes=3)
    deeper_before = [to_numpy(w).copy() for w in deeper.weights]
    with pytest.raises(ValueError, match="layer stage_1.*blocks_1"):
        copy_encoder_weights(model.encoder, deeper)
    # checked before anything is assigned: not even the matching earlier layers were copied
    for a, b in zip(deeper_before, deeper.weights):
        np.testing.assert_array_equal(a, to_numpy(b))


def test_save_and_load_round_trip(trained):
    model = trained["model"]
    path = str(trained["tmp"] / "simmim.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SwinV2SimMIM) and isinstance(loaded.encoder, keras_swinv2.SwinV2Backbone)
    assert loaded.encoder_stride == model.encoder_stride
    batch = {k: to_numpy(v)[:2] for k, v in next(iter(trained["dataset"])).items()}
    np.testing.assert_array_equal(to_numpy(loaded(batch, training=False)), to_numpy(model(batch, training=False)))
    # the loaded encoder alone is a normal backbone with the trained weights
    for a, b in zip(model.encoder.weights, loaded.encoder.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_copy_weights_to_a_larger_window_resizes_v1_tables_and_keeps_the_head():
    """A trained V1-style classifier moved to a larger window: tables resized bicubically,
    head copied on request; the CPB variant transfers unchanged."""
    from keras_swinv2.layers import resize_relative_position_table

    arch = dict(
        embed_dim=8,
        depths=(1, 1),
        num_heads=(2, 4),
        classes=3,
        attention="dot",
        norm_position="pre",
        position_bias="table",
        drop_path_rate=0.0,
    )
    small = build(**arch, window_size=4, input_shape=(32, 32, 3))
    for v in small.weights:
        v.assign(np.random.default_rng(0).standard_normal(v.shape).astype("float32"))
    big = build(**arch, window_size=8, input_shape=(64, 64, 3))
    assert "head" in copy_encoder_weights(small, big, head=True)
    table = "stage_0/blocks_0/attn/relative_position_bias/relative_position_bias_table"
    src, dst = ({v.path: v for v in m.weights}[table] for m in (small, big))
    assert tuple(src.shape) == (49, 2) and tuple(dst.shape) == (225, 2)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(dst),
        resize_relative_position_table(keras.ops.convert_to_numpy(src), 4, 8),
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(big.head.kernel), keras.ops.convert_to_numpy(small.head.kernel)
    )
    with pytest.raises(ValueError, match="same number of classes"):
        copy_encoder_weights(small, build(**{**arch, "classes": 5}, window_size=8, input_shape=(64, 64, 3)), head=True)
