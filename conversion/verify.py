"""Verifies a converted Keras Swin / SwinV2 model against the PyTorch reference, side by side.

    python conversion/verify.py CHECKPOINT [--keras CONVERTED.keras|CONVERTED.weights.h5]
        [--layout official|timm|hf] [--window-size N] [--input-size H [W]]
        [--pretrained-window-sizes a b c d] [--batch 1] [--seed 0] [--tolerance 1e-4]

CHECKPOINT is any checkpoint `keras_swinv2.weights.read_state_dict` reads, in the
official Microsoft, timm or HF transformers layout. The reference is HF
transformers' PyTorch model (`Swinv2ForImageClassification`, or `Swinv2Model`
when the checkpoint has no head; `SwinForImageClassification` / `SwinModel` for
Swin V1 checkpoints), built with the inferred architecture and geometry and
loaded from the checkpoint through the canonical -> HF mapping below
(`load_state_dict(strict=True)`, so a mapping error cannot pass unnoticed).

The Keras side is `--keras` (a `.keras` file holding a `SwinV2ImageClassifier`
or a `SwinV2Backbone`, or `.weights.h5` weights loaded into one built from the
inferred architecture the way convert.py builds it), or, without it, the
checkpoint converted on the fly with `keras_swinv2.weights.load_state_dict`. Its
parts come from `keras_swinv2.weights.model_parts` (backbone, head or None).

Both run on the same seeded random images (uniform pixels, ImageNet-normalised);
the tool prints the max abs difference of each stage output P2..P5
(`backbone.pyramid_outputs`, before the final LayerNorm), of the final
LayerNorm's output (the backbone's output) and of the logits (the classifier's
output before the head's activation). Exit status: 0 when every difference is within
`--tolerance`, 1 when one is not or the converted model's architecture differs
from the checkpoint's, 2 when no comparison could be made (unreadable files, an
architecture HF transformers has no model for, a geometry the checkpoint does
not fit).
"""

import argparse
import functools
import importlib.util
import os
import pathlib
import re
import sys
import warnings

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

KERAS_SUFFIXES = (".keras", ".weights.h5")
# The two families HF transformers implements.
V2_SWITCHES = dict(
    attention="cosine",
    norm_position="post",
    position_bias="log_cpb",
    patch_merging="v2",
    extra_norm_period=0,
    key_bias=False,
)
V1_SWITCHES = dict(attention="dot", norm_position="pre", position_bias="table", patch_merging="v1", extra_norm_period=0)


class VerifyError(Exception):
    """No comparison could be made (exit status 2)."""


@functools.lru_cache(maxsize=None)
def _convert_module():
    """conversion/convert.py, for its geometry inference, defaults and model building."""
    path = pathlib.Path(__file__).resolve().with_name("convert.py")
    spec = importlib.util.spec_from_file_location("swinv2_convert", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------
# canonical -> HF transformers
# --------------------------------------------------------------------------------------

_V2_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.logit_scale": "attention.self.logit_scale",
    "attn.q_bias": "attention.self.query.bias",
    "attn.k_bias": "attention.self.key.bias",
    "attn.v_bias": "attention.self.value.bias",
    "attn.cpb_mlp.0": "attention.self.continuous_position_bias_mlp.0",
    "attn.cpb_mlp.2": "attention.self.continuous_position_bias_mlp.2",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_V2_QKV = ("attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight")
# HF's Swin V1 as transformers 5 names it.
_V1_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.q_bias": "attention.q_proj.bias",
    "attn.k_bias": "attention.k_proj.bias",
    "attn.v_bias": "attention.v_proj.bias",
    "attn.relative_position_bias_table": "attention.relative_position_bias.relative_position_bias_table",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_V1_QKV = ("attention.q_proj.weight", "attention.k_proj.weight", "attention.v_proj.weight")
_BLOCK_KEY = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")


def canonical_to_hf(canonical, v1=False, prefix=""):
    """The canonical layout (see `keras_swinv2.weights.layouts`) as an HF transformers state dict.

    The inverse of `keras_swinv2.weights.layouts.from_hf`: `attn.qkv.weight` is split into
    query / key / value, merging moves from the start of stage i + 1 to the end of stage i,
    and the module names become HF's (Swinv2, or Swin V1 with `v1`). `prefix` is "swinv2." /
    "swin." for the classification models, "" for the bare backbones. The head becomes
    `classifier.*` (never prefixed).

    Raises:
        VerifyError: a tensor HF's model has no place for (e.g. `norm3` of SwinV2-H/G).
    """
    block_names, qkv_names = (_V1_BLOCK, _V1_QKV) if v1 else (_V2_BLOCK, _V2_QKV)
    out, unmapped = {}, []
    for key, value in canonical.items():
        value = np.asarray(value)
        if key.startswith("head.fc."):
            out["classifier." + key[len("head.fc.") :]] = value
            continue
        if key.startswith("patch_embed.proj."):
            name = "embeddings.patch_embeddings.projection." + key[len("patch_embed.proj.") :]
        elif key.startswith("patch_embed.norm."):
            name = "embeddings.norm." + key[len("patch_embed.norm.") :]
        elif key.startswith("norm."):
            name = "layernorm." + key[len("norm.") :]
        elif m := re.match(r"^layers\.(\d+)\.downsample\.(.+)$", key):
            name = f"encoder.layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        elif m := _BLOCK_KEY.match(key):
            stem, rest = f"encoder.layers.{m.group(1)}.blocks.{m.group(2)}.", m.group(3)
            if rest == "attn.qkv.weight":
                for part, hf_name in zip(np.split(value, 3, axis=0), qkv_names):
                    out[prefix + stem + hf_name] = part
                continue
            module, _, param = rest.rpartition(".")
            if rest in block_names:  # parameters without a module: logit_scale, q_bias, the table
                name = stem + block_names[rest]
            elif module in block_names:
                name = f"{stem}{block_names[module]}.{param}"
            else:
                unmapped.append(key)
                continue
        else:
            unmapped.append(key)
            continue
        out[prefix + name] = value
    if unmapped:
        raise VerifyError(
            f"HF transformers' {'Swin' if v1 else 'Swinv2'} has no place for these checkpoint tensors: "
            f"{unmapped[:10]}{' ...' if len(unmapped) > 10 else ''}"
        )
    return out


def build_reference(config, geometry, canonical):
    """The HF transformers model for `config` and `geometry`, loaded strictly.

    Args:
        config: `infer_config` output (backbone arguments, "in_channels", "num_classes";
            0 classes: no head, the bare HF backbone).
        geometry: dict with "window_size", "pretrained_window_sizes", "input_size" `(h, w)`.
        canonical: the checkpoint in the canonical layout.

    Returns:
        `(model, description)`.
    """
    try:
        import torch
        import transformers
    except ImportError as e:
        raise VerifyError(f"The PyTorch reference needs torch and transformers installed: {e}") from e

    family = _family(config)
    v1 = family == "v1"
    if v1 and config.get("window_size") not in (None, geometry["window_size"]):
        raise VerifyError(
            f"Swin V1 position tables fix the window: this checkpoint's is {config['window_size']}, "
            f"not {geometry['window_size']}. keras_swinv2 resizes tables to other windows; HF's model "
            "cannot, so there is no reference to compare such a model with."
        )
    common = dict(
        image_size=list(geometry["input_size"]),
        patch_size=config["patch_size"],
        num_channels=config["in_channels"],
        embed_dim=config["embed_dim"],
        depths=list(config["depths"]),
        num_heads=list(config["num_heads"]),
        window_size=geometry["window_size"],
        mlp_ratio=config["mlp_ratio"],
        qkv_bias=config["qkv_bias"],
        drop_path_rate=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
    )
    has_head = config["num_classes"] > 0
    if has_head:
        common["num_labels"] = config["num_classes"]
    if v1:
        hf_config = transformers.SwinConfig(**common)
        cls = transformers.SwinForImageClassification if has_head else transformers.SwinModel
    else:
        hf_config = transformers.Swinv2Config(
            **common, pretrained_window_sizes=list(geometry["pretrained_window_sizes"])
        )
        cls = transformers.Swinv2ForImageClassification if has_head else transformers.Swinv2Model
    hf_config._attn_implementation = "eager"
    prefix = ("swin." if v1 else "swinv2.") if has_head else ""

    try:
        with torch.device("cpu"):
            model = cls(hf_config).eval()
    except Exception as e:  # HF validates little up front; its errors come from deep inside
        raise VerifyError(f"HF transformers cannot build {cls.__name__} for this architecture: {e!r}") from e
    mapped = canonical_to_hf(canonical, v1=v1, prefix=prefix)
    own = model.state_dict()
    for name, value in mapped.items():
        # logit_scale is (heads, 1, 1) in every layout, but accept a flat (heads,) too.
        if name.endswith("logit_scale") and name in own and value.size == own[name].numel():
            mapped[name] = value.reshape(tuple(own[name].shape))
    params = {name for name, _ in model.named_parameters()}
    # Persistent buffers (coordinate tables, indices) are the model's own, derived from the geometry.
    state = {k: v for k, v in own.items() if k not in params}
    state.update({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in mapped.items()})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise VerifyError(f"The checkpoint does not fit HF's {cls.__name__} at this geometry:\n{e}") from e
    return model, f"transformers {transformers.__version__} {cls.__name__} (PyTorch {torch.__version__}, CPU, float32)"


def _family(config):
    """ "v2" or "v1": which HF transformers model computes what `config` does."""
    if all(config[k] == v for k, v in V2_SWITCHES.items()):
        return "v2"
    if all(config[k] == v for k, v in V1_SWITCHES.items()) and config["key_bias"] == config["qkv_bias"]:
        return "v1"
    switches = {
        k: config[k]
        for k in (
            "attention",
            "norm_position",
            "position_bias",
            "patch_merging",
            "extra_norm_period",
            "qkv_bias",
            "key_bias",
        )
    }
    raise VerifyError(
        f"HF transformers implements only SwinV2 ({V2_SWITCHES}) and Swin V1 ({V1_SWITCHES}); "
        f"this checkpoint has {switches}, so there is no PyTorch reference for it."
    )


def reference_outputs(model, images):
    """Logits (None without a head), final LayerNorm output and stage outputs P2.. of an HF model.

    Stage outputs are taken after each stage's last block, before its patch merging, as
    NHWC numpy arrays.
    """
    import torch

    backbone = next((getattr(model, n) for n in ("swinv2", "swin") if getattr(model, n, None) is not None), model)
    captured, final = [], []

    def first(output):
        return output[0] if isinstance(output, (tuple, list)) else output

    hooks = [
        stage.blocks[-1].register_forward_hook(lambda m, i, o: captured.append(first(o)))
        for stage in backbone.encoder.layers
    ]
    hooks.append(backbone.layernorm.register_forward_hook(lambda m, i, o: final.append(first(o))))
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    finally:
        for hook in hooks:
            hook.remove()
    logits = out.logits.numpy() if getattr(out, "logits", None) is not None else None
    batch, height, width = images.shape[:3]
    patch = backbone.config.patch_size
    h, w = -(-height // patch), -(-width // patch)
    stages = []
    for tokens in captured:
        stages.append(tokens.numpy().reshape(batch, h, w, -1))
        last = (h, w)
        h, w = -(-h // 2), -(-w // 2)
    return logits, final[0].numpy().reshape(batch, *last, -1), stages


# --------------------------------------------------------------------------------------
# The Keras side
# --------------------------------------------------------------------------------------


def _backbone_architecture(backbone):
    """The architecture of a `SwinV2Backbone` (convert.py's `ARCHITECTURE` and the image channels),
    as `infer_config` spells it."""
    arch = {}
    for key in ("in_channels", *_convert_module().ARCHITECTURE):
        if key == "in_channels":
            value = backbone.image_shape[-1]
        elif hasattr(backbone.options, key):
            value = getattr(backbone.options, key)
        else:
            value = getattr(backbone, key)
        arch[key] = tuple(value) if isinstance(value, list) else value
    return arch


def keras_outputs(model, images):
    """Logits (None without a head; taken before the head's activation), the backbone's output
    (the final LayerNorm's, pooled if the backbone pools) and the stage outputs P2.. of a
    `SwinV2ImageClassifier` or `SwinV2Backbone`, as numpy."""
    import keras

    from keras_swinv2.weights import model_parts

    backbone, head = model_parts(model)
    levels = sorted(backbone.pyramid_outputs, key=lambda k: int(k[1:]))
    extractor = keras.Model(backbone.input, [backbone.output] + [backbone.pyramid_outputs[k] for k in levels])
    results = [keras.ops.convert_to_numpy(o) for o in extractor(images, training=False)]
    logits = None
    if head is not None:
        activation = head.activation
        try:
            head.activation = keras.activations.linear
            logits = keras.ops.convert_to_numpy(model(images, training=False))
        finally:
            head.activation = activation
    return logits, results[0], results[1:]


def _build_keras(config, geometry, head):
    """What convert.py writes for `config` at `geometry` (head: whether to keep the checkpoint's)."""
    return _convert_module().build_model(
        config,
        geometry["window_size"],
        geometry["pretrained_window_sizes"],
        geometry["input_size"],
        head=head,
        activation=None,
        drop_path_rate=0.0,
    )


def load_keras(path, config, geometry, state, layout):
    """The Keras model to verify: `path` (.keras / .weights.h5), or None to convert on the fly.

    Returns:
        `(model, description)`.
    """
    import keras

    from keras_swinv2.weights import load_state_dict, model_parts

    if path is None:
        model = _build_keras(config, geometry, head=True)
        try:
            load_state_dict(model, state, layout=layout)
        except ValueError as e:
            raise VerifyError(str(e)) from e
        return model, f"{type(model).__name__} converted on the fly (keras_swinv2.weights.load_state_dict)"
    if not os.path.isfile(path):
        raise VerifyError(f"No converted model at {path!r}.")
    if path.endswith(".keras"):
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as e:  # zip, h5 and deserialisation errors of all kinds
            raise VerifyError(f"{path} is not a loadable .keras model: {e}") from e
        try:
            model_parts(model)
        except TypeError:
            raise VerifyError(
                f"{path} holds a {type(model).__name__}, not a keras_swinv2 model "
                "(a SwinV2ImageClassifier or a SwinV2Backbone)."
            ) from None
        return model, f"{path} (.keras, {type(model).__name__})"
    # .weights.h5: weights only, into a model built from the checkpoint's architecture.
    has_head = config["num_classes"] > 0
    heads = (True, False) if has_head else (False,)
    errors = []
    for head in heads:
        model = _build_keras(config, geometry, head=head)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model.load_weights(path)
            except Exception as e:  # Keras raises ValueError for mismatches, OSError for bad files
                errors.append(f"as a {type(model).__name__}: {str(e).splitlines()[0]}")
                continue  # the failed attempt's warnings are dropped with it
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        note = "" if head == has_head else ", no head (converted with --no-top)"
        return model, f"{path} (.weights.h5, {type(model).__name__}{note})"
    raise VerifyError(f"{path} does not load into a model of the checkpoint's architecture:\n  " + "\n  ".join(errors))


def architecture_mismatches(model, config):
    """How a converted model's architecture differs from the checkpoint's (empty: none)."""
    from keras_swinv2.weights import model_parts

    backbone, head = model_parts(model)
    problems = []
    for key, ours in _backbone_architecture(backbone).items():
        if ours != config[key]:
            problems.append(f"{key}: converted {ours!r}, checkpoint {config[key]!r}")
    if head is not None and config["num_classes"] and head.units != config["num_classes"]:
        problems.append(f"num_classes: converted {head.units}, checkpoint {config['num_classes']}")
    if head is not None and not config["num_classes"]:
        problems.append("the converted model has a head; the checkpoint has none")
    return problems


# --------------------------------------------------------------------------------------
# Geometry and the command line
# --------------------------------------------------------------------------------------


def resolve_geometry(args, config, state, convert, keras_model=None):
    """Window, per-stage pretrained windows and image size, each with where it came from.

    Order: the flags; a `.keras` model's own settings (what was converted); a V1 table;
    the checkpoint's derived buffers (`convert.infer_geometry`); convert.py's defaults.
    """
    num_stages = len(config["depths"])
    found = convert.infer_geometry(state, config["patch_size"])
    model_window = model_pretrained = model_size = None
    if keras_model is not None:
        from keras_swinv2.weights import model_parts

        backbone, _ = model_parts(keras_model)
        model_window = backbone.window_size
        if len(backbone.pretrained_window_sizes) == num_stages:
            model_pretrained = tuple(backbone.pretrained_window_sizes)
        if None not in tuple(backbone.image_shape[:2]):
            model_size = tuple(int(s) for s in backbone.image_shape[:2])

    def pick(candidates):
        for value, source in candidates:
            if value is not None:
                return value, source
        raise AssertionError("the last candidate is a default")

    window = pick(
        [
            (args.window_size, "--window-size"),
            (model_window, "converted model"),
            (config.get("window_size"), "checkpoint (V1 table)"),
            (found.get("window_size"), "checkpoint (derived buffers)"),
            (convert.DEFAULT_WINDOW, "default"),
        ]
    )
    flag_pretrained = tuple(args.pretrained_window_sizes) if args.pretrained_window_sizes else None
    if flag_pretrained is not None and len(flag_pretrained) != num_stages:
        raise VerifyError(
            f"--pretrained-window-sizes needs {num_stages} values (one per stage); got {list(flag_pretrained)}."
        )
    found_pretrained = found.get("pretrained_window_sizes")
    if found_pretrained is not None and len(found_pretrained) != num_stages:
        found_pretrained = None
    pretrained = pick(
        [
            (flag_pretrained, "--pretrained-window-sizes"),
            (model_pretrained, "converted model"),
            (found_pretrained, "checkpoint (derived buffers)"),
            ((0,) * num_stages, "default"),
        ]
    )
    flag_size = (args.input_size[0], args.input_size[-1]) if args.input_size else None
    size = pick(
        [
            (flag_size, "--input-size"),
            (model_size, "converted model"),
            (found.get("input_size"), "checkpoint (shift mask)"),
            ((convert.DEFAULT_SIZE, convert.DEFAULT_SIZE), "default"),
        ]
    )
    geometry = {"window_size": window[0], "pretrained_window_sizes": tuple(pretrained[0]), "input_size": tuple(size[0])}
    sources = {"window_size": window[1], "pretrained_window_sizes": pretrained[1], "input_size": size[1]}
    notes = []
    if keras_model is not None and model_size is None:
        notes.append(
            "the converted model takes any image size, so it keeps the full window on maps "
            "smaller than the window, where the reference shrinks it; such stages differ"
        )
    if keras_model is not None:
        # Flags that contradict the converted model cannot be verified with it.
        for key, flag, ours in (
            ("window_size", args.window_size, model_window),
            ("pretrained_window_sizes", flag_pretrained, model_pretrained),
            ("input_size", flag_size, model_size),
        ):
            if flag is not None and ours is not None and tuple(np.atleast_1d(flag)) != tuple(np.atleast_1d(ours)):
                raise VerifyError(
                    f"--{key.replace('_', '-')} {flag} contradicts the converted model, which has {key} {ours}; "
                    "drop the flag, or verify a model converted with it."
                )
        for key, value in (
            ("window_size", found.get("window_size")),
            ("pretrained_window_sizes", found_pretrained),
            ("input_size", found.get("input_size")),
        ):
            if (
                value is not None
                and sources[key] == "converted model"
                and tuple(np.atleast_1d(value)) != tuple(np.atleast_1d(geometry[key]))
            ):
                notes.append(
                    f"the checkpoint's buffers give {key} {value}; the converted model uses "
                    f"{geometry[key]} (the reference follows the converted model)"
                )
    return geometry, sources, notes


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="verify.py",
        description="Compare a converted Keras Swin/SwinV2 model with the PyTorch (HF transformers) "
        "reference built from the same checkpoint; prints the max abs difference per stage.",
    )
    parser.add_argument("checkpoint", help="PyTorch checkpoint: .safetensors, .pth/.pt/.bin/.ckpt or .npz")
    parser.add_argument(
        "--keras",
        metavar="CONVERTED",
        help="converted .keras or .weights.h5 file (default: convert the checkpoint on the fly)",
    )
    parser.add_argument("--layout", choices=("official", "timm", "hf"), help="force the key layout (default: detect)")
    parser.add_argument("--window-size", type=int, help="attention window (default: as convert.py)")
    parser.add_argument("--input-size", type=int, nargs="+", metavar="N", help="image size: H, or H W")
    parser.add_argument(
        "--pretrained-window-sizes", type=int, nargs="+", metavar="N", help="window per stage the CPB was trained at"
    )
    parser.add_argument("--batch", type=int, default=1, help="images per run (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images (default: 0)")
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest max abs difference that passes (default: 1e-4)"
    )
    args = parser.parse_args(argv)
    if args.keras is not None and not args.keras.endswith(KERAS_SUFFIXES):
        parser.error(f"--keras must end with .keras or .weights.h5; got {args.keras!r}.")
    if args.input_size is not None and len(args.input_size) not in (1, 2):
        parser.error(f"--input-size takes H or H W; got {args.input_size}.")
    if args.window_size is not None and args.window_size < 1:
        parser.error(f"--window-size must be >= 1; got {args.window_size}.")
    if args.batch < 1:
        parser.error(f"--batch must be >= 1; got {args.batch}.")
    if not args.tolerance >= 0:
        parser.error(f"--tolerance must be >= 0; got {args.tolerance}.")
    return args


def random_images(batch, height, width, channels, seed):
    """Seeded uniform RGB pixels in [0, 255], normalised with the ImageNet mean and std."""
    from keras_swinv2.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    pixels = np.random.default_rng(seed).uniform(0.0, 255.0, size=(batch, height, width, channels))
    if channels == len(IMAGENET_MEAN):
        pixels = (pixels - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    else:
        pixels = (pixels - 127.5) / 63.75
    return pixels.astype("float32")


def _row(name, ours, theirs, tolerance):
    if ours is None or theirs is None:
        return name, "-", None, "skipped (no head on one side)"
    if ours.shape != theirs.shape:
        return name, f"{tuple(ours.shape)} vs {tuple(theirs.shape)}", float("inf"), "FAIL (shape)"
    diff = float(np.max(np.abs(ours.astype("float64") - theirs.astype("float64"))))
    return name, str(tuple(ours.shape)), diff, "ok" if diff <= tolerance else "FAIL"


def main(argv=None):
    """Runs the comparison; returns 0 (all within tolerance), 1 (a difference or mismatch) or 2."""
    args = _parse(argv)
    try:
        return _verify(args)
    except VerifyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _verify(args):
    import keras

    from keras_swinv2.weights import detect_layout, infer_config, model_parts, read_state_dict, to_canonical

    convert = _convert_module()
    try:
        state = read_state_dict(args.checkpoint)
        layout = args.layout or detect_layout(state)
        config = infer_config(state, layout)
        canonical = to_canonical(state, layout)
    except (OSError, ValueError, ImportError) as e:
        raise VerifyError(f"cannot read {args.checkpoint}: {e}") from e
    family = _family(config)

    converted = None
    if args.keras and args.keras.endswith(".keras"):
        converted, keras_source = load_keras(args.keras, config, None, state, layout)
    geometry, sources, notes = resolve_geometry(args, config, state, convert, converted)
    if converted is None:
        converted, keras_source = load_keras(args.keras, config, geometry, state, layout)
    mismatches = architecture_mismatches(converted, config)
    if mismatches:
        print(f"checkpoint:   {args.checkpoint} ({layout} layout, {len(state)} tensors)")
        print(f"keras:        {keras_source}")
        print("FAIL: the converted model's architecture differs from the checkpoint's:")
        for problem in mismatches:
            print(f"  {problem}")
        return 1

    reference, reference_source = build_reference(config, geometry, canonical)

    height, width = geometry["input_size"]
    images = random_images(args.batch, height, width, config["in_channels"], args.seed)

    print(
        f"checkpoint:   {args.checkpoint} ({layout} layout, {len(state)} tensors, "
        f"{'Swin V1' if family == 'v1' else 'SwinV2'}, "
        f"{'%d classes' % config['num_classes'] if config['num_classes'] else 'no head'})"
    )
    print(
        f"architecture: embed_dim {config['embed_dim']}, depths {config['depths']}, "
        f"num_heads {config['num_heads']}, mlp_ratio {config['mlp_ratio']}"
    )
    for key, label in (
        ("window_size", "window"),
        ("pretrained_window_sizes", "pretrained"),
        ("input_size", "input size"),
    ):
        value = geometry[key] if key != "input_size" else "%dx%d" % geometry[key]
        print(f"  {label + ':':14s}{value}  [{sources[key]}]")
    print(f"reference:    {reference_source}")
    print(f"keras:        {keras_source}, backend {keras.backend.backend()}")
    print(
        f"inputs:       {args.batch}x{height}x{width}x{config['in_channels']}, seed {args.seed} "
        "(uniform pixels, ImageNet-normalised)"
    )
    pooling = model_parts(converted)[0].pooling
    if pooling is not None:
        notes.append(
            f"the converted backbone pools its output (pooling={pooling!r}): 'norm' compares it "
            "with the reference's final LayerNorm output pooled the same way"
        )
    for note in notes:
        print(f"note:         {note}")

    ref_logits, ref_final, ref_stages = reference_outputs(reference, images)
    if pooling is not None:
        ref_final = ref_final.mean(axis=(1, 2)) if pooling == "avg" else ref_final.max(axis=(1, 2))
    logits, final, stages = keras_outputs(converted, images)
    rows = [_row(f"P{i + 2}", ours, theirs, args.tolerance) for i, (ours, theirs) in enumerate(zip(stages, ref_stages))]
    rows.append(_row("norm", final, ref_final, args.tolerance))
    rows.append(_row("logits", logits, ref_logits, args.tolerance))

    print()
    print(f"{'output':8s}{'shape':22s}{'max abs diff':>14s}  status")
    for name, shape, diff, status in rows:
        shown = "-" if diff is None else f"{diff:.3e}"
        print(f"{name:8s}{shape:22s}{shown:>14s}  {status}")
    failed = [name for name, _, diff, _ in rows if diff is not None and not diff <= args.tolerance]
    compared = [name for name, _, diff, _ in rows if diff is not None]
    print()
    if failed:
        print(f"FAIL: {', '.join(failed)} exceed tolerance {args.tolerance:g}")
        return 1
    print(f"PASS: {', '.join(compared)} within tolerance {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
