"""Architectures of SwinV2-T/S/B/L/H/G (data only; the builders are in `keras_swinv2.applications`)."""

# T/S/B/L as published; H and G follow the paper's widths and depths with
# 32-channel heads and a main-branch LayerNorm every 6 blocks. `default_size`
# and `window_size` match each variant's first official checkpoint (T/S/B:
# 256 px window 8; L: 192 px window 12).
VARIANTS = {
    "tiny": dict(
        embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2, default_size=256, window_size=8
    ),
    "small": dict(
        embed_dim=96,
        depths=(2, 2, 18, 2),
        num_heads=(3, 6, 12, 24),
        drop_path_rate=0.3,
        default_size=256,
        window_size=8,
    ),
    "base": dict(
        embed_dim=128,
        depths=(2, 2, 18, 2),
        num_heads=(4, 8, 16, 32),
        drop_path_rate=0.5,
        default_size=256,
        window_size=8,
    ),
    "large": dict(
        embed_dim=192,
        depths=(2, 2, 18, 2),
        num_heads=(6, 12, 24, 48),
        drop_path_rate=0.2,
        default_size=192,
        window_size=12,
    ),
    "huge": dict(
        embed_dim=352,
        depths=(2, 2, 18, 2),
        num_heads=(11, 22, 44, 88),
        extra_norm_period=6,
        drop_path_rate=0.2,
        default_size=192,
        window_size=12,
    ),
    "giant": dict(
        embed_dim=512,
        depths=(2, 2, 42, 2),
        num_heads=(16, 32, 64, 128),
        extra_norm_period=6,
        drop_path_rate=0.2,
        default_size=192,
        window_size=12,
    ),
}
