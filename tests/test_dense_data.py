"""Dense-prediction data: digit scenes, TFDS conversions, checks and the reproducible streams."""

import numpy as np
import pytest

import keras

from keras_swinv2.data import dense
from keras_swinv2.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD

once = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="backend-independent, runs once")


@pytest.fixture(scope="module")
def scenes():
    return dense.digit_scenes(image_size=48, train_size=40, validation_size=24, digit_size=(12, 20), seed=1)


def _examples(ds):
    return [{k: v.numpy() for k, v in e.items()} for e in ds]


def _batches(stream):
    """The stream's batches as lists of numpy arrays: images, then masks or boxes and labels."""
    batches = []
    for images, y in stream:
        targets = [y["boxes"], y["labels"]] if isinstance(y, dict) else [y]
        batches.append([images.numpy()] + [t.numpy() for t in targets])
    return batches


def _same(a, b):
    return len(a) == len(b) and all(all(np.array_equal(u, v) for u, v in zip(p, q)) for p, q in zip(a, b))


@once
def test_digit_scenes_are_deterministic_per_seed(scenes):
    again = dense.digit_scenes(image_size=48, train_size=40, validation_size=24, digit_size=(12, 20), seed=1)
    other = dense.digit_scenes(image_size=48, train_size=40, validation_size=24, digit_size=(12, 20), seed=2)
    first, second, third = (_examples(d.train) for d in (scenes, again, other))
    assert all(all(np.array_equal(a[k], b[k]) for k in a) for a, b in zip(first, second))
    assert not np.array_equal(np.stack([e["image"] for e in first]), np.stack([e["image"] for e in third]))
    assert (scenes.train_size, scenes.validation_size, len(first)) == (40, 24, 40)
    assert scenes.class_names == ["background"] + [str(d) for d in range(10)]
    assert (scenes.num_classes, scenes.num_object_classes, scenes.object_class_names[0]) == (11, 10, "0")


@once
def test_validation_handwriting_is_never_seen_in_training():
    digits, labels, train, validation = dense._digit_split(seed=0)
    assert not set(train) & set(validation) and len(train) + len(validation) == len(labels) == 1797
    share = np.bincount(labels[validation], minlength=10) / np.bincount(labels, minlength=10)
    assert np.all(np.abs(share - 0.2) < 0.01)  # stratified
    rng = np.random.default_rng(0)
    rendered = dense._render_scenes(digits, labels, validation, 30, 48, (1, 3), (12, 20), rng)
    used = rendered["sources"][rendered["sources"] >= 0]
    assert set(used) <= set(validation)
    assert np.array_equal(
        labels[rendered["sources"]][rendered["sources"] >= 0], rendered["labels"][rendered["sources"] >= 0]
    )


@once
def test_masks_and_boxes_of_digit_scenes_agree(scenes):
    for e in _examples(scenes.train) + _examples(scenes.validation):
        image, mask, boxes, labels = e["image"], e["mask"], e["boxes"], e["labels"]
        assert image.dtype == np.uint8 and image.shape == (48, 48, 3) and mask.dtype == np.uint8
        assert boxes.dtype == np.float32 and labels.dtype == np.int32 and 1 <= len(labels) <= 3
        assert boxes.shape == (len(labels), 4) and set(np.unique(mask)) <= set(range(11))
        covered = np.zeros(mask.shape, bool)
        for (y0, x0, y1, x1), label in zip(boxes.astype(int), labels):
            inside = mask[y0:y1, x0:x1] == label + 1
            # the tight box: the digit's pixels touch all four sides (max edges exclusive)
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert not covered[y0:y1, x0:x1].any()  # digits do not overlap
            covered[y0:y1, x0:x1] = True
        assert not (mask[~covered] > 0).any()  # every digit pixel lies in a box
        # the digit pixels differ from the background colour
        background = np.median(image[mask == 0].astype(float), 0)
        contrast = np.abs(image.astype(float) - background).mean(-1)
        assert contrast[mask > 0].mean() > 3 * contrast[mask == 0].mean()


def _coded_example(size=32):
    """An image whose red channel spells out its mask: 255 on the objects, 0 elsewhere."""
    mask = np.zeros((size, size), "uint8")
    mask[4:14, 3:9] = 1
    mask[18:30, 12:29] = 2
    image = np.zeros((size, size, 3), "float32")
    image[..., 0] = np.where(mask > 0, 255.0, 0.0)
    image[..., 1] = 60.0
    boxes = np.array([[4, 3, 14, 9], [18, 12, 30, 29]], "float32")
    return {"image": image, "mask": mask, "boxes": boxes, "labels": np.array([0, 1], "int32")}


def _assert_aligned(image, mask, boxes, labels):
    valid = mask != dense.IGNORE_LABEL
    agree = (image[..., 0] > 127) == (mask > 0)
    assert agree[valid].mean() > 0.95
    assert np.all(image[~valid] == 0)  # padding: black image under ignored mask
    _assert_mask_in_boxes(mask, boxes, labels)


def _assert_mask_in_boxes(mask, boxes, labels, tolerance=1):
    """Every pixel of mask class k lies in a box labelled k - 1 (or within `tolerance` px of one or of the border)."""
    size = mask.shape[0]
    for k in np.unique(mask[(mask > 0) & (mask != dense.IGNORE_LABEL)]):
        ys, xs = np.nonzero(mask == k)
        near = np.zeros(len(ys), bool)
        for y0, x0, y1, x1 in boxes[labels == k - 1]:
            near |= (ys >= y0 - tolerance) & (ys < y1 + tolerance) & (xs >= x0 - tolerance) & (xs < x1 + tolerance)
        edge = (np.minimum(ys, xs) < tolerance) | (np.maximum(ys, xs) >= size - tolerance)
        assert np.all(near | edge), f"pixels of mask class {k} outside the boxes {boxes[labels == k - 1]}"


@once
def test_augmentation_keeps_image_mask_and_boxes_aligned():
    import tensorflow as tf

    example = {k: tf.constant(v) for k, v in _coded_example().items()}
    aug = dense.DenseAugmentation(flip=True, scale=(0.5, 1.6))
    seen = set()
    for i in range(24):
        out = {k: v.numpy() for k, v in dense._augment(example, 32, aug, tf.constant([7, i], "int64")).items()}
        _assert_aligned(out["image"], out["mask"], out["boxes"], out["labels"])
        assert np.all((out["boxes"] >= 0) & (out["boxes"] <= 32))
        seen.add(out["boxes"].tobytes())
    assert len(seen) > 20  # the draws differ per seed
    none = dense._augment(example, 32, dense.DenseAugmentation.none(), tf.constant([7, 0], "int64"))
    assert np.array_equal(none["image"].numpy(), example["image"].numpy())
    assert np.array_equal(none["boxes"].numpy(), example["boxes"].numpy())


@once
def test_streams_align_and_share_the_draws(scenes):
    aug = dense.DenseAugmentation(flip=True, scale=(0.6, 1.4))
    segmentation = _batches(dense.segmentation_stream(scenes, 40, 8, 1, seed=3, augmentation=aug))
    detection = _batches(dense.detection_stream(scenes, 40, 8, 1, seed=3, augmentation=aug))
    assert len(segmentation) == len(detection) == dense.steps_per_epoch(scenes, 8) == 5
    for (images, masks), (same_images, all_boxes, all_labels) in zip(segmentation, detection):
        assert np.array_equal(images, same_images)
        for mask, boxes, labels in zip(masks, all_boxes, all_labels):
            real = labels >= 0
            _assert_mask_in_boxes(mask, boxes[real], labels[real].astype(int))


@once
def test_stream_shapes_dtypes_and_padding(scenes):
    images, masks = next(iter(dense.segmentation_stream(scenes, 32, 4, 1)))
    assert images.shape == (4, 32, 32, 3) and images.dtype == "float32"
    assert masks.shape == (4, 32, 32) and masks.dtype == "int32"
    assert abs(float(np.mean(images))) < 3  # normalised
    images, targets = next(iter(dense.detection_stream(scenes, 32, 4, 1, max_boxes=5)))
    boxes, labels = targets["boxes"].numpy(), targets["labels"].numpy()
    assert boxes.shape == (4, 5, 4) and labels.shape == (4, 5) and boxes.dtype == labels.dtype == np.float32
    assert np.all(labels[:, 3:] == -1) and np.all(boxes[labels == -1] == 0) and np.all(labels[:, 0] >= 0)
    dense.check_boxes(boxes, images.shape)
    validation = _batches(dense.segmentation_validation(scenes, 32, 10))
    assert [x.shape[0] for x, _ in validation] == [10, 10, 4]  # all of it, the last batch partial
    first = _examples(scenes.validation.take(1))[0]
    raw = validation[0][0][0] * IMAGENET_STD + IMAGENET_MEAN
    resized = keras.ops.convert_to_numpy(keras.ops.image.resize(first["image"][None].astype("float32"), (32, 32)))
    assert np.abs(raw - resized[0]).mean() < 6  # a plain resize, no augmentation
    _, boxes, labels = _batches(dense.detection_validation(scenes, 32, 24))[0]
    assert boxes.shape == (24, scenes.max_boxes, 4)
    count = sum(len(e["labels"]) for e in _examples(scenes.validation))
    assert int((labels >= 0).sum()) == count
    unknown = dense.DenseData(scenes.train, scenes.validation, scenes.class_names, 40, 24)
    assert _batches(dense.detection_validation(unknown, 32, 24))[0][1].shape[1] == scenes.max_boxes


@once
def test_batches_depend_only_on_seed_and_epoch(scenes):
    whole = _batches(dense.segmentation_stream(scenes, 32, 8, 2, seed=5))
    resumed = _batches(dense.segmentation_stream(scenes, 32, 8, 2, initial_epoch=1, seed=5))
    assert len(whole) == 10 and _same(whole[5:], resumed)
    assert not _same(whole[:5], whole[5:])
    assert not _same(whole, _batches(dense.segmentation_stream(scenes, 32, 8, 2, seed=6)))
    whole = _batches(dense.detection_stream(scenes, 32, 8, 2, seed=5))
    assert _same(whole[5:], _batches(dense.detection_stream(scenes, 32, 8, 2, initial_epoch=1, seed=5)))


@once
def test_check_masks_messages():
    good = np.zeros((2, 8, 8), "uint8")
    good[0, 0, 0] = 255
    dense.check_masks(good, 3, image_shape=(2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"masks must be \(batch, H, W\).*got shape \(2, 8, 8, 1\).*Squeeze"):
        dense.check_masks(good[..., None], 3)
    with pytest.raises(ValueError, match=r"matching the images \(2, 9, 8, 3\); got shape \(2, 8, 8\)"):
        dense.check_masks(good, 3, image_shape=(2, 9, 8, 3))
    bad = good.astype("int32")
    bad[1, :3, 0] = 12
    bad[1, 5, 5] = 4
    with pytest.raises(ValueError, match=r"in \[0, 3\) or the ignore label 255; found 4 \(1 pixel\), 12 \(3 pixels\)"):
        dense.check_masks(bad, 3)
    bad[1, 0, 0] = -1
    with pytest.raises(ValueError, match=r"found -1 \(1 pixel\)"):
        dense.check_masks(bad, 3)
    with pytest.raises(ValueError, match=r"in \[0, 3\); found 255"):
        dense.check_masks(good, 3, ignore_label=None)
    with pytest.raises(ValueError, match="integer class ids"):
        dense.check_masks(good + 0.5, 3)


@once
def test_check_boxes_messages():
    dense.check_boxes(np.array([[0, 0, 10, 20], [0, 0, 0, 0]]), (10, 20, 3))
    dense.check_boxes(np.array([[[2, 3, 5, 5]]]), (1, 10, 20, 3), "xywh")
    dense.check_boxes(np.zeros((0, 4)), (10, 20))
    with pytest.raises(ValueError, match=r"box 1 \[0.0, 0.0, 12.0, 20.0\] \('yxyx'\) lies outside the 10x20"):
        dense.check_boxes(np.array([[0, 0, 5, 5], [0, 0, 12, 20]]), (10, 20))
    with pytest.raises(ValueError, match=r"box 0 of image 1 .*ymax < ymin read as 'yxyx'.*e.g. 'xyxy' or 'xywh'"):
        dense.check_boxes(np.array([[[0, 0, 1, 1]], [[5, 2, 3, 8]]]), (10, 20))
    with pytest.raises(ValueError, match=r"negative width read as 'xywh'"):
        dense.check_boxes(np.array([[1, 1, -3, 2]]), (10, 20), "xywh")
    with pytest.raises(ValueError, match=r"'rel_yxyx' is not supported; use one of 'yxyx', 'xyxy', 'xywh'"):
        dense.check_boxes(np.zeros((1, 4)), (10, 20), "rel_yxyx")
    with pytest.raises(ValueError, match=r"boxes must be \(n, 4\) or \(batch, n, 4\); got shape \(3,\)"):
        dense.check_boxes(np.zeros(3), (10, 20))


@once
def test_pet_and_voc_examples_convert():
    trimap = np.full((6, 7, 1), 2, "uint8")
    trimap[1:4, 2:6] = 3
    trimap[2:4, 3:5] = 1
    image = np.zeros((6, 7, 3), "uint8")
    out = {k: v.numpy() for k, v in dense._pet_example({"image": image, "segmentation_mask": trimap}).items()}
    expected = np.zeros((6, 7), "uint8")
    expected[1:4, 2:6] = 255
    expected[2:4, 3:5] = 1
    assert np.array_equal(out["mask"], expected) and out["mask"].dtype == np.uint8
    assert out["boxes"].tolist() == [[2, 3, 4, 5]] and out["labels"].tolist() == [0]
    none = dense._pet_example({"image": image, "segmentation_mask": np.full((6, 7, 1), 2, "uint8")})
    assert none["boxes"].shape == (0, 4) and none["labels"].shape == (0,)

    objects = {"bbox": np.array([[0.1, 0.25, 0.5, 1.0], [0.0, 0.0, 1.0, 0.5]], "float32"), "label": np.array([14, 2])}
    out = dense._voc_example({"image": np.zeros((20, 40, 3), "uint8"), "objects": objects})
    assert np.allclose(out["boxes"].numpy(), [[2, 10, 10, 40], [0, 0, 20, 20]])
    assert out["labels"].numpy().tolist() == [14, 2] and out["labels"].dtype == "int32"
    assert out["mask"].shape == (20, 40) and np.all(out["mask"].numpy() == dense.IGNORE_LABEL)
    empty = {"bbox": np.zeros((0, 4), "float32"), "label": np.zeros((0,), "int64")}
    out = dense._voc_example({"image": np.zeros((20, 40, 3), "uint8"), "objects": empty})
    assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)


@once
def test_tfds_errors_are_clear_and_offline(tmp_path):
    with pytest.raises(ValueError, match=r"oxford_iiit_pet' is not prepared in .*tfds build oxford_iiit_pet"):
        dense.tfds_dense_data("oxford_iiit_pet", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"'voc/2007' is not prepared"):
        dense.load_dense_data("tfds:voc/2007", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"did you mean 'oxford_iiit_pet'\?.*Supported: oxford_iiit_pet, voc/2007"):
        dense.tfds_dense_data("oxford_iit_pet", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"Unknown dense dataset 'mnist'; use 'digits' or 'tfds:NAME'"):
        dense.load_dense_data("mnist")


@once
def test_data_without_masks_refuses_segmentation(scenes):
    boxes_only = dense.DenseData(scenes.train, scenes.validation, scenes.class_names, 40, 24, has_masks=False)
    with pytest.raises(ValueError, match="no segmentation masks.*--task detection"):
        dense.segmentation_stream(boxes_only, 32, 8, 1)
    with pytest.raises(ValueError, match="no segmentation masks"):
        dense.segmentation_validation(boxes_only, 32, 8)
    dense.detection_validation(boxes_only, 32, 8)


def test_a_model_fits_the_segmentation_stream(scenes):
    """The streams feed `fit` on every backend (masks with the ignore label, int32 targets)."""
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(scenes.num_classes, 3, padding="same")(inputs)
    model = keras.Model(inputs, outputs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=dense.IGNORE_LABEL)
    model.compile("adam", loss)
    stream = dense.segmentation_stream(scenes, 32, 8, 2, augmentation=dense.DenseAugmentation(scale=(0.5, 1.0)))
    history = model.fit(stream, epochs=2, steps_per_epoch=dense.steps_per_epoch(scenes, 8), shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.evaluate(dense.segmentation_validation(scenes, 32, 8), verbose=0) > 0
