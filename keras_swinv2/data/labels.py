"""ImageNet class names and `decode_predictions`.

The class lists ship with the package (``imagenet1k_classes.txt`` and
``imagenet22k_classes.txt.gz``, one ``synset<TAB>name`` line per class), so
nothing is downloaded at run time. They are generated from timm's data files
by ``scripts/make_class_lists.py``; the names are WordNet lemmas such as
``"tench, Tinca tinca"``.

* ``imagenet1k``: the 1000 ILSVRC-2012 classes in the standard order.
* ``imagenet22k``: the 21841 ImageNet-22k classes in the order of Microsoft's
  Swin ImageNet-22k checkpoints: the sorted ImageNet-21k (fall11) synsets with
  the two image-less ones (n03931044, n09859684) replaced by the last two
  (n15102455 at 9205, n15102894 at 15027).
"""

import functools
import gzip
from importlib import resources

import numpy as np

# label set -> (file in keras_swinv2/data, number of classes)
_LABEL_SETS = {
    "imagenet1k": ("imagenet1k_classes.txt", 1000),
    "imagenet22k": ("imagenet22k_classes.txt.gz", 21841),
}


def _known():
    return ", ".join(f"'{name}' ({count} classes)" for name, (_, count) in _LABEL_SETS.items())


@functools.lru_cache(maxsize=None)
def _load(label_set):
    """Reads one class list from the package, once: tuple of (synset, name)."""
    filename, count = _LABEL_SETS[label_set]
    data = resources.files("keras_swinv2.data").joinpath(filename).read_bytes()
    if filename.endswith(".gz"):
        data = gzip.decompress(data)
    classes = tuple(tuple(line.split("\t", 1)) for line in data.decode("utf-8").splitlines() if line)
    if len(classes) != count or any(len(entry) != 2 for entry in classes):
        raise RuntimeError(
            f"keras_swinv2/data/{filename} is damaged: expected {count} 'synset<TAB>name' lines, "
            f"read {len(classes)}; reinstall keras-swinv2."
        )
    return classes


def imagenet_classes(label_set="imagenet1k"):
    """The class list of an ImageNet label set, in the models' output order.

    Read from the package on first use and cached.

    Args:
        label_set: ``"imagenet1k"`` (1000 classes) or ``"imagenet22k"``
            (21841 classes, Microsoft's Swin order).

    Returns:
        list of ``(synset, name)`` string pairs; entry ``i`` belongs to
        output ``i`` of a classifier head. A fresh list on every call.

    Raises:
        ValueError: unknown ``label_set``.

    Example:

    >>> imagenet_classes("imagenet1k")[0]
    ('n01440764', 'tench, Tinca tinca')
    >>> len(imagenet_classes("imagenet22k"))
    21841
    """
    if label_set not in _LABEL_SETS:
        raise ValueError(f"Unknown label_set {label_set!r}; expected one of {_known()}.")
    return list(_load(label_set))


def _to_numpy(preds):
    if isinstance(preds, (np.ndarray, np.generic, list, tuple)):
        array = np.asarray(preds)
    else:  # a backend tensor (TensorFlow, JAX, PyTorch)
        import keras

        array = np.asarray(keras.ops.convert_to_numpy(preds))
    if array.dtype.kind not in "fiu":  # bool, bfloat16 (ml_dtypes), object, ...
        array = array.astype("float32")
    return array


def decode_predictions(preds, top=5, label_set=None):
    """Turns classifier outputs into readable ImageNet classes.

    Like ``keras.applications.imagenet_utils.decode_predictions``, but for both
    ImageNet-1k and ImageNet-22k heads and without a download. Works on
    probabilities or logits alike: only the order of the scores matters, and
    the scores are returned as given.

    Args:
        preds: array or backend tensor ``(batch, classes)``, e.g. the output
            of a SwinV2 classifier. ``classes`` must be 1000 or 21841 unless
            it matches an explicit ``label_set``.
        top: how many classes to return per sample (int >= 1); capped at
            ``classes``.
        label_set: ``"imagenet1k"`` or ``"imagenet22k"``; ``None`` infers it
            from ``classes`` (1000 -> imagenet1k, 21841 -> imagenet22k).

    Returns:
        list of ``batch`` lists, each of ``min(top, classes)`` tuples
        ``(synset, name, score)`` sorted by score, highest first (ties: lower
        class index first). ``score`` is a Python float.

    Raises:
        ValueError: ``preds`` is not 2-D, its class count fits no (or not the
            given) label set, ``top`` is not a positive int, or ``label_set``
            is unknown.

    Example:

    >>> import numpy as np
    >>> preds = np.zeros((1, 1000))
    >>> preds[0, 207], preds[0, 0] = 0.9, 0.1
    >>> decode_predictions(preds, top=2)
    [[('n02099601', 'golden retriever', 0.9), ('n01440764', 'tench, Tinca tinca', 0.1)]]

    With a model: ``decode_predictions(model.predict(preprocess_input(images)))``.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be an int >= 1; got {top!r}.")
    array = _to_numpy(preds)
    if array.ndim != 2:
        raise ValueError(
            f"decode_predictions expects predictions of shape (batch, classes); got shape {tuple(array.shape)}. "
            "For a single sample, add a batch axis: preds[None]."
        )
    num_classes = array.shape[1]
    if label_set is None:
        matches = [name for name, (_, count) in _LABEL_SETS.items() if count == num_classes]
        if not matches:
            raise ValueError(
                f"decode_predictions expects predictions with one of {_known()}; "
                f"got shape {tuple(array.shape)} ({num_classes} classes)."
            )
        label_set = matches[0]
    elif label_set not in _LABEL_SETS:
        raise ValueError(f"Unknown label_set {label_set!r}; expected one of {_known()}.")
    elif _LABEL_SETS[label_set][1] != num_classes:
        raise ValueError(
            f"label_set {label_set!r} has {_LABEL_SETS[label_set][1]} classes, but the predictions have "
            f"{num_classes} (shape {tuple(array.shape)})."
        )
    classes = _load(label_set)
    top = min(int(top), num_classes)
    # Stable sort on the negated scores: highest first, ties by class index; NaN last.
    order = np.argsort(-array.astype(np.float64), axis=1, kind="stable")[:, :top]
    return [[classes[i] + (float(row[i]),) for i in indices] for row, indices in zip(array, order)]
