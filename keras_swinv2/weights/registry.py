"""The official SwinV2 checkpoints: what each one is and where it lives.

Twelve supervised checkpoints from microsoft/Swin-Transformer (MODELHUB.md),
each published as an official `.pth` (GitHub release v2.0.0) and as a timm
hub copy in `.safetensors` (`https://huggingface.co/<timm_id>/resolve/main/
model.safetensors`), plus the SimMIM pre-trained encoders (no classifier; see
`SIMMIM`).

Evaluation preprocessing of the official code (data/build.py): bicubic resize
of the shorter side to `int(256 / 224 * image_size)` then a centre crop, except
for the 384 px checkpoints (`TEST.CROP: False`), which squash-resize to
`image_size` x `image_size`. Then ImageNet mean/std normalisation.
"""

import dataclasses

from keras_swinv2.layers.windows import stage_geometry

OFFICIAL_BASE_URL = "https://github.com/SwinTransformer/storage/releases/download/v2.0.0"
TIMM_BASE_URL = "https://huggingface.co"
SIMMIM_BASE_URL = "https://huggingface.co/zdaxie/SimMIM/resolve/main/simmim_swinv2_pretrain_models"
WEIGHTS_NAMES = ("imagenet1k", "imagenet22k", "imagenet22k-ft1k")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One published checkpoint and the model geometry it was trained at.

    Attributes:
        name: registry name, e.g. "swinv2_tiny_window8_256".
        variant: "tiny", "small", "base", "large" (or "huge", "giant").
        weights: "imagenet1k", "imagenet22k", "imagenet22k-ft1k" or
            "simmim-<data>-<iters>".
        image_size: training/evaluation resolution in px.
        window_size: attention window.
        pretrained_window_sizes: per-stage CPB windows of the pre-training it
            was fine-tuned from, or None.
        classes: classifier outputs (0: encoder only).
        crop: evaluation resizes the shorter side to `256/224 * image_size`
            and centre-crops (True) or squash-resizes (False).
        official_file: file name of the official `.pth`.
        timm_id: timm hub id of the `.safetensors` copy, or None.
        sha256: expected sha256 per source ("timm", "official"), where known.
    """

    name: str
    variant: str
    weights: str
    image_size: int
    window_size: int
    pretrained_window_sizes: tuple = None
    classes: int = 1000
    crop: bool = True
    official_file: str = None
    timm_id: str = None
    official_base_url: str = OFFICIAL_BASE_URL
    sha256: dict = dataclasses.field(default_factory=dict)

    @property
    def label_set(self):
        return {1000: "imagenet1k", 21841: "imagenet22k"}.get(self.classes)

    @property
    def sources(self):
        """Sources this checkpoint can be downloaded from, preferred first."""
        return tuple(s for s, present in (("timm", self.timm_id), ("official", self.official_file)) if present)

    def cpb_windows(self, num_stages=4, patch_size=4):
        """Per-stage window the CPB coordinates were normalised with in training.

        Used as `pretrained_window_sizes` when the checkpoint is loaded at
        another window or resolution, so the learned bias keeps its scale.
        """
        if self.pretrained_window_sizes:
            return tuple(self.pretrained_window_sizes)
        return tuple(w for _, w, _ in stage_geometry(self.image_size, self.window_size, num_stages, patch_size))

    def eval_resize(self):
        """`(resize_to, crop_to)` of the official evaluation; `resize_to` is the
        shorter side after resizing, or None for a squash resize."""
        return (int(256 / 224 * self.image_size), self.image_size) if self.crop else (None, self.image_size)


def _supervised(variant, weights, size, window, official_file, timm_id, pretrained=None, classes=1000):
    name = f"swinv2_{variant}_window{window}_{size}"
    if pretrained:
        name = f"swinv2_{variant}_window{pretrained[0]}to{window}_192to{size}"
    return Checkpoint(
        name=name,
        variant=variant,
        weights=weights,
        image_size=size,
        window_size=window,
        pretrained_window_sizes=pretrained,
        classes=classes,
        crop=size < 384,
        official_file=official_file,
        timm_id=timm_id,
    )


_FT = (12, 12, 12, 6)
CHECKPOINTS = {
    c.name: c
    for c in [
        _supervised(
            "tiny", "imagenet1k", 256, 8, "swinv2_tiny_patch4_window8_256.pth", "timm/swinv2_tiny_window8_256.ms_in1k"
        ),
        _supervised(
            "tiny",
            "imagenet1k",
            256,
            16,
            "swinv2_tiny_patch4_window16_256.pth",
            "timm/swinv2_tiny_window16_256.ms_in1k",
        ),
        _supervised(
            "small",
            "imagenet1k",
            256,
            8,
            "swinv2_small_patch4_window8_256.pth",
            "timm/swinv2_small_window8_256.ms_in1k",
        ),
        _supervised(
            "small",
            "imagenet1k",
            256,
            16,
            "swinv2_small_patch4_window16_256.pth",
            "timm/swinv2_small_window16_256.ms_in1k",
        ),
        _supervised(
            "base", "imagenet1k", 256, 8, "swinv2_base_patch4_window8_256.pth", "timm/swinv2_base_window8_256.ms_in1k"
        ),
        _supervised(
            "base",
            "imagenet1k",
            256,
            16,
            "swinv2_base_patch4_window16_256.pth",
            "timm/swinv2_base_window16_256.ms_in1k",
        ),
        _supervised(
            "base",
            "imagenet22k",
            192,
            12,
            "swinv2_base_patch4_window12_192_22k.pth",
            "timm/swinv2_base_window12_192.ms_in22k",
            classes=21841,
        ),
        _supervised(
            "large",
            "imagenet22k",
            192,
            12,
            "swinv2_large_patch4_window12_192_22k.pth",
            "timm/swinv2_large_window12_192.ms_in22k",
            classes=21841,
        ),
        _supervised(
            "base",
            "imagenet22k-ft1k",
            256,
            16,
            "swinv2_base_patch4_window12to16_192to256_22kto1k_ft.pth",
            "timm/swinv2_base_window12to16_192to256.ms_in22k_ft_in1k",
            pretrained=_FT,
        ),
        _supervised(
            "base",
            "imagenet22k-ft1k",
            384,
            24,
            "swinv2_base_patch4_window12to24_192to384_22kto1k_ft.pth",
            "timm/swinv2_base_window12to24_192to384.ms_in22k_ft_in1k",
            pretrained=_FT,
        ),
        _supervised(
            "large",
            "imagenet22k-ft1k",
            256,
            16,
            "swinv2_large_patch4_window12to16_192to256_22kto1k_ft.pth",
            "timm/swinv2_large_window12to16_192to256.ms_in22k_ft_in1k",
            pretrained=_FT,
        ),
        _supervised(
            "large",
            "imagenet22k-ft1k",
            384,
            24,
            "swinv2_large_patch4_window12to24_192to384_22kto1k_ft.pth",
            "timm/swinv2_large_window12to24_192to384.ms_in22k_ft_in1k",
            pretrained=_FT,
        ),
    ]
}

# SimMIM pre-trained encoders ("On Data Scaling in Masked Image Modeling"),
# official layout with `encoder.` prefix, `rpe_mlp` and a decoder (dropped on
# load). Pre-trained at 192 px, window 12 (the published SimMIM SwinV2 config).
SIMMIM = {}
for _variant, _data in [
    ("small", ("1k", "1kper10", "1kper20", "1kper50")),
    ("base", ("1k", "22k", "1kper10", "1kper20", "1kper50")),
    ("large", ("1k", "22k", "1kper10", "1kper20", "1kper50")),
]:  # huge/giant SimMIM encoders are published too, but their architecture is unverified here
    for _d in _data:
        for _iters in ("125k", "250k", "500k"):
            _c = Checkpoint(
                name=f"simmim_swinv2_{_variant}_{_d}_{_iters}",
                variant=_variant,
                weights=f"simmim-{_d}-{_iters}",
                image_size=192,
                window_size=12,
                classes=0,
                official_file=f"swinv2_{_variant}_{_d}_{_iters}.pth",
                official_base_url=SIMMIM_BASE_URL,
            )
            SIMMIM[_c.name] = _c
CHECKPOINTS.update(SIMMIM)


def _describe(checkpoints):
    return "\n  ".join(
        f"{c.name}: variant={c.variant!r}, weights={c.weights!r}, {c.image_size} px, window {c.window_size}"
        for c in checkpoints
    )


def find_checkpoint(variant, weights, window_size=None, image_size=None):
    """Picks the checkpoint for a variant, a weights name and an optional geometry.

    Args:
        variant: "tiny", "small", "base", "large", "huge" or "giant".
        weights: "imagenet1k", "imagenet22k", "imagenet22k-ft1k",
            "simmim-<data>-<iters>", or a registry name.
        window_size: prefer the checkpoint trained at this window (the first
            listed one otherwise). A geometry no checkpoint has is fine: the
            model is built at the requested geometry and the weights transfer
            (see `cpb_windows`).
        image_size: prefer the checkpoint trained at this resolution.

    Returns:
        The `Checkpoint`.

    Raises:
        ValueError: unknown name or variant/weights combination, listing what
            exists.
    """
    if weights in CHECKPOINTS:
        found = CHECKPOINTS[weights]
        if variant is not None and found.variant != variant:
            raise ValueError(f"Checkpoint {weights!r} is a SwinV2-{found.variant}, not a SwinV2-{variant}.")
        return found
    candidates = [c for c in CHECKPOINTS.values() if c.variant == variant and c.weights == weights]
    if not candidates:
        same = [c for c in CHECKPOINTS.values() if c.variant == variant and c.weights in WEIGHTS_NAMES]
        raise ValueError(
            f"No checkpoint {weights!r} for SwinV2-{variant}. Checkpoints for this variant:\n  "
            + (_describe(same) or "(none)")
            + f"\nWeights names: {WEIGHTS_NAMES} and 'simmim-<data>-<iters>'; or a local file path."
        )

    def score(c):
        return (
            window_size is not None and c.window_size != window_size,
            image_size is not None and c.image_size != image_size,
        )

    return min(candidates, key=score)
