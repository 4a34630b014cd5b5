"""tf.data input pipelines for fine-tuning, feeding any Keras backend.

Sources give `(uint8 image (h, w, 3), int label)` pairs: a plain image folder
(`root/<class>/<image>`), a TFDS catalog dataset prepared locally, a TFDS
`ImageFolder` (`root/<split>/<class>/<image>`), or scikit-learn's digits (the
offline dataset of the demo and the tests).

Training batches are a pure function of `(seed, epoch)`: shuffling and every
random augmentation draw from seeds derived from them, so a run resumed at
epoch k sees exactly the batches an uninterrupted run saw (see
`keras_swinv2.training.ResumableTraining`).
"""

import dataclasses
import os

import numpy as np

from keras_swinv2.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class ImageData:
    """A labelled image dataset split in two.

    Attributes:
        train, validation: `tf.data.Dataset`s of `(uint8 image, int64 label)`,
            decoded and cached, in a fixed order.
        class_names: list of str.
        train_size, validation_size: int.
    """

    train: object
    validation: object
    class_names: list
    train_size: int
    validation_size: int

    @property
    def num_classes(self):
        return len(self.class_names)


def _tf():
    import tensorflow as tf

    return tf


def _split(images, labels, validation_fraction, seed):
    """Stratified split of numpy arrays: the same fraction of every class goes to validation."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        val.extend(idx[: int(round(len(idx) * validation_fraction))])
    is_val = np.zeros(len(labels), bool)
    is_val[val] = True
    return (images[~is_val], labels[~is_val]), (images[is_val], labels[is_val])


def digits(validation_fraction=0.2, seed=0):
    """scikit-learn's handwritten digits (1797 images of 8x8 px, 10 classes) as RGB uint8.

    The images stay 8x8 here; the pipeline's resize upsamples them to the model's size.
    Installs with scikit-learn (no download). Split stratified with `seed`.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.repeat(np.round(data.images * (255.0 / 16.0)).astype("uint8")[..., None], 3, axis=-1)
    labels = data.target.astype("int64")
    (x_train, y_train), (x_val, y_val) = _split(images, labels, validation_fraction, seed)
    tf = _tf()
    return ImageData(
        tf.data.Dataset.from_tensor_slices((x_train, y_train)),
        tf.data.Dataset.from_tensor_slices((x_val, y_val)),
        [str(i) for i in range(10)],
        len(y_train),
        len(y_val),
    )


def image_folder(directory, validation_fraction=0.2, seed=0):
    """A plain image folder, `directory/<class name>/<image file>`; classes sorted by name.

    When `directory` has `train/` and `validation/` (or `val/`, `test/`)
    subfolders in that layout, they are the split; otherwise a stratified
    `validation_fraction` of each class is held out with `seed`.
    """
    splits = {name: os.path.join(directory, name) for name in ("train", "validation", "val", "test")}
    if os.path.isdir(splits["train"]):
        held = next((splits[n] for n in ("validation", "val", "test") if os.path.isdir(splits[n])), None)
        if held is None:
            raise ValueError(f"{directory} has train/ but no validation/, val/ or test/ folder.")
        (train_files, train_labels), names = _list_images(splits["train"])
        (val_files, val_labels), val_names = _list_images(held)
        if val_names != names:
            raise ValueError(f"Class folders differ between {splits['train']} ({names}) and {held} ({val_names}).")
    else:
        (files, labels), names = _list_images(directory)
        (train_files, train_labels), (val_files, val_labels) = _split(files, labels, validation_fraction, seed)
    return ImageData(
        _decode_files(train_files, train_labels),
        _decode_files(val_files, val_labels),
        names,
        len(train_labels),
        len(val_labels),
    )


def _list_images(directory):
    if not os.path.isdir(directory):
        raise ValueError(f"Image folder {directory!r} does not exist.")
    names = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    files, labels = [], []
    for label, name in enumerate(names):
        for file in sorted(os.listdir(os.path.join(directory, name))):
            if file.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(directory, name, file))
                labels.append(label)
    if len(names) < 2 or not files:
        raise ValueError(
            f"Expected {directory!r} to hold one folder of images ({', '.join(IMAGE_EXTENSIONS)}) per "
            f"class, at least two classes; found {len(names)} folders and {len(files)} images."
        )
    return (np.array(files), np.array(labels, "int64")), names


def _decode_files(files, labels):
    tf = _tf()

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.ensure_shape(image, (None, None, 3)), label

    return tf.data.Dataset.from_tensor_slices((files, labels)).map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def tfds_dataset(name, data_dir=None, validation_split=None):
    """A TFDS dataset prepared locally (no download), or a TFDS `ImageFolder` for `folder:PATH`.

    Args:
        name: a TFDS catalog name ("cats_vs_dogs", "imagenette/320px", ...),
            or "folder:PATH" for `tfds.folder_dataset.ImageFolder(PATH)`
            (`PATH/<split>/<class>/<image>`).
        data_dir: TFDS data directory (default `~/tensorflow_datasets`).
        validation_split: split to validate on; default "validation", else
            "test", else the last 10% of "train".
    """
    import tensorflow_datasets as tfds

    if name.startswith("folder:"):
        builder = tfds.folder_dataset.ImageFolder(name[len("folder:") :])
    else:
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            import difflib

            close = difflib.get_close_matches(name.split("/")[0].split(":")[0], tfds.list_builders(), n=3)
            raise ValueError(
                f"TFDS has no dataset named {name!r}"
                + (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ".")
                + " The names are listed at https://www.tensorflow.org/datasets/catalog/overview."
            ) from None
        if not builder.is_prepared():
            raise ValueError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir}. Prepare it once with "
                f"network access (`tfds build {name}` or tfds.load({name!r})) or pass --data-dir."
            )
    info = builder.info
    splits = list(info.splits.keys())
    train_split = "train" if "train" in splits else splits[0]
    if validation_split is None:
        validation_split = next((s for s in ("validation", "val", "test") if s in splits), None)
    if validation_split is None:
        train_split, validation_split = "train[:90%]", "train[90%:]"
    elif validation_split.split("[")[0] not in splits:
        raise ValueError(f"Split {validation_split!r} is not in {name!r}; it has {splits}.")
    label = info.features["label"]
    tf = _tf()

    def load(split):
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        return ds.map(lambda image, y: (tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image, y))

    def count(split):
        return int(info.splits[split].num_examples)

    return ImageData(
        load(train_split), load(validation_split), list(label.names), count(train_split), count(validation_split)
    )


def load_data(spec, data_dir=None, validation_fraction=0.2, seed=0):
    """Opens a dataset from a command-line style spec: "digits", "tfds:NAME", "tfds:folder:PATH" or a folder path."""
    if spec == "digits":
        return digits(validation_fraction, seed)
    if spec.startswith("tfds:"):
        return tfds_dataset(spec[len("tfds:") :], data_dir=data_dir)
    return image_folder(spec, validation_fraction, seed)


@dataclasses.dataclass
class Augmentation:
    """Training augmentation; the defaults are the SwinV2 fine-tuning recipe's.

    Attributes:
        crop_scale: (min, max) area fraction of the random resized crop;
            None for a plain resize and centre crop.
        flip: random horizontal flips.
        randaugment: factor of `keras.layers.RandAugment` (2 ops), or None.
            The official recipe uses RandAugment (m9: factor 0.9); it is off
            by default because on CPU it costs ~14 ms per 32 px image (it
            runs in order, so that its draws are reproducible).
        erasing: probability of `keras.layers.RandomErasing`, or None.
        mixup: alpha of `keras.layers.MixUp`, or None.
        cutmix: factor of `keras.layers.CutMix`, or None. With both, each
            batch gets one of the two with probability 1/2 (timm's switch).
    """

    crop_scale: tuple = (0.08, 1.0)
    flip: bool = True
    randaugment: float = None
    erasing: float = 0.25
    mixup: float = 0.8
    cutmix: float = 1.0

    @classmethod
    def none(cls):
        return cls(crop_scale=None, flip=False, randaugment=None, erasing=None, mixup=None, cutmix=None)


def _normalize(tf, images):
    return (tf.cast(images, "float32") - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def _resize_short_side(tf, image, size):
    """Bicubic resize so the shorter side is `size`, the longer `floor(size * long / short)` (PIL's rule)."""
    shape = tf.cast(tf.shape(image)[:2], "int64")
    height, width = shape[0], shape[1]
    new_height = tf.where(height <= width, tf.constant(size, "int64"), size * height // width)
    new_width = tf.where(height <= width, size * width // height, tf.constant(size, "int64"))
    new_size = tf.cast(tf.stack([new_height, new_width]), "int32")
    return tf.image.resize(image, new_size, method="bicubic", antialias=True)


def eval_transform(image_size, crop_ratio=0.875):
    """Resize of the shorter side to `image_size / crop_ratio`, centre crop: the official eval transform."""
    tf = _tf()
    resize = int(image_size / crop_ratio)

    def transform(image, label):
        image = _resize_short_side(tf, image, resize)
        image = tf.image.resize_with_crop_or_pad(image, image_size, image_size)
        return tf.ensure_shape(tf.clip_by_value(image, 0.0, 255.0), (image_size, image_size, 3)), label

    return transform


def _random_resized_crop(tf, image, size, scale, seed):
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, extent)
    return tf.clip_by_value(tf.image.resize(crop, (size, size), method="bicubic", antialias=True), 0.0, 255.0)


def training_stream(data, image_size, batch_size, epochs, initial_epoch=0, seed=0, augmentation=None, crop_ratio=0.875):
    """Training batches for epochs `initial_epoch .. epochs - 1`, as one `tf.data.Dataset`.

    Each epoch has `data.train_size // batch_size` batches (the remainder is
    dropped) of `(images (batch, size, size, 3) float32 normalised with the
    ImageNet mean/std, one-hot labels (batch, classes))`. Use it with
    `fit(stream, epochs=epochs, initial_epoch=initial_epoch,
    steps_per_epoch=steps_per_epoch(data, batch_size))`.

    Args:
        data: `ImageData`.
        image_size: int, side of the model input.
        batch_size: int.
        epochs: int, the last epoch (exclusive) the stream covers.
        initial_epoch: int, the first epoch it yields (for resuming).
        seed: int; batches depend only on (seed, epoch).
        augmentation: `Augmentation` (default: the recipe's).
        crop_ratio: float, crop side / resized side, used when
            `augmentation.crop_scale` is None.
    """
    tf = _tf()
    import keras

    aug = augmentation if augmentation is not None else Augmentation()
    classes = data.num_classes
    resize = int(image_size / crop_ratio)
    source = data.train.map(lambda x, y: (_resize_short_side(tf, x, resize), y)).cache()

    def epoch_batches(epoch):
        epoch_seed = seed * 100003 + epoch
        ds = source.shuffle(data.train_size, seed=epoch_seed, reshuffle_each_iteration=False).enumerate()

        def per_image(index, example):
            image, label = example
            image_seed = tf.stack([tf.constant(epoch_seed, "int64"), index])
            if aug.crop_scale is not None:
                image = _random_resized_crop(tf, image, image_size, aug.crop_scale, image_seed)
            else:
                image = tf.image.resize_with_crop_or_pad(image, image_size, image_size)
            if aug.flip:
                image = tf.image.stateless_random_flip_left_right(image, image_seed + 1)
            return tf.ensure_shape(image, (image_size, image_size, 3)), tf.one_hot(label, classes)

        ds = ds.map(per_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=True)
        layers = []
        if aug.randaugment:
            layers.append(keras.layers.RandAugment(value_range=(0, 255), factor=aug.randaugment, seed=epoch_seed))
        if aug.erasing:
            layers.append(keras.layers.RandomErasing(factor=aug.erasing, value_range=(0, 255), seed=epoch_seed + 1))
        mixers = []
        if aug.mixup:
            mixers.append(keras.layers.MixUp(alpha=aug.mixup, seed=epoch_seed + 2))
        if aug.cutmix:
            mixers.append(keras.layers.CutMix(factor=aug.cutmix, seed=epoch_seed + 3))

        def per_batch(batch_index, batch):
            images, labels = batch
            for i, layer in enumerate(layers + mixers):
                # Keras' augmentation layers draw from a stateful generator; starting it from
                # (epoch seed, batch) makes every batch independent of what was drawn before
                # (the non-TF trainers peek at a batch before training).
                layer.backend.set_backend("tensorflow")  # as the layer's own call does in tf.data
                generator = layer._get_seed_generator("tensorflow")
                generator.state.assign(tf.cast(tf.stack([epoch_seed * 16 + i, batch_index]), generator.state.dtype))
            for layer in layers:
                images = layer(images, training=True)
            if mixers:
                mixed = [m({"images": images, "labels": labels}, training=True) for m in mixers]
                if len(mixed) == 2:
                    pick = tf.random.stateless_uniform(
                        [], tf.stack([tf.constant(epoch_seed + 4, "int64"), batch_index])
                    )
                    images = tf.where(pick < 0.5, mixed[0]["images"], mixed[1]["images"])
                    labels = tf.where(pick < 0.5, mixed[0]["labels"], mixed[1]["labels"])
                else:
                    images, labels = mixed[0]["images"], mixed[0]["labels"]
            return _normalize(tf, images), tf.cast(labels, "float32")

        # sequential: the layers' generators are shared state
        return ds.enumerate().map(per_batch)

    stream = epoch_batches(initial_epoch)
    for epoch in range(initial_epoch + 1, epochs):
        stream = stream.concatenate(epoch_batches(epoch))
    return stream.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(data, batch_size):
    steps = data.train_size // batch_size
    if steps < 1:
        raise ValueError(f"batch_size {batch_size} is larger than the {data.train_size} training images.")
    return steps


def validation_batches(data, image_size, batch_size, crop_ratio=0.875, cache=True):
    """Validation batches: the official eval resize/crop, normalised, one-hot labels.

    With `cache` (for repeated passes) the transformed images are kept after
    the first full pass; pass `cache=False` to read only part of it.
    """
    tf = _tf()
    transform = eval_transform(image_size, crop_ratio)
    classes = data.num_classes
    ds = data.validation.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.cache() if cache else ds
    ds = ds.batch(batch_size).map(lambda x, y: (_normalize(tf, x), tf.one_hot(y, classes)))
    return ds.prefetch(tf.data.AUTOTUNE)
