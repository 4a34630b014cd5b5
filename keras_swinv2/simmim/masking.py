"""SimMIM masks: random squares of `mask_patch_size` px, at the model's token resolution.

SimMIM (Xie et al., CVPR 2022, arXiv 2111.09886) hides a fixed share of an
image: the image is cut into coarse squares of `mask_patch_size` px (32 by
default), `ceil(mask_ratio * squares)` of them are chosen uniformly at random,
and the choice is repeated onto the model's token grid (one token per
`model_patch_size` px). A 192 px image with the defaults has a 6x6 grid of
squares, 22 of them masked, and a 48x48 token mask. 1 means masked.
"""

import math

import numpy as np

__all__ = ["MaskGenerator"]


def _is_positive_int(value):
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def _pair(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair; got {value!r}.")
        pair = tuple(value)
    else:
        pair = (value, value)
    for side in pair:
        if not _is_positive_int(side):
            raise ValueError(f"{name} must be positive ints; got {value!r}.")
    return tuple(int(s) for s in pair)


class MaskGenerator:
    """Draws SimMIM masks for images of one size.

    Args:
        input_size: int or `(height, width)`, the image size in pixels.
        mask_patch_size: int, side of a masked square in pixels; must divide
            both sides of the image.
        model_patch_size: int, the model's patch (token) size in pixels; must
            divide `mask_patch_size`.
        mask_ratio: float in (0, 1), the share of squares masked. Exactly
            `ceil(mask_ratio * squares)` squares are masked in every mask (as
            in the official SimMIM code; float noise such as
            `0.7 * 10 = 7.000000000000001` is rounded away first).

    Attributes:
        grid_shape: `(height, width)` of the coarse grid of squares.
        mask_shape: `(height, width)` of the token mask
            (`input_size / model_patch_size`).
        mask_count: masked squares per mask.

    Masks are float32 arrays of shape `mask_shape`, 1 = masked. `sample`
    draws one from a numpy `Generator`; `sample_tf` draws with stateless
    TensorFlow random ops (usable inside `tf.data`); `add_masks` maps a
    dataset of images to `{"images", "mask"}` dicts for `SwinV2SimMIM.fit`.

    Example:

    >>> gen = MaskGenerator(input_size=192, mask_patch_size=32, model_patch_size=4)
    >>> mask = gen.sample(np.random.default_rng(0))
    >>> mask.shape, int(mask[::8, ::8].sum())
    ((48, 48), 22)
    """

    def __init__(self, input_size=192, mask_patch_size=32, model_patch_size=4, mask_ratio=0.6):
        self.input_size = _pair(input_size, "input_size")
        for name, value in (("mask_patch_size", mask_patch_size), ("model_patch_size", model_patch_size)):
            if not _is_positive_int(value):
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        height, width = self.input_size
        if height % mask_patch_size or width % mask_patch_size:
            raise ValueError(
                f"The image size {height}x{width} px is not divisible by mask_patch_size "
                f"{mask_patch_size}: masked squares must tile the image exactly."
            )
        if mask_patch_size % model_patch_size:
            raise ValueError(
                f"mask_patch_size {mask_patch_size} is not divisible by model_patch_size "
                f"{model_patch_size}: a masked square must cover whole tokens."
            )
        is_number = isinstance(mask_ratio, (int, float, np.number)) and not isinstance(mask_ratio, bool)
        if not is_number or not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be a float strictly between 0 and 1; got {mask_ratio!r}.")
        self.mask_patch_size = int(mask_patch_size)
        self.model_patch_size = int(model_patch_size)
        self.mask_ratio = float(mask_ratio)
        self.scale = self.mask_patch_size // self.model_patch_size
        self.grid_shape = (height // self.mask_patch_size, width // self.mask_patch_size)
        self.mask_shape = (height // self.model_patch_size, width // self.model_patch_size)
        self.num_squares = self.grid_shape[0] * self.grid_shape[1]
        self.mask_count = int(math.ceil(round(self.num_squares * self.mask_ratio, 9)))

    def __repr__(self):
        return (
            f"MaskGenerator(input_size={self.input_size}, mask_patch_size={self.mask_patch_size}, "
            f"model_patch_size={self.model_patch_size}, mask_ratio={self.mask_ratio}): "
            f"{self.mask_count} of {self.num_squares} squares -> {self.mask_shape} token mask"
        )

    def _upsample_np(self, grid):
        return grid.repeat(self.scale, axis=-2).repeat(self.scale, axis=-1)

    def sample(self, rng=None):
        """One mask from a numpy `Generator` (a fresh unseeded one when None).

        Returns:
            float32 array of shape `mask_shape`, 1 = masked.
        """
        rng = np.random.default_rng() if rng is None else rng
        grid = np.zeros(self.num_squares, dtype="float32")
        grid[rng.permutation(self.num_squares)[: self.mask_count]] = 1.0
        return self._upsample_np(grid.reshape(self.grid_shape))

    def sample_batch(self, batch_size, rng=None):
        """`batch_size` independent masks, shape `(batch_size,) + mask_shape`."""
        rng = np.random.default_rng() if rng is None else rng
        return np.stack([self.sample(rng) for _ in range(batch_size)])

    def sample_tf(self, seed, batch_size=None):
        """Masks drawn with stateless TensorFlow ops: the same seed, the same mask.

        Works eagerly and inside `tf.data` `map` / `tf.function`.

        Args:
            seed: shape `(2,)` int32/int64 tensor, a stateless seed.
            batch_size: None for one mask, or an int / scalar tensor for a
                batch of independent masks.

        Returns:
            float32 tensor of shape `mask_shape` or `(batch_size,) + mask_shape`.
        """
        import tensorflow as tf

        batched = batch_size is not None
        shape = tf.stack([batch_size if batched else 1, self.num_squares])
        noise = tf.random.stateless_uniform(shape, seed=seed)
        # The mask_count squares with the largest noise are masked (a uniform random subset).
        indices = tf.math.top_k(noise, k=self.mask_count).indices
        rows = tf.shape(noise)[0]
        scatter_at = tf.stack([tf.repeat(tf.range(rows), self.mask_count), tf.reshape(indices, [-1])], axis=1)
        grid = tf.scatter_nd(scatter_at, tf.ones([rows * self.mask_count], "float32"), tf.shape(noise))
        grid = tf.reshape(grid, [rows, self.grid_shape[0], self.grid_shape[1]])
        mask = tf.repeat(tf.repeat(grid, self.scale, axis=1), self.scale, axis=2)
        return mask if batched else mask[0]

    def add_masks(self, dataset, seed=0, new_masks_each_epoch=False):
        """Maps a `tf.data.Dataset` of images to SimMIM inputs `{"images", "mask"}`.

        Elements may be images, `(images, labels[, weights])` tuples (labels are
        dropped) or dicts with an "images" key; batched (rank 4) or not (rank 3).
        Each element gets masks from `sample_tf`, seeded per
        element, so the masks are a pure function of `seed` and the element's
        position:

        - `new_masks_each_epoch=False` (default): element i uses the stateless
          seed `(seed, i)`. Every pass over the dataset and every re-created
          pipeline gives exactly the same masks, independent of any global seed.
          To get fresh masks each epoch, `.repeat()` the dataset BEFORE
          `add_masks` (positions then keep counting) and pass `steps_per_epoch`.
        - `new_masks_each_epoch=True`: per-element seeds come from
          `tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`: each
          pass draws new masks, and a re-created pipeline repeats the same
          sequence (given TensorFlow's global seed, which
          `keras.utils.set_random_seed` sets).

        Args:
            dataset: a `tf.data.Dataset`.
            seed: int.
            new_masks_each_epoch: bool, see above.

        Returns:
            A dataset of `{"images": images, "mask": float32 mask}`.

        Example:

        >>> ds = tf.data.Dataset.from_tensor_slices(np.zeros((8, 64, 64, 3), "float32"))
        >>> gen = MaskGenerator(input_size=64, mask_patch_size=16, model_patch_size=4)
        >>> ds = gen.add_masks(ds, seed=1).batch(4)
        >>> tuple(next(iter(ds))["mask"].shape)
        (4, 16, 16)
        """
        import tensorflow as tf

        seed = int(seed)

        def masked(element_seed, element):
            images = _images_of(element)
            rank = images.shape.rank
            if rank not in (3, 4):
                raise ValueError(
                    "add_masks: images must be (height, width, channels) or batched "
                    f"(batch, height, width, channels); got shape {images.shape}."
                )
            size = tuple(images.shape[-3:-1])
            if None not in size and size != self.input_size:
                raise ValueError(
                    f"add_masks: the images are {size[0]}x{size[1]} px but the MaskGenerator "
                    f"was made for {self.input_size[0]}x{self.input_size[1]} px."
                )
            batch = tf.shape(images)[0] if rank == 4 else None
            return {"images": images, "mask": self.sample_tf(element_seed, batch_size=batch)}

        if new_masks_each_epoch:
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            paired = tf.data.Dataset.zip(seeds, dataset)
            return paired.map(
                lambda r, element: masked(tf.stack([tf.constant(seed, tf.int64), r]), element),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        return dataset.enumerate().map(
            lambda i, element: masked(tf.stack([tf.constant(seed, tf.int64), i]), element),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )


def _images_of(element):
    if isinstance(element, dict):
        for key in ("images", "image"):
            if key in element:
                return element[key]
        raise ValueError(
            f"add_masks: dataset elements that are dicts need an 'images' (or 'image') key; got keys {sorted(element)}."
        )
    if isinstance(element, (tuple, list)):
        return element[0]
    return element
