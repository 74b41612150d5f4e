"""TFX's Evaluator executor, with the accuracy gate set from execution parameters.

Two changes to TFX's own executor, both before it runs:

- the baseline comes from :class:`components.served_baseline.ServedModelBaseline`, whose
  output is empty when nothing is served yet; an empty baseline is dropped, so TFX
  rubber-stamps the change threshold on a first run exactly as with no baseline at all;
- the accuracy floor, the largest allowed drop and the smallest per-class recall are
  execution parameters rather than constants inside the EvalConfig, so on Kubeflow they can
  be runtime parameters of the compiled pipeline: a run can be submitted with new thresholds
  without recompiling.

A class's recall is the accuracy on the examples of that class, so the per-class gate is a
threshold on the gated metric in every slice of the label slicing (one slice per class): it
needs neither the number of classes nor a metric of its own.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import types
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import path_utils, proto_utils

from components import evaluation_results
from trainer_module import features

logger = logging.getLogger(__name__)

ACCURACY_FLOOR_KEY = "accuracy_floor"
MAX_ACCURACY_DROP_KEY = "max_accuracy_drop"
MIN_CLASS_RECALL_KEY = "min_class_recall"
# Parameter name -> type: the gate's settings, runtime parameters of a compiled pipeline.
RUNTIME_SETTINGS: dict[str, type] = {
    ACCURACY_FLOOR_KEY: float,
    MAX_ACCURACY_DROP_KEY: float,
    MIN_CLASS_RECALL_KEY: float,
}
# The metric the gate applies to (TFMA's class name in the EvalConfig).
GATED_METRIC_CLASS = "SparseCategoricalAccuracy"
# Written into the blessing artifact: what the Pusher's model card says of the evaluation.
EVALUATION_SUMMARY_FILE = "evaluation_summary.json"


def accuracy_threshold(floor: float, max_drop: float) -> tfma.MetricThreshold:
    """At least ``floor``, and at most ``max_drop`` below the baseline (when there is one)."""
    return tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": float(floor)}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -float(max_drop)},
        ),
    )


def class_slicing() -> tfma.SlicingSpec:
    """The slicing with one slice per class (by the raw label): the per-class gate's slices."""
    return tfma.SlicingSpec(feature_keys=[features.LABEL_KEY])


def set_accuracy_thresholds(
    eval_config: tfma.EvalConfig, floor: float, max_drop: float, min_class_recall: float = 0.0
) -> tfma.EvalConfig:
    """``eval_config`` with the gated metric's thresholds set; ValueError if it is absent.

    Overall: at least ``floor`` and at most ``max_drop`` below the baseline. When
    ``min_class_recall`` is above 0, also at least that in every class's slice (its recall).
    """
    updated = tfma.EvalConfig()
    updated.CopyFrom(eval_config)
    found = False
    for metrics_spec in updated.metrics_specs:
        for metric in metrics_spec.metrics:
            if metric.class_name != GATED_METRIC_CLASS:
                continue
            del metric.per_slice_thresholds[:]
            metric.per_slice_thresholds.add(
                slicing_specs=[tfma.SlicingSpec()],
                threshold=accuracy_threshold(floor, max_drop),
            )
            if min_class_recall > 0:
                metric.per_slice_thresholds.add(
                    slicing_specs=[class_slicing()],
                    threshold=tfma.MetricThreshold(
                        value_threshold=tfma.GenericValueThreshold(
                            lower_bound={"value": float(min_class_recall)}
                        )
                    ),
                )
            found = True
    if not found:
        raise ValueError(f"the EvalConfig has no {GATED_METRIC_CLASS} metric to gate on")
    if min_class_recall > 0 and class_slicing() not in updated.slicing_specs:
        updated.slicing_specs.append(class_slicing())
    return updated


def holds_model(model: types.Artifact) -> bool:
    """Whether a Model artifact's serving folder holds a SavedModel."""
    path = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    return tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))


class Executor(tfx_evaluator_executor.Executor):
    """TFX's Evaluator with an optional served baseline and parameterised thresholds."""

    def Do(  # noqa: N802 - TFX API
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        input_dict = dict(input_dict)
        baseline_key = standard_component_specs.BASELINE_MODEL_KEY
        baselines = [m for m in input_dict.pop(baseline_key, []) if holds_model(m)]
        if baselines:
            input_dict[baseline_key] = baselines
        exec_properties = dict(exec_properties)
        floor = exec_properties.pop(ACCURACY_FLOOR_KEY)
        max_drop = exec_properties.pop(MAX_ACCURACY_DROP_KEY)
        min_class_recall = exec_properties.pop(MIN_CLASS_RECALL_KEY, None) or 0.0
        config_key = standard_component_specs.EVAL_CONFIG_KEY
        eval_config = tfma.EvalConfig()
        proto_utils.json_to_proto(exec_properties[config_key], eval_config)
        exec_properties[config_key] = proto_utils.proto_to_json(
            set_accuracy_thresholds(eval_config, floor, max_drop, min_class_recall)
        )
        super().Do(input_dict, output_dict, exec_properties)
        try:
            write_evaluation_summary(
                input_dict, output_dict, floor, max_drop, served_version(baselines)
            )
        except Exception as err:  # noqa: BLE001 - the blessing stands; only the card says less
            logger.warning("evaluation summary not written (%s: %s)", type(err).__name__, err)


def served_version(baselines: list[types.Artifact]) -> int:
    """The served version number a baseline artifact stands for (0: none served)."""
    for baseline in baselines:
        if baseline.has_custom_property("served_version"):
            return int(baseline.get_int_custom_property("served_version"))
    return 0


def write_evaluation_summary(
    input_dict: dict[str, list[types.Artifact]],
    output_dict: dict[str, list[types.Artifact]],
    floor: float,
    max_drop: float,
    baseline_version: int,
) -> str:
    """Writes the candidate's and the baseline's metrics, per-class metrics, the thresholds
    and the decision as ``evaluation_summary.json`` into the blessing artifact (which the
    Pusher gets); returns its path."""
    from trainer_module.training_record import read_record

    evaluation = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.EVALUATION_KEY]
    )
    blessing = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.BLESSING_KEY]
    )
    model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
    record = read_record(model.uri) or {}
    class_names = record.get("class_names", [])
    entries = evaluation_results.load_confusion_entries(evaluation.uri)
    document = {
        "blessed": bool(blessing.get_int_custom_property("blessed")),
        "accuracy_floor": float(floor),
        "max_accuracy_drop": float(max_drop),
        "baseline_version": baseline_version,
        "metrics": evaluation_results.load_overall_metrics(evaluation.uri),
        "baseline_metrics": evaluation_results.load_overall_metrics(evaluation.uri, baseline=True),
        "per_class": evaluation_results.per_class_from_confusion(entries, class_names)
        if entries and class_names
        else {},
    }
    path = os.path.join(blessing.uri, EVALUATION_SUMMARY_FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(document, indent=1))
    return path
