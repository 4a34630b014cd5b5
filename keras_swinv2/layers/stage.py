"""A stage of the hierarchy: optional patch merging, then a run of blocks."""

import keras

from keras_swinv2.layers.block import SwinV2Block, resolve_options
from keras_swinv2.layers.patch_merging import PatchMerging


@keras.saving.register_keras_serializable(package="keras_swinv2")
class SwinV2Stage(keras.layers.Layer):
    """`[PatchMerging] -> depth x SwinV2Block`, alternating regular and shifted windows.

    Blocks with an odd index use a cyclic shift of `window_size // 2`. The
    merging sits at the start of the stage (timm's layout); the official
    checkpoints keep it at the end of the previous stage, which computes the
    same thing.

    Args:
        dim: int, channels of the stage's blocks.
        depth: int, number of blocks.
        num_heads: int.
        window_size: int.
        pretrained_window_size: int, window the position bias was trained at
            (0: none), see `ContinuousPositionBias`.
        downsample: bool, start with a PatchMerging from `dim // 2` channels.
        patch_merging: "v2" or "v1" merging.
        drop_path_rates: float or list of `depth` floats, per-block stochastic
            depth.
        extra_norm_period: int, if > 0, blocks whose 1-based index in the stage
            is a multiple of it end with an extra LayerNorm (SwinV2-H/G).
        options: `BlockOptions` shared by every block (or its config dict);
            its fields may also be given as keywords.

    Input shape: `(batch, height, width, dim // 2)` with `downsample`, else
        `(batch, height, width, dim)`.
    Output shape: `(batch, height', width', dim)`, height' = ceil(height / 2)
        with `downsample`.
    """

    def __init__(
        self,
        dim,
        depth,
        num_heads,
        window_size=8,
        pretrained_window_size=0,
        downsample=False,
        patch_merging="v2",
        drop_path_rates=0.0,
        extra_norm_period=0,
        options=None,
        **kwargs,
    ):
        options, kwargs = resolve_options(options, kwargs)
        super().__init__(**kwargs)
        if isinstance(drop_path_rates, (int, float)):
            drop_path_rates = [float(drop_path_rates)] * depth
        if len(drop_path_rates) != depth:
            raise ValueError(f"drop_path_rates needs {depth} rates (one per block); got {len(drop_path_rates)}.")
        if downsample and dim % 2:
            raise ValueError(f"A downsampling stage needs an even dim; got {dim}.")
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.window_size = window_size
        self.pretrained_window_size = pretrained_window_size
        self.downsample = downsample
        self.patch_merging = patch_merging
        self.drop_path_rates = [float(r) for r in drop_path_rates]
        self.extra_norm_period = extra_norm_period
        self.options = options
        self.merge = (
            PatchMerging(dim // 2, version=patch_merging, dtype=self.dtype_policy, name="downsample")
            if downsample
            else None
        )
        self.blocks = [
            SwinV2Block(
                dim,
                num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                pretrained_window_size=pretrained_window_size,
                drop_path_rate=self.drop_path_rates[i],
                extra_norm=extra_norm_period > 0 and (i + 1) % extra_norm_period == 0,
                options=options,
                dtype=self.dtype_policy,
                name=f"blocks_{i}",
            )
            for i in range(depth)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.merge is not None:
            self.merge.build(shape)
            shape = self.merge.compute_output_shape(shape)
        for block in self.blocks:
            block.build(shape)

    def call(self, x, training=None):
        if self.merge is not None:
            x = self.merge(x)
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        if self.merge is not None:
            return self.merge.compute_output_shape(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim,
            depth=self.depth,
            num_heads=self.num_heads,
            window_size=self.window_size,
            pretrained_window_size=self.pretrained_window_size,
            downsample=self.downsample,
            patch_merging=self.patch_merging,
            drop_path_rates=self.drop_path_rates,
            extra_norm_period=self.extra_norm_period,
            options=self.options.get_config(),
        )
        return config
