"""Class weights for imbalanced data: inverse class frequency of the training split.

The counts come from what ImageExampleGen already recorded: its ingestion report (beside the
split folders in the examples artifact) lists the images of each class in each split, so no
pass over the data is needed. Examples made by another ExampleGen have no report; their
labels are then counted from the records (one cheap pass over the label feature).
"""

from __future__ import annotations

import collections
import json
import logging
import os

import tensorflow as tf

from trainer_module import features

# TFX names an Examples artifact's split folders "Split-<name>".
_SPLIT_FOLDER_PREFIX = "Split-"


def report_class_counts(file_patterns: list[str]) -> dict[str, int] | None:
    """Images per class name of the split ``file_patterns`` lie in, from the ingestion report.

    ``file_patterns`` are the Trainer's ``<examples uri>/Split-<split>/*`` patterns; the
    counts of every pattern's split are summed. None when a pattern is not inside a split
    folder of an artifact with an ingestion report.
    """
    counts: collections.Counter = collections.Counter()
    for pattern in file_patterns:
        split_dir = os.path.dirname(pattern.rstrip("/"))
        folder = os.path.basename(split_dir)
        report_path = os.path.join(os.path.dirname(split_dir), features.INGESTION_REPORT_FILE)
        if not folder.startswith(_SPLIT_FOLDER_PREFIX) or not tf.io.gfile.exists(report_path):
            return None
        with tf.io.gfile.GFile(report_path) as f:
            report = json.load(f)
        split = folder[len(_SPLIT_FOLDER_PREFIX) :]
        classes = report.get("splits", {}).get(split, {}).get("classes")
        if classes is None:
            return None
        counts.update({str(label): int(n) for label, n in classes.items()})
    return dict(counts)


def count_labels(dataset: tf.data.Dataset) -> dict[str, int]:
    """Images per class name in a dataset of serialized raw tf.Examples."""
    spec = {features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.string)}
    counts: collections.Counter = collections.Counter()
    for batch in dataset.batch(1024):
        labels = tf.io.parse_example(batch, spec)[features.LABEL_KEY][:, 0].numpy()
        counts.update(label.decode("utf-8") for label in labels)
    return dict(counts)


def balanced_class_weights(counts: dict[str, int], class_names: list[str]) -> list[float]:
    """Per class id (``class_names`` order): ``total / (classes x count)``, mean 1 over images.

    The weighted sum of every class's examples is then the same, so each class counts alike
    in the loss (scikit-learn's "balanced"). A class without training images gets weight 1
    (it never occurs in training, so its weight is never used); ValueError when none has any.
    """
    present = {name: counts.get(name, 0) for name in class_names}
    total = sum(present.values())
    if total == 0:
        raise ValueError("class_weight balanced: the training split has no labelled images")
    classes_with_images = sum(1 for n in present.values() if n)
    weights = [total / (classes_with_images * n) if n else 1.0 for n in present.values()]
    logging.info(
        "class_weight balanced: %s",
        {name: round(w, 4) for name, w in zip(class_names, weights, strict=True)},
    )
    return weights
