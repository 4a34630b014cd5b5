"""Fine-tuning a SwinV2 with `model.fit`: the official recipe, resumable, in one call.

Three tasks share the recipe (optimizer, schedule, layer decay, EMA, resume,
logs): image classification, semantic segmentation (`SwinV2ImageSegmenter`)
and object detection (keras-hub's RetinaNet through `swinv2_retinanet`).
"""

import dataclasses
import logging

import keras

from keras_swinv2.applications import SwinV2
from keras_swinv2.data import dense, pipeline
from keras_swinv2.layers.windows import stage_geometry
from keras_swinv2.models.backbone import SwinV2Backbone
from keras_swinv2.models.variants import VARIANTS
from keras_swinv2.tasks.image_classifier import SwinV2ImageClassifier
from keras_swinv2.tasks.image_segmenter import SwinV2ImageSegmenter
from keras_swinv2.tasks.object_detector import swinv2_retinanet
from keras_swinv2.weights.loader import model_parts
from keras_swinv2.weights.transfer import copy_encoder_weights, load_keras_file
from keras_swinv2.training.checkpoint import ResumableTraining, check_run_config, lock_run_directory, save_run_config
from keras_swinv2.training.freezing import set_trainable
from keras_swinv2.training.optimizer import swinv2_adamw
from keras_swinv2.metrics import DetectionAveragePrecision

logger = logging.getLogger("keras_swinv2")

TASKS = ("classification", "segmentation", "detection")
# the validation log each task keeps its best model by
MONITORS = {"classification": "val_accuracy", "segmentation": "val_mean_iou", "detection": "val_ap50"}


@dataclasses.dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run (saved as `config.json` beside its checkpoints).

    Attributes:
        task: "classification", "segmentation" (UperNet) or "detection"
            (RetinaNet).
        data: "digits", "tfds:NAME", "tfds:folder:PATH" or an image folder;
            for segmentation and detection "digits" (scenes of handwritten
            digits, `dense.digit_scenes`) or "tfds:oxford_iiit_pet",
            "tfds:voc/2007", "tfds:voc/2012".
        model: a variant ("tiny" ... "giant") or a `.keras` file (a SwinV2
            classifier, or a backbone such as a SimMIM-pretrained encoder); a
            classifier for the same number of classes keeps its head.
        weights: None, a weights name ("imagenet1k", ...) or a checkpoint file.
        image_size: int, input side (default: the checkpoint's or variant's).
        window_size: int (default: the checkpoint's or variant's); a larger
            window than the checkpoint's transfers through the Log-CPB (V1
            tables are resized bicubically).
        architecture: dict of `SwinV2Backbone` architecture overrides (e.g. `embed_dim`,
            `depths`, `num_heads`) for a custom-size model.
        epochs, batch_size: int.
        learning_rate: float, peak rate for `batch_size` (not rescaled).
        weight_decay, layer_decay, warmup_epochs, decay, min_learning_rate:
            the `swinv2_adamw` schedule (`layer_decay` None: off).
        drop_path_rate, label_smoothing: float.
        ema: float EMA momentum of the weights (e.g. 0.9998), or None.
        clipnorm: float, global gradient-norm clip (official: 5.0), or None.
        mode, frozen_stages: what trains (see `set_trainable`).
        augmentation: dict of `pipeline.Augmentation` fields (segmentation and
            detection: of `dense.DenseAugmentation`).
        head: dict of head arguments: `SwinV2ImageSegmenter`'s
            (`head_channels`, `auxiliary_head`, ...) or `swinv2_retinanet`'s.
        crop_ratio: float, eval crop / resize (official 0.875).
        data_dir: TFDS data directory.
        seed: int.
    """

    data: str = "digits"
    task: str = "classification"
    model: str = "tiny"
    weights: str = None
    image_size: int = None
    window_size: int = None
    architecture: dict = None
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.05
    layer_decay: float = None
    warmup_epochs: float = 1.0
    decay: str = "cosine"
    min_learning_rate: float = 1e-6
    drop_path_rate: float = 0.1
    label_smoothing: float = 0.1
    ema: float = None
    clipnorm: float = 5.0
    mode: str = "full"
    frozen_stages: int = 0
    augmentation: dict = None
    crop_ratio: float = 0.875
    data_dir: str = None
    head: dict = None
    seed: int = 0


def build_model(config, num_classes):
    """The classifier a `FinetuneConfig` describes, with its weights loaded."""
    overrides = dict(config.architecture or {})
    if config.window_size:
        overrides["window_size"] = config.window_size
    if config.model.endswith(".keras"):
        return _from_keras_file(config.model, num_classes, config.image_size, overrides, config.drop_path_rate)
    size = (config.image_size,) * 2 + (3,) if config.image_size else None
    if config.model not in VARIANTS:
        raise ValueError(f"model must be one of {sorted(VARIANTS)} or a .keras file; got {config.model!r}.")
    return SwinV2(
        variant=config.model,
        weights=config.weights,
        input_shape=size,
        classes=num_classes,
        drop_path_rate=config.drop_path_rate,
        **overrides,
    )


def rebuild_backbone(backbone, image_shape=None, drop_path_rate=None, **overrides):
    """A new `SwinV2Backbone` with `backbone`'s architecture, at another input shape or window.

    The weights are not copied (`copy_encoder_weights` does that). When the window changes and
    `backbone` records no pretrained windows, its CPB was trained at its own per-stage windows,
    which become `pretrained_window_sizes`.
    """
    arch = {
        k: v
        for k, v in backbone.get_config().items()
        if k not in ("name", "trainable", "dtype", "pooling", "input_tensor")
    }
    if drop_path_rate is not None:
        arch["drop_path_rate"] = drop_path_rate
    if image_shape is not None:
        arch["image_shape"] = tuple(image_shape)
    arch.update(overrides)
    if arch["window_size"] != backbone.window_size and not any(backbone.pretrained_window_sizes):
        # the source's CPB was trained at its own (possibly shrunk) per-stage windows
        geometry = stage_geometry(
            backbone.image_shape[:2], backbone.window_size, len(backbone.depths), backbone.patch_size
        )
        arch["pretrained_window_sizes"] = tuple(window for _, window, _ in geometry)
    return SwinV2Backbone(**arch)


def _from_keras_file(path, num_classes, image_size, overrides, drop_path_rate):
    """A classifier initialised from a saved SwinV2 (classifier, backbone or SimMIM model)."""
    source = load_keras_file(path)
    try:
        backbone, head = model_parts(source)
    except TypeError:
        raise ValueError(f"{path} holds a {type(source).__name__}, not a SwinV2 model.") from None
    image_shape = (image_size, image_size, backbone.image_shape[-1]) if image_size else None
    rebuilt = rebuild_backbone(backbone, image_shape, drop_path_rate, **overrides)
    model = SwinV2ImageClassifier(rebuilt, num_classes, activation="softmax")
    # a trained classifier for the same classes keeps its head (e.g. moved to a larger window)
    copy_encoder_weights(source, model, head=head is not None and head.units == num_classes)
    return model


def build_dense_model(config, data):
    """The segmenter or detector a `FinetuneConfig` describes, its backbone's weights loaded."""
    if config.model.endswith(".keras"):
        source = load_keras_file(config.model)
        if isinstance(source, SwinV2ImageSegmenter) and config.task == "segmentation":
            if source.num_classes == data.num_classes and not config.image_size and not config.window_size:
                return source
    # the classification path builds and loads the backbone (a classifier's head is dropped)
    backbone = build_model(config, 2).backbone
    head = dict(config.head or {})
    if config.task == "segmentation":
        return SwinV2ImageSegmenter(backbone, data.num_classes, **head)
    return swinv2_retinanet(backbone, data.num_object_classes, **head)


def _load(config):
    if config.task == "classification":
        data = pipeline.load_data(config.data, config.data_dir, seed=config.seed)
        return data, build_model(config, data.num_classes)
    data = dense.load_dense_data(config.data, config.data_dir, seed=config.seed)
    return data, build_dense_model(config, data)


def _compile(model, config, optimizer):
    if config.task == "classification":
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
    else:  # the task's own losses (and mean IoU for segmentation)
        model.compile(optimizer=optimizer)


def finetune(config, output, verbose=1):
    """Fine-tunes (or trains) a SwinV2 classifier, segmenter or detector; resumes if `output` holds an
    unfinished run.

    Writes into `output`: `config.json`, the resumable state, `best.keras`
    (best validation accuracy, mean IoU or AP@0.5), `log.csv` and
    `curves.png` (see `ResumableTraining`).

    Args:
        config: `FinetuneConfig`.
        output: str, directory of this run.
        verbose: Keras progress-bar verbosity.

    Returns:
        `(model, data, history)`: the trained model (EMA weights when
        `config.ema`), the `ImageData` or `DenseData`, and the list of
        per-epoch logs of the whole run (earlier, resumed epochs included).
    """
    if config.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {config.task!r}.")
    check_run_config(output, config)  # before any work; nothing is written until training starts
    keras.utils.set_random_seed(config.seed)
    data, model = _load(config)
    set_trainable(model, config.mode, config.frozen_stages)
    steps = pipeline.steps_per_epoch(data, config.batch_size)
    optimizer = swinv2_adamw(
        model,
        config.learning_rate,
        weight_decay=config.weight_decay,
        layer_decay=config.layer_decay,
        total_steps=config.epochs * steps,
        warmup_steps=int(config.warmup_epochs * steps),
        decay=config.decay,
        min_learning_rate=config.min_learning_rate,
        use_ema=config.ema is not None,
        ema_momentum=config.ema or 0.99,
        global_clipnorm=config.clipnorm,
    )
    _compile(model, config, optimizer)
    with lock_run_directory(output):
        save_run_config(output, config)
        state = ResumableTraining(output, monitor=MONITORS[config.task], mode="max")
        initial_epoch = state.restore(model)
        if initial_epoch >= config.epochs:
            logger.info("%s: all %d epochs are done already.", output, config.epochs)
            return model, data, state.history
        if initial_epoch:
            logger.info("Resuming %s after epoch %d of %d.", output, initial_epoch, config.epochs)
        _fit(model, data, config, state, initial_epoch, verbose)
    return model, data, state.history


def _streams(model, data, config, initial_epoch):
    """`(training stream, validation batches, callbacks that must run before the others)`."""
    backbone = model_parts(model)[0]
    size = backbone.image_shape[0]
    batch, epochs, seed = config.batch_size, config.epochs, config.seed
    if config.task == "classification":
        augmentation = pipeline.Augmentation(**(config.augmentation or {}))
        train = pipeline.training_stream(
            data, size, batch, epochs, initial_epoch, seed, augmentation, config.crop_ratio
        )
        return train, pipeline.validation_batches(data, size, batch, config.crop_ratio), []
    augmentation = dense.DenseAugmentation(**(config.augmentation or {}))
    if config.task == "segmentation":
        train = dense.segmentation_stream(data, size, batch, epochs, initial_epoch, seed, augmentation)
        return train, dense.segmentation_validation(data, size, batch), []
    train = dense.detection_stream(data, size, batch, epochs, initial_epoch, seed, augmentation)
    # AP on the validation images after each epoch, as "val_ap50" (before the callbacks reading it)
    average_precision = DetectionAveragePrecision(
        dense.detection_validation(data, size, batch), data.num_object_classes
    )
    return train, None, [average_precision]


def _fit(model, data, config, state, initial_epoch, verbose):
    steps = pipeline.steps_per_epoch(data, config.batch_size)
    train, validation, first = _streams(model, data, config, initial_epoch)
    callbacks = first + [state] + ([keras.callbacks.SwapEMAWeights()] if config.ema is not None else [])
    model.fit(
        train,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps,
        validation_data=validation,
        callbacks=callbacks,
        shuffle=False,  # the stream is shuffled per epoch, reproducibly (and Keras warns otherwise)
        verbose=verbose,
    )
