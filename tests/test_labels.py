"""Shipped ImageNet class lists and decode_predictions."""

import gzip
import hashlib
import re
from importlib import resources

import keras
import numpy as np
import pytest

from keras_swinv2.data.labels import decode_predictions, imagenet_classes

# sha256 of the 21841 synsets in Microsoft's Swin 22k order, one per line.
SHA256_22K_SYNSETS = "34690268edc6c7b6ec23fa3dfe190da471081b92ff691ad6478ef9dd30c486df"


@pytest.mark.parametrize("label_set, count", [("imagenet1k", 1000), ("imagenet22k", 21841)])
def test_counts_and_uniqueness(label_set, count):
    classes = imagenet_classes(label_set)
    assert len(classes) == count
    synsets = [synset for synset, _ in classes]
    assert len(set(synsets)) == count
    assert all(len(s) == 9 and s[0] == "n" and s[1:].isdigit() for s in synsets)
    assert all(name and name == name.strip() and "\t" not in name for _, name in classes)


def test_imagenet1k_known_entries():
    classes = imagenet_classes("imagenet1k")
    assert classes[0] == ("n01440764", "tench, Tinca tinca")
    assert classes[207] == ("n02099601", "golden retriever")
    assert classes[999] == ("n15075141", "toilet tissue, toilet paper, bathroom tissue")
    assert [s for s, _ in classes] == sorted(s for s, _ in classes)


def test_imagenet22k_order():
    classes = imagenet_classes("imagenet22k")
    synsets = [synset for synset, _ in classes]
    assert hashlib.sha256("".join(s + "\n" for s in synsets).encode()).hexdigest() == SHA256_22K_SYNSETS
    # the last two of the sorted 21843 take the indices of the two image-less classes
    assert classes[9205] == ("n15102455", "chipboard, hardboard")
    assert classes[15027] == ("n15102894", "knothole")
    assert "n03931044" not in synsets and "n09859684" not in synsets
    rest = synsets[:9205] + synsets[9206:15027] + synsets[15028:]
    assert rest == sorted(rest)
    assert classes[0][0] == "n00004475"
    # every ImageNet-1k class but one (n04399382, teddy bear) is in fall11
    assert set(s for s, _ in imagenet_classes("imagenet1k")) - set(synsets) == {"n04399382"}


def test_cached_but_copied():
    first = imagenet_classes("imagenet1k")
    first.clear()
    assert len(imagenet_classes("imagenet1k")) == 1000


def test_shipped_files_are_stable():
    data = resources.files("keras_swinv2.data")
    gz = data.joinpath("imagenet22k_classes.txt.gz").read_bytes()
    assert gz[4:8] == b"\0\0\0\0"  # mtime 0: byte-stable output
    text = gzip.decompress(gz).decode("utf-8")
    assert text.endswith("\n") and text.count("\n") == 21841
    assert data.joinpath("imagenet1k_classes.txt").read_text("utf-8").count("\n") == 1000


def test_unknown_label_set():
    with pytest.raises(ValueError, match=r"Unknown label_set 'imagenet21k'.*'imagenet1k'.*'imagenet22k'"):
        imagenet_classes("imagenet21k")
    with pytest.raises(ValueError, match=r"Unknown label_set 'coco'"):
        decode_predictions(np.zeros((1, 1000)), label_set="coco")


def test_decode_order_and_scores():
    rng = np.random.default_rng(0)
    preds = rng.random((3, 1000)).astype("float32")
    preds[1, 207] = 2.0
    decoded = decode_predictions(preds, top=4)
    classes = imagenet_classes("imagenet1k")
    assert len(decoded) == 3 and all(len(row) == 4 for row in decoded)
    for row, scores in zip(decoded, preds):
        expected = np.argsort(-scores)[:4]
        assert [(s, n) for s, n, _ in row] == [classes[i] for i in expected]
        assert [score for _, _, score in row] == [float(scores[i]) for i in expected]
        assert all(isinstance(score, float) for _, _, score in row)
    assert decoded[1][0] == ("n02099601", "golden retriever", 2.0)


def test_decode_default_top_and_ties():
    preds = np.zeros((1, 1000))
    preds[0, 5] = preds[0, 3] = 1.0
    row = decode_predictions(preds)[0]
    assert len(row) == 5
    assert [entry[0] for entry in row[:2]] == [imagenet_classes("imagenet1k")[i][0] for i in (3, 5)]
    assert [entry[2] for entry in row] == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_decode_imagenet22k_inferred():
    preds = np.zeros((2, 21841), "float32")
    preds[0, 9205] = 1.0
    preds[1, 15027] = 1.0
    decoded = decode_predictions(preds, top=1)
    assert decoded == [[("n15102455", "chipboard, hardboard", 1.0)], [("n15102894", "knothole", 1.0)]]
    assert decode_predictions(preds, top=1, label_set="imagenet22k") == decoded


def test_decode_backend_tensor_and_logits():
    logits = np.full((2, 1000), -3.0, "float32")
    logits[0, 0] = 5.0
    logits[1, 207] = 1.0
    probs = keras.ops.softmax(keras.ops.convert_to_tensor(logits), axis=-1)
    decoded = decode_predictions(probs, top=2)
    assert [row[0][:2] for row in decoded] == [("n01440764", "tench, Tinca tinca"), ("n02099601", "golden retriever")]
    assert decoded[0][0][2] == pytest.approx(float(keras.ops.convert_to_numpy(probs)[0, 0]))
    assert decode_predictions(keras.ops.convert_to_tensor(logits), top=1)[1][0][2] == 1.0


def test_decode_bfloat16_tensor():
    preds = np.zeros((1, 1000), "float32")
    preds[0, 207] = 0.5
    decoded = decode_predictions(keras.ops.cast(keras.ops.convert_to_tensor(preds), "bfloat16"), top=1)
    assert decoded == [[("n02099601", "golden retriever", 0.5)]]


def test_top_larger_than_classes():
    preds = np.zeros((1, 1000))
    preds[0, 999] = 1.0
    row = decode_predictions(preds, top=5000)[0]
    assert len(row) == 1000
    assert row[0][0] == "n15075141"
    assert sorted(s for s, _, _ in row) == [s for s, _ in imagenet_classes("imagenet1k")]


def test_empty_batch():
    assert decode_predictions(np.zeros((0, 1000))) == []


@pytest.mark.parametrize("shape", [(1000,), (1, 1, 1000), ()])
def test_not_2d(shape):
    with pytest.raises(ValueError, match=r"shape \(batch, classes\); got shape " + re.escape(str(shape))):
        decode_predictions(np.zeros(shape))


@pytest.mark.parametrize("classes", [10, 1001, 21843])
def test_unsupported_class_count(classes):
    with pytest.raises(
        ValueError,
        match=rf"'imagenet1k' \(1000 classes\).*'imagenet22k' \(21841 classes\).*got shape \(2, {classes}\) \({classes} classes\)",
    ):
        decode_predictions(np.zeros((2, classes)))


def test_label_set_mismatch():
    with pytest.raises(ValueError, match=r"label_set 'imagenet22k' has 21841 classes, but the predictions have 1000"):
        decode_predictions(np.zeros((1, 1000)), label_set="imagenet22k")


@pytest.mark.parametrize("top", [0, -1, 2.5, "5", True, None])
def test_bad_top(top):
    with pytest.raises(ValueError, match=r"top must be an int >= 1"):
        decode_predictions(np.zeros((1, 1000)), top=top)
