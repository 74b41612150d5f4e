"""TFX Trainer ``run_fn``: tf.data input from raw examples, Keras training, export."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from trainer_module import features
from trainer_module.export import export_serving_model
from trainer_module.models import build_classifier

# Decoded training images are cached in memory up to this size; larger sets are re-read
# (and re-decoded in parallel) each epoch.
_MAX_CACHE_BYTES = 2 * 1024**3


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """What run_fn reads from the Trainer's custom_config (set by the pipeline)."""

    backbone: str
    image_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    early_stopping_patience: int
    seed: int

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any]) -> TrainingSettings:
        """Reads the fields by name; a missing one raises KeyError naming it."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in custom_config]
        if missing:
            raise KeyError(f"Trainer custom_config lacks {', '.join(missing)}")
        return cls(**{n: custom_config[n] for n in names})


def _list_files(file_patterns: list[str]) -> list[str]:
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no example files match {file_patterns}")
    return files


def count_examples(file_patterns: list[str]) -> int:
    """Counts the records in gzipped TFRecord files (a cheap pass over compressed bytes)."""
    dataset = tf.data.TFRecordDataset(_list_files(file_patterns), compression_type="GZIP")
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def make_dataset(
    file_patterns: list[str],
    tft_output: tft.TFTransformOutput,
    batch_size: int,
    image_size: int,
    training: bool,
    seed: int,
) -> tf.data.Dataset:
    """Raw tf.Example files -> batches of (normalized image, label id).

    The tf.Transform graph runs inside the input pipeline (batched and in parallel), so
    images are decoded once per epoch, or once in total when the set fits in memory.
    """
    raw_spec = tft_output.raw_feature_spec()
    spec = {key: raw_spec[key] for key in (features.IMAGE_KEY, features.LABEL_KEY)}
    tft_layer = tft_output.transform_features_layer()

    def transform(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        transformed = tft_layer(tf.io.parse_example(serialized, spec))
        return (
            transformed[features.TRANSFORMED_IMAGE_KEY],
            transformed[features.TRANSFORMED_LABEL_KEY],
        )

    num_examples = count_examples(file_patterns)
    dataset = tf.data.TFRecordDataset(
        _list_files(file_patterns), compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE
    )
    dataset = dataset.batch(256).map(transform, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if num_examples * image_size * image_size * 3 * 4 <= _MAX_CACHE_BYTES:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(
            min(num_examples, 10_000), seed=seed, reshuffle_each_iteration=True
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def run_fn(fn_args: FnArgs) -> None:
    """Trains the classifier and exports it to ``fn_args.serving_model_dir``."""
    settings = TrainingSettings.from_custom_config(fn_args.custom_config)
    tf.keras.utils.set_random_seed(settings.seed)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    num_classes = tft_output.vocabulary_size_by_name(features.LABEL_VOCABULARY_NAME)

    dataset_args = dict(
        tft_output=tft_output,
        batch_size=settings.batch_size,
        image_size=settings.image_size,
        seed=settings.seed,
    )
    train_dataset = make_dataset(fn_args.train_files, training=True, **dataset_args)
    eval_dataset = make_dataset(fn_args.eval_files, training=False, **dataset_args)

    model = build_classifier(settings.backbone, settings.image_size, num_classes)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(settings.learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    callbacks: list[tf.keras.callbacks.Callback] = [
        tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)
    ]
    if settings.early_stopping_patience:
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=settings.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    history = model.fit(
        train_dataset,
        validation_data=eval_dataset,
        epochs=settings.epochs,
        callbacks=callbacks,
        verbose=2,
    )
    logging.info("Training finished: %s", {k: v[-1] for k, v in history.history.items()})
    export_serving_model(model, tft_output, fn_args.serving_model_dir)
