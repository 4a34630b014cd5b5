"""tf.data sources (digits, image folders, TFDS) and the reproducible training stream."""

import numpy as np
import pytest
from PIL import Image

from keras_swinv2.data import load_image, pipeline


@pytest.fixture(scope="module")
def digits():
    return pipeline.digits()


def _arrays(ds):
    images, labels = zip(*[(x.numpy(), int(y.numpy())) for x, y in ds])
    return images, np.array(labels)


def test_digits_is_a_stratified_uint8_split(digits):
    assert (digits.train_size, digits.validation_size, digits.num_classes) == (1438, 359, 10)
    images, labels = _arrays(digits.validation)
    assert images[0].shape == (8, 8, 3) and images[0].dtype == np.uint8 and max(i.max() for i in images) == 255
    counts = np.bincount(labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # ~20% of each class's ~180


def _write_folder(root, images, labels, names):
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((24, 20), Image.NEAREST).save(folder / f"{i:04d}.png")


def test_image_folder_with_and_without_split_folders(tmp_path, digits):
    images, labels = _arrays(digits.validation.take(60))
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    _write_folder(tmp_path / "flat", images, labels, names)
    data = pipeline.load_data(str(tmp_path / "flat"), validation_fraction=0.25)
    assert data.class_names == sorted(names) and data.train_size + data.validation_size == 60
    decoded, got = _arrays(data.train.concatenate(data.validation))
    assert decoded[0].shape == (20, 24, 3) and set(got) <= set(range(10))

    first = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    rest = [i for i in range(60) if i not in first]
    _write_folder(tmp_path / "split" / "train", [images[i] for i in rest], labels[rest], names)
    _write_folder(tmp_path / "split" / "val", [images[i] for i in first], labels[first], names)
    data = pipeline.image_folder(str(tmp_path / "split"))
    assert (data.train_size, data.validation_size) == (60 - len(first), len(first))
    assert sorted(_arrays(data.validation)[1]) == sorted(range(len(first)))


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        pipeline.image_folder(str(tmp_path / "missing"))
    (tmp_path / "one" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="at least two classes"):
        pipeline.image_folder(str(tmp_path / "one"))
    (tmp_path / "two" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no validation"):
        pipeline.image_folder(str(tmp_path / "two"))


def test_tfds_image_folder(tmp_path, digits):
    images, labels = _arrays(digits.train.take(40))
    names = [f"class_{i}" for i in range(10)]
    _write_folder(tmp_path / "train", images[:30], labels[:30], names)
    _write_folder(tmp_path / "test", images[30:], labels[30:], names)
    data = pipeline.load_data(f"tfds:folder:{tmp_path}")
    assert (data.train_size, data.validation_size) == (30, 10)
    decoded, _ = _arrays(data.train)
    assert decoded[0].shape == (20, 24, 3) and decoded[0].dtype == np.uint8


def test_tfds_catalog_dataset_prepared_locally(tmp_path):
    import tensorflow_datasets as tfds

    class Swinv2TestShapes(tfds.core.GeneratorBasedBuilder):
        """Two classes of 12x10 images (bright square top-left vs bottom-right), built offline."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(12, 10, 3)),
                        "label": tfds.features.ClassLabel(names=["tl", "br"]),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(16), "test": self._generate_examples(6)}

        def _generate_examples(self, n):
            for i in range(n):
                image = np.zeros((12, 10, 3), np.uint8)
                if i % 2:
                    image[6:, 5:] = 255
                else:
                    image[:6, :5] = 255
                yield i, {"image": image, "label": i % 2}

    with pytest.raises(ValueError, match="not prepared"):
        pipeline.load_data("tfds:swinv2_test_shapes", data_dir=str(tmp_path))
    Swinv2TestShapes(data_dir=str(tmp_path)).download_and_prepare()
    data = pipeline.load_data("tfds:swinv2_test_shapes", data_dir=str(tmp_path))
    assert data.class_names == ["tl", "br"] and (data.train_size, data.validation_size) == (16, 6)
    images, labels = _arrays(data.validation)
    for image, label in zip(images, labels):
        assert image[0, 0, 0] == (0 if label else 255) and image[-1, -1, 0] == (255 if label else 0)
    x, y = next(iter(pipeline.training_stream(data, 16, 4, epochs=1, augmentation=pipeline.Augmentation.none())))
    assert x.shape == (4, 16, 16, 3) and y.shape == (4, 2)


def test_training_stream_is_a_function_of_seed_and_epoch(digits):
    aug = pipeline.Augmentation(crop_scale=(0.5, 1.0), erasing=0.5, mixup=0.8, cutmix=1.0)
    steps = pipeline.steps_per_epoch(digits, 128)
    full = [(x.numpy(), y.numpy()) for x, y in pipeline.training_stream(digits, 16, 128, 3, seed=7, augmentation=aug)]
    tail = [
        (x.numpy(), y.numpy()) for x, y in pipeline.training_stream(digits, 16, 128, 3, 2, seed=7, augmentation=aug)
    ]
    assert len(full) == 3 * steps == 33 and len(tail) == steps
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(full[2 * steps :], tail))
    assert not np.array_equal(full[0][0], full[steps][0])  # epochs differ
    other = next(iter(pipeline.training_stream(digits, 16, 128, 1, seed=8, augmentation=aug)))
    assert not np.array_equal(full[0][0], other[0].numpy())  # seeds differ
    x, y = full[0]
    assert x.shape == (128, 16, 16, 3) and x.dtype == np.float32 and -2.2 < x.min() < 0 < x.max() < 2.7
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    assert (y.max(-1) < 1).mean() > 0.5  # MixUp/CutMix soften most labels
    with pytest.raises(ValueError, match="larger than"):
        pipeline.steps_per_epoch(digits, 5000)


def test_eval_transform_is_the_official_resize_and_crop():
    from skimage import data as skdata

    photo = skdata.chelsea()  # 300x451
    ours, _ = pipeline.eval_transform(224)(photo, 0)
    reference = load_image(photo, 224)  # PIL bicubic: shorter side to 256, centre crop 224
    diff = np.abs(ours.numpy() - reference)
    assert ours.shape == (224, 224, 3) and diff.mean() < 1.5, diff.mean()
