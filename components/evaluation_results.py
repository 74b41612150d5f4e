"""Reading the Evaluator's output back: overall metrics, the confusion matrix, per class.

Used by the Evaluator itself (its ``evaluation_summary.json``, which the Pusher puts into
the model card), by the run summary and by the run report.
"""

from __future__ import annotations

# The Evaluator's name of overall accuracy (TFMA names SparseCategoricalAccuracy this way):
# the metric the gate applies to.
ACCURACY_METRIC = "sparse_categorical_accuracy"


def load_overall_metrics(evaluation_uri: str, baseline: bool = False) -> dict[str, float]:
    """Overall-slice metrics of the candidate (or, with ``baseline``, of the baseline) model
    from a TFMA evaluation artifact."""
    import tensorflow as tf
    import tensorflow_model_analysis as tfma  # Heavy; only needed when metrics are read.

    if not tf.io.gfile.exists(evaluation_uri):  # TFMA would read nothing, silently.
        raise FileNotFoundError(f"{evaluation_uri} does not exist")
    metrics: dict[str, float] = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        if slice_metrics.slice_key.single_slice_keys:
            continue
        for key_and_value in slice_metrics.metric_keys_and_values:
            key = key_and_value.key
            if (key.model_name == "baseline") != baseline or key.is_diff:
                continue
            value = key_and_value.value
            if value.HasField("double_value"):
                metrics[key.name] = value.double_value.value
    return metrics


def per_class_from_confusion(
    entries: list[tuple[int, int, float]], class_names: list[str]
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from (actual, predicted, count) cells."""
    result = {}
    for class_id, name in enumerate(class_names):
        true_positive = sum(n for a, p, n in entries if a == class_id and p == class_id)
        predicted = sum(n for _, p, n in entries if p == class_id)
        actual = sum(n for a, _, n in entries if a == class_id)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    return result


def load_confusion_entries(evaluation_uri: str) -> list[tuple[int, int, float]]:
    """(actual id, predicted id, count) cells of the candidate's overall confusion matrix
    (TFMA's multi-class confusion matrix plot); [] when the evaluation has none."""
    import tensorflow_model_analysis as tfma  # Heavy; only needed when metrics are read.

    for slice_plots in tfma.load_plots(evaluation_uri):
        if slice_plots.slice_key.single_slice_keys:
            continue
        for key_and_value in slice_plots.plot_keys_and_values:
            if key_and_value.key.model_name == "baseline":
                continue
            value = key_and_value.value
            if not value.HasField("multi_class_confusion_matrix_at_thresholds"):
                continue
            matrix = value.multi_class_confusion_matrix_at_thresholds.matrices[0]
            return [
                (e.actual_class_id, e.predicted_class_id, e.num_weighted_examples)
                for e in matrix.entries
            ]
    return []
