"""Bad input gets a ValueError saying what was expected and what came."""

import numpy as np
import pytest

import keras_swinv2

from helpers import SMALL, build, images

ARCH = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ARCH, window_size=0), r"window_size must be an int >= 1; got 0"),
        (dict(ARCH, window_size=2.5), r"window_size must be an int >= 1; got 2.5"),
        (
            dict(embed_dim=16, depths=(2, 2, 2), num_heads=(2, 4), window_size=4),
            r"3 depths \(2, 2, 2\) and 2 num_heads \(2, 4\)",
        ),
        (dict(embed_dim=16, depths=(2, 2), num_heads=(3, 4), window_size=4), r"Stage 1 has 16 channels.*3 heads"),
        (dict(embed_dim=16, depths=(2, 2), num_heads=(2, 5), window_size=4), r"Stage 2 has 32 channels.*5 heads"),
        (dict(ARCH, window_size=4, pretrained_window_sizes=(8,)), r"needs 2 entries.*got \(8,\)"),
        (
            dict(ARCH, window_size=4, input_shape=(32, 32)),
            r"image_shape must be \(height, width, channels\); got \(32, 32\)",
        ),
        (
            dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=4, input_shape=(16, 16, 3)),
            r"16x16 px is too small for 4 stages.*at least 32 px",
        ),
        (dict(ARCH, window_size=4, attention="softmax"), r"attention must be one of .*got 'softmax'"),
        (dict(ARCH, window_size=4, norm_position="middle"), r"norm_position must be one of .*got 'middle'"),
        (dict(ARCH, window_size=4, patch_merging=2), r"patch_merging must be one of \('v2', 'v1'\); got 2"),
        (dict(ARCH, window_size=4, dropout_rate=1.0), r"dropout_rate must be a float in \[0, 1\); got 1.0"),
        (dict(ARCH, window_size=4, mlp_ratio=0), r"mlp_ratio must be a number > 0; got 0"),
        (dict(ARCH, window_size=4, position_bias="rope"), r"position_bias must be one of .*got 'rope'"),
        (dict(ARCH, window_size=4, include_top=False, pooling="sum"), r"pooling must be one of .*got 'sum'"),
    ],
)
def test_invalid_architecture(kwargs, message):
    kwargs.setdefault("input_shape", (32, 32, 3))
    with pytest.raises(ValueError, match=message):
        build(**kwargs)


def test_unknown_variant():
    with pytest.raises(ValueError, match=r"variant must be one of \['base', 'giant'.*got 'medium'"):
        keras_swinv2.SwinV2(variant="medium")


def test_wrong_input_channels_at_call():
    model = build(**SMALL, input_shape=(None, None, 3), classes=5)
    with pytest.raises(
        ValueError, match=r"expects images of shape \(batch, height, width, 3\); got shape \(1, 32, 32, 1\)"
    ):
        model(np.zeros((1, 32, 32, 1), "float32"))


def test_wrong_input_rank_at_call():
    model = build(**SMALL, input_shape=(32, 32, 3), classes=5)
    with pytest.raises(ValueError, match=r"expected shape=\(None, 32, 32, 3\), found shape=\(32, 32, 3\)"):
        model(images((32, 32, 3)))
