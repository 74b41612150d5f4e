"""Metrics TFMA computes from the exported model's predictions.

TFMA 0.47's own Calibration metrics are binary: for a multi-class model they need the class
ids at pipeline-construction time, and its top-k binarization sets the other classes to -inf,
which breaks their sums. Expected calibration error of the top-1 confidence is written here
as a Keras metric instead, which TFMA evaluates through its Keras metric wrapper.
"""

from __future__ import annotations

import tensorflow as tf


class ExpectedCalibrationError(tf.keras.metrics.Metric):
    """Expected calibration error (ECE) of the top-1 prediction, in equal-width bins.

    ECE = sum over bins of (examples in bin / all examples) * |accuracy - mean confidence|,
    where an example's bin is that of its highest class probability. 0 is perfectly
    calibrated; an overconfident model has a large ECE.
    """

    def __init__(self, num_bins: int = 10, name: str = "expected_calibration_error", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_bins = num_bins
        self.counts = self.add_weight(name="counts", shape=[num_bins], initializer="zeros")
        self.confidence_sums = self.add_weight(
            name="confidence_sums", shape=[num_bins], initializer="zeros"
        )
        self.correct_sums = self.add_weight(
            name="correct_sums", shape=[num_bins], initializer="zeros"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch: ``y_true`` class ids [batch] or [batch, 1], ``y_pred`` [batch, K]."""
        y_pred = tf.convert_to_tensor(y_pred, tf.float32)
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int64)
        confidence = tf.reduce_max(y_pred, axis=-1)
        correct = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1), labels), tf.float32)
        weights = (
            tf.ones_like(confidence)
            if sample_weight is None
            else tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        )
        bins = tf.minimum(tf.cast(confidence * self.num_bins, tf.int32), self.num_bins - 1)
        self.counts.assign_add(tf.math.unsorted_segment_sum(weights, bins, self.num_bins))
        self.confidence_sums.assign_add(
            tf.math.unsorted_segment_sum(weights * confidence, bins, self.num_bins)
        )
        self.correct_sums.assign_add(
            tf.math.unsorted_segment_sum(weights * correct, bins, self.num_bins)
        )

    def result(self):
        """The ECE of everything added so far."""
        total = tf.maximum(tf.reduce_sum(self.counts), 1e-12)
        gaps = tf.abs(self.correct_sums - self.confidence_sums)
        return tf.reduce_sum(gaps) / total

    def reset_state(self):
        for variable in (self.counts, self.confidence_sums, self.correct_sums):
            variable.assign(tf.zeros_like(variable))

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}
