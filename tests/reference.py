"""PyTorch references (HF transformers) with every parameter randomised, and comparison helpers."""

import math

import numpy as np
import torch

import keras

torch.set_num_threads(2)


def randomize_(module, seed=0):
    """Fills every parameter with values that make each term of the model matter.

    Linear/conv weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1), LayerNorm
    weights ~ 1 + N(0, 0.2) (the zero-initialised post-norms too),
    `logit_scale` ~ U[log 2, log 30] (temperatures of trained checkpoints;
    the log(100) clamp is tested per layer, where float32 rounding is not
    amplified through 24 blocks), V1 tables ~ N(0, 0.5).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "logit_scale" in name:
                p.copy_(torch.empty(p.shape).uniform_(math.log(2), math.log(30), generator=gen))
            elif "relative_position_bias_table" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif "norm" in name and leaf == "weight":
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif leaf == "weight" and p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return module


def hf_swinv2(
    image_size, embed_dim, depths, num_heads, window_size, pretrained_window_sizes=None, num_labels=10, seed=0
):
    from transformers import Swinv2Config, Swinv2ForImageClassification

    config = Swinv2Config(
        image_size=image_size,
        patch_size=4,
        embed_dim=embed_dim,
        depths=list(depths),
        num_heads=list(num_heads),
        window_size=window_size,
        pretrained_window_sizes=list(pretrained_window_sizes or [0] * len(depths)),
        num_labels=num_labels,
        drop_path_rate=0.0,
    )
    return randomize_(Swinv2ForImageClassification(config), seed).eval()


def hf_swin_v1(image_size, embed_dim, depths, num_heads, window_size, num_labels=10, seed=0):
    from transformers import SwinConfig, SwinForImageClassification

    config = SwinConfig(
        image_size=image_size,
        patch_size=4,
        embed_dim=embed_dim,
        depths=list(depths),
        num_heads=list(num_heads),
        window_size=window_size,
        num_labels=num_labels,
        drop_path_rate=0.0,
    )
    config._attn_implementation = "eager"
    return randomize_(SwinForImageClassification(config), seed).eval()


def hf_outputs(model, images):
    """Runs an HF Swin/Swinv2 classifier on NHWC numpy images.

    Returns:
        `(logits, [stage outputs as NHWC numpy])`, the stage outputs taken
        after each stage's last block (before its patch merging).
    """
    backbone = model.swinv2 if hasattr(model, "swinv2") else model.swin
    captured = []
    hooks = [
        stage.blocks[-1].register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o))
        for stage in backbone.encoder.layers
    ]
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).logits.numpy()
    finally:
        for h in hooks:
            h.remove()
    batch, height, width = images.shape[:3]
    h, w = -(-height // 4), -(-width // 4)
    stages = []
    for tokens in captured:
        stages.append(tokens.numpy().reshape(batch, h, w, -1))
        h, w = -(-h // 2), -(-w // 2)
    return logits, stages


def keras_outputs(model, images):
    """The output (logits or features) and the pyramid outputs P2.. of a SwinV2 backbone or
    classifier, as numpy."""
    backbone = getattr(model, "backbone", model)
    levels = sorted(backbone.pyramid_outputs)
    extractor = keras.Model(backbone.input, [backbone.pyramid_outputs[k] for k in levels])
    stages = extractor(images, training=False)
    out = model(images, training=False)
    return keras.ops.convert_to_numpy(out), [keras.ops.convert_to_numpy(o) for o in stages]


def max_abs_diff(a, b):
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.max(np.abs(a - b)))


def state_dict_numpy(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
