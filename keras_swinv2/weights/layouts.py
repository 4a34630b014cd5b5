"""Checkpoint layouts: official Microsoft, timm and HF transformers, to one canonical layout.

The canonical layout is timm's, with the attention biases split:

    patch_embed.proj.{weight,bias}          patch_embed.norm.{weight,bias}
    layers.{i}.downsample.reduction.weight  layers.{i}.downsample.norm.*   (i >= 1)
    layers.{i}.blocks.{j}.norm1.*  .norm2.*  [.norm3.*]
    layers.{i}.blocks.{j}.attn.qkv.weight   .attn.{q,k,v}_bias
    layers.{i}.blocks.{j}.attn.logit_scale  .attn.cpb_mlp.{0,2}.*  | .attn.relative_position_bias_table
    layers.{i}.blocks.{j}.attn.proj.*       .mlp.fc1.*  .mlp.fc2.*
    norm.{weight,bias}                      head.fc.{weight,bias}

Arrays stay in PyTorch orientation here (Linear `(out, in)`, Conv `(out, in,
kh, kw)`); `loader.py` transposes them for Keras. The layout differences, each
made explicit by one function below:

- official: PatchMerging is stored at the END of stage i (`layers.{i}.downsample`),
  timm at the START of stage i + 1; the head is `head` instead of `head.fc`.
  SimMIM checkpoints prefix the encoder with `encoder.` and call the CPB MLP
  `rpe_mlp`. V1 checkpoints fuse the q/k/v biases into `attn.qkv.bias`.
- HF transformers: `swinv2.` / `swin.` prefix, q/k/v as three Linears, other
  module names (`layernorm_before`, `intermediate.dense`, ...).

Derived buffers (`relative_coords_table`, `relative_position_index`,
`attn_mask`) are dropped: they are regenerated for the target window.
"""

import re

import numpy as np

from keras_swinv2.layers.position_bias import relative_position_table_window

LAYOUTS = ("official", "timm", "hf")
DERIVED_BUFFERS = ("relative_coords_table", "relative_position_index", "attn_mask")
_BLOCK_ATTN = re.compile(r"^(layers\.\d+\.blocks\.\d+\.attn\.)")


def _drop_derived(state):
    return {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] not in DERIVED_BUFFERS}


def _strip_prefix(state, prefixes):
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _split_qkv_bias(state):
    """`attn.qkv.bias` (3C) -> `attn.q_bias`, `attn.k_bias`, `attn.v_bias`."""
    out = {}
    for key, value in state.items():
        if key.endswith(".attn.qkv.bias"):
            stem = key[: -len("qkv.bias")]
            for name, part in zip(("q_bias", "k_bias", "v_bias"), np.split(value, 3)):
                out[stem + name] = part
        else:
            out[key] = value
    return out


def detect_layout(state):
    """Tells which layout a state dict is in: "official", "timm" or "hf"."""
    keys = list(state)
    if any("embeddings.patch_embeddings." in k for k in keys):
        return "hf"
    if any(k.endswith("patch_embed.proj.weight") for k in keys):
        if any(re.search(r"(^|\.)layers\.0\.downsample\.", k) for k in keys):
            return "official"
        if any(re.search(r"(^|\.)head\.fc\.", k) for k in keys):
            return "timm"
        # Without the tell-tale downsample position or head name, the two coincide
        # except for where merging sits; downsample after stage 0 means timm.
        return "timm" if any(".downsample." in k for k in keys) else "official"
    raise ValueError(
        "Not a Swin/SwinV2 checkpoint in a known layout: expected keys like "
        "'patch_embed.proj.weight' (official/timm) or "
        "'embeddings.patch_embeddings.projection.weight' (HF transformers); "
        f"found e.g. {keys[:5]}."
    )


def from_official(state):
    """Official Microsoft (and SimMIM) layout -> canonical."""
    state = _strip_prefix(_drop_derived(state), ("module.",))
    if any(k.startswith("encoder.patch_embed.") for k in state):
        # SimMIM pre-training: keep the encoder, drop the decoder and the mask token.
        state = {
            k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.") and k != "encoder.mask_token"
        }
    out = {}
    for key, value in state.items():
        m = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", key)
        if m:
            key = f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
        elif key.startswith("head."):
            key = "head.fc." + key[len("head.") :]
        key = key.replace(".attn.rpe_mlp.", ".attn.cpb_mlp.")
        out[key] = value
    return _split_qkv_bias(out)


def from_timm(state):
    """timm layout -> canonical (older timm releases named the head `head`)."""
    state = _strip_prefix(_drop_derived(state), ("module.",))
    out = {}
    for key, value in state.items():
        if re.match(r"^head\.(weight|bias)$", key):
            key = "head.fc." + key[len("head.") :]
        out[key] = value
    return _split_qkv_bias(out)


# HF transformers module names (Swinv2, and Swin V1 in both its 4.x and 5.x
# naming) -> canonical names, inside one block.
_HF_BLOCK_RENAMES = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.self.logit_scale": "attn.logit_scale",
    "attention.self.continuous_position_bias_mlp.0": "attn.cpb_mlp.0",
    "attention.self.continuous_position_bias_mlp.2": "attn.cpb_mlp.2",
    "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
    "attention.relative_position_bias.relative_position_bias_table": "attn.relative_position_bias_table",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_QKV = {
    "attention.self.query": "q",
    "attention.self.key": "k",
    "attention.self.value": "v",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
}
_HF_IGNORED = ("embeddings.mask_token", "pooler.")


def from_hf(state):
    """HF transformers layout (Swinv2Model / ...ForImageClassification / Swin V1) -> canonical."""
    state = _drop_derived(state)
    out, qkv = {}, {}
    for key, value in state.items():
        key = re.sub(r"^(swinv2|swin)\.", "", key)
        if key.startswith(_HF_IGNORED):
            continue
        if key.startswith("classifier."):
            out["head.fc." + key[len("classifier.") :]] = value
            continue
        if key.startswith("layernorm."):
            out["norm." + key[len("layernorm.") :]] = value
            continue
        key = key.replace("embeddings.patch_embeddings.projection.", "patch_embed.proj.")
        key = key.replace("embeddings.norm.", "patch_embed.norm.")
        m = re.match(r"^encoder\.layers\.(\d+)\.downsample\.(.*)$", key)
        if m:
            out[f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"] = value
            continue
        m = re.match(
            r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.*)\.(weight|bias|logit_scale|relative_position_bias_table)$",
            key,
        )
        if m:
            stem = f"layers.{m.group(1)}.blocks.{m.group(2)}."
            module, param = m.group(3), m.group(4)
            if param in ("logit_scale", "relative_position_bias_table"):
                module, param = f"{module}.{param}", None
            if module in _HF_QKV:
                which = _HF_QKV[module]
                if param == "weight":
                    qkv.setdefault(stem, {})[which] = value
                else:
                    out[f"{stem}attn.{which}_bias"] = value
                continue
            if module in _HF_BLOCK_RENAMES:
                name = _HF_BLOCK_RENAMES[module]
                out[stem + name + (f".{param}" if param else "")] = value
                continue
        out[key] = value  # unknown: reported as unexpected by the loader
    for stem, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"{stem}: HF checkpoint lacks some of query/key/value; has {sorted(parts)}.")
        out[stem + "attn.qkv.weight"] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return out


_CONVERTERS = {"official": from_official, "timm": from_timm, "hf": from_hf}


def to_canonical(state, layout=None):
    """Converts a state dict from `layout` (detected when None) to the canonical layout."""
    layout = layout or detect_layout(state)
    if layout not in _CONVERTERS:
        raise ValueError(f"Unknown layout {layout!r}; expected one of {LAYOUTS}.")
    return _CONVERTERS[layout](state)


def infer_config(state, layout=None):
    """Infers `SwinV2Backbone` architecture arguments from a checkpoint's tensors.

    Reads embed dim, patch size and input channels from the patch embedding,
    depths from the block indices, heads from `logit_scale` `(heads, 1, 1)`
    (or the V1 table's columns), the MLP ratio, the bias and merging flavours,
    the extra-norm period and the number of classes. Not recoverable from
    tensors: `norm_position` (taken as "post" for cosine-attention checkpoints,
    "pre" otherwise) and the window of CPB checkpoints (returned for V1 tables
    only).

    Returns:
        dict of `SwinV2Backbone` keyword arguments (without `image_shape`),
        plus "in_channels" (image channels) and "num_classes" (the
        classifier's outputs, 0 for a checkpoint without a head).
    """
    c = to_canonical(state, layout)
    proj = c["patch_embed.proj.weight"]
    embed_dim, in_channels, patch_size = proj.shape[0], proj.shape[1], proj.shape[2]
    depths = []
    while any(k.startswith(f"layers.{len(depths)}.") for k in c):
        i = len(depths)
        depths.append(len({int(m.group(1)) for k in c if (m := re.match(rf"^layers\.{i}\.blocks\.(\d+)\.", k))}))
    heads = []
    for i in range(len(depths)):
        if f"layers.{i}.blocks.0.attn.logit_scale" in c:
            heads.append(c[f"layers.{i}.blocks.0.attn.logit_scale"].shape[0])
        elif f"layers.{i}.blocks.0.attn.cpb_mlp.2.weight" in c:
            heads.append(c[f"layers.{i}.blocks.0.attn.cpb_mlp.2.weight"].shape[0])
        else:
            heads.append(c[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1])
    cosine = "layers.0.blocks.0.attn.logit_scale" in c
    table = c.get("layers.0.blocks.0.attn.relative_position_bias_table")
    merge_norm = c.get("layers.1.downsample.norm.weight")
    norm3 = sorted(int(m.group(1)) for k in c if (m := re.match(r"^layers\.\d+\.blocks\.(\d+)\.norm3\.weight$", k)))
    config = dict(
        embed_dim=int(embed_dim),
        depths=tuple(depths),
        num_heads=tuple(int(h) for h in heads),
        patch_size=int(patch_size),
        in_channels=int(in_channels),
        mlp_ratio=c["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        qkv_bias="layers.0.blocks.0.attn.q_bias" in c,
        key_bias="layers.0.blocks.0.attn.k_bias" in c,
        attention="cosine" if cosine else "dot",
        norm_position="post" if cosine else "pre",
        position_bias="table" if table is not None else "log_cpb",
        patch_merging="v1" if merge_norm is not None and merge_norm.shape[0] == 4 * embed_dim else "v2",
        extra_norm_period=norm3[0] + 1 if norm3 else 0,
        num_classes=int(c["head.fc.weight"].shape[0]) if "head.fc.weight" in c else 0,
    )
    if table is not None:
        config["window_size"] = relative_position_table_window(table.shape[0])
    return config
