"""SimMIM masked image modelling with a SwinV2 encoder.

Data path (Xie et al., CVPR 2022; official microsoft/SimMIM and HF
transformers `Swinv2ForMaskedImageModeling` compute the same thing):

```
images (B,H,W,3), mask (B,H/4,W/4) with 1 = masked
 -> encoder.patch_embed (conv 4x4 stride 4 -> LayerNorm)        tokens (B,H/4,W/4,C)
 -> x = x * (1 - m) + mask_token * m                            MaskToken
 -> encoder.pos_drop -> encoder stages -> encoder.norm          (B,H/s,W/s,C*2**(n-1))
 -> decoder: 1x1 conv to s*s*3 channels -> pixel shuffle by s   (B,H,W,3)
loss = sum(|images - rec| * pixel_mask) / (sum(pixel_mask) + 1e-5) / 3
```

with `s = encoder_stride = patch_size * 2**(num_stages - 1)` (32 for four
stages). The encoder's own layers are used, so pre-training updates the
encoder in place: afterwards `model.encoder` is an ordinary `SwinV2Backbone`
to save, or to put under a `SwinV2ImageClassifier` (or copy into another
model with `keras_swinv2.weights.copy_encoder_weights`).
"""

import keras
from keras import ops

from keras_swinv2.models.backbone import SwinV2Backbone
from keras_swinv2.simmim.masking import MaskGenerator
from keras_swinv2.layers.initializers import TruncatedNormal

__all__ = ["MaskToken", "SwinV2SimMIM", "masked_l1_loss", "pixel_shuffle"]

LOSS_EPSILON = 1e-5


def pixel_shuffle(x, factor):
    """Rearranges channels into space, in `torch.nn.PixelShuffle`'s order.

    Output pixel `(y * r + i, x * r + j)`, channel `c` takes input pixel
    `(y, x)`, channel `c * r * r + i * r + j` (`r = factor`), so a 1x1
    convolution ported from PyTorch followed by this gives PyTorch's image.

    Args:
        x: `(batch, height, width, channels * factor**2)` tensor.
        factor: int, the upscaling factor r.

    Returns:
        `(batch, height * factor, width * factor, channels)` tensor.

    Example:

    >>> tuple(pixel_shuffle(np.zeros((1, 2, 3, 4 * 3)), 2).shape)
    (1, 4, 6, 3)
    """
    channels = x.shape[-1]
    if channels is None or channels % (factor * factor):
        raise ValueError(
            f"pixel_shuffle by {factor} needs a multiple of {factor * factor} channels; got shape {tuple(x.shape)}."
        )
    out_channels = channels // (factor * factor)
    shape = ops.shape(x)
    height, width = shape[1], shape[2]
    x = ops.reshape(x, (-1, height, width, out_channels, factor, factor))
    x = ops.transpose(x, (0, 1, 4, 2, 5, 3))
    return ops.reshape(x, (-1, height * factor, width * factor, out_channels))


def masked_l1_loss(images, reconstruction, mask, patch_size=4):
    """SimMIM's loss: mean absolute error over the masked pixels, in float32.

    Args:
        images: `(batch, height, width, channels)` target images.
        reconstruction: same shape, the model's output.
        mask: `(batch, height / patch_size, width / patch_size)`, 1 = masked
            token; repeated `patch_size` times along each axis to pixels.
        patch_size: int, pixels per token side.

    Returns:
        float32 scalar `sum(|images - reconstruction| * pixel_mask) /
        (sum(pixel_mask) + 1e-5) / channels` (`pixel_mask` has one channel).
    """
    images = ops.cast(images, "float32")
    reconstruction = ops.cast(reconstruction, "float32")
    pixel_mask = ops.cast(mask, "float32")
    if patch_size > 1:
        pixel_mask = ops.repeat(ops.repeat(pixel_mask, patch_size, axis=1), patch_size, axis=2)
    channels = images.shape[-1]
    error = ops.sum(ops.abs(images - reconstruction) * pixel_mask[..., None])
    return error / (ops.sum(pixel_mask) + LOSS_EPSILON) / channels


@keras.saving.register_keras_serializable(package="keras_swinv2")
class MaskToken(keras.layers.Layer):
    """Replaces masked tokens by a learned vector: `x * (1 - m) + token * m`.

    Args:
        stddev: float, the truncated-normal initialisation's standard
            deviation (SimMIM: 0.02).

    Call arguments:
        x: `(batch, height, width, channels)` tokens.
        mask: `(batch, height, width)`, 1 = masked (bool, int or float).

    Output shape: that of `x`. The weight is named "mask_token", shape
    `(channels,)`.

    Example:

    >>> layer = MaskToken()
    >>> tuple(layer(np.ones((1, 2, 2, 8)), np.array([[[1, 0], [0, 0]]])).shape)
    (1, 2, 2, 8)
    """

    def __init__(self, stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"MaskToken needs a known channel count; got input shape {tuple(input_shape)}.")
        self.mask_token = self.add_weight(
            name="mask_token",
            shape=(channels,),
            initializer=TruncatedNormal(stddev=self.stddev),
        )

    def call(self, x, mask):
        if len(mask.shape) != len(x.shape) - 1:
            raise ValueError(
                f"MaskToken: the mask must be (batch, height, width) for tokens of shape "
                f"{tuple(x.shape)}; got a mask of shape {tuple(mask.shape)}."
            )
        m = ops.expand_dims(ops.cast(mask, x.dtype), -1)
        token = ops.cast(self.mask_token, x.dtype)
        return x * (1 - m) + token * m

    def compute_output_shape(self, input_shape, mask_shape=None):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(stddev=self.stddev)
        return config


def _check_encoder(encoder):
    if not isinstance(encoder, SwinV2Backbone):
        raise ValueError(f"SwinV2SimMIM needs a SwinV2Backbone encoder; got {type(encoder).__name__}.")
    if encoder.pooling is not None:
        raise ValueError(
            "SwinV2SimMIM needs the encoder's feature map: build the backbone with pooling=None; "
            f"got pooling={encoder.pooling!r}."
        )
    stride = encoder.patch_size * 2 ** (len(encoder.depths) - 1)
    shape = encoder.image_shape
    if shape is not None:
        for side in shape[:2]:
            if side is not None and side % stride:
                raise ValueError(
                    f"SwinV2SimMIM reconstructs images whose sides are multiples of the encoder "
                    f"stride {stride} (patch_size {encoder.patch_size} x 2**{len(encoder.depths) - 1}); "
                    f"the encoder takes {shape[0]}x{shape[1]} px."
                )
    return stride


@keras.saving.register_keras_serializable(package="keras_swinv2")
class SwinV2SimMIM(keras.Model):
    """SimMIM masked-image-modelling pre-training around a SwinV2 encoder.

    Tokens under the mask are replaced by a learned `MaskToken` after the
    patch embedding; the encoder (its own layers, trained in place) runs on
    the result; a 1x1 convolution to `encoder_stride**2 * in_channels`
    channels and a pixel shuffle by `encoder_stride` reconstruct the image;
    the loss is the L1 error on masked pixels only (`masked_l1_loss`, in
    float32). Matches HF transformers' `Swinv2ForMaskedImageModeling`
    (decoder weights port as `(out, in, 1, 1) -> (1, 1, in, out)`).

    `fit` takes a dataset of `{"images", "mask"}` dicts with no labels
    (`MaskGenerator.add_masks` makes one) after `compile(optimizer=...)`
    with no `loss`: `compute_loss` returns the SimMIM loss (plus any
    regularisation losses), logged as "loss".

    Args:
        encoder: a `SwinV2Backbone` built with `pooling=None` whose image
            sides are multiples of `encoder_stride`.
        name: model name.

    Call arguments:
        inputs: dict with "images" `(batch, height, width, in_channels)` and
            "mask" `(batch, height / patch_size, width / patch_size)`,
            1 = masked.
        training: bool.

    Returns:
        The reconstruction, `(batch, height, width, in_channels)`.

    Attributes:
        encoder: the `SwinV2Backbone`, shared (not copied); also `backbone`.
        encoder_stride: `patch_size * 2**(num_stages - 1)`.
        mask_token: the `MaskToken` layer.
        decoder: the 1x1 `Conv2D`.

    Example:

    >>> encoder = SwinV2Backbone(embed_dim=16, depths=(1, 1), num_heads=(2, 4), window_size=4,
    ...                          image_shape=(32, 32, 3))
    >>> model = SwinV2SimMIM(encoder)
    >>> masks = model.mask_generator(mask_patch_size=8).sample_batch(2, np.random.default_rng(0))
    >>> tuple(model({"images": np.zeros((2, 32, 32, 3)), "mask": masks}).shape)
    (2, 32, 32, 3)
    >>> model.compile(optimizer="adamw")   # then model.fit(dataset_of_dicts)
    """

    def __init__(self, encoder, name="swinv2_simmim", **kwargs):
        stride = _check_encoder(encoder)
        kwargs.pop("dtype", None)
        policy = encoder.dtype_policy
        super().__init__(name=name, dtype=policy, **kwargs)
        self.encoder = encoder
        self.encoder_stride = stride
        self.patch_size = encoder.patch_size
        self.in_channels = encoder.image_shape[-1]
        num_features = encoder.num_features
        self.mask_token = MaskToken(dtype=policy, name="mask_token")
        self.mask_token.build((None, None, None, encoder.embed_dim))
        self.decoder = keras.layers.Conv2D(
            stride * stride * self.in_channels, kernel_size=1, dtype=policy, name="decoder"
        )
        self.decoder.build((None, None, None, num_features))
        self.built = True

    def _unpack(self, inputs):
        if not isinstance(inputs, dict) or "images" not in inputs or "mask" not in inputs:
            got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(
                'SwinV2SimMIM takes a dict {"images": (batch, height, width, channels), '
                f'"mask": (batch, height / {self.patch_size}, width / {self.patch_size})}}; got {got}.'
            )
        images, mask = inputs["images"], inputs["mask"]
        if len(images.shape) != 4 or len(mask.shape) != 3:
            raise ValueError(
                f"SwinV2SimMIM: images must be (batch, height, width, {self.in_channels}) and mask "
                f"(batch, height / {self.patch_size}, width / {self.patch_size}); got images "
                f"{tuple(images.shape)}, mask {tuple(mask.shape)}."
            )
        for axis in (1, 2):
            side, tokens = images.shape[axis], mask.shape[axis]
            if side is not None and side % self.encoder_stride:
                raise ValueError(
                    f"SwinV2SimMIM: image sides must be multiples of the encoder stride "
                    f"{self.encoder_stride}; got images {tuple(images.shape)}."
                )
            if side is not None and tokens is not None and tokens * self.patch_size != side:
                raise ValueError(
                    f"SwinV2SimMIM: the mask must have one entry per {self.patch_size}x{self.patch_size} "
                    f"patch, shape (batch, {images.shape[1] // self.patch_size}, "
                    f"{images.shape[2] // self.patch_size}) for images {tuple(images.shape)}; "
                    f"got {tuple(mask.shape)}."
                )
        return images, mask

    def call(self, inputs, training=None):
        images, mask = self._unpack(inputs)
        images = ops.cast(images, self.compute_dtype)
        x = self.mask_token(self.encoder.embed_patches(images), mask)
        x = self.encoder.encode(x, training=training)
        return pixel_shuffle(self.decoder(x), self.encoder_stride)

    @property
    def backbone(self):
        """The encoder (the same `SwinV2Backbone`), under the name task models use."""
        return self.encoder

    def compute_output_shape(self, input_shape):
        shape = input_shape["images"] if isinstance(input_shape, dict) else input_shape
        return (shape[0], shape[1], shape[2], self.in_channels)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The masked L1 loss of `y_pred` against `x["images"]` under `x["mask"]`.

        `y` is ignored (SimMIM needs no labels); `y_pred` is computed from `x`
        when None. Regularisation losses (`self.losses`) are added. Returns a
        float32 scalar.
        """
        del y
        if sample_weight is not None:
            raise ValueError("SwinV2SimMIM does not use sample weights; pass {'images', 'mask'} dicts only.")
        images, mask = self._unpack(x)
        if y_pred is None:
            y_pred = self(x, training=training)
        loss = masked_l1_loss(images, y_pred, mask, self.patch_size)
        for extra in self.losses:
            loss = loss + ops.sum(ops.cast(extra, "float32"))
        return loss

    def mask_generator(self, mask_patch_size=32, mask_ratio=0.6):
        """A `MaskGenerator` for this model's image size and patch size."""
        shape = self.encoder.image_shape
        if shape is None or None in tuple(shape[:2]):
            raise ValueError("The encoder takes images of any size; build a MaskGenerator with an explicit input_size.")
        return MaskGenerator(tuple(shape[:2]), mask_patch_size, self.patch_size, mask_ratio)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = config.pop("encoder")
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        return cls(encoder=encoder, **config)
