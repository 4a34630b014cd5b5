"""tf.data input pipelines for semantic segmentation and object detection.

Sources give dict examples `{"image": uint8 (h, w, 3), "mask": uint8 (h, w),
"boxes": float32 (n, 4), "labels": int32 (n,)}`: a mask holds class ids
(0 = background, `IGNORE_LABEL` = 255 = not scored), boxes are absolute pixel
"yxyx" (ymin, xmin, ymax, xmax; the max edges exclusive) and labels the boxes'
object classes, where object class j is mask class j + 1. The sources are
`digit_scenes` (scenes of scikit-learn's handwritten digits, offline: the demo
and the tests) and `tfds_dense_data` (Oxford-IIIT Pet and Pascal VOC,
prepared locally).

As in `keras_swinv2.data.pipeline`, training batches are a pure function of
`(seed, epoch)`, so a run resumed at epoch k sees exactly the batches an
uninterrupted run saw. The augmentation (`DenseAugmentation`: horizontal flip,
scale jitter) is written with TensorFlow's stateless random ops, each example's
draws seeded from (seed, epoch, position in the epoch), rather than with Keras'
preprocessing layers: the layers draw from a generator whose state they carry
between calls, which the streams would have to reset per batch and map
sequentially to stay reproducible, and masks and boxes must follow the image
through one shared draw (nearest-neighbour masks padded with the ignore label,
boxes clipped and dropped when they leave the image), which is plain to write
and to test with explicit ops.

`check_masks` and `check_boxes` validate user data (targets of
`keras_swinv2` segmenters and detectors) with messages that say what is wrong;
the TFDS sources are not checked example by example.
"""

import dataclasses
import difflib
import logging

import numpy as np

from keras_swinv2.data.pipeline import _normalize, _split, _tf
from keras_swinv2.data.pipeline import steps_per_epoch as _steps_per_epoch

logger = logging.getLogger("keras_swinv2")

IGNORE_LABEL = 255
BOX_FORMATS = ("yxyx", "xyxy", "xywh", "center_xywh", "center_yxhw")
TFDS_DENSE_DATASETS = ("oxford_iiit_pet", "voc/2007", "voc/2012")
# Detection targets are padded to this many boxes when a source does not know its most
# objects per image (keras-hub's RetinaNet keeps 100 detections per image).
DEFAULT_MAX_BOXES = 100


@dataclasses.dataclass
class DenseData:
    """An image dataset with segmentation masks and object boxes, split in two.

    Attributes:
        train, validation: `tf.data.Dataset`s of dicts `{"image": uint8
            (h, w, 3), "mask": uint8 (h, w), "boxes": float32 (n, 4) absolute
            pixel yxyx, "labels": int32 (n,)}` in a fixed order.
        class_names: list of str, the segmentation classes, "background"
            first: mask id i is `class_names[i]`.
        train_size, validation_size: int.
        has_masks: bool, False when the masks carry no labels (all
            `IGNORE_LABEL`); the segmentation streams refuse such data.
        max_boxes: int or None, the most boxes in one image of either split
            when known; detection targets are padded to it.
    """

    train: object
    validation: object
    class_names: list
    train_size: int
    validation_size: int
    has_masks: bool = True
    max_boxes: int = None

    @property
    def num_classes(self):
        """Segmentation classes, the background included."""
        return len(self.class_names)

    @property
    def object_class_names(self):
        """Detection classes: detection label j is mask id j + 1."""
        return self.class_names[1:]

    @property
    def num_object_classes(self):
        return len(self.class_names) - 1


# ---------------------------------------------------------------------------------------------
# Checks


def _to_numpy(x):
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu()
    return np.asarray(x)


def _plural(count, word):
    return f"{count} {word}" + ("" if count == 1 else "s")


def check_masks(masks, num_classes, ignore_label=IGNORE_LABEL, image_shape=None):
    """Raises ValueError unless `masks` are valid segmentation targets.

    Args:
        masks: array or tensor of class ids, (batch, H, W).
        num_classes: int, segmentation classes including the background.
        ignore_label: int label that is not scored (None: none allowed).
        image_shape: optional shape of the images the masks belong to:
            (batch, H, W, C), or (H, W, C) / (H, W) to check the size only.
    """
    m = _to_numpy(masks)
    expected = None
    if image_shape is not None:
        shape = tuple(int(d) for d in image_shape)
        if len(shape) == 4:
            expected = shape[:3]
        elif m.ndim == 3:
            expected = (m.shape[0],) + shape[:2]
    if m.ndim != 3 or (expected is not None and tuple(m.shape) != expected):
        matching = f" matching the images {tuple(image_shape)}" if image_shape is not None else ""
        hint = " Squeeze the trailing channel axis." if m.ndim == 4 and m.shape[-1] == 1 else ""
        raise ValueError(f"masks must be (batch, H, W) class ids{matching}; got shape {tuple(m.shape)}.{hint}")
    if m.dtype.kind not in "iub":
        if m.dtype.kind != "f" or not np.all(np.isfinite(m)) or np.any(m != np.round(m)):
            bad = m[~np.isfinite(m) | (m != np.round(m))] if m.dtype.kind == "f" else m.ravel()
            raise ValueError(
                f"mask labels must be integer class ids; found {bad.ravel()[:3].tolist()} (dtype {m.dtype})."
            )
    values, counts = np.unique(m.astype("int64"), return_counts=True)
    bad = (values < 0) | (values >= num_classes)
    if ignore_label is not None:
        bad &= values != ignore_label
    if bad.any():
        found = ", ".join(f"{v} ({_plural(c, 'pixel')})" for v, c in zip(values[bad][:5], counts[bad][:5]))
        allowed = f"[0, {num_classes})" + (f" or the ignore label {ignore_label}" if ignore_label is not None else "")
        raise ValueError(
            f"mask labels must be in {allowed}; found {found}. "
            f"num_classes counts the background (class 0); here it is {num_classes}."
        )


def _spatial(image_shape):
    shape = tuple(int(d) for d in image_shape)
    if len(shape) == 2:
        return shape
    if len(shape) == 3:
        return shape[:2]
    if len(shape) == 4:
        return shape[1:3]
    raise ValueError(f"image_shape must be (H, W), (H, W, C) or (batch, H, W, C); got {shape}.")


def _as_yxyx(boxes, bounding_box_format):
    """(n, 4) boxes in `bounding_box_format` -> yxyx, and the (n, 2) extents (height, width) as given."""
    a, b, c, d = boxes.T
    if bounding_box_format == "yxyx":
        return boxes, np.stack([c - a, d - b], -1)
    if bounding_box_format == "xyxy":
        return np.stack([b, a, d, c], -1), np.stack([d - b, c - a], -1)
    if bounding_box_format == "xywh":
        return np.stack([b, a, b + d, a + c], -1), np.stack([d, c], -1)
    if bounding_box_format == "center_xywh":
        return np.stack([b - d / 2, a - c / 2, b + d / 2, a + c / 2], -1), np.stack([d, c], -1)
    return np.stack([a - c / 2, b - d / 2, a + c / 2, b + d / 2], -1), np.stack([c, d], -1)  # center_yxhw


def check_boxes(boxes, image_shape, bounding_box_format="yxyx"):
    """Raises ValueError unless `boxes` are valid absolute pixel boxes inside the image.

    Args:
        boxes: array or tensor, (n, 4) or (batch, n, 4); all-zero rows (the
            padding of detection targets) pass.
        image_shape: (H, W), (H, W, C) or (batch, H, W, C).
        bounding_box_format: one of `BOX_FORMATS`, absolute pixels: "yxyx"
            (ymin, xmin, ymax, xmax), "xyxy", "xywh" (xmin, ymin, width,
            height), "center_xywh", "center_yxhw".

    A box may reach 1 px beyond the image (rounding of the annotation).
    """
    if bounding_box_format not in BOX_FORMATS:
        raise ValueError(
            f"bounding_box_format {bounding_box_format!r} is not supported; use one of "
            f"{', '.join(repr(f) for f in BOX_FORMATS)} (absolute pixel coordinates)."
        )
    b = _to_numpy(boxes).astype("float64")
    if b.ndim not in (2, 3) or b.shape[-1] != 4:
        raise ValueError(f"boxes must be (n, 4) or (batch, n, 4); got shape {tuple(b.shape)}.")
    height, width = _spatial(image_shape)
    flat = b.reshape(-1, 4)

    def where(i):
        index = np.unravel_index(i, b.shape[:-1])
        return f"box {index[0]}" if b.ndim == 2 else f"box {index[1]} of image {index[0]}"

    if not np.all(np.isfinite(flat)):
        i = int(np.flatnonzero(~np.all(np.isfinite(flat), -1))[0])
        raise ValueError(f"{where(i)} {flat[i].tolist()} is not finite.")
    yxyx, extent = _as_yxyx(flat, bounding_box_format)
    inverted = np.any(extent < 0, -1)
    if inverted.any():
        i = int(np.flatnonzero(inverted)[0])
        if bounding_box_format in ("yxyx", "xyxy"):
            what = "ymax < ymin" if extent[i, 0] < 0 else "xmax < xmin"
            others = "'xyxy' or 'xywh'" if bounding_box_format == "yxyx" else "'yxyx' or 'xywh'"
        else:
            what = "a negative height" if extent[i, 0] < 0 else "a negative width"
            others = "'yxyx' or 'xyxy'"
        raise ValueError(
            f"{where(i)} {flat[i].tolist()} has {what} read as {bounding_box_format!r}; "
            f"are the boxes in another format, e.g. {others}?"
        )
    tolerance = 1.0
    outside = (
        (yxyx[:, 0] < -tolerance)
        | (yxyx[:, 1] < -tolerance)
        | (yxyx[:, 2] > height + tolerance)
        | (yxyx[:, 3] > width + tolerance)
    )
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{where(i)} {flat[i].tolist()} ({bounding_box_format!r}) lies outside the {height}x{width} "
            f"(height x width) image by more than 1 px; boxes must be absolute pixel coordinates."
        )


# ---------------------------------------------------------------------------------------------
# Digit scenes


def _bilinear_matrix(size, source=8):
    """(size, source) weights of a bilinear upscale with half-pixel centres (edges clamped)."""
    position = np.clip((np.arange(size) + 0.5) * source / size - 0.5, 0, source - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, source - 1)
    weight = position - low
    matrix = np.zeros((size, source))
    matrix[np.arange(size), low] += 1 - weight
    matrix[np.arange(size), high] += weight
    return matrix


def _digit_split(seed, validation_fraction=0.2):
    """scikit-learn's digits and a stratified split of their indices: (images, labels, train, validation)."""
    from sklearn.datasets import load_digits

    source = load_digits()
    labels = source.target.astype("int64")
    (train, _), (validation, _) = _split(np.arange(len(labels)), labels, validation_fraction, seed)
    return source.images, labels, train, validation


def _render_scenes(digits, digit_labels, sources, count, image_size, digits_per_image, digit_size, rng):
    """Renders `count` scenes from the digits at indices `sources`; returns a dict of padded numpy arrays.

    Keys: "image" (count, S, S, 3) uint8, "mask" (count, S, S) uint8, "boxes"
    (count, k, 4) float32, "labels" (count, k) int32, "sources" (count, k)
    int64 (the digits' indices, -1 padding) and "counts" (count,), k the most
    digits per image.
    """
    size = image_size
    most = digits_per_image[1]
    images = np.empty((count, size, size, 3), "uint8")
    masks = np.zeros((count, size, size), "uint8")
    boxes = np.zeros((count, most, 4), "float32")
    labels = np.zeros((count, most), "int32")
    used = np.full((count, most), -1, "int64")
    counts = np.zeros(count, "int32")
    matrices = {}
    for i in range(count):
        background = rng.uniform(0, 255, 3)
        noise = rng.uniform(0, 10)
        canvas = background + noise * rng.standard_normal((size, size, 3), dtype="float32")
        placed = []
        for _ in range(rng.integers(digits_per_image[0], digits_per_image[1] + 1)):
            side = int(rng.integers(digit_size[0], digit_size[1] + 1))
            for _attempt in range(100):
                y, x = (int(v) for v in rng.integers(0, size - side + 1, 2))
                if all(y >= py + ps or py >= y + side or x >= px + ps or px >= x + side for py, px, ps in placed):
                    break
            else:
                continue  # no free place left for a digit this size: the scene keeps fewer digits
            placed.append((y, x, side))
            index = int(rng.choice(sources))
            if side not in matrices:
                matrices[side] = _bilinear_matrix(side)
            up = matrices[side] @ digits[index] @ matrices[side].T
            alpha = np.clip(up / up.max(), 0, 1)[..., None]
            for _try in range(10):
                colour = rng.uniform(0, 255, 3)
                if abs(colour.mean() - background.mean()) >= 80:
                    break
            else:
                colour = np.full(3, 0.0 if background.mean() > 127 else 255.0)
            window = canvas[y : y + side, x : x + side]
            canvas[y : y + side, x : x + side] = window * (1 - alpha) + colour * alpha
            digit_mask = alpha[..., 0] > 0.35
            masks[i, y : y + side, x : x + side][digit_mask] = digit_labels[index] + 1
            rows, cols = np.flatnonzero(digit_mask.any(1)), np.flatnonzero(digit_mask.any(0))
            n = counts[i]
            boxes[i, n] = (y + rows[0], x + cols[0], y + rows[-1] + 1, x + cols[-1] + 1)
            labels[i, n] = digit_labels[index]
            used[i, n] = index
            counts[i] += 1
        images[i] = np.clip(np.round(canvas), 0, 255)
    return {"image": images, "mask": masks, "boxes": boxes, "labels": labels, "sources": used, "counts": counts}


def _from_arrays(scenes):
    tf = _tf()

    def example(image, mask, boxes, labels, count):
        return {"image": image, "mask": mask, "boxes": boxes[:count], "labels": labels[:count]}

    keys = ("image", "mask", "boxes", "labels", "counts")
    return tf.data.Dataset.from_tensor_slices(tuple(scenes[k] for k in keys)).map(example).cache()


def digit_scenes(
    image_size=64, train_size=1024, validation_size=256, digits_per_image=(1, 3), digit_size=(14, 28), seed=0
):
    """Scenes of real handwritten digits with masks and boxes: an offline dense-prediction dataset.

    The 1797 digits of scikit-learn's `load_digits` (8x8 px) are first split
    80/20, stratified by class, so validation scenes hold handwriting never
    seen in training. Each scene is an `image_size` square of a random colour
    with mild noise, holding `digits_per_image` (inclusive range) digits, each
    upscaled (bilinear) to a random side in `digit_size` (inclusive), drawn in
    a colour that contrasts with the background, at a random place where it
    overlaps no other digit's square (a digit that finds no free place is
    left out). Mask: class `digit + 1` where the upscaled digit reaches 0.35
    of its maximum, else 0 (11 classes: "background", "0".."9"). Box: the
    tight box of those pixels; label: the digit.

    Deterministic for a `seed`; no download.
    """
    if not 1 <= digits_per_image[0] <= digits_per_image[1]:
        raise ValueError(f"digits_per_image must be (min, max) with 1 <= min <= max; got {digits_per_image}.")
    if not 1 <= digit_size[0] <= digit_size[1] <= image_size:
        raise ValueError(f"digit_size must be (min, max) sides within image_size {image_size}; got {digit_size}.")
    digits, digit_labels, train_sources, validation_sources = _digit_split(seed)
    args = (image_size, digits_per_image, digit_size)
    train = _render_scenes(digits, digit_labels, train_sources, train_size, *args, np.random.default_rng([seed, 1]))
    validation = _render_scenes(
        digits, digit_labels, validation_sources, validation_size, *args, np.random.default_rng([seed, 2])
    )
    class_names = ["background"] + [str(d) for d in range(10)]
    for scenes in (train, validation):
        check_masks(scenes["mask"], len(class_names), image_shape=scenes["image"].shape)
        check_boxes(scenes["boxes"], scenes["image"].shape)
    return DenseData(
        _from_arrays(train),
        _from_arrays(validation),
        class_names,
        train_size,
        validation_size,
        has_masks=True,
        max_boxes=int(max(train["counts"].max(initial=0), validation["counts"].max(initial=0))),
    )


# ---------------------------------------------------------------------------------------------
# TFDS


def _rgb(tf, image):
    return tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image


def _pet_example(example):
    """An Oxford-IIIT Pet example -> a dense example.

    The trimap (1 pet, 2 background, 3 border) becomes mask 1 / 0 / 255
    (the border is not scored); one box, the extent of the pet pixels,
    label 0 ("pet"); no box when the trimap has no pet pixel.
    """
    tf = _tf()
    trimap = tf.convert_to_tensor(example["segmentation_mask"])
    trimap = tf.cast(trimap[..., 0] if trimap.shape.rank == 3 else trimap, "int32")
    table = tf.constant([IGNORE_LABEL, 1, 0, IGNORE_LABEL], "uint8")
    mask = tf.gather(table, tf.clip_by_value(trimap, 0, 3))
    pet = tf.equal(trimap, 1)
    rows = tf.where(tf.reduce_any(pet, 1))[:, 0]
    cols = tf.where(tf.reduce_any(pet, 0))[:, 0]
    found = tf.cast(tf.reduce_any(pet), "int32")  # without pet pixels the box (of empty reductions) is cut off
    box = tf.stack([tf.reduce_min(rows), tf.reduce_min(cols), tf.reduce_max(rows) + 1, tf.reduce_max(cols) + 1])
    return {
        "image": _rgb(tf, tf.convert_to_tensor(example["image"])),
        "mask": mask,
        "boxes": tf.reshape(tf.cast(box, "float32"), (1, 4))[:found],
        "labels": tf.zeros((found,), "int32"),
    }


def _voc_example(example):
    """A Pascal VOC example (TFDS) -> a dense example.

    Normalised yxyx boxes become absolute pixels, every object is kept
    (`is_difficult` ones too) with its VOC label; the mask is all
    `IGNORE_LABEL`: TFDS's VOC carries no segmentation masks.
    """
    tf = _tf()
    image = _rgb(tf, tf.convert_to_tensor(example["image"]))
    shape = tf.shape(image)[:2]
    height, width = tf.cast(shape[0], "float32"), tf.cast(shape[1], "float32")
    boxes = tf.reshape(tf.cast(example["objects"]["bbox"], "float32"), (-1, 4))
    return {
        "image": image,
        "mask": tf.fill(shape, tf.constant(IGNORE_LABEL, "uint8")),
        "boxes": boxes * tf.stack([height, width, height, width]),
        "labels": tf.cast(tf.reshape(example["objects"]["label"], (-1,)), "int32"),
    }


def tfds_dense_data(name, data_dir=None):
    """A dense-prediction dataset from TFDS, prepared locally (no download).

    Args:
        name: "oxford_iiit_pet" (trimap segmentation: "background" / "pet",
            the border ignored; one box per image from the pet pixels;
            validates on its "test" split, it has no other), or "voc/2007" /
            "voc/2012" (boxes of the 20 VOC classes; no masks, so
            `has_masks` is False; validates on its "validation" split). A
            version may follow, "oxford_iiit_pet:4.0.0".
        data_dir: TFDS data directory (default `~/tensorflow_datasets`).

    The examples are decoded at full size on each pass (not cached here);
    the streams cache them once resized.
    """
    base = name.split(":")[0]
    if base not in TFDS_DENSE_DATASETS:
        close = difflib.get_close_matches(base, TFDS_DENSE_DATASETS, n=2, cutoff=0.5)
        raise ValueError(
            f"No dense-prediction conversion for TFDS dataset {name!r}"
            + (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ".")
            + f" Supported: {', '.join(TFDS_DENSE_DATASETS)}."
        )
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}. Prepare it once with "
            f"network access (`tfds build {base}` or tfds.load({name!r})) or pass --data-dir."
        )
    if base == "oxford_iiit_pet":
        convert, splits, has_masks, max_boxes = _pet_example, ("train", "test"), True, 1
        class_names = ["background", "pet"]
    else:
        convert, splits, has_masks, max_boxes = _voc_example, ("train", "validation"), False, DEFAULT_MAX_BOXES
        class_names = ["background"] + list(builder.info.features["objects"]["label"].names)
        logger.warning(
            "%s through TFDS carries object boxes but no segmentation masks: its masks are all %d "
            "(ignored), and the segmentation streams refuse it; train detection on it.",
            name,
            IGNORE_LABEL,
        )
    tf = _tf()

    def load(split):
        ds = builder.as_dataset(split=split, shuffle_files=False)
        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def count(split):
        return int(builder.info.splits[split].num_examples)

    return DenseData(
        load(splits[0]),
        load(splits[1]),
        class_names,
        count(splits[0]),
        count(splits[1]),
        has_masks=has_masks,
        max_boxes=max_boxes,
    )


def load_dense_data(spec, data_dir=None, seed=0):
    """Opens a dense-prediction dataset from a command-line style spec: "digits" or "tfds:NAME"."""
    if spec == "digits":
        return digit_scenes(seed=seed)
    if spec.startswith("tfds:"):
        return tfds_dense_data(spec[len("tfds:") :], data_dir=data_dir)
    raise ValueError(
        f"Unknown dense dataset {spec!r}; use 'digits' or 'tfds:NAME' with NAME one of "
        f"{', '.join(TFDS_DENSE_DATASETS)}."
    )


# ---------------------------------------------------------------------------------------------
# Streams


@dataclasses.dataclass
class DenseAugmentation:
    """Training augmentation that moves masks and boxes with the image.

    Attributes:
        flip: random horizontal flips (off by default: a mirrored digit is
            not a digit).
        scale: (min, max) random scale factor, or None: the image is resized
            by the factor, then randomly cropped, or padded (image 0, mask
            `IGNORE_LABEL`), back to the input size; boxes are moved, clipped
            to the image and dropped when less than 1 px of them is left.
    """

    flip: bool = False
    scale: tuple = (0.75, 1.25)

    @classmethod
    def none(cls):
        return cls(flip=False, scale=None)


def _require_masks(data):
    if not data.has_masks:
        raise ValueError(
            "This dataset has no segmentation masks (TFDS's VOC carries boxes only), so a segmenter would "
            "learn nothing from it; use --task detection."
        )


def _resize(example, size):
    """Resizes an example to `size` x `size`: image bilinear (uint8), mask nearest, boxes scaled."""
    tf = _tf()
    image = example["image"]
    shape = tf.cast(tf.shape(image)[:2], "float32")
    resized = tf.image.resize(tf.cast(image, "float32"), (size, size), method="bilinear", antialias=True)
    out = {
        "image": tf.ensure_shape(tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), "uint8"), (size, size, 3)),
        "boxes": tf.reshape(tf.cast(example["boxes"], "float32"), (-1, 4))
        * tf.tile(tf.constant([size, size], "float32") / shape, [2]),
        "labels": tf.cast(example["labels"], "int32"),
    }
    if "mask" in example:
        mask = tf.image.resize(example["mask"][..., None], (size, size), method="nearest")[..., 0]
        out["mask"] = tf.ensure_shape(tf.cast(mask, "uint8"), (size, size))
    return out


def _place(tensor, size, dy, dx, fill):
    """The `size` x `size` window of `tensor` (n x n) placed with its corner at (dy, dx), padded with `fill`."""
    tf = _tf()
    n = tf.shape(tensor)[0]
    top, left = tf.maximum(dy, 0), tf.maximum(dx, 0)
    extent = tf.minimum(n, size)
    window = tensor[tf.maximum(-dy, 0) :, tf.maximum(-dx, 0) :][:extent, :extent]
    paddings = [[top, size - top - extent], [left, size - left - extent]] + [[0, 0]] * (len(tensor.shape) - 2)
    return tf.pad(window, paddings, constant_values=fill)


def _augment(example, size, augmentation, seed):
    """Flip and scale jitter of a `size` x `size` example (image float32), drawn from the stateless `seed`."""
    tf = _tf()
    image, boxes, labels = example["image"], example["boxes"], example["labels"]
    mask = example.get("mask")
    fold = tf.random.experimental.stateless_fold_in
    if augmentation.scale is not None:
        scale = tf.random.stateless_uniform([], fold(seed, 0), *augmentation.scale)
        n = tf.maximum(tf.cast(tf.round(size * scale), "int32"), 1)
        low, high = tf.minimum(0, size - n), tf.maximum(0, size - n)
        dy = tf.random.stateless_uniform([], fold(seed, 1), low, high + 1, dtype="int32")
        dx = tf.random.stateless_uniform([], fold(seed, 2), low, high + 1, dtype="int32")
        image = _place(tf.image.resize(image, (n, n), method="bilinear"), size, dy, dx, 0.0)
        if mask is not None:
            mask = tf.image.resize(mask[..., None], (n, n), method="nearest")[..., 0]
            mask = _place(mask, size, dy, dx, tf.constant(IGNORE_LABEL, mask.dtype))
        shift = tf.cast(tf.stack([dy, dx, dy, dx]), "float32")
        boxes = tf.clip_by_value(boxes * (tf.cast(n, "float32") / size) + shift, 0.0, float(size))
        keep = (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)
        boxes, labels = tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep)
    if augmentation.flip:
        flip = tf.random.stateless_uniform([], fold(seed, 3)) < 0.5
        image = tf.where(flip, image[:, ::-1], image)
        if mask is not None:
            mask = tf.where(flip, mask[:, ::-1], mask)
        flipped = tf.stack([boxes[:, 0], size - boxes[:, 3], boxes[:, 2], size - boxes[:, 1]], -1)
        boxes = tf.where(flip, flipped, boxes)
    out = {"image": tf.ensure_shape(image, (size, size, 3)), "boxes": boxes, "labels": labels}
    if mask is not None:
        out["mask"] = tf.ensure_shape(mask, (size, size))
    return out


def _segmentation_target(example):
    tf = _tf()
    return tf.cast(example["image"], "float32"), tf.cast(example["mask"], "int32")


def _detection_target(max_boxes):
    def target(example):
        tf = _tf()
        boxes = example["boxes"][:max_boxes]
        labels = tf.cast(example["labels"][:max_boxes], "float32")
        missing = max_boxes - tf.shape(labels)[0]
        boxes = tf.ensure_shape(tf.pad(boxes, [[0, missing], [0, 0]]), (max_boxes, 4))
        labels = tf.ensure_shape(tf.pad(labels, [[0, missing]], constant_values=-1.0), (max_boxes,))
        return tf.cast(example["image"], "float32"), {"boxes": boxes, "labels": labels}

    return target


def _max_boxes(data, max_boxes):
    if max_boxes is not None:
        return int(max_boxes)
    if data.max_boxes is not None:
        return int(data.max_boxes)
    tf = _tf()
    counts = data.train.concatenate(data.validation).map(lambda e: tf.shape(e["labels"])[0])
    return max(1, int(counts.reduce(0, tf.maximum)))


def _training_stream(data, image_size, batch_size, epochs, initial_epoch, seed, augmentation, keys, target):
    tf = _tf()
    aug = augmentation if augmentation is not None else DenseAugmentation()

    def resize(example):
        return _resize({k: example[k] for k in keys}, image_size)

    source = data.train.map(resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()

    @tf.function  # traced once, shared by the epochs
    def per_image(epoch_seed, index, example):
        example = dict(example, image=tf.cast(example["image"], "float32"))
        return target(_augment(example, image_size, aug, tf.stack([epoch_seed, index])))

    def epoch_batches(epoch):
        epoch_seed = seed * 100003 + epoch
        ds = source.shuffle(data.train_size, seed=epoch_seed, reshuffle_each_iteration=False).enumerate()
        ds = ds.map(
            lambda index, example: per_image(tf.constant(epoch_seed, "int64"), index, example),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        ds = ds.batch(batch_size, drop_remainder=True)
        return ds.map(lambda images, y: (_normalize(tf, images), y))

    stream = epoch_batches(initial_epoch)
    for epoch in range(initial_epoch + 1, epochs):
        stream = stream.concatenate(epoch_batches(epoch))
    return stream.prefetch(tf.data.AUTOTUNE)


def _validation_batches(data, image_size, batch_size, keys, target):
    tf = _tf()
    ds = data.validation.map(
        lambda e: target(_resize({k: e[k] for k in keys}, image_size)), num_parallel_calls=tf.data.AUTOTUNE
    )
    ds = ds.cache().batch(batch_size).map(lambda images, y: (_normalize(tf, images), y))
    return ds.prefetch(tf.data.AUTOTUNE)


def segmentation_stream(data, image_size, batch_size, epochs, initial_epoch=0, seed=0, augmentation=None):
    """Segmentation training batches for epochs `initial_epoch .. epochs - 1`, as one `tf.data.Dataset`.

    Each epoch has `data.train_size // batch_size` batches (the remainder is
    dropped) of `(images (batch, size, size, 3) float32 normalised with the
    ImageNet mean/std, masks (batch, size, size) int32)`. Images are resized
    bilinearly to `image_size` squares, masks by nearest neighbour; then
    augmented. Use it with `fit(stream, epochs=epochs,
    initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch(data,
    batch_size))`.

    tf.data mixes TensorFlow's global seed, when one is set, into its
    shuffle seeds (as in `pipeline.training_stream`): a resumed run gets the
    same batches when it sets the global seed as the first run did (e.g.
    `keras.utils.set_random_seed(seed)` before building the stream).

    Args:
        data: `DenseData` with masks.
        image_size: int, side of the model input.
        batch_size: int.
        epochs: int, the last epoch (exclusive) the stream covers.
        initial_epoch: int, the first epoch it yields (for resuming).
        seed: int; batches depend only on (seed, epoch).
        augmentation: `DenseAugmentation` (default: its defaults);
            `DenseAugmentation.none()` for none.
    """
    _require_masks(data)
    return _training_stream(
        data,
        image_size,
        batch_size,
        epochs,
        initial_epoch,
        seed,
        augmentation,
        ("image", "mask", "boxes", "labels"),
        _segmentation_target,
    )


def segmentation_validation(data, image_size, batch_size):
    """Segmentation validation batches: resized, normalised images and int32 masks; cached after the first pass."""
    _require_masks(data)
    return _validation_batches(data, image_size, batch_size, ("image", "mask", "boxes", "labels"), _segmentation_target)


def detection_stream(data, image_size, batch_size, epochs, initial_epoch=0, seed=0, augmentation=None, max_boxes=None):
    """Detection training batches for epochs `initial_epoch .. epochs - 1`, as one `tf.data.Dataset`.

    Batches are `(images, {"boxes": (batch, max_boxes, 4) float32, "labels":
    (batch, max_boxes) float32})`, the target format of keras-hub's
    `RetinaNetObjectDetector` with `bounding_box_format="yxyx"`: boxes in
    absolute pixels of the `image_size` square input, padded with zero boxes
    labelled -1. Otherwise as `segmentation_stream` (the other arguments
    too), with the same images for the same arguments.

    Args:
        max_boxes: int, boxes per image in the targets (extra boxes are
            dropped); default `data.max_boxes`, else the most boxes of any
            image (one pass over the data).
    """
    target = _detection_target(_max_boxes(data, max_boxes))
    return _training_stream(
        data, image_size, batch_size, epochs, initial_epoch, seed, augmentation, ("image", "boxes", "labels"), target
    )


def detection_validation(data, image_size, batch_size, max_boxes=None):
    """Detection validation batches, resized and normalised, targets as `detection_stream`'s; cached."""
    target = _detection_target(_max_boxes(data, max_boxes))
    return _validation_batches(data, image_size, batch_size, ("image", "boxes", "labels"), target)


def steps_per_epoch(data, batch_size):
    """Training batches per epoch, `data.train_size // batch_size` (at least 1, else ValueError)."""
    return _steps_per_epoch(data, batch_size)
