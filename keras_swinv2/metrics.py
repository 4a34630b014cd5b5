"""Evaluation metrics for dense prediction: COCO-style detection AP and segmentation IoU.

The functions are plain numpy (run them on whatever `predict` returned); the one
Keras piece is `DetectionAveragePrecision`, a callback that writes the AP into
the epoch logs so that `CSVLogger`, `ModelCheckpoint` and
`keras_swinv2.training.ResumableTraining` can log it and pick models by it.

Detection inputs use keras-hub's `ObjectDetector` format, batched (padded) or
as per-image lists:

- detections: `{"boxes": (N, D, 4), "labels": (N, D), "confidence": (N, D),
  "num_detections": (N,)}` (the last optional);
- ground truths: `{"boxes": (N, G, 4), "labels": (N, G)}`, label -1 = padding;

boxes in absolute pixel corners, "yxyx" (ymin, xmin, ymax, xmax). IoU is
symmetric in the two axes, so "xyxy" gives the same numbers as long as both
sides use it; centre or width/height formats ("xywh", "center_yxhw") do not.

`average_precision` computes what pycocotools' `COCOeval` (iouType "bbox",
area range "all", maxDets 100) reports as its first two stats, to float
rounding; tests/test_metrics.py checks it against pycocotools itself.
"""

import numpy as np

import keras

# COCO's ten IoU thresholds 0.50, 0.55, ..., 0.95. Made with linspace, as COCOeval
# does: np.arange(0.5, 0.96, 0.05) gives values up to 4e-16 above these, which
# turns a detection with an IoU of exactly 0.7 (say) from a match into a miss.
coco_thresholds = np.linspace(0.5, 0.95, 10)

# The 101 recall points at which precision is sampled, made the way COCOeval makes
# them: 10 of linspace's values differ from k / 100 in the last bit, and a recall
# of exactly k / npig that falls on one of them is counted on one side or the other.
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


# ---------------------------------------------------------------------------
# Detection: average precision
# ---------------------------------------------------------------------------


def _per_image(arg, key, value, expected_ndim):
    """Splits a batched array, or takes a list of per-image arrays, into a list of arrays."""
    if isinstance(value, (list, tuple)):
        return [np.asarray(v) for v in value]
    array = np.asarray(value)
    if array.ndim != expected_ndim:
        wanted = {1: "(N,)", 2: "(N, D)", 3: "(N, D, 4)"}[expected_ndim]
        raise ValueError(
            f"{arg}[{key!r}] has shape {array.shape}; expected a batch of shape {wanted} "
            "(or a list with one array per image)."
        )
    return list(array)


def _empty_as_boxes(boxes):
    """An image's empty list of boxes (shape (0,)) as (0, 4)."""
    return boxes.reshape(0, 4) if boxes.ndim == 1 and boxes.size == 0 else boxes


def _labels(arg, key, labels, image, num_classes):
    """Checks one image's labels (integers in [0, num_classes) or -1) and returns them as int64."""
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(f"{arg}[{key!r}] of image {image} holds non-integer values; expected class ids.")
    labels = labels.astype(np.int64)
    bad = labels[(labels < -1) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(
            f"{arg}[{key!r}] of image {image} holds label {int(bad[0])}; expected class ids in "
            f"[0, {num_classes}) (num_classes={num_classes}), or -1 for padding."
        )
    return labels


def _boxes(arg, boxes, image):
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{arg}['boxes'] of image {image} holds NaN or infinite coordinates.")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if np.any(inverted):
        raise ValueError(
            f"{arg}['boxes'] of image {image} holds a box with max < min: {boxes[inverted][0].tolist()}; "
            "expected absolute corners (ymin, xmin, ymax, xmax). Boxes in a width/height or centre "
            "format must be converted first (keras_hub.utils.convert_format)."
        )
    return boxes.astype(np.float64)


def _read_detections(detections, num_classes):
    """Per image: (boxes (d, 4), labels (d,), scores (d,)) of the valid detections."""
    for key in ("boxes", "labels", "confidence"):
        if key not in detections:
            raise ValueError(
                f"detections has no {key!r}; expected a dict with 'boxes', 'labels', 'confidence' "
                f"(and optionally 'num_detections'), got keys {sorted(detections)}."
            )
    boxes = _per_image("detections", "boxes", detections["boxes"], 3)
    labels = _per_image("detections", "labels", detections["labels"], 2)
    scores = _per_image("detections", "confidence", detections["confidence"], 2)
    counts = detections.get("num_detections")
    if counts is not None:
        counts = np.asarray(counts).reshape(-1)
    if not len(boxes) == len(labels) == len(scores) or (counts is not None and len(counts) != len(boxes)):
        sizes = f"{len(boxes)} boxes, {len(labels)} labels, {len(scores)} confidence"
        if counts is not None:
            sizes += f", {len(counts)} num_detections"
        raise ValueError(f"detections hold different numbers of images: {sizes}.")
    out = []
    for i, (b, lab, s) in enumerate(zip(boxes, labels, scores)):
        b, lab, s = _empty_as_boxes(b), lab.reshape(-1), s.reshape(-1)
        if b.ndim != 2 or b.shape[-1] != 4:
            raise ValueError(
                f"detections['boxes'] of image {i} has shape {b.shape}; expected (D, 4): "
                "4 coordinates (ymin, xmin, ymax, xmax) per detection."
            )
        if not len(b) == len(lab) == len(s):
            raise ValueError(
                f"detections of image {i} disagree on the number of detections: boxes {b.shape}, "
                f"labels {lab.shape}, confidence {s.shape}; expected (D, 4), (D,), (D,)."
            )
        lab = _labels("detections", "labels", lab, i, num_classes)
        keep = lab >= 0
        if counts is not None:
            keep &= np.arange(len(lab)) < int(counts[i])
        s = s[keep].astype(np.float64)
        if np.any(np.isnan(s)):
            raise ValueError(f"detections['confidence'] of image {i} holds NaN.")
        out.append((_boxes("detections", b[keep], i), lab[keep], s))
    return out


def _read_ground_truths(ground_truths, num_classes):
    """Per image: (boxes (g, 4), labels (g,)) of the real (non-padding) ground truths."""
    for key in ("boxes", "labels"):
        if key not in ground_truths:
            raise ValueError(
                f"ground_truths has no {key!r}; expected a dict with 'boxes' and 'labels', "
                f"got keys {sorted(ground_truths)}."
            )
    boxes = _per_image("ground_truths", "boxes", ground_truths["boxes"], 3)
    labels = _per_image("ground_truths", "labels", ground_truths["labels"], 2)
    if len(boxes) != len(labels):
        raise ValueError(f"ground_truths hold different numbers of images: {len(boxes)} boxes, {len(labels)} labels.")
    out = []
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        b, lab = _empty_as_boxes(b), lab.reshape(-1)
        if b.ndim != 2 or b.shape[-1] != 4:
            raise ValueError(
                f"ground_truths['boxes'] of image {i} has shape {b.shape}; expected (G, 4): "
                "4 coordinates (ymin, xmin, ymax, xmax) per box."
            )
        if len(b) != len(lab):
            raise ValueError(
                f"ground_truths of image {i} disagree on the number of boxes: boxes {b.shape}, "
                f"labels {lab.shape}; expected (G, 4) and (G,)."
            )
        lab = _labels("ground_truths", "labels", lab, i, num_classes)
        keep = lab >= 0
        out.append((_boxes("ground_truths", b[keep], i), lab[keep]))
    return out


def box_iou(boxes1, boxes2):
    """IoU of every pair of boxes in continuous coordinates (area = height * width, no +1).

    Args:
        boxes1: (n, 4) corners (ymin, xmin, ymax, xmax).
        boxes2: (m, 4) corners, same format.

    Returns:
        (n, m) float64 array; 0 where boxes do not overlap (or have no area).
    """
    a = np.asarray(boxes1, np.float64)[:, None, :]
    b = np.asarray(boxes2, np.float64)[None, :, :]
    height = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    width = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    overlap = (height > 0) & (width > 0)
    intersection = np.where(overlap, height * width, 0.0)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=overlap)


def _greedy_match(iou, thresholds):
    """Which detections (rows of `iou`, best first) match a ground truth, at each threshold.

    Each detection in turn takes the not yet matched ground truth with the highest
    IoU >= the threshold; among equal IoUs the later ground truth wins (COCOeval
    keeps replacing its best candidate while `iou >= best`).

    Returns:
        (T, d) bool.
    """
    num_dets, num_gts = iou.shape
    matched = np.zeros((len(thresholds), num_dets), bool)
    if num_gts == 0:
        return matched
    taken = np.zeros((len(thresholds), num_gts), bool)
    rows = np.arange(len(thresholds))
    for d in range(num_dets):
        eligible = ~taken & (iou[d][None, :] >= thresholds[:, None])
        if not eligible.any():
            continue
        candidates = np.where(eligible, iou[d][None, :], -1.0)
        best = num_gts - 1 - np.argmax(candidates[:, ::-1], axis=1)  # the last of the maxima
        hit = eligible[rows, best]
        matched[hit, d] = True
        taken[rows[hit], best[hit]] = True
    return matched


def _class_ap(scores, matched, num_gts):
    """AP at each threshold of one class from its detections over all images.

    Args:
        scores: (n,) confidence, in image order and, within an image, best first.
        matched: (T, n) bool, whether each detection matched at each threshold.
        num_gts: int > 0, the class's ground truths over all images.

    Returns:
        (T,) float64.
    """
    if len(scores) == 0:
        return np.zeros(matched.shape[0])
    # Stable: equal scores keep image order, as COCOeval's mergesort does.
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)
    fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
    recall = tp / num_gts
    precision = tp / (tp + fp)
    # The precision envelope: the best precision at this recall or any higher one.
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    ap = np.empty(len(tp))
    for t in range(len(tp)):
        # the first detection whose recall reaches each recall point; none reaches it: precision 0
        first = np.searchsorted(recall[t], _RECALL_POINTS, side="left")
        reached = first < len(scores)
        sampled = np.where(reached, precision[t, np.minimum(first, len(scores) - 1)], 0.0)
        ap[t] = sampled.mean()
    return ap


def average_precision(detections, ground_truths, num_classes, iou_thresholds=(0.5,), max_detections=100):
    """COCO-style box average precision, as pycocotools' COCOeval computes it.

    Per class, the detections of all images are ranked by confidence (ties keep
    image order, then their order within the image). Within each image, a
    detection, best first, is matched to the not yet matched ground truth of its
    class with the highest IoU >= the threshold (the later one on equal IoU);
    unmatched detections are false positives. Precision is made monotone (the
    best precision at any higher recall) and sampled at the 101 recall points
    0, 0.01, ..., 1 (0 past the highest recall reached); AP is their mean.
    Classes with no ground truth anywhere are left out of every mean (as COCO
    does); a class with ground truths but no detections has AP 0.

    This is COCOeval's `stats[0]` (with `coco_thresholds`) and `stats[1]`
    (AP50) for iouType "bbox", area range "all" and maxDets 100. Not modelled:
    crowd or ignored ground truths, and COCOeval's "all" area range, which
    ignores boxes over 1e10 square pixels.

    Args:
        detections: dict with "boxes" (N, D, 4), "labels" (N, D) (-1: none),
            "confidence" (N, D) and optionally "num_detections" (N,) (entries
            past it are ignored), as keras-hub's object detectors predict; or
            the same keys holding lists of per-image arrays (D may differ).
        ground_truths: dict with "boxes" (N, G, 4) and "labels" (N, G), -1
            for padding; or lists of per-image arrays.
        num_classes: int, labels are in [0, num_classes).
        iou_thresholds: IoU thresholds in (0, 1]; `coco_thresholds` for
            COCO's AP@[.5:.95].
        max_detections: int, the most detections kept per image and class,
            highest confidence first (COCOeval's maxDets, which also counts per
            category: a detector that keeps 100 per image never reaches it).

    Returns:
        dict: "AP" (mean over thresholds and classes), "AP50" and "AP75"
        (when 0.5 / 0.75 are among the thresholds), "per_class" ({class id:
        AP averaged over the thresholds}, classes with ground truths only).
        AP values are floats; NaN when no class has a ground truth.

    Raises:
        ValueError: on missing keys, shapes that disagree (images, boxes per
            image, 4 coordinates), labels outside [0, num_classes) other than
            -1, non-finite values or boxes with max < min.
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
    thresholds = np.asarray(iou_thresholds, np.float64).reshape(-1)
    if thresholds.size == 0 or np.any(thresholds <= 0) or np.any(thresholds > 1):
        raise ValueError(f"iou_thresholds must be a non-empty sequence of values in (0, 1]; got {iou_thresholds!r}.")
    if int(max_detections) < 1:
        raise ValueError(f"max_detections must be >= 1; got {max_detections}.")
    dets = _read_detections(detections, num_classes)
    gts = _read_ground_truths(ground_truths, num_classes)
    if len(dets) != len(gts):
        raise ValueError(
            f"detections are for {len(dets)} images but ground_truths for {len(gts)}; expected one entry per image in both."
        )
    # a threshold of 1 still matches an IoU of (almost) 1, as in COCOeval
    match_at = np.minimum(thresholds, 1 - 1e-10)

    num_gts = np.zeros(num_classes, np.int64)
    scores = [[] for _ in range(num_classes)]
    matches = [[] for _ in range(num_classes)]
    for (det_boxes, det_labels, det_scores), (gt_boxes, gt_labels) in zip(dets, gts):
        np.add.at(num_gts, gt_labels, 1)
        for c in np.unique(det_labels):
            in_class = np.flatnonzero(det_labels == c)
            in_class = in_class[np.argsort(-det_scores[in_class], kind="stable")][: int(max_detections)]
            iou = box_iou(det_boxes[in_class], gt_boxes[gt_labels == c])
            scores[c].append(det_scores[in_class])
            matches[c].append(_greedy_match(iou, match_at))

    per_threshold = {}  # class id -> (T,) AP
    for c in np.flatnonzero(num_gts):
        if scores[c]:
            class_scores, class_matches = np.concatenate(scores[c]), np.concatenate(matches[c], axis=1)
        else:
            class_scores, class_matches = np.zeros(0), np.zeros((len(thresholds), 0), bool)
        per_threshold[int(c)] = _class_ap(class_scores, class_matches, num_gts[c])

    table = np.array(list(per_threshold.values())).reshape(-1, len(thresholds))  # (classes, T)
    by_threshold = table.mean(axis=0) if len(table) else np.full(len(thresholds), np.nan)
    result = {"AP": float(by_threshold.mean())}
    for key, value in (("AP50", 0.5), ("AP75", 0.75)):
        at = np.flatnonzero(np.isclose(thresholds, value, rtol=0, atol=1e-9))
        if at.size:
            result[key] = float(by_threshold[at[0]])
    result["per_class"] = {c: float(ap.mean()) for c, ap in per_threshold.items()}
    return result


# ---------------------------------------------------------------------------
# Semantic segmentation: confusion matrix and IoU
# ---------------------------------------------------------------------------


def confusion_matrix(y_true, y_pred, num_classes, ignore_label=255):
    """Counts pixels by (true class, predicted class), leaving out ignored pixels.

    Sum these over a data set, then call `segmentation_scores`.

    Args:
        y_true: integer class map of any shape (e.g. (N, H, W)).
        y_pred: predicted class map of the same shape (the argmax of the logits).
        num_classes: int.
        ignore_label: the `y_true` value of pixels to leave out (their `y_pred`
            may be anything), or None to keep every pixel.

    Returns:
        (num_classes, num_classes) int64 array, rows the true class and columns
        the predicted one (scikit-learn's layout).

    Raises:
        ValueError: when the shapes differ or a kept pixel has a class outside
            [0, num_classes) in either map.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true has shape {y_true.shape} but y_pred {y_pred.shape}; expected the same shape "
            "(take the argmax of logits over the class axis first)."
        )
    y_true, y_pred = y_true.reshape(-1).astype(np.int64), y_pred.reshape(-1).astype(np.int64)
    if ignore_label is not None:
        keep = y_true != ignore_label
        y_true, y_pred = y_true[keep], y_pred[keep]
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            ignored = (
                f" other than ignore_label={ignore_label}" if name == "y_true" and ignore_label is not None else ""
            )
            raise ValueError(
                f"{name} holds class {int(bad[0])}{ignored}; expected classes in [0, {num_classes}) "
                f"(num_classes={num_classes})."
            )
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _nanmean(values):
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def segmentation_scores(confusion):
    """IoU and accuracy from a confusion matrix (rows: true class, columns: predicted).

    `mIoU` here equals `keras.metrics.MeanIoU(num_classes, ignore_class=...)`,
    which also averages only over classes with a non-zero union. The differences
    are at the edges: Keras drops pixels whose class is out of range in either
    map without a word (here: ValueError), returns 0 where no class has a
    pixel (here: NaN), and divides in float32 with 1e-7 added to each
    denominator (relative differences up to ~1e-6).

    Args:
        confusion: (C, C) counts, e.g. `confusion_matrix` summed over a data set.

    Returns:
        dict:
            "per_class_iou": (C,) float64, TP / (TP + FP + FN); NaN for a class
                absent from both truth and prediction.
            "mIoU": float, the mean of the non-NaN per-class IoUs.
            "pixel_accuracy": float, the fraction of pixels classified right.
            "per_class_accuracy": (C,) float64, TP / (pixels of the class);
                NaN for a class with no true pixels.
            "mean_accuracy": float, the mean of the non-NaN per-class accuracies.
        NaN where nothing was counted.
    """
    confusion = np.asarray(confusion, np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion has shape {confusion.shape}; expected a square (C, C) matrix.")
    true_positives = np.diag(confusion)
    per_true = confusion.sum(axis=1)
    union = per_true + confusion.sum(axis=0) - true_positives
    iou = np.full(len(confusion), np.nan)
    np.divide(true_positives, union, out=iou, where=union > 0)
    accuracy = np.full(len(confusion), np.nan)
    np.divide(true_positives, per_true, out=accuracy, where=per_true > 0)
    total = confusion.sum()
    return {
        "per_class_iou": iou,
        "mIoU": _nanmean(iou),
        "pixel_accuracy": float(true_positives.sum() / total) if total > 0 else float("nan"),
        "per_class_accuracy": accuracy,
        "mean_accuracy": _nanmean(accuracy),
    }


# ---------------------------------------------------------------------------
# The Keras callback
# ---------------------------------------------------------------------------


def _to_numpy(x):
    try:
        return np.asarray(x)  # numpy, tf eager tensors, jax arrays, CPU torch tensors
    except (TypeError, ValueError, RuntimeError):
        return keras.ops.convert_to_numpy(x)  # the backend's own tensors elsewhere (e.g. on a GPU)


def _batches(data):
    if isinstance(data, keras.utils.PyDataset):
        return (data[i] for i in range(len(data)))
    return iter(data)


class DetectionAveragePrecision(keras.callbacks.Callback):
    """Writes the box AP on a validation set into the epoch logs, for other callbacks to use.

    At the end of every epoch it runs `model.predict` (batch by batch) over
    `validation_data`, computes `average_precision` and sets
    `logs[name] = AP` (a float), so `CSVLogger`, `ModelCheckpoint(monitor=name)`,
    `EarlyStopping`, `ResumableTraining(monitor=name)` and `History` see it.
    Callbacks are called in list order and see the logs as earlier ones left
    them: put this one FIRST in `callbacks=[...]` (Keras' own History and
    progress bar are added after the list, so they see it anyway).

    The model's predictions must be keras-hub's detector output, a dict with
    "boxes", "labels", "confidence" and optionally "num_detections", in the
    same absolute box format as the ground truths (e.g. a keras-hub
    `RetinaNetObjectDetector` built with `bounding_box_format="yxyx"`).

    Args:
        validation_data: re-iterable batches `(images, {"boxes", "labels"})`
            (a further element such as sample weights is ignored): a
            `tf.data.Dataset`, a `keras.utils.PyDataset`, a list, a torch
            `DataLoader`. A generator would be empty from the second epoch on.
        num_classes: int.
        iou_thresholds: passed to `average_precision` (`coco_thresholds` for
            AP@[.5:.95]).
        name: str, the log key.
        max_detections: passed to `average_precision`.

    Attributes:
        result: the whole `average_precision` dict of the last evaluation.
    """

    def __init__(self, validation_data, num_classes, iou_thresholds=(0.5,), name="val_ap50", max_detections=100):
        super().__init__()
        self.validation_data = validation_data
        self.num_classes = int(num_classes)
        self.iou_thresholds = tuple(float(t) for t in np.asarray(iou_thresholds).reshape(-1))
        self.name = name
        self.max_detections = int(max_detections)
        self.result = None

    def evaluate(self):
        """Predicts over `validation_data` and returns `average_precision`'s dict."""
        detections = {"boxes": [], "labels": [], "confidence": [], "num_detections": []}
        truths = {"boxes": [], "labels": []}
        batches = 0
        for batch in _batches(self.validation_data):
            if not isinstance(batch, (tuple, list)) or len(batch) < 2 or not isinstance(batch[1], dict):
                raise ValueError(
                    "validation_data must yield (images, {'boxes': ..., 'labels': ...}) batches; "
                    f"got a {type(batch).__name__}" + (f" of length {len(batch)}" if hasattr(batch, "__len__") else "")
                )
            images, targets = batch[0], batch[1]
            # `predict`, not `predict_on_batch`: keras-hub 0.32 detectors fail in predict_on_batch on
            # TensorFlow (their predict_step unpacks a 1-tuple of images as (images, targets))
            outputs = self.model.predict(images, batch_size=len(images), verbose=0)
            if not isinstance(outputs, dict) or not {"boxes", "labels", "confidence"} <= set(outputs):
                got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
                raise ValueError(
                    "DetectionAveragePrecision needs a model whose predictions are a dict with 'boxes', "
                    f"'labels' and 'confidence' (keras-hub's object detectors); got {got}."
                )
            outputs = {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}
            boxes, labels = _to_numpy(targets["boxes"]), _to_numpy(targets["labels"])
            count = len(outputs["boxes"])
            if len(boxes) != count:
                raise ValueError(f"the model predicted {count} images for a batch of {len(boxes)} ground truths.")
            num = outputs.get("num_detections")
            num = np.full(count, outputs["labels"].shape[1]) if num is None else num.reshape(-1)
            for key in ("boxes", "labels", "confidence"):
                detections[key].extend(outputs[key])
            detections["num_detections"].extend(num)
            truths["boxes"].extend(boxes)
            truths["labels"].extend(labels)
            batches += 1
        if batches == 0:
            raise ValueError(
                "validation_data yielded no batches (a generator is used up after one pass: "
                "pass a tf.data.Dataset, a PyDataset or a list)."
            )
        return average_precision(
            detections, truths, self.num_classes, iou_thresholds=self.iou_thresholds, max_detections=self.max_detections
        )

    def on_epoch_end(self, epoch, logs=None):
        self.result = self.evaluate()
        if logs is not None:
            logs[self.name] = self.result["AP"]
