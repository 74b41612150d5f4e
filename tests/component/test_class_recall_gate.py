"""The per-class recall gate, validated by TFMA itself on known predictions.

The Evaluator's EvalConfig (``build_eval_config``, thresholds set as the executor sets them)
runs through ``tfma.analyze_raw_data`` on labels and probabilities whose per-class recall is
known: overall accuracy 0.8 passes the floor, one class at recall 0.4 fails a 0.5 gate.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_model_analysis as tfma

from components.evaluator import executor as evaluator_executor
from pipeline.config import load_config
from pipeline.pipeline import build_eval_config
from trainer_module import features

CLASSES = ("bag", "coat", "shirt")


def _predictions():
    import pandas as pd

    rows = []
    for class_id, name in enumerate(CLASSES):
        for i in range(20):
            # "shirt" is taken for a bag 12 times in 20: recall 0.4; the others 1.0.
            predicted = 0 if (name == "shirt" and i < 12) else class_id
            probabilities = np.full(len(CLASSES), 0.1)
            probabilities[predicted] = 0.8
            rows.append(
                {
                    features.LABEL_KEY: name,
                    features.TRANSFORMED_LABEL_KEY: class_id,
                    features.PROBABILITIES_OUTPUT: probabilities,
                }
            )
    return pd.DataFrame(rows)


def _validate(min_class_recall: float, tmp_path) -> tfma.ValidationResult:
    eval_config = evaluator_executor.set_accuracy_thresholds(
        build_eval_config(load_config(None, {}, validate=False)), 0.5, 0.1, min_class_recall
    )
    # Raw data has no model signatures, and no baseline: the change threshold (against the
    # served model) is left out, as TFX rubber-stamps it on a first run.
    spec = eval_config.model_specs[0]
    spec.ClearField("signature_name")
    del spec.preprocessing_function_names[:]
    for metrics_spec in eval_config.metrics_specs:
        for metric in metrics_spec.metrics:
            for threshold in metric.per_slice_thresholds:
                threshold.threshold.ClearField("change_threshold")
    tfma.analyze_raw_data(_predictions(), eval_config, output_path=str(tmp_path))
    return tfma.load_validation_result(str(tmp_path))


@pytest.mark.parametrize("min_class_recall", [0.3, 0.5])
def test_gate_fails_only_the_class_below_min_class_recall(min_class_recall, tmp_path):
    result = _validate(min_class_recall, tmp_path)
    failed = {
        single.bytes_value.decode()
        for per_slice in result.metric_validations_per_slice
        for single in per_slice.slice_key.single_slice_keys
    }
    if min_class_recall < 0.4:  # The worst class's recall.
        assert result.validation_ok and not failed
    else:
        assert not result.validation_ok
        assert failed == {"shirt"}


def test_no_per_class_threshold_unless_asked_for():
    config = build_eval_config(load_config(None, {}, validate=False))
    off = evaluator_executor.set_accuracy_thresholds(config, 0.5, 0.1, 0.0)
    on = evaluator_executor.set_accuracy_thresholds(config, 0.5, 0.1, 0.7)
    (gated_off,) = [m for m in off.metrics_specs[0].metrics if m.per_slice_thresholds]
    (gated_on,) = [m for m in on.metrics_specs[0].metrics if m.per_slice_thresholds]
    assert len(gated_off.per_slice_thresholds) == 1
    assert len(gated_on.per_slice_thresholds) == 2
    class_gate = gated_on.per_slice_thresholds[1]
    assert list(class_gate.slicing_specs) == [evaluator_executor.class_slicing()]
    assert class_gate.threshold.value_threshold.lower_bound.value == pytest.approx(0.7)
