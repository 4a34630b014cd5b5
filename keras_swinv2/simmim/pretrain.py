"""SimMIM pre-training with `model.fit`, resumable, ending in an encoder a classifier can load."""

import dataclasses
import logging
import os

import keras

from keras_swinv2.data import pipeline
from keras_swinv2.applications import SwinV2
from keras_swinv2.models.variants import VARIANTS
from keras_swinv2.simmim.model import SwinV2SimMIM
from keras_swinv2.io_utils import atomic_write
from keras_swinv2.training.checkpoint import ResumableTraining, check_run_config, lock_run_directory, save_run_config
from keras_swinv2.training.optimizer import swinv2_adamw

logger = logging.getLogger("keras_swinv2")


@dataclasses.dataclass
class PretrainConfig:
    """Every setting of a SimMIM run (saved as `config.json` beside its checkpoints).

    Attributes:
        data: "digits", "tfds:NAME", "tfds:folder:PATH" or an image folder
            (labels are ignored).
        model: variant of the encoder ("tiny" ... "giant").
        architecture: dict of `SwinV2Backbone` architecture overrides for a custom size.
        image_size: int, input side (SimMIM SwinV2: 192 px).
        window_size: int (SimMIM SwinV2: window 12).
        mask_patch_size: int, side of the masked squares in px (SimMIM: 32).
        mask_ratio: float, fraction of the squares masked (SimMIM: 0.6).
        epochs: int.
        batch_size: int.
        learning_rate: float, peak rate of the AdamW schedule (`swinv2_adamw`).
        weight_decay: float.
        warmup_epochs: float.
        min_learning_rate: float, the end of the cosine decay.
        clipnorm: float, global gradient-norm clip, or None.
        drop_path_rate: float.
        crop_scale: random resized crop area range (SimMIM: 0.67-1).
        seed: int.
    """

    data: str = "digits"
    model: str = "tiny"
    architecture: dict = None
    image_size: int = 192
    window_size: int = 12
    mask_patch_size: int = 32
    mask_ratio: float = 0.6
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 10.0
    min_learning_rate: float = 1e-5
    clipnorm: float = 5.0
    drop_path_rate: float = 0.1
    crop_scale: tuple = (0.67, 1.0)
    data_dir: str = None
    seed: int = 0


def _with_masks(batches, generator, seed, start):
    import tensorflow as tf

    def attach(index, batch):
        images = batch[0]
        mask = generator.sample_tf(tf.stack([tf.constant(seed, "int64"), index]), tf.shape(images)[0])
        return {"images": images, "mask": mask}

    return batches.enumerate(start=start).map(attach)


def pretrain(config, output, verbose=1):
    """SimMIM pre-training of a SwinV2 encoder; resumes if `output` holds an unfinished run.

    Writes into `output`: `config.json`, the resumable state, `best.keras`
    (the whole SimMIM model with the lowest validation loss), `log.csv`,
    `curves.png`, and `encoder.keras`: the trained backbone, which
    `swinv2 finetune --model output/encoder.keras` (or
    `keras_swinv2.weights.copy_encoder_weights`) puts under a classifier.

    Returns:
        `(model, history)`: the `SwinV2SimMIM` and the per-epoch logs.
    """
    if config.model not in VARIANTS:
        raise ValueError(f"model must be one of {sorted(VARIANTS)}; got {config.model!r}.")
    check_run_config(output, config)  # before any work; nothing is written until training starts
    keras.utils.set_random_seed(config.seed)
    data = pipeline.load_data(config.data, config.data_dir, seed=config.seed)
    size = config.image_size
    encoder = SwinV2(
        variant=config.model,
        include_top=False,
        input_shape=(size, size, 3),
        window_size=config.window_size,
        drop_path_rate=config.drop_path_rate,
        **(config.architecture or {}),
    )
    model = SwinV2SimMIM(encoder)
    masks = model.mask_generator(config.mask_patch_size, config.mask_ratio)
    steps = pipeline.steps_per_epoch(data, config.batch_size)
    model.compile(
        optimizer=swinv2_adamw(
            model,
            config.learning_rate,
            weight_decay=config.weight_decay,
            total_steps=config.epochs * steps,
            warmup_steps=int(config.warmup_epochs * steps),
            min_learning_rate=config.min_learning_rate,
            global_clipnorm=config.clipnorm,
        )
    )
    with lock_run_directory(output):
        save_run_config(output, config)
        state = ResumableTraining(output, monitor="val_loss", mode="min")
        initial_epoch = state.restore(model)
        if initial_epoch:
            logger.info("Resuming %s after epoch %d of %d.", output, initial_epoch, config.epochs)
        _fit(model, data, masks, config, state, initial_epoch, verbose)
        atomic_write(os.path.join(output, "encoder.keras"), model.encoder.save)
    return model, state.history


def _fit(model, data, masks, config, state, initial_epoch, verbose):
    size = config.image_size
    steps = pipeline.steps_per_epoch(data, config.batch_size)
    if initial_epoch < config.epochs:
        augmentation = pipeline.Augmentation(
            crop_scale=tuple(config.crop_scale), flip=True, randaugment=None, erasing=None, mixup=None, cutmix=None
        )
        stream = pipeline.training_stream(
            data, size, config.batch_size, config.epochs, initial_epoch, config.seed, augmentation
        )
        validation = pipeline.validation_batches(data, size, config.batch_size)
        model.fit(
            _with_masks(stream, masks, config.seed, initial_epoch * steps),
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            validation_data=_with_masks(validation, masks, config.seed + 1, 0),
            callbacks=[state],
            shuffle=False,  # the stream is shuffled per epoch, reproducibly
            verbose=verbose,
        )
