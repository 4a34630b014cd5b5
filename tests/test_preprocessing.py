"""Evaluation resize/crop and input normalisation."""

import numpy as np
from PIL import Image

import keras

from keras_swinv2 import preprocess_input
from keras_swinv2.data import IMAGENET_MEAN, IMAGENET_STD, load_image


def _halves(width, height):
    """Left half red, right half blue, with a green 40 px band on the left edge."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2 :, 2] = 255
    pixels[:, :40] = (0, 255, 0)
    return Image.fromarray(pixels)


def test_crop_resizes_shorter_side_then_centre_crops():
    image = load_image(_halves(600, 300), image_size=256)
    assert image.shape == (256, 256, 3) and image.dtype == np.float32
    # shorter side 300 -> 292, width 584; the 256 centre crop drops 164 px on each side,
    # more than the green band (40 * 292 / 300 = 39 px): no green left, red then blue
    assert image[:, :, 1].max() < 30
    assert image[128, 10, 0] > 250 and image[128, 245, 2] > 250
    assert abs(int((image[128, :, 0] > 128).sum()) - 128) <= 2


def test_squash_keeps_the_whole_image():
    image = load_image(_halves(600, 300), image_size=384, crop=False)
    assert image.shape == (384, 384, 3)
    assert image[192, 5, 1] > 250  # the green band survives a squash resize
    assert abs(int((image[192, :, 2] > 128).sum()) - 192) <= 2


def test_load_image_from_path_and_array(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(219, 300, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(load_image(str(path), 192), load_image(pixels, 192))


def test_preprocess_input_uses_imagenet_statistics():
    x = np.stack([np.full((2, 2, 3), v, np.float32) for v in (0.0, 255.0)])
    out = keras.ops.convert_to_numpy(preprocess_input(x))
    np.testing.assert_allclose(out[0, 0, 0], -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD), rtol=1e-6)
    np.testing.assert_allclose(out[1, 1, 1], (255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), rtol=1e-6)
