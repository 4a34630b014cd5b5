"""Dense prediction end to end: `swinv2_retinanet` on every backend, and `finetune --task
segmentation|detection` on the offline digit scenes reaching a stated mean IoU / AP, resuming,
and refusing bad options.

The learning checks train tiny models on the TensorFlow pass only (how well a recipe learns does
not depend on the backend; the per-backend training steps are in test_segmenter.py and below).
"""

import csv
import os

import numpy as np
import pytest

import keras

import keras_swinv2_cli
from keras_swinv2 import SwinV2Backbone, SwinV2ImageSegmenter, metrics
from keras_swinv2.data import dense
from keras_swinv2.tasks import swinv2_retinanet
from keras_swinv2.training import FinetuneConfig, finetune

BACKEND = keras.backend.backend()
TINY = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.0)
# the recipe of the learning checks; measured (TF, 2-core EPYC): best val mean IoU 0.327 after 30 epochs
# (2026-12-06); best AP@0.5 0.019 and class-agnostic AP@0.5 0.50 after 8 (2026-12-07)
SCENES = dict(image_size=64, train_size=512, validation_size=128)
ARCHITECTURE = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(2, 4, 8, 8))
SEGMENTATION_EPOCHS, SEGMENTATION_MIOU = 30, 0.2
DETECTION_EPOCHS, DETECTION_AP50, DETECTION_AGNOSTIC_AP50 = 8, 0.005, 0.25


def _digit_batch(batch=2, image_size=64):
    data = dense.digit_scenes(image_size=image_size, train_size=batch, validation_size=batch)
    return next(iter(dense.detection_validation(data, image_size, batch)))


def test_retinanet_on_swinv2_trains_and_detects():
    """A training step on digit-scene boxes (keras-hub's targets: yxyx pixels, -1 padding) moves
    the SwinV2 backbone; `predict` returns keras-hub's decoded detections."""
    backbone = SwinV2Backbone(**TINY, image_shape=(64, 64, 3))
    detector = swinv2_retinanet(backbone, num_classes=10, head_conv_layers=1)
    assert detector.anchor_generator.anchor_size == pytest.approx(2.0)  # 16 px anchors at P3 for 64 px
    images, targets = _digit_batch()
    detector.compile(optimizer=keras.optimizers.SGD(0.01))
    before = keras.ops.convert_to_numpy(backbone.get_layer("stage_3").trainable_weights[0]).copy()
    history = detector.fit(images, targets, batch_size=2, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["bbox_regression_loss"][0] > 0, history
    after = keras.ops.convert_to_numpy(backbone.get_layer("stage_3").trainable_weights[0])
    assert np.abs(after - before).max() > 0
    detections = detector.predict(images, verbose=0)
    assert keras.ops.convert_to_numpy(detections["boxes"]).shape == (2, 100, 4)


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="an unknown batch size is TensorFlow's retraced graph; saving is backend-independent",
)
def test_retinanet_predicts_any_batch_size_and_round_trips(tmp_path):
    """After one batch size, `predict` takes another: on TensorFlow the retraced function has an
    unknown batch, which keras-hub 0.32's suppression cannot take ("Expected int32, but got None";
    `DetectionDecoder` then suppresses image by image). The detections do not depend on the
    batching, and survive a `.keras` round trip."""
    backbone = SwinV2Backbone(**TINY, image_shape=(64, 64, 3))
    detector = swinv2_retinanet(backbone, num_classes=3, head_conv_layers=1, confidence_threshold=0.0)
    images = np.random.RandomState(0).rand(5, 64, 64, 3).astype("float32")

    def detect(model, batch_size):
        detections = model.predict(images, batch_size=batch_size, verbose=0)
        return {key: keras.ops.convert_to_numpy(value) for key, value in detections.items()}

    first = detect(detector, 2)  # batches of 2, 2 and 1: two batch sizes already
    path = str(tmp_path / "detector.keras")
    detector.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.prediction_decoder).__name__ == "DetectionDecoder"
    for model, batch_size in ((detector, 5), (loaded, 5)):
        again = detect(model, batch_size)
        assert again["boxes"].shape == (5, 100, 4)
        np.testing.assert_array_equal(again["num_detections"], first["num_detections"])
        # untrained scores are nearly tied, so the order may differ in the last bits: compare sorted
        np.testing.assert_allclose(np.sort(again["confidence"], 1), np.sort(first["confidence"], 1), atol=1e-4)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent, runs once")
def test_retinanet_builder_checks_its_arguments():
    backbone = SwinV2Backbone(**TINY, image_shape=(64, 64, 3))
    with pytest.raises(TypeError, match="backbone must be a SwinV2Backbone"):
        swinv2_retinanet(keras.Sequential([keras.layers.Dense(1)]), 3)
    with pytest.raises(ValueError, match="bounding_box_format must be one of .*; got 'ltrb'"):
        swinv2_retinanet(backbone, 3, bounding_box_format="ltrb")
    with pytest.raises(ValueError, match="min_level must be 3, 4 or 5"):
        swinv2_retinanet(backbone, 3, min_level=2)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1; got 0"):
        swinv2_retinanet(backbone, 0)
    with pytest.raises(ValueError, match=r"prior_probability must be in \(0, 1\); got 1.5"):
        swinv2_retinanet(backbone, 3, prior_probability=1.5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent, runs once")
def test_retinanet_heads_start_as_in_the_paper():
    """Every anchor starts as background (class probability 0.01, RetinaNet's prior) and every box
    as its anchor: not keras-hub 0.32's initialisation (probability 0.5, boxes shrunk to 1%)."""
    keras.utils.set_random_seed(0)
    detector = swinv2_retinanet(SwinV2Backbone(**TINY, image_shape=(64, 64, 3)), num_classes=10)
    outputs = detector(_digit_batch()[0], training=False)
    probability = keras.ops.convert_to_numpy(keras.ops.sigmoid(outputs["cls_logits"]))
    np.testing.assert_allclose(np.median(probability), 0.01, rtol=0.05)
    offsets = keras.ops.convert_to_numpy(outputs["bbox_regression"])
    assert np.abs(np.median(offsets)) < 0.01, np.median(offsets)
    for head in (detector.classification_head, detector.box_head):
        kernel = keras.ops.convert_to_numpy(head.prediction_layer.kernel)
        assert 0.008 < kernel.std() < 0.012, kernel.std()
    box_bias = keras.ops.convert_to_numpy(detector.box_head.prediction_layer.bias)
    np.testing.assert_array_equal(box_bias, 0.0)


def _config(task, epochs, **overrides):
    settings = dict(
        task=task,
        data="digits",
        model="tiny",
        weights=None,
        image_size=64,
        window_size=4,
        architecture=ARCHITECTURE,
        epochs=epochs,
        batch_size=16,
        learning_rate=2e-3,
        warmup_epochs=1.0,
        drop_path_rate=0.0,
        clipnorm=None,
        augmentation={"flip": False, "scale": (0.8, 1.2)},
    )
    settings.update(overrides)
    return FinetuneConfig(**settings)


@pytest.fixture
def small_scenes(monkeypatch):
    """`finetune`'s "digits" at the tests' size."""
    original = dense.digit_scenes
    monkeypatch.setattr(dense, "digit_scenes", lambda **kwargs: original(**{**kwargs, **SCENES}))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="learning is checked once, on the TensorFlow pass")
def test_finetune_segmentation_learns_digit_scenes(tmp_path, small_scenes, report):
    config = _config("segmentation", SEGMENTATION_EPOCHS, head={"head_channels": 64, "dropout": 0.0})
    output = str(tmp_path / "run")
    model, data, history = finetune(config, output, verbose=0)
    best = max(row["val_mean_iou"] for row in history)
    report(test="finetune_segmentation_digits", val_mean_iou=best, epochs=len(history))
    assert best >= SEGMENTATION_MIOU, history

    # the mean IoU Keras logged is the numpy one on the same predictions
    images, masks = next(iter(dense.segmentation_validation(data, 64, 64)))
    predicted = np.argmax(keras.ops.convert_to_numpy(model.predict(images, verbose=0)), axis=-1)
    scores = metrics.segmentation_scores(metrics.confusion_matrix(masks.numpy(), predicted, data.num_classes))
    assert scores["mIoU"] > 0.5 * SEGMENTATION_MIOU, scores

    with open(os.path.join(output, "log.csv")) as f:
        assert "val_mean_iou" in next(csv.reader(f))
    assert os.path.exists(os.path.join(output, "curves.png"))
    assert isinstance(keras.saving.load_model(os.path.join(output, "best.keras")), SwinV2ImageSegmenter)
    _, _, again = finetune(config, output, verbose=0)  # finished: nothing retrains
    assert again == history


@pytest.mark.skipif(BACKEND != "tensorflow", reason="learning is checked once, on the TensorFlow pass")
def test_finetune_detection_learns_digit_scenes(tmp_path, small_scenes, report):
    """From scratch, the CI budget buys a detector that finds digits well before it tells them apart
    (measured: class-agnostic AP@0.5 0.50, AP@0.5 0.019, class loss 0.42 -> 0.18 over 8 epochs).
    The losses must fall, the classes must start to separate, and the boxes, whatever their class,
    must beat an untrained detector's (AP 0: nothing clears the 0.05 confidence threshold)."""
    config = _config("detection", DETECTION_EPOCHS, head={"head_conv_layers": 2}, learning_rate=1e-3, clipnorm=5.0)
    output = str(tmp_path / "run")
    model, data, history = finetune(config, output, verbose=0)
    report(
        test="finetune_detection_digits",
        val_ap50=max(row["val_ap50"] for row in history),
        losses=[round(row["loss"], 3) for row in history],
    )
    assert history[-1]["cls_logits_loss"] < 0.6 * history[0]["cls_logits_loss"], history
    assert history[-1]["bbox_regression_loss"] < 0.75 * history[0]["bbox_regression_loss"], history
    assert max(row["val_ap50"] for row in history) > DETECTION_AP50, history

    images, targets = next(iter(dense.detection_validation(data, 64, 64)))
    targets = {key: value.numpy() for key, value in targets.items()}

    def agnostic_ap50(detector):
        detections = detector.predict(images, verbose=0)
        detections = {key: keras.ops.convert_to_numpy(value) for key, value in detections.items()}
        one_class = {**detections, "labels": np.where(detections["labels"] >= 0, 0, -1)}
        truths = {**targets, "labels": np.where(targets["labels"] >= 0, 0, -1)}
        return metrics.average_precision(one_class, truths, 1)["AP50"]

    untrained = swinv2_retinanet(
        SwinV2Backbone(**dict(TINY, **ARCHITECTURE), image_shape=(64, 64, 3)), data.num_object_classes
    )
    trained, baseline = agnostic_ap50(model), agnostic_ap50(untrained)
    report(test="finetune_detection_digits_class_agnostic", ap50=trained, untrained=baseline)
    assert trained > max(baseline, DETECTION_AGNOSTIC_AP50), (trained, baseline)
    with open(os.path.join(output, "log.csv")) as f:
        assert "val_ap50" in next(csv.reader(f))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent, runs once")
def test_cli_dense_options_belong_to_their_task(tmp_path, capsys):
    code = keras_swinv2_cli.main(
        ["finetune", "--task", "detection", "--head-channels", "8", "--output", str(tmp_path / "r")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "swinv2 finetune: error: --head-channels is an option of --task segmentation; got --task detection. "
        "(--debug shows the traceback)"
    ]
