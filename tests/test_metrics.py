"""Detection AP against pycocotools' COCOeval, segmentation IoU against scikit-learn and Keras."""

import contextlib
import csv
import io
import os
import time

import numpy as np
import pytest

import keras

from keras_swinv2 import metrics

once = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="backend-independent, runs once")


# ---------------------------------------------------------------------------
# Detection data
# ---------------------------------------------------------------------------


def _random_boxes(rng, n, size=200.0):
    ymin, xmin = rng.uniform(0, size * 0.8, (2, n))
    height, width = rng.uniform(4, size * 0.4, (2, n))
    return np.stack([ymin, xmin, ymin + height, xmin + width], axis=-1)


def _random_set(seed, num_images=16, num_classes=5):
    """Padded ground truths and detections (noisy copies, duplicates, false positives, tied scores).

    Class 4 has detections but no ground truth (left out of the mean); one image
    has 130 detections of one class (COCOeval keeps the best 100 per image and class).
    """
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for image in range(num_images):
        g = int(rng.integers(0, 9))
        gt_boxes = _random_boxes(rng, g)
        gt_labels = rng.integers(0, num_classes - 1, g)
        d_boxes, d_labels = [], []
        for box, label in zip(gt_boxes, gt_labels):
            for _ in range(int(rng.integers(0, 3))):  # 0 to 2 detections per object
                scale = np.array([box[2] - box[0], box[3] - box[1]] * 2)
                d_boxes.append(box + rng.normal(0, 0.08, 4) * scale)
                d_labels.append(label if rng.random() > 0.1 else rng.integers(0, num_classes))
        extra = 130 if image == 3 else int(rng.integers(0, 6))
        d_boxes.extend(_random_boxes(rng, extra))
        d_labels.extend(np.full(extra, 2) if image == 3 else rng.integers(0, num_classes, extra))
        d_boxes = np.array(d_boxes).reshape(-1, 4)
        d_boxes[:, 2:] = np.maximum(d_boxes[:, 2:], d_boxes[:, :2] + 0.5)
        # scores on a grid of 20 values: many ties, within and across images
        scores = np.round(rng.uniform(0.05, 1.0, len(d_boxes)) * 20) / 20
        gts.append((gt_boxes, gt_labels))
        dets.append((d_boxes, np.array(d_labels, np.int64), scores))
    return _pad(dets, gts)


def _pad(dets, gts):
    """keras-hub's batched format: -1 labels past each image's entries, num_detections."""
    n = len(dets)
    D = max(1, max(len(d[0]) for d in dets)) + 2
    G = max(1, max(len(g[0]) for g in gts)) + 1
    detections = {
        "boxes": np.zeros((n, D, 4), np.float32),
        "labels": np.full((n, D), -1, np.int32),
        "confidence": np.zeros((n, D), np.float32),
        "num_detections": np.array([len(d[0]) for d in dets], np.int32),
    }
    truths = {"boxes": np.zeros((n, G, 4), np.float32), "labels": np.full((n, G), -1, np.int32)}
    for i, ((db, dl, ds), (gb, gl)) in enumerate(zip(dets, gts)):
        detections["boxes"][i, : len(db)] = db
        detections["labels"][i, : len(db)] = dl
        detections["confidence"][i, : len(db)] = ds
        truths["boxes"][i, : len(gb)] = gb
        truths["labels"][i, : len(gb)] = gl
    # padding past num_detections that would count if read: must be ignored
    detections["labels"][:, -1] = 0
    detections["confidence"][:, -1] = 1.0
    detections["boxes"][:, -1] = truths["boxes"][:, 0]
    return detections, truths


def _cocoeval(detections, truths, num_classes):
    """pycocotools' COCOeval (bbox) on the same data, built in memory; returns the evaluator."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        return [xmin, ymin, xmax - xmin, ymax - ymin]

    images, annotations, results = [], [], []
    for i in range(len(truths["labels"])):
        images.append({"id": i + 1, "width": 1000, "height": 1000})
        for box, label in zip(truths["boxes"][i], truths["labels"][i]):
            if label >= 0:
                x, y, w, h = xywh(box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,  # COCOeval takes a match to gt id 0 for no match
                        "image_id": i + 1,
                        "category_id": int(label) + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        n = int(detections["num_detections"][i]) if "num_detections" in detections else len(detections["labels"][i])
        for box, label, score in zip(
            detections["boxes"][i][:n], detections["labels"][i][:n], detections["confidence"][i][:n]
        ):
            if label >= 0:
                results.append(
                    {"image_id": i + 1, "category_id": int(label) + 1, "bbox": xywh(box), "score": float(score)}
                )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


# ---------------------------------------------------------------------------
# Detection AP
# ---------------------------------------------------------------------------


@once
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_pycocotools(seed, report):
    pytest.importorskip("pycocotools")
    num_classes = 5
    detections, truths = _random_set(seed, num_classes=num_classes)
    evaluator = _cocoeval(detections, truths, num_classes)
    ours = metrics.average_precision(detections, truths, num_classes, metrics.coco_thresholds)
    ours50 = metrics.average_precision(detections, truths, num_classes)
    assert ours["AP50"] == ours50["AP"] == ours50["AP50"]
    assert 4 not in ours["per_class"]  # detections, no ground truth: left out, as COCOeval does

    # COCOeval's precision (T, R, K, area, maxDets): per class at area "all", maxDets 100
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    coco_per_class = {
        k: float(precision[:, :, k].mean()) for k in range(num_classes) if (precision[:, :, k] > -1).all()
    }
    assert sorted(coco_per_class) == sorted(ours["per_class"])
    differences = [
        abs(ours["AP"] - evaluator.stats[0]),
        abs(ours["AP50"] - evaluator.stats[1]),
        abs(ours["AP75"] - evaluator.stats[2]),
    ] + [abs(ours["per_class"][k] - v) for k, v in coco_per_class.items()]
    report(
        test="ap_vs_pycocotools", seed=seed, coco_ap=evaluator.stats[0], ap=ours["AP"], max_abs_diff=max(differences)
    )
    assert ours["AP"] == pytest.approx(evaluator.stats[0], abs=1e-12)
    assert ours["AP50"] == pytest.approx(evaluator.stats[1], abs=1e-12)
    assert ours["AP75"] == pytest.approx(evaluator.stats[2], abs=1e-12)
    assert max(differences) < 1e-12
    assert 0.1 < ours["AP"] < 0.9  # neither trivial nor hopeless


@once
def test_equal_iou_goes_to_the_later_ground_truth_as_in_cocoeval():
    pytest.importorskip("pycocotools")
    # Ground truths A = (0, -2, 10, 8) and B = (0, 2, 10, 12) overlap detection d1 = (0, 0, 10, 10)
    # equally: intersection 80, union 120, IoU 2/3. d2 = (0, 4, 10, 14) overlaps B by 2/3 and A by
    # 40/160 = 1/4. COCOeval gives d1 the later of the tied ground truths, B, so d2 (below 0.5 with
    # A) is a false positive: TP, FP, recall 1/2 at precision 1, AP = 51/101 (recall points 0..0.5).
    # Had d1 taken A, d2 would match B and AP would be 1.
    truths = {"boxes": np.array([[[0, -2, 10, 8], [0, 2, 10, 12]]], float), "labels": np.array([[0, 0]])}
    detections = {
        "boxes": np.array([[[0, 0, 10, 10], [0, 4, 10, 14]]], float),
        "labels": np.array([[0, 0]]),
        "confidence": np.array([[0.9, 0.8]]),
    }
    ours = metrics.average_precision(detections, truths, 1)
    assert ours["AP"] == pytest.approx(51 / 101, abs=1e-15)
    assert ours["AP"] == pytest.approx(_cocoeval(detections, truths, 1).stats[1], abs=1e-15)


@once
@pytest.mark.parametrize("height, expected", [(7, 0.5), (7.5, 0.6), (9, 0.9)])
def test_iou_exactly_at_a_threshold_matches_as_in_cocoeval(height, expected):
    pytest.importorskip("pycocotools")
    # One ground truth (0, 0, 10, 10), one detection (0, 0, height, 10) inside it: IoU height/10,
    # exactly the float 0.7 / 0.75 / 0.9. An IoU equal to a threshold matches: 0.7 matches at
    # 0.50..0.70 (5 of the 10 thresholds: AP 0.5), 0.75 at 6 (0.6), 0.9 at 9 (0.9). That needs
    # COCO's linspace thresholds: linspace's 0.7 is the float 0.7 and its 0.9 one ulp below 0.9,
    # where np.arange(0.5, 0.96, 0.05) has 0.7000000000000002 and 0.9000000000000004 (0.4, 0.8).
    truths = {"boxes": [[[0, 0, 10, 10]]], "labels": [[0]]}
    detections = {"boxes": [[[0, 0, height, 10]]], "labels": [[0]], "confidence": [[0.5]]}
    ours = metrics.average_precision(detections, truths, 1, metrics.coco_thresholds)
    assert ours["AP"] == pytest.approx(expected, abs=1e-15)
    as_arrays = {k: np.array(v) for k, v in detections.items()}
    coco = _cocoeval(as_arrays, {k: np.array(v) for k, v in truths.items()}, 1)
    assert ours["AP"] == pytest.approx(coco.stats[0], abs=1e-15)


@once
def test_average_precision_by_hand():
    # One class, two ground truths, three detections:
    #   0.9 overlaps gt 1 exactly            -> TP   tp=1 fp=0  recall 1/2 precision 1
    #   0.8 overlaps nothing                 -> FP   tp=1 fp=1  recall 1/2 precision 1/2
    #   0.7 overlaps gt 2 with IoU 81/100    -> TP   tp=2 fp=1  recall 1   precision 2/3
    # Monotone precision (best at this recall or higher): 1, 2/3, 2/3.
    # Recall points 0, 0.01, ..., 0.50 (51 of them) reach recall 1/2 at precision 1;
    # 0.51 ... 1.00 (50) need recall 1, precision 2/3. AP = (51 + 50 * 2/3) / 101 = 253/303.
    truths = {"boxes": [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)], "labels": [np.array([0, 0])]}
    detections = {
        "boxes": [np.array([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 30, 30]], float)],
        "labels": [np.array([0, 0, 0])],
        "confidence": [np.array([0.9, 0.8, 0.7])],
    }
    result = metrics.average_precision(detections, truths, num_classes=1)
    assert result["AP"] == pytest.approx(253 / 303, abs=1e-15)
    assert result["AP50"] == result["AP"] and result["per_class"] == {0: result["AP"]}
    assert "AP75" not in result
    # At 0.85 the third detection (IoU 0.81) misses: recall 1/2 at precision 1 -> 51/101.
    assert metrics.average_precision(detections, truths, 1, (0.85,))["AP"] == pytest.approx(51 / 101, abs=1e-15)
    # Averaged over thresholds: 0.5 and 0.75 both give 253/303, 0.85 gives 51/101.
    both = metrics.average_precision(detections, truths, 1, (0.5, 0.75, 0.85))
    assert both["AP"] == pytest.approx((2 * 253 / 303 + 51 / 101) / 3, abs=1e-15)
    assert both["AP75"] == pytest.approx(253 / 303, abs=1e-15)


@once
def test_average_precision_input_forms_and_padding():
    detections, truths = _random_set(5)
    batched = metrics.average_precision(detections, truths, 5, metrics.coco_thresholds)
    # lists of per-image arrays, padding and entries past num_detections dropped by hand
    n = detections["num_detections"]
    listed_dets = {
        "boxes": [b[:k] for b, k in zip(detections["boxes"], n)],
        "labels": [lab[:k] for lab, k in zip(detections["labels"], n)],
        "confidence": [s[:k] for s, k in zip(detections["confidence"], n)],
    }
    keep = [lab >= 0 for lab in truths["labels"]]
    listed_truths = {
        "boxes": [b[k] for b, k in zip(truths["boxes"], keep)],
        "labels": [lab[k] for lab, k in zip(truths["labels"], keep)],
    }
    assert metrics.average_precision(listed_dets, listed_truths, 5, metrics.coco_thresholds) == batched
    # num_detections matters: without it the planted padding entries (label 0, confidence 1) count
    without = {k: v for k, v in detections.items() if k != "num_detections"}
    assert (
        metrics.average_precision(without, truths, 5, metrics.coco_thresholds)["per_class"][0]
        != batched["per_class"][0]
    )
    # "xyxy" on both sides gives the same AP: IoU does not care which axis comes first
    swapped = metrics.average_precision(
        dict(detections, boxes=detections["boxes"][..., [1, 0, 3, 2]]),
        dict(truths, boxes=truths["boxes"][..., [1, 0, 3, 2]]),
        5,
        metrics.coco_thresholds,
    )
    assert swapped == batched
    # no ground truth at all: NaN, nothing per class; images without detections are fine
    empty = metrics.average_precision(
        {"boxes": [np.zeros((0, 4))], "labels": [[]], "confidence": [[]]}, {"boxes": [[]], "labels": [[]]}, 3
    )
    assert np.isnan(empty["AP"]) and np.isnan(empty["AP50"]) and empty["per_class"] == {}
    missed = metrics.average_precision(
        {"boxes": [[]], "labels": [[]], "confidence": [[]]}, {"boxes": [[[0, 0, 1, 1]]], "labels": [[1]]}, 3
    )
    assert missed["AP"] == 0.0 and missed["per_class"] == {1: 0.0}


@once
def test_max_detections_keeps_the_best_per_image_and_class():
    # gt 0 and gt 1; the true positive for gt 1 ranks third in its image
    truths = {"boxes": [[[0, 0, 10, 10], [20, 20, 30, 30]]], "labels": [[0, 0]]}
    detections = {
        "boxes": [[[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]],
        "labels": [[0, 0, 0]],
        "confidence": [[0.9, 0.8, 0.7]],
    }
    assert metrics.average_precision(detections, truths, 1, max_detections=2)["AP"] == pytest.approx(51 / 101)
    assert metrics.average_precision(detections, truths, 1, max_detections=3)["AP"] == pytest.approx(253 / 303)


def _good():
    detections = {"boxes": np.zeros((2, 3, 4)), "labels": np.array([[0, -1, -1]] * 2), "confidence": np.ones((2, 3))}
    detections["boxes"][..., 2:] = 1
    truths = {"boxes": np.ones((2, 1, 4)) * [0, 0, 1, 1], "labels": np.zeros((2, 1), int)}
    return detections, truths


@once
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d, t: d.update(boxes=np.zeros((2, 3, 5))), r"shape \(3, 5\); expected \(D, 4\)"),
        (lambda d, t: t.update(boxes=np.zeros((2, 4))), r"shape \(2, 4\); expected a batch of shape \(N, D, 4\)"),
        (lambda d, t: t.update(labels=np.array([[0], [7]])), r"label 7; expected class ids in \[0, 3\)"),
        (lambda d, t: d.update(labels=np.array([[0, 1, 3], [0, -1, -1]])), r"label 3; expected class ids in \[0, 3\)"),
        (lambda d, t: d.update(confidence=np.ones((2, 2))), r"boxes \(3, 4\), labels \(3,\), confidence \(2,\)"),
        (lambda d, t: t.update(labels=np.zeros((3, 1), int)), r"2 boxes, 3 labels"),
        (
            lambda d, t: t.update(boxes=t["boxes"][:1], labels=t["labels"][:1]),
            r"detections are for 2 images but ground_truths for 1",
        ),
        (lambda d, t: d.pop("confidence"), r"detections has no 'confidence'"),
        (lambda d, t: t.update(boxes=np.ones((2, 1, 4)) * [0, 5, 1, 1]), r"max < min: \[0.0, 5.0, 1.0, 1.0\]"),
        (lambda d, t: d.update(num_detections=np.array([3])), r"2 boxes, 2 labels, 2 confidence, 1 num_detections"),
    ],
)
def test_average_precision_rejects_bad_inputs(change, message):
    detections, truths = _good()
    assert metrics.average_precision(detections, truths, 3)["AP"] == 1.0
    change(detections, truths)
    with pytest.raises(ValueError, match=message):
        metrics.average_precision(detections, truths, 3)


# ---------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------


def _segmentation_labels(seed, num_classes=6, shape=(3, 17, 19)):
    rng = np.random.default_rng(seed)
    # class 5 absent from both maps (IoU NaN); class 4 predicted but never true (IoU 0)
    y_true = rng.integers(0, num_classes - 2, shape)
    y_pred = np.where(rng.random(shape) < 0.6, y_true, rng.integers(0, num_classes - 1, shape))
    y_true[rng.random(shape) < 0.15] = 255
    y_pred[y_true == 255] = rng.integers(0, 255, (y_true == 255).sum())  # anything at ignored pixels
    return y_true, y_pred


@once
def test_segmentation_scores_match_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = _segmentation_labels(0)
    confusion = metrics.confusion_matrix(y_true, y_pred, 6)
    keep = y_true != 255
    labels = list(range(6))
    np.testing.assert_array_equal(
        confusion, sklearn_metrics.confusion_matrix(y_true[keep], y_pred[keep], labels=labels)
    )
    scores = metrics.segmentation_scores(confusion)
    expected = sklearn_metrics.jaccard_score(y_true[keep], y_pred[keep], labels=labels, average=None, zero_division=0)
    expected[5] = np.nan  # absent from both maps: scikit-learn's 0 by zero_division, NaN here
    np.testing.assert_allclose(scores["per_class_iou"], expected, rtol=1e-15, equal_nan=True)
    assert np.isnan(scores["per_class_iou"][5]) and scores["per_class_iou"][4] == 0
    assert scores["mIoU"] == pytest.approx(np.nanmean(expected), rel=1e-15)
    assert scores["pixel_accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(y_true[keep], y_pred[keep]), rel=1e-15
    )
    recall = sklearn_metrics.recall_score(y_true[keep], y_pred[keep], labels=labels, average=None, zero_division=np.nan)
    np.testing.assert_allclose(scores["per_class_accuracy"], recall, rtol=1e-15, equal_nan=True)
    assert scores["mean_accuracy"] == pytest.approx(np.nanmean(recall), rel=1e-15)
    # sums over batches: the confusion of the whole set
    parts = sum(metrics.confusion_matrix(t, p, 6) for t, p in zip(y_true, y_pred))
    np.testing.assert_array_equal(parts, confusion)


@once
def test_segmentation_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"y_true has shape \(2, 3\) but y_pred \(2, 3, 4\)"):
        metrics.confusion_matrix(np.zeros((2, 3)), np.zeros((2, 3, 4)), 4)
    with pytest.raises(
        ValueError, match=r"y_true holds class 9 other than ignore_label=255; expected classes in \[0, 4\)"
    ):
        metrics.confusion_matrix(np.array([0, 9]), np.array([0, 0]), 4)
    with pytest.raises(ValueError, match=r"y_pred holds class 4"):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0, 4]), 4)
    with pytest.raises(ValueError, match="square"):
        metrics.segmentation_scores(np.zeros((2, 3)))
    empty = metrics.segmentation_scores(np.zeros((3, 3)))
    assert np.isnan(empty["mIoU"]) and np.isnan(empty["pixel_accuracy"])


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype int64:UserWarning")  # inside MeanIoU, on JAX
def test_keras_mean_iou_on_logits_equals_our_miou():
    # How a segmentation model is monitored during fit: keras.metrics.MeanIoU on the logits,
    # ignoring label 255. Keras averages over classes with a non-zero union, as mIoU here does
    # (class 5 is absent from both maps, class 4 only predicted).
    y_true, y_pred = _segmentation_labels(1, shape=(4, 17, 19))
    y_true = y_true.astype("int32")  # JAX's default integer width
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, y_true.shape + (6,)).astype("float32")
    top = np.where(y_true == 255, rng.integers(0, 6, y_true.shape), y_pred)  # argmax anywhere at ignored pixels
    np.put_along_axis(logits, top[..., None], 10.0, axis=-1)
    keras_metric = keras.metrics.MeanIoU(num_classes=6, ignore_class=255, sparse_y_pred=False)
    keras_metric.update_state(y_true[:2], logits[:2])  # two batches of one shape: one trace
    keras_metric.update_state(y_true[2:], logits[2:])
    ours = metrics.segmentation_scores(metrics.confusion_matrix(y_true, np.argmax(logits, -1), 6))
    assert np.isnan(ours["per_class_iou"][5])
    assert float(keras.ops.convert_to_numpy(keras_metric.result())) == pytest.approx(ours["mIoU"], rel=1e-6)


# ---------------------------------------------------------------------------
# The callback
# ---------------------------------------------------------------------------


class _FixedDetector(keras.Model):
    """A trainable stand-in: `predict` looks the detections up by the image index in x[:, 0]."""

    def __init__(self, detections):
        super().__init__(name="fixed_detector")
        self.dense = keras.layers.Dense(1)
        self.detections = detections
        self.calls = 0

    def call(self, x):
        return self.dense(x)

    def predict(self, x, batch_size=None, verbose=0):
        self.calls += 1
        index = np.asarray(keras.ops.convert_to_numpy(x))[:, 0].astype(int)
        return {k: keras.ops.convert_to_tensor(v[index]) for k, v in self.detections.items()}


class _LookupDetector(keras.Model):
    """Predicts, through Keras' own `predict`, the detections of the image index in x[:, 0]."""

    def __init__(self, detections):
        super().__init__(name="lookup_detector")
        self.tables = {k: keras.ops.convert_to_tensor(v) for k, v in detections.items()}

    def call(self, x):
        index = keras.ops.cast(x[:, 0], "int32")
        return {k: keras.ops.take(v, index, axis=0) for k, v in self.tables.items()}


def _validation_batches(truths, batch_size=5):
    n = len(truths["labels"])
    images = np.arange(n, dtype="float32")[:, None]
    return [
        (images[i : i + batch_size], {k: v[i : i + batch_size] for k, v in truths.items()})
        for i in range(0, n, batch_size)
    ]


def test_callback_writes_average_precision_into_the_logs():
    detections, truths = _random_set(3)
    callback = metrics.DetectionAveragePrecision(
        _validation_batches(truths), num_classes=5, iou_thresholds=metrics.coco_thresholds, name="val_ap"
    )
    model = _FixedDetector(detections)
    callback.set_model(model)
    logs = {"loss": 1.0}
    callback.on_epoch_end(0, logs)
    expected = metrics.average_precision(detections, truths, 5, metrics.coco_thresholds)
    assert model.calls == 4  # 16 images in batches of 5
    assert isinstance(logs["val_ap"], float) and logs["val_ap"] == pytest.approx(expected["AP"], abs=1e-12)
    assert callback.result["per_class"] == pytest.approx(expected["per_class"], abs=1e-12)
    callback.on_epoch_end(1, logs)  # a list is re-iterable: the same value again
    assert model.calls == 8 and logs["val_ap"] == pytest.approx(expected["AP"], abs=1e-12)
    # the same through Keras' predict and the backend's tensors
    callback.set_model(_LookupDetector(detections))
    logs = {}
    callback.on_epoch_end(2, logs)
    assert logs["val_ap"] == pytest.approx(expected["AP"], abs=1e-12)


def test_callback_value_reaches_later_callbacks_in_fit(tmp_path):
    detections, truths = _random_set(4)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        validation = tf.data.Dataset.from_tensor_slices((np.arange(16, dtype="float32")[:, None], truths)).batch(6)
    else:
        validation = _validation_batches(truths, 6)
    model = _FixedDetector(detections)
    model.compile(optimizer="sgd", loss="mse")
    log = tmp_path / "log.csv"
    callbacks = [
        metrics.DetectionAveragePrecision(validation, num_classes=5),  # first: later ones read what it writes
        keras.callbacks.CSVLogger(str(log)),
    ]
    start = time.perf_counter()
    history = model.fit(np.zeros((4, 1)), np.zeros((4, 1)), epochs=2, verbose=0, callbacks=callbacks)
    expected = metrics.average_precision(detections, truths, 5)["AP"]
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val_ap50"]) for r in rows] == pytest.approx([expected] * 2, abs=1e-12)
    assert history.history["val_ap50"] == pytest.approx([expected] * 2, abs=1e-12)
    assert time.perf_counter() - start < 30 and os.path.getsize(log) > 0


def test_callback_rejects_what_it_cannot_use():
    _, truths = _random_set(3)

    class Plain(keras.Model):
        def call(self, x):
            return x

        def predict(self, x, batch_size=None, verbose=0):
            return np.zeros((len(x), 3))

    callback = metrics.DetectionAveragePrecision(_validation_batches(truths), num_classes=5)
    callback.set_model(Plain())
    with pytest.raises(ValueError, match=r"a dict with 'boxes', 'labels' and 'confidence'.*got ndarray"):
        callback.on_epoch_end(0, {})
    callback = metrics.DetectionAveragePrecision(iter([]), num_classes=5)
    callback.set_model(Plain())
    with pytest.raises(ValueError, match="yielded no batches"):
        callback.on_epoch_end(0, {})
