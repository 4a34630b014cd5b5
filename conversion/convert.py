"""Converts a PyTorch Swin / SwinV2 checkpoint into a Keras `.keras` or `.weights.h5` file.

    python conversion/convert.py SRC DST [--layout official|timm|hf] [--window-size N]
        [--input-size H [W]] [--pretrained-window-sizes a b c d] [--no-top]
        [--classifier-activation softmax|none]

SRC is any checkpoint `keras_swinv2.weights.read_state_dict` reads (`.safetensors`,
`.pth`/`.pt`/`.bin`/`.ckpt`, `.npz`) in the official Microsoft, timm or HF
transformers layout. The architecture (embed dim, depths, heads, MLP ratio,
V1/V2 switches, classes) is inferred from the tensors. What tensors cannot say
is taken, in this order, from the flags, from the checkpoint's derived buffers
when it has them (official checkpoints store `relative_position_index`,
`relative_coords_table` and `attn_mask`: they give the window, the CPB's
pretrained windows and the image size), else from defaults (window 8, 256 px).
A checkpoint with a classification head becomes a `SwinV2ImageClassifier` (a
`SwinV2Backbone` inside); `--no-top`, or a checkpoint without a head, gives the
`SwinV2Backbone` alone. DST's suffix picks the format: `.keras` (whole model) or
`.weights.h5` (weights only). DST is written atomically (temp file + `os.replace`).
"""

import argparse
import os
import re
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_WINDOW = 8
DEFAULT_SIZE = 256
OUTPUT_SUFFIXES = (".keras", ".weights.h5")
# `SwinV2Backbone` arguments read from the tensors (`keras_swinv2.weights.infer_config`).
ARCHITECTURE = (
    "embed_dim",
    "depths",
    "num_heads",
    "patch_size",
    "mlp_ratio",
    "qkv_bias",
    "key_bias",
    "attention",
    "norm_position",
    "position_bias",
    "patch_merging",
    "extra_norm_period",
)


def _stage_buffers(state, name):
    """`{stage: array}` of a derived buffer of block 0 of each stage (any prefix)."""
    pattern = re.compile(rf"(?:^|\.)layers\.(\d+)\.blocks\.0\.attn\.{name}$")
    found = {}
    for key, value in state.items():
        m = pattern.search(key)
        if m:
            found[int(m.group(1))] = np.asarray(value)
    return found


def _window_of_index(index):
    """Window side from a `relative_position_index` `(N, N)` or `(N*N,)` buffer."""
    n = index.shape[0] if index.ndim == 2 else int(round(np.sqrt(index.size)))
    side = int(round(np.sqrt(n)))
    return side if side * side == n and side >= 1 else None


def infer_geometry(state, patch_size=4):
    """Window, per-stage pretrained windows and image size from derived buffers.

    The window of each stage comes from the SHAPE of its `relative_position_index`
    `(N, N)` or `relative_coords_table` `(1, 2W-1, 2W-1, 2)`; the model's window is
    the largest (smaller stages are clamped to their resolution). The CPB's
    pretrained window P of a stage is read from the table's CONTENTS, and only
    trusted when the table equals `keras_swinv2.layers.relative_coords_table(W, P)`.
    The image size comes from the shape of stage 1's shift mask
    `(windows, N, N)`, assuming a square image.

    Returns:
        dict with any of "window_size", "pretrained_window_sizes" (only when
        every stage has a verified table) and "input_size".
    """
    from keras_swinv2.layers import relative_coords_table

    out = {}
    windows = {}
    for stage, index in _stage_buffers(state, "relative_position_index").items():
        side = _window_of_index(index)
        if side:
            windows[stage] = side
    pretrained = {}
    for stage, table in _stage_buffers(state, "relative_coords_table").items():
        if table.ndim != 4 or table.shape[1] != table.shape[2] or table.shape[1] % 2 == 0:
            continue
        side = (table.shape[1] + 1) // 2
        windows.setdefault(stage, side)
        if side < 2:
            continue
        peak = float(np.max(table[..., 0]))  # log2(8 (W-1)/(P-1) + 1) / 3 at offset W-1
        ratio = (2.0 ** (3.0 * peak) - 1.0) / 8.0 if np.isfinite(peak) and peak < 30 else 0.0
        if ratio <= 0:
            continue
        p = int(round(1 + (side - 1) / ratio))
        if p >= 2 and np.allclose(relative_coords_table(side, p).reshape(table.shape[1:]), table[0], atol=1e-4):
            pretrained[stage] = p
    if windows:
        out["window_size"] = max(windows.values())
        if pretrained and all(s in pretrained for s in range(max(windows) + 1)):
            out["pretrained_window_sizes"] = tuple(pretrained[s] for s in range(max(windows) + 1))
    if 0 in windows:
        mask_key = re.compile(r"(?:^|\.)layers\.0\.blocks\.\d+\.attn_mask$")
        for key, mask in state.items():
            if mask_key.search(key) and np.ndim(mask) == 3 and mask.shape[1] == windows[0] ** 2:
                per_side = int(round(np.sqrt(mask.shape[0])))
                if per_side * per_side == mask.shape[0]:
                    out["input_size"] = (patch_size * windows[0] * per_side,) * 2
                break
    return out


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="convert.py",
        description="Convert a PyTorch Swin/SwinV2 checkpoint (official, timm or HF layout) "
        "to a Keras .keras or .weights.h5 file.",
    )
    parser.add_argument("src", help="checkpoint: .safetensors, .pth/.pt/.bin/.ckpt or .npz")
    parser.add_argument("dst", help="output: .keras (model) or .weights.h5 (weights)")
    parser.add_argument("--layout", choices=("official", "timm", "hf"), help="force the key layout (default: detect)")
    parser.add_argument("--window-size", type=int, help="attention window (default: from the checkpoint, else 8)")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        metavar="N",
        help="image size: H, or H W (default: from the checkpoint, else 256)",
    )
    parser.add_argument(
        "--pretrained-window-sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="window per stage the CPB was trained at (default: from the checkpoint, else 0)",
    )
    parser.add_argument(
        "--no-top", action="store_true", help="drop the classification head: write the SwinV2Backbone alone"
    )
    parser.add_argument(
        "--classifier-activation",
        default="softmax",
        help="activation of the head, 'none' for logits (default: softmax)",
    )
    args = parser.parse_args(argv)
    if not args.dst.endswith(OUTPUT_SUFFIXES):
        parser.error(f"DST must end with .keras or .weights.h5; got {args.dst!r}.")
    if args.input_size is not None and len(args.input_size) not in (1, 2):
        parser.error(f"--input-size takes H or H W; got {args.input_size}.")
    if args.window_size is not None and args.window_size < 1:
        parser.error(f"--window-size must be >= 1; got {args.window_size}.")
    return args


def _save_atomic(model, dst):
    directory = os.path.dirname(os.path.abspath(dst))
    os.makedirs(directory, exist_ok=True)
    suffix = ".weights.h5" if dst.endswith(".weights.h5") else ".keras"
    fd, tmp = tempfile.mkstemp(prefix=".convert-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        if suffix == ".keras":
            model.save(tmp, overwrite=True)
        else:
            model.save_weights(tmp, overwrite=True)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give DST ordinary permissions
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def build_model(
    config, window_size, pretrained_window_sizes, input_size, head=True, activation=None, drop_path_rate=None
):
    """The Keras model for an `infer_config` result at a geometry.

    Args:
        config: `keras_swinv2.weights.infer_config` output (backbone arguments,
            "in_channels", "num_classes"; 0 classes: no head).
        window_size: int.
        pretrained_window_sizes: one int per stage.
        input_size: `(height, width)`.
        head: False drops the checkpoint's head.
        activation: the head's activation (None: logits).
        drop_path_rate: None keeps the backbone's default (for fine-tuning).

    Returns:
        A `SwinV2ImageClassifier` when the checkpoint has a head and `head`,
        else a `SwinV2Backbone`.
    """
    from keras_swinv2 import SwinV2Backbone, SwinV2ImageClassifier

    extra = {} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}
    backbone = SwinV2Backbone(
        **{key: config[key] for key in ARCHITECTURE},
        window_size=window_size,
        pretrained_window_sizes=tuple(pretrained_window_sizes),
        image_shape=(input_size[0], input_size[1], config["in_channels"]),
        **extra,
    )
    if head and config["num_classes"]:
        return SwinV2ImageClassifier(backbone, num_classes=config["num_classes"], activation=activation)
    return backbone


def main(argv=None):
    """Runs the conversion; returns 0. Raises on unreadable or ill-fitting checkpoints."""
    args = _parse(argv)

    from keras_swinv2.weights import detect_layout, infer_config, load_state_dict, read_state_dict

    state = read_state_dict(args.src)
    layout = args.layout or detect_layout(state)
    config = infer_config(state, layout)
    geometry = infer_geometry(state, config["patch_size"])
    num_stages = len(config["depths"])

    source = {}
    window = config.get("window_size")
    source["window_size"] = "checkpoint (V1 table)" if window else None
    if window is None and "window_size" in geometry:
        window, source["window_size"] = geometry["window_size"], "checkpoint (derived buffers)"
    if args.window_size is not None:
        window, source["window_size"] = args.window_size, "--window-size"
    if window is None:
        window, source["window_size"] = DEFAULT_WINDOW, "default"

    pretrained, source["pretrained_window_sizes"] = (0,) * num_stages, "default"
    if geometry.get("pretrained_window_sizes") and len(geometry["pretrained_window_sizes"]) == num_stages:
        pretrained = geometry["pretrained_window_sizes"]
        source["pretrained_window_sizes"] = "checkpoint (derived buffers)"
    if args.pretrained_window_sizes is not None:
        if len(args.pretrained_window_sizes) != num_stages:
            raise SystemExit(
                f"--pretrained-window-sizes needs {num_stages} values (one per stage); "
                f"got {args.pretrained_window_sizes}."
            )
        pretrained, source["pretrained_window_sizes"] = tuple(args.pretrained_window_sizes), "--pretrained-window-sizes"

    size, source["input_size"] = (DEFAULT_SIZE, DEFAULT_SIZE), "default"
    if "input_size" in geometry:
        size, source["input_size"] = geometry["input_size"], "checkpoint (shift mask)"
    if args.input_size is not None:
        size = (args.input_size[0], args.input_size[-1])
        source["input_size"] = "--input-size"

    classes = config["num_classes"]
    activation = None if args.classifier_activation.lower() == "none" else args.classifier_activation
    model = build_model(config, window, pretrained, size, head=not args.no_top, activation=activation)
    load_state_dict(model, state, layout=layout)

    print(f"source:       {args.src} ({layout} layout, {len(state)} tensors)")
    print("architecture:")
    for key in ARCHITECTURE[:4] + ("in_channels",) + ARCHITECTURE[4:]:
        print(f"  {key:24s}{config[key]}")
    print(f"  {'window_size':24s}{window}  [{source['window_size']}]")
    print(f"  {'pretrained_window_sizes':24s}{pretrained}  [{source['pretrained_window_sizes']}]")
    print(f"  {'input_size':24s}{size[0]}x{size[1]}  [{source['input_size']}]")
    if classes and not args.no_top:
        print(f"  {'head':24s}{classes} classes, activation {activation}")
    else:
        print(f"  {'head':24s}none" + (" (dropped: --no-top)" if classes else " (checkpoint has none)"))
    print(f"model:        {type(model).__name__}")
    print(f"parameters:   {model.count_params():,}")

    used = {"window_size": window, "input_size": size[0]}
    guessed = [key for key in used if source[key] == "default"]
    if guessed:
        print(
            f"warning: the checkpoint does not record {' or '.join(guessed)}; used the default "
            f"{' / '.join(str(used[key]) for key in guessed)}. The weights fit any window, so a wrong "
            f"guess converts silently into a different model: pass "
            f"{' / '.join('--' + key.replace('_', '-') for key in guessed)} from the model card.",
            file=sys.stderr,
        )
    _save_atomic(model, args.dst)
    print(f"wrote:        {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
