"""Checkpoint files in the upstream layouts, made from HF transformers state dicts.

The converters here are written independently of `keras_swinv2.weights.layouts`, so
tests that load their output check the package's ports against a second reading of
each layout. Shared by test_weights.py and test_download.py.
"""

import pathlib
import re

import numpy as np
import torch

from keras_swinv2.layers import relative_coords_table, relative_position_index

# The tiny geometry of test_weights.py, the converters' default buffer geometry.
SIZE, WINDOW = 64, 4
V1_SIZE = 32


# --------------------------------------------------------------------------------------
# Independent layout converters: HF transformers state dict -> official / timm layout.
# --------------------------------------------------------------------------------------


def _effective_windows(size, window=WINDOW, stages=4):
    """The window each stage really uses (the official rule: clamp to the resolution)."""
    out, res = [], size // 4
    for _ in range(stages):
        out.append(min(res, window))
        res //= 2
    return out


def hf_to_pytorch_layout(
    hf_state,
    layout="official",
    prefix="",
    cpb_name="cpb_mlp",
    head=True,
    buffers="random",
    pretrained_window_sizes=None,
    seed=0,
    size=None,
):
    """An HF Swinv2 / Swin (V1) state dict in the official Microsoft or timm layout.

    official: `layers.{i}.downsample` at the END of stage i (i = 0..n-2), `head.*`;
    timm: `layers.{i+1}.downsample` at the START of stage i+1, `head.fc.*`.
    V2 blocks get a fused `attn.qkv.weight` (query, key, value on dim 0) with
    `attn.q_bias`/`attn.v_bias`; V1 blocks a fused `attn.qkv.bias` too.

    buffers: "random" adds `relative_coords_table`, `relative_position_index`
    and `attn_mask` with random contents (a loader must ignore them); "real"
    adds them as the official code computes them (window geometry from
    `_effective_windows`); None adds none.
    """
    rng = np.random.default_rng(seed)
    sd = {re.sub(r"^(swinv2|swin)\.", "", k): np.asarray(v) for k, v in hf_state.items()}
    v1 = any(".attention.q_proj." in k for k in sd)
    size = size or (V1_SIZE if v1 else SIZE)
    depths = []
    while f"encoder.layers.{len(depths)}.blocks.0.layernorm_before.weight" in sd:
        i = len(depths)
        depths.append(len({k.split(".")[4] for k in sd if k.startswith(f"encoder.layers.{i}.blocks.")}))
    windows = _effective_windows(size, stages=len(depths))
    pretrained = pretrained_window_sizes or (0,) * len(depths)
    out = {}

    def put(name, value):
        out[prefix + name] = np.ascontiguousarray(value)

    put("patch_embed.proj.weight", sd["embeddings.patch_embeddings.projection.weight"])
    put("patch_embed.proj.bias", sd["embeddings.patch_embeddings.projection.bias"])
    put("patch_embed.norm.weight", sd["embeddings.norm.weight"])
    put("patch_embed.norm.bias", sd["embeddings.norm.bias"])
    res = size // 4
    for i, depth in enumerate(depths):
        w = windows[i]
        for j in range(depth):
            h, o = f"encoder.layers.{i}.blocks.{j}.", f"layers.{i}.blocks.{j}."
            if v1:
                q, k, v = (sd[f"{h}attention.{n}_proj.weight"] for n in "qkv")
                put(o + "attn.qkv.weight", np.concatenate([q, k, v], axis=0))
                put(o + "attn.qkv.bias", np.concatenate([sd[f"{h}attention.{n}_proj.bias"] for n in "qkv"]))
                put(
                    o + "attn.relative_position_bias_table",
                    sd[h + "attention.relative_position_bias.relative_position_bias_table"],
                )
                proj, fc1, fc2 = h + "attention.o_proj", h + "mlp.fc1", h + "mlp.fc2"
            else:
                s = h + "attention.self."
                put(
                    o + "attn.qkv.weight",
                    np.concatenate([sd[s + "query.weight"], sd[s + "key.weight"], sd[s + "value.weight"]], axis=0),
                )
                put(o + "attn.q_bias", sd[s + "query.bias"])
                put(o + "attn.v_bias", sd[s + "value.bias"])
                put(o + "attn.logit_scale", sd[s + "logit_scale"])
                put(o + f"attn.{cpb_name}.0.weight", sd[s + "continuous_position_bias_mlp.0.weight"])
                put(o + f"attn.{cpb_name}.0.bias", sd[s + "continuous_position_bias_mlp.0.bias"])
                put(o + f"attn.{cpb_name}.2.weight", sd[s + "continuous_position_bias_mlp.2.weight"])
                proj, fc1, fc2 = h + "attention.output.dense", h + "intermediate.dense", h + "output.dense"
            for src, dst in (
                (proj, "attn.proj"),
                (fc1, "mlp.fc1"),
                (fc2, "mlp.fc2"),
                (h + "layernorm_before", "norm1"),
                (h + "layernorm_after", "norm2"),
            ):
                put(o + dst + ".weight", sd[src + ".weight"])
                put(o + dst + ".bias", sd[src + ".bias"])
            n, windows_per_map = w * w, (-(-res // w)) ** 2
            if buffers == "random":
                put(o + "attn.relative_position_index", rng.integers(0, 1000, size=(n, n)))
                if not v1:
                    put(
                        o + "attn.relative_coords_table",
                        rng.normal(size=(1, 2 * w - 1, 2 * w - 1, 2)).astype("float32"),
                    )
                if j % 2 and res > w:
                    put(o + "attn_mask", rng.normal(size=(windows_per_map, n, n)).astype("float32"))
            elif buffers == "real":
                put(o + "attn.relative_position_index", relative_position_index(w).reshape(n, n).astype("int64"))
                if not v1:
                    coords = relative_coords_table(w, pretrained[i]).reshape(1, 2 * w - 1, 2 * w - 1, 2)
                    put(o + "attn.relative_coords_table", coords)
                if j % 2 and res > w:
                    put(o + "attn_mask", np.zeros((windows_per_map, n, n), "float32"))
        if i < len(depths) - 1:
            stage = i if layout == "official" else i + 1
            put(f"layers.{stage}.downsample.reduction.weight", sd[f"encoder.layers.{i}.downsample.reduction.weight"])
            put(f"layers.{stage}.downsample.norm.weight", sd[f"encoder.layers.{i}.downsample.norm.weight"])
            put(f"layers.{stage}.downsample.norm.bias", sd[f"encoder.layers.{i}.downsample.norm.bias"])
        res //= 2
    put("norm.weight", sd["layernorm.weight"])
    put("norm.bias", sd["layernorm.bias"])
    if head:
        name = "head" if layout == "official" else "head.fc"
        put(name + ".weight", sd["classifier.weight"])
        put(name + ".bias", sd["classifier.bias"])
    return out


def save_checkpoint(state, path):
    """Writes `{name: array}` as .safetensors, .pth/.bin (torch.save) or .npz."""
    path = pathlib.Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    elif path.suffix == ".pth":  # training-script style: wrapped, plus non-tensor entries
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
        torch.save({"model": tensors, "epoch": 3}, str(path))
    elif path.suffix == ".bin":  # HF style: the bare state dict
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, str(path))
    elif path.suffix == ".npz":
        np.savez(str(path), **state)
    else:
        raise AssertionError(path)
    return path
