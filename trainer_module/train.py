"""TFX Trainer ``run_fn``: tf.data input from raw examples, two-phase Keras training, export.

Phase 1 trains a new head on the frozen backbone (the whole network for a backbone trained
from scratch); phase 2, when enabled, unfreezes the top of a pretrained backbone at a lower
learning rate. A killed Trainer resumes: progress is backed up under the pipeline root, keyed
by the content of the Trainer's inputs, and removed once training finishes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable

import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from trainer_module import features
from trainer_module.backbone_specs import BackboneSpec, get_backbone_spec
from trainer_module.class_weights import balanced_class_weights, count_labels, report_class_counts
from trainer_module.export import export_serving_model
from trainer_module.models import build_backbone, build_classifier, set_backbone_trainable
from trainer_module.settings import (
    TrainingSettings,
    settings_from_custom_config,
    with_tuned_values,
)
from trainer_module.training_record import (
    EpochRecorder,
    misclassified_indices,
    prediction_summary,
    write_record,
)

# Decoded training images are cached in memory up to this size; larger sets are re-read
# (and re-decoded in parallel) each epoch.
_MAX_CACHE_BYTES = 2 * 1024**3
_PARSE_BATCH = 256
_WARMUP_IMAGES = 8
_THUMBNAIL_PX = 96  # misclassified eval images in the training record, at most this size
# A random subset (max_examples) is drawn from this many records at most: they are held in
# memory, encoded, while drawing.
_SUBSET_SHUFFLE_RECORDS = 100_000

# What Keras optimizers take as a learning rate: a number, or a schedule of the step count.
LearningRate = float | tf.keras.optimizers.schedules.LearningRateSchedule


def transformed_image_size(tft_output: tft.TFTransformOutput) -> int:
    """The square image size the Transform graph makes, read from its output's feature spec.

    The Transform's settings choose the size; the Trainer takes it from the graph it trains
    on, so the two cannot disagree.
    """
    height, width, _ = tft_output.transformed_feature_spec()[features.TRANSFORMED_IMAGE_KEY].shape
    if height != width:
        raise ValueError(f"transform graph makes {height}x{width} images; expected a square")
    return int(height)


def _list_files(file_patterns: list[str]) -> list[str]:
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no example files match {file_patterns}")
    return files


def _record_dataset(file_patterns: list[str]) -> tf.data.Dataset:
    return tf.data.TFRecordDataset(
        _list_files(file_patterns), compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE
    )


def count_examples(file_patterns: list[str]) -> int:
    """Counts the records in gzipped TFRecord files (a cheap pass over compressed bytes)."""
    return int(_record_dataset(file_patterns).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def rotate_images(images: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    """Rotates each image of a batch about its centre, counter-clockwise by ``degrees[i]``.

    Bilinear, with the border reflected: in normalized input space no constant is "black"
    for every backbone, and reflection adds no edge the network could learn.
    """
    angles = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)
    cos, sin = tf.cos(angles), tf.sin(angles)
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): the inverse map.
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    zeros = tf.zeros_like(angles)
    transforms = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def augment_batch(
    images: tf.Tensor,
    flip: bool,
    zoom: float,
    color: float,
    pixel_range: float,
    rotation: float = 0.0,
) -> tf.Tensor:
    """Random flip, zoom-in crop, rotation and brightness/contrast jitter of a normalized batch.

    ``pixel_range`` is the width of the normalized value range (255 / std), so colour jitter
    means the same in every backbone's input space. ``rotation``: largest angle in degrees,
    either way.
    """
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    if flip:
        images = tf.image.random_flip_left_right(images)
    if zoom > 0:
        scale = tf.random.uniform([batch, 1], 1.0 - zoom, 1.0)
        offset = tf.random.uniform([batch, 2]) * (1.0 - scale)
        boxes = tf.concat([offset, offset + scale], axis=1)
        images = tf.image.crop_and_resize(images, boxes, tf.range(batch), size)
    if rotation > 0:
        images = rotate_images(images, tf.random.uniform([batch], -rotation, rotation))
    if color > 0:
        brightness = tf.random.uniform([batch, 1, 1, 1], -color, color) * pixel_range
        contrast = tf.random.uniform([batch, 1, 1, 1], 1.0 - color, 1.0 + color)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * contrast + mean + brightness
    return images


def mixup_batch(
    images: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor, alpha: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mixup (Zhang et al., 2018): each example blended with another of the same batch.

    Per example, ``lam ~ Beta(alpha, alpha)``; image, one-hot label and sample weight become
    ``lam * own + (1 - lam) * partner``, the partner drawn by a shuffle of the batch.
    """
    batch = tf.shape(images)[0]
    # Beta(a, a) as X / (X + Y) with X, Y ~ Gamma(a).
    x = tf.random.gamma([batch], alpha)
    y = tf.random.gamma([batch], alpha)
    lam = x / tf.maximum(x + y, 1e-12)
    partner = tf.random.shuffle(tf.range(batch))

    def blend(values: tf.Tensor) -> tf.Tensor:
        shape = tf.concat([[batch], tf.ones([tf.rank(values) - 1], tf.int32)], axis=0)
        mix = tf.reshape(tf.cast(lam, values.dtype), shape)
        return mix * values + (1.0 - mix) * tf.gather(values, partner)

    return blend(images), blend(labels), blend(weights)


def training_batch_fn(
    settings: TrainingSettings,
    spec: BackboneSpec,
    num_classes: int,
    class_weights: list[float] | None = None,
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """What a training batch (normalized images, one-hot labels) goes through before fit.

    Returns a function for ``Dataset.map`` giving (images, labels, sample weights):
    augmentation (flip, zoom, rotation, colour), then mixup; each example's weight is its
    class's ``class_weights`` entry (1 without them), mixed as its label is.
    """
    per_class = tf.constant(class_weights or [1.0] * num_classes, tf.float32)
    augmenting = bool(
        settings.augment_flip
        or settings.augment_zoom
        or settings.augment_color
        or settings.augment_rotation
    )

    def training_batch(
        images: tf.Tensor, labels: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        weights = tf.linalg.matvec(labels, per_class)
        if augmenting:
            images = augment_batch(
                images,
                settings.augment_flip,
                settings.augment_zoom,
                settings.augment_color,
                spec.pixel_range,
                rotation=settings.augment_rotation,
            )
        if settings.augment_mixup > 0:
            images, labels, weights = mixup_batch(images, labels, weights, settings.augment_mixup)
        return images, labels, weights

    return training_batch


def make_dataset(
    file_patterns: list[str],
    tft_output: tft.TFTransformOutput,
    settings: TrainingSettings,
    spec: BackboneSpec,
    training: bool,
    num_examples: int | None = None,
    class_weights: list[float] | None = None,
    max_examples: int | None = None,
) -> tf.data.Dataset:
    """Raw tf.Example files -> batches of (normalized image, one-hot label[, sample weight]).

    The tf.Transform graph runs inside the input pipeline (batched and in parallel), so
    images are decoded once per epoch, or once in total when the decoded set fits in memory.
    Augmentation and mixup run after the cache, on training batches only. ``num_examples``
    saves a count of the files when the caller has one. ``spec`` is the backbone's (its
    value range scales the colour jitter). Labels are one-hot so label smoothing and mixup
    apply; training batches carry a sample weight per example (``class_weights`` of its
    class, 1 without them). ``max_examples`` keeps that many records, drawn at random
    (seeded; from the first ``_SUBSET_SHUFFLE_RECORDS`` records) before anything is decoded:
    the tuner's subset.
    """
    raw_spec = tft_output.raw_feature_spec()
    feature_spec = {key: raw_spec[key] for key in (features.IMAGE_KEY, features.LABEL_KEY)}
    tft_layer = tft_output.transform_features_layer()
    num_classes = tft_output.vocabulary_size_by_name(features.LABEL_VOCABULARY_NAME)

    def transform(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        transformed = tft_layer(tf.io.parse_example(serialized, feature_spec))
        label_ids = tf.reshape(transformed[features.TRANSFORMED_LABEL_KEY], [-1])
        return (
            transformed[features.TRANSFORMED_IMAGE_KEY],
            tf.one_hot(label_ids, num_classes),
        )

    if num_examples is None:
        num_examples = count_examples(file_patterns)
    size = transformed_image_size(tft_output)
    records = _record_dataset(file_patterns)
    if max_examples is not None and max_examples < num_examples:
        buffer = min(num_examples, _SUBSET_SHUFFLE_RECORDS)
        records = records.shuffle(buffer, seed=settings.seed, reshuffle_each_iteration=False)
        records = records.take(max_examples)
        num_examples = max_examples
    dataset = records.batch(_PARSE_BATCH)
    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if num_examples * size * size * 3 * 4 <= _MAX_CACHE_BYTES:
        dataset = dataset.cache()
    if not training:
        return dataset.batch(settings.batch_size).prefetch(tf.data.AUTOTUNE)
    dataset = dataset.shuffle(min(num_examples, 10_000), seed=settings.seed)
    dataset = dataset.batch(settings.batch_size)
    augment = training_batch_fn(settings, spec, num_classes, class_weights)
    dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


@tf.keras.utils.register_keras_serializable(package="trainer_module")
class LinearWarmup(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 0 to ``peak`` over ``warmup_steps``, then holds ``peak``."""

    def __init__(self, peak: float, warmup_steps: int):
        super().__init__()
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        return self.peak * tf.minimum(1.0, step / float(max(1, self.warmup_steps)))

    def get_config(self) -> dict:
        """Keras serialization."""
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


def phase_learning_rate(
    schedule: str,
    learning_rate: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
) -> LearningRate:
    """The learning rate of one phase: held, or cosine-decayed to zero over its epochs.

    ``warmup_epochs`` (clipped to the phase) first raises the rate linearly from 0 to
    ``learning_rate``; the cosine decay then spans the phase's remaining steps. The schedule
    runs on the optimizer's step counter, which BackupAndRestore saves, so a resumed phase
    continues where the killed one stopped.
    """
    total_steps = max(1, epochs * steps_per_epoch)
    warmup_steps = min(total_steps, round(warmup_epochs * steps_per_epoch))
    if schedule == "constant":
        return LinearWarmup(learning_rate, warmup_steps) if warmup_steps else learning_rate
    if schedule == "cosine":
        if not warmup_steps:
            return tf.keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
        return tf.keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=max(1, total_steps - warmup_steps),
            warmup_target=learning_rate,
            warmup_steps=warmup_steps,
        )
    raise ValueError(f"learning_rate_schedule: unknown schedule {schedule!r}")


def _optimizer(name: str, learning_rate: LearningRate) -> tf.keras.optimizers.Optimizer:
    if name == "sgd":
        return tf.keras.optimizers.SGD(learning_rate, momentum=0.9)
    if name == "rmsprop":
        return tf.keras.optimizers.RMSprop(learning_rate)
    return tf.keras.optimizers.Adam(learning_rate)


def _compile(
    model: tf.keras.Model, optimizer: str, learning_rate: LearningRate, label_smoothing: float
) -> None:
    # One-hot labels (make_dataset), so label smoothing and mixup's soft labels apply.
    model.compile(
        optimizer=_optimizer(optimizer, learning_rate),
        loss=tf.keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[tf.keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training phase: what trains, at which learning rate, for how many epochs."""

    name: str  # "phase1" or "phase2": also the folder of its TensorBoard logs and backups
    learning_rate: float
    epochs: int
    # Top fraction of a pretrained backbone's layers that trains (0: frozen, only the new
    # head trains); None: a backbone trained from scratch, whole network trainable.
    backbone_fraction: float | None


def training_phases(settings: TrainingSettings, pretrained: bool) -> list[Phase]:
    """The phases run_fn trains.

    A pretrained backbone: phase 1 trains a new head on the frozen backbone, phase 2 (unless
    ``fine_tune_epochs`` is 0) the top ``fine_tune_fraction`` of the backbone at the lower
    ``fine_tune_learning_rate``. A backbone trained from scratch: one phase, whole network.
    """
    if not pretrained:
        return [Phase("phase1", settings.learning_rate, settings.epochs, None)]
    phases = [Phase("phase1", settings.learning_rate, settings.epochs, 0.0)]
    if settings.fine_tune_epochs > 0:
        phases.append(
            Phase(
                "phase2",
                settings.fine_tune_learning_rate,
                settings.fine_tune_epochs,
                settings.fine_tune_fraction,
            )
        )
    return phases


def fit_phase(
    model: tf.keras.Model,
    phase: Phase,
    settings: TrainingSettings,
    train_dataset: tf.data.Dataset,
    steps_per_epoch: int,
    validation_data: tf.data.Dataset | None = None,
    callbacks: list[tf.keras.callbacks.Callback] | None = None,
) -> tf.keras.callbacks.History:
    """Trains ``model`` (a ``build_classifier`` model) for one phase.

    Sets which backbone layers train, compiles with the configured optimizer, label
    smoothing and the phase's learning rate (warmup, then constant or decaying over
    ``steps_per_epoch`` x its epochs), and fits. Datasets yield one-hot labels
    (``make_dataset``).
    """
    if phase.backbone_fraction is not None:
        trainable = set_backbone_trainable(model, phase.backbone_fraction)
        logging.info("%s: %d backbone layers trainable", phase.name, trainable)
    schedule = phase_learning_rate(
        settings.learning_rate_schedule,
        phase.learning_rate,
        phase.epochs,
        steps_per_epoch,
        warmup_epochs=settings.warmup_epochs,
    )
    _compile(model, settings.optimizer, schedule, settings.label_smoothing)
    return model.fit(
        train_dataset,
        validation_data=validation_data,
        epochs=phase.epochs,
        callbacks=callbacks or [],
        # Progress is reported by training_record.EpochRecorder, through logging.
        verbose=0,
    )


def examples_fingerprint(file_patterns: list[str]) -> tuple[int, str]:
    """The number of records in gzipped TFRecord files and a digest of their bytes.

    The digest is a sum of per-record hashes, so it does not depend on how the records are
    sharded or ordered: an uncached re-run of ExampleGen writes the same examples to new
    files, possibly in another order, and gets the same digest.
    """
    half = 2**31

    def add(state: tuple, records: tf.Tensor) -> tuple:
        hashes = tf.strings.to_hash_bucket_fast(records, 2**62)
        # Two 31-bit halves, summed apart, cannot overflow int64 below 2**32 records.
        return (
            state[0] + tf.size(records, out_type=tf.int64),
            state[1] + tf.reduce_sum(hashes % half),
            state[2] + tf.reduce_sum(hashes // half),
        )

    zero = tf.constant(0, tf.int64)
    count, low, high = (
        _record_dataset(file_patterns).batch(_PARSE_BATCH).reduce((zero, zero, zero), add)
    )
    return int(count), f"{int(count)}:{int(low)}:{int(high)}"


def _transform_fingerprint(transform_output: str, tft_output: tft.TFTransformOutput) -> str:
    """A digest of what the transform graph does, not of where it is or how TF named it.

    Re-analysing the same data gives a ``saved_model.pb`` with other function names, so the
    graph's bytes are not used: its assets, variables and metadata are, and the output of
    the graph on a fixed probe image (which captures its size, resizing and normalization).
    """
    digest = hashlib.sha256()
    for folder in (tft_output.TRANSFORM_FN_DIR, tft_output.TRANSFORMED_METADATA_DIR):
        root = os.path.join(transform_output, folder)
        for dirpath, _, filenames in sorted(tf.io.gfile.walk(root)):
            for filename in sorted(filenames):
                if filename in ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb"):
                    continue
                path = os.path.join(dirpath, filename)
                digest.update(os.path.relpath(path, root).encode())
                with tf.io.gfile.GFile(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
    pixels = tf.reshape(tf.range(8 * 8 * 3) * 5 % 256, [8, 8, 3])
    probe = tf.io.encode_png(tf.cast(pixels, tf.uint8))
    label = tft_output.vocabulary_by_name(features.LABEL_VOCABULARY_NAME)[0]
    transformed = tft_output.transform_features_layer()(
        {features.IMAGE_KEY: tf.reshape(probe, [1, 1]), features.LABEL_KEY: tf.constant([[label]])}
    )
    for key in sorted(transformed):
        digest.update(key.encode())
        digest.update(tf.io.serialize_tensor(transformed[key]).numpy())
    return digest.hexdigest()


# Resume folders of other inputs are removed when untouched this long (a killed run whose
# data or settings changed before the re-run; a concurrent Trainer touches its own each epoch).
STALE_RESUME_SECONDS = 24 * 3600


def resume_dir(fn_args: FnArgs, train_fingerprint: str, eval_fingerprint: str) -> str:
    """A folder for training progress that a re-run on the same content finds again.

    TFX gives every execution new artifact folders (new paths for the same examples on an
    uncached re-run), so the key is a hash of content: the train and eval examples'
    fingerprints, the transform graph's, the settings and the tuned hyperparameters. It lies
    beside the model run folders, which every execution of the Trainer shares.
    """
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    key = json.dumps(
        [
            train_fingerprint,
            eval_fingerprint,
            _transform_fingerprint(fn_args.transform_output, tft_output),
            fn_args.custom_config,
            fn_args.hyperparameters,
        ],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    model_run_root = os.path.dirname(fn_args.model_run_dir.rstrip("/"))
    return os.path.join(model_run_root, "resume", digest)


def remove_stale_resume_dirs(
    state_dir: str, max_age_seconds: float = STALE_RESUME_SECONDS
) -> list[str]:
    """Deletes the other resume folders beside ``state_dir`` untouched for ``max_age_seconds``."""
    root = os.path.dirname(state_dir)
    removed = []
    if not tf.io.gfile.isdir(root):
        return removed
    now = time.time()
    for name in tf.io.gfile.listdir(root):
        path = os.path.join(root, name.rstrip("/"))
        if path == state_dir.rstrip("/"):
            continue
        newest = max(
            (
                tf.io.gfile.stat(os.path.join(d, f)).mtime_nsec / 1e9
                for d, _, files in tf.io.gfile.walk(path)
                for f in files
            ),
            default=tf.io.gfile.stat(path).mtime_nsec / 1e9,
        )
        if now - newest > max_age_seconds:
            tf.io.gfile.rmtree(path)
            removed.append(path)
    if removed:
        logging.info("Removed stale resume folders: %s", removed)
    return removed


def _callbacks(settings: TrainingSettings, log_dir: str, backup_dir: str) -> list:
    callbacks: list[tf.keras.callbacks.Callback] = [
        tf.keras.callbacks.TensorBoard(log_dir=log_dir),
        tf.keras.callbacks.BackupAndRestore(backup_dir=backup_dir),
    ]
    if settings.early_stopping_patience:
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=settings.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    return callbacks


def training_class_weights(
    settings: TrainingSettings, train_files: list[str], tft_output: tft.TFTransformOutput
) -> list[float] | None:
    """Per class id, the weight ``class_weight`` asks for (None: every example weighs 1).

    ``balanced`` takes the training split's class counts from ImageExampleGen's ingestion
    report, or counts the labels of the records when the examples come without one.
    """
    if settings.class_weight == "none":
        return None
    counts = report_class_counts(train_files)
    if counts is None:
        logging.info("class_weight: no ingestion report beside %s; counting labels", train_files)
        counts = count_labels(_record_dataset(train_files))
    names = [
        name.decode("utf-8")
        for name in tft_output.vocabulary_by_name(features.LABEL_VOCABULARY_NAME)
    ]
    return balanced_class_weights(counts, names)


def _first_images(file_patterns: list[str], count: int) -> list[bytes]:
    spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string)}
    images = []
    for record in _record_dataset(file_patterns).take(count):
        images.append(tf.io.parse_single_example(record, spec)[features.IMAGE_KEY][0].numpy())
    return images


def _eval_predictions(
    model: tf.keras.Model, eval_dataset: tf.data.Dataset, eval_files: list[str]
) -> dict:
    """The candidate's predictions on the eval split, summarised for the training record.

    The raw images are read in the same order as ``eval_dataset`` (same files, same
    deterministic reader, no shuffle); only the misclassified ones shown are kept, as
    thumbnails of at most ``_THUMBNAIL_PX`` (PNG).
    """
    probabilities, labels = [], []
    for images, batch_labels, *_ in eval_dataset:
        probabilities.extend(model(images, training=False).numpy().tolist())
        if batch_labels.shape.rank == 2:  # one-hot (make_dataset) -> class ids
            batch_labels = tf.argmax(batch_labels, axis=-1)
        labels.extend(int(x) for x in tf.reshape(batch_labels, [-1]).numpy())
    wanted = set(misclassified_indices(probabilities, labels))
    spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string)}
    thumbnails = {}
    for index, record in enumerate(_record_dataset(eval_files)):
        if not wanted - set(thumbnails):
            break
        if index in wanted:
            encoded = tf.io.parse_single_example(record, spec)[features.IMAGE_KEY][0]
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
            if max(image.shape[0], image.shape[1]) > _THUMBNAIL_PX:
                image = tf.image.resize(
                    image, [_THUMBNAIL_PX, _THUMBNAIL_PX], preserve_aspect_ratio=True
                )
            thumbnails[index] = tf.io.encode_png(tf.cast(image, tf.uint8)).numpy()
    return prediction_summary(probabilities, labels, thumbnails)


def run_fn(fn_args: FnArgs) -> None:
    """Trains the classifier in up to two phases and exports it to serving_model_dir."""
    settings = settings_from_custom_config(TrainingSettings, fn_args.custom_config)
    if fn_args.hyperparameters:  # The Tuner's best (a KerasTuner HyperParameters config).
        settings = with_tuned_values(settings, fn_args.hyperparameters.get("values", {}))
        logging.info("Training with the tuned settings: %s", settings)
    settings.validate()
    tf.keras.utils.set_random_seed(settings.seed)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    num_classes = tft_output.vocabulary_size_by_name(features.LABEL_VOCABULARY_NAME)
    train_count, train_fingerprint = examples_fingerprint(fn_args.train_files)
    eval_count, eval_fingerprint = examples_fingerprint(fn_args.eval_files)
    steps_per_epoch = math.ceil(train_count / settings.batch_size)
    spec = get_backbone_spec(settings.backbone)
    train_dataset = make_dataset(
        fn_args.train_files,
        tft_output,
        settings,
        spec,
        training=True,
        num_examples=train_count,
        class_weights=training_class_weights(settings, fn_args.train_files, tft_output),
    )
    eval_dataset = make_dataset(
        fn_args.eval_files, tft_output, settings, spec, training=False, num_examples=eval_count
    )

    pretrained = spec.starts_pretrained(settings.backbone_weights)
    image_size = transformed_image_size(tft_output)
    backbone = build_backbone(spec, image_size, settings.backbone_weights)
    model = build_classifier(
        backbone, image_size, num_classes, settings.dropout, pretrained=pretrained
    )
    state_dir = resume_dir(fn_args, train_fingerprint, eval_fingerprint)
    remove_stale_resume_dirs(state_dir)
    phase1_weights = os.path.join(state_dir, "phase1_done.weights.h5")

    phase_records = []
    for phase in training_phases(settings, pretrained):
        if phase.name == "phase1" and tf.io.gfile.exists(phase1_weights):
            logging.info("Resuming after phase 1 from %s", phase1_weights)
            model.load_weights(phase1_weights)
            phase_records.append({"name": phase.name, "resumed": True, "epochs": []})
            continue
        recorder = EpochRecorder(phase.name, phase.epochs, steps_per_epoch)
        history = fit_phase(
            model,
            phase,
            settings,
            train_dataset,
            steps_per_epoch,
            validation_data=eval_dataset,
            callbacks=[
                *_callbacks(
                    settings,
                    os.path.join(fn_args.model_run_dir, phase.name),
                    os.path.join(state_dir, phase.name),
                ),
                recorder,
            ],
        )
        phase_records.append(
            recorder.phase_record(phase.learning_rate, bool(settings.early_stopping_patience))
        )
        logging.info("%s finished: %s", phase.name, {k: v[-1] for k, v in history.history.items()})
        if phase.name == "phase1":
            tf.io.gfile.makedirs(state_dir)
            model.save_weights(phase1_weights)

    export_serving_model(
        model,
        tft_output,
        fn_args.serving_model_dir,
        warmup_images=_first_images(fn_args.eval_files, _WARMUP_IMAGES),
    )
    write_record(
        os.path.dirname(fn_args.serving_model_dir.rstrip("/")),
        {
            "phases": phase_records,
            "train_examples": train_count,
            "data_fingerprints": {"train": train_fingerprint, "eval": eval_fingerprint},
            "eval_examples": eval_count,
            "class_names": [
                name.decode() if isinstance(name, bytes) else name
                for name in tft_output.vocabulary_by_name(features.LABEL_VOCABULARY_NAME)
            ],
            "image_size": image_size,
            "pretrained": pretrained,
            "settings": dataclasses.asdict(settings),
            "eval_predictions": _eval_predictions(model, eval_dataset, fn_args.eval_files),
        },
    )
    shutil.rmtree(state_dir, ignore_errors=True)  # Finished: nothing left to resume.
