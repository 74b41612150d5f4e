"""What the Trainer records of a training run, and the progress it reports while training.

``training_record.json`` lies in the Trainer's model artifact, beside ``Format-Serving``
(so the Pusher, which gets the model, can put it into the model card, and the run report
reads it): per phase and epoch the train and eval loss and accuracy and the learning rate,
the best epoch, the example counts, the class names, and the candidate's predictions on the
eval split summarised as a reliability table and the misclassified images.

Progress goes to the ``features.PROGRESS_LOGGER`` logger: one INFO record per epoch and one DEBUG
record per batch, each with a ``progress`` attribute, which the CLI's console draws as a
bar on a terminal or a line per epoch (and the run's log file keeps the epoch lines).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from typing import Any

import tensorflow as tf

from trainer_module.features import PROGRESS_LOGGER

RECORD_FILE_NAME = "training_record.json"
# The misclassified eval images kept (their encoded bytes, base64) for the run report.
MAX_MISCLASSIFIED = 24
RELIABILITY_BINS = 10

progress_logger = logging.getLogger(PROGRESS_LOGGER)


def record_path(model_uri: str) -> str:
    """Where the training record of the model artifact at ``model_uri`` lies."""
    return os.path.join(model_uri, RECORD_FILE_NAME)


def _learning_rate(model: tf.keras.Model) -> float | None:
    optimizer = model.optimizer
    rate = getattr(optimizer, "learning_rate", None)
    if rate is None:
        return None
    if isinstance(rate, tf.keras.optimizers.schedules.LearningRateSchedule):
        rate = rate(optimizer.iterations)
    return float(tf.keras.backend.get_value(rate))


class EpochRecorder(tf.keras.callbacks.Callback):
    """Records each epoch's logs and learning rate into ``epochs``; reports progress."""

    def __init__(self, phase: str, epochs_planned: int, steps_per_epoch: int):
        super().__init__()
        self.phase = phase
        self.epochs_planned = epochs_planned
        self.steps_per_epoch = steps_per_epoch
        self.epochs: list[dict[str, float]] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        progress_logger.debug(
            "%s epoch %d/%d batch %d/%d",
            self.phase,
            self._epoch_number(),
            self.epochs_planned,
            batch + 1,
            self.steps_per_epoch,
            extra={
                "progress": {
                    "phase": self.phase,
                    "epoch": self._epoch_number(),
                    "epochs": self.epochs_planned,
                    "step": batch + 1,
                    "steps": self.steps_per_epoch,
                    "loss": float(logs.get("loss", float("nan"))),
                    "accuracy": float(logs.get("accuracy", float("nan"))),
                }
            },
        )

    def _epoch_number(self) -> int:
        return len(self.epochs) + 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {key: float(value) for key, value in (logs or {}).items()}
        values["epoch"] = epoch + 1
        values["seconds"] = round(time.monotonic() - self._started, 3)
        values["learning_rate"] = _learning_rate(self.model)
        self.epochs.append(values)
        progress_logger.info(
            "%s epoch %d/%d: loss %.4f, accuracy %.4f, eval loss %.4f, eval accuracy %.4f (%.1f s)",
            self.phase,
            epoch + 1,
            self.epochs_planned,
            values.get("loss", float("nan")),
            values.get("accuracy", float("nan")),
            values.get("val_loss", float("nan")),
            values.get("val_accuracy", float("nan")),
            values["seconds"],
            extra={"progress": dict(values, phase=self.phase, epochs=self.epochs_planned)},
        )

    def phase_record(self, learning_rate: float, restores_best: bool) -> dict[str, Any]:
        """The phase's part of the training record."""
        accuracies = [e.get("val_accuracy", float("-inf")) for e in self.epochs]
        best = max(range(len(accuracies)), key=accuracies.__getitem__) if accuracies else None
        return {
            "name": self.phase,
            "learning_rate": learning_rate,
            "epochs_planned": self.epochs_planned,
            "epochs": self.epochs,
            "best_epoch": None if best is None else best + 1,
            "best_eval_accuracy": None if best is None else accuracies[best],
            # EarlyStopping(restore_best_weights=True) ends the phase on its best epoch.
            "restores_best": restores_best,
        }


def misclassified_indices(probabilities: list[list[float]], labels: list[int]) -> list[int]:
    """Positions of the first ``MAX_MISCLASSIFIED`` wrongly predicted examples."""
    wrong = [
        i
        for i, (row, label) in enumerate(zip(probabilities, labels))
        if max(range(len(row)), key=row.__getitem__) != label
    ]
    return wrong[:MAX_MISCLASSIFIED]


def prediction_summary(
    probabilities: list[list[float]], labels: list[int], images: dict[int, bytes]
) -> dict[str, Any]:
    """The reliability table and the misclassified images of predictions on the eval split.

    Reliability: the eval images binned by top-1 confidence, with each bin's count, mean
    confidence and accuracy (a calibrated model has them equal). ``images``: the (small,
    PNG) images of the misclassified examples by position (``misclassified_indices``).
    """
    bins = [{"count": 0, "confidence": 0.0, "correct": 0} for _ in range(RELIABILITY_BINS)]
    misclassified = []
    for index, (row, label) in enumerate(zip(probabilities, labels)):
        predicted = max(range(len(row)), key=row.__getitem__)
        confidence = float(row[predicted])
        bin_ = bins[min(int(confidence * RELIABILITY_BINS), RELIABILITY_BINS - 1)]
        bin_["count"] += 1
        bin_["confidence"] += confidence
        bin_["correct"] += int(predicted == label)
        if predicted != label and len(misclassified) < MAX_MISCLASSIFIED and index in images:
            misclassified.append(
                {
                    "label": int(label),
                    "predicted": int(predicted),
                    "confidence": confidence,
                    "image": base64.b64encode(images[index]).decode("ascii"),
                }
            )
    reliability = [
        {
            "lower": i / RELIABILITY_BINS,
            "upper": (i + 1) / RELIABILITY_BINS,
            "count": b["count"],
            "mean_confidence": b["confidence"] / b["count"] if b["count"] else None,
            "accuracy": b["correct"] / b["count"] if b["count"] else None,
        }
        for i, b in enumerate(bins)
    ]
    return {
        "eval_examples": len(labels),
        "reliability": reliability,
        "misclassified": misclassified,
        "misclassified_total": sum(
            1
            for row, label in zip(probabilities, labels)
            if max(range(len(row)), key=row.__getitem__) != label
        ),
    }


def write_record(model_uri: str, record: dict[str, Any]) -> str:
    """Writes the training record into the model artifact (via a temporary file and a
    rename, so a reader never sees half of it); returns its path."""
    path = record_path(model_uri)
    temp = path + ".tmp"
    tf.io.gfile.makedirs(model_uri)
    with tf.io.gfile.GFile(temp, "w") as f:
        json.dump(record, f, indent=1)
    tf.io.gfile.rename(temp, path, overwrite=True)
    return path


def read_record(model_uri: str) -> dict[str, Any] | None:
    """The training record of a model artifact, or None where there is none."""
    path = record_path(model_uri)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
