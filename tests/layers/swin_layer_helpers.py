"""Brute-force numpy references and weight helpers shared by the layer tests."""

import math

import numpy as np

import keras


def to_numpy(x):
    if isinstance(x, keras.Variable):
        x = x.value
    return np.asarray(keras.ops.convert_to_numpy(x))


def pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def brute_force_partition(x, window):
    """(B, H, W, C) -> (B * nW, wh * ww, C), with explicit loops."""
    wh, ww = pair(window)
    batch, height, width, channels = x.shape
    out = []
    for b in range(batch):
        for wi in range(height // wh):
            for wj in range(width // ww):
                tokens = [x[b, wi * wh + i, wj * ww + j] for i in range(wh) for j in range(ww)]
                out.append(np.stack(tokens))
    return np.stack(out).reshape(-1, wh * ww, channels)


def official_shift_mask(height, width, window, shift):
    """The shifted-window mask, built the way microsoft/Swin-Transformer does it."""
    wh, ww = pair(window)
    sh, sw = pair(shift)
    img_mask = np.zeros((1, height, width, 1), dtype="float32")
    h_slices = (slice(0, -wh), slice(-wh, -sh), slice(-sh, None))
    w_slices = (slice(0, -ww), slice(-ww, -sw), slice(-sw, None))
    cnt = 0
    for hs in h_slices:
        for ws in w_slices:
            img_mask[:, hs, ws, :] = cnt
            cnt += 1
    mask_windows = brute_force_partition(img_mask, (wh, ww))[..., 0]  # (nW, N)
    diff = mask_windows[:, None, :] - mask_windows[:, :, None]
    return np.where(diff != 0, -100.0, 0.0).astype("float32")


def brute_force_relative_index(window):
    wh, ww = pair(window)
    coords = [(i, j) for i in range(wh) for j in range(ww)]
    index = np.zeros((len(coords), len(coords)), dtype="int64")
    for p, (hp, wp) in enumerate(coords):
        for q, (hq, wq) in enumerate(coords):
            index[p, q] = (hp - hq + wh - 1) * (2 * ww - 1) + (wp - wq + ww - 1)
    return index


def layer_norm(x, gamma, beta, eps=1e-5):
    x = x.astype("float64")
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def randomize_keras(layer, seed=0):
    """Fills every weight of a built Keras layer with values that make each term matter."""
    rng = np.random.default_rng(seed)
    for var in layer.weights:
        shape = tuple(var.shape)
        if var.name == "gamma":
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif var.name == "logit_scale":
            value = rng.uniform(math.log(2), math.log(30), shape)
        elif var.name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape) / math.sqrt(fan_in)
        else:
            value = 0.1 * rng.standard_normal(shape)
        var.assign(value.astype(var.dtype))
    return layer
