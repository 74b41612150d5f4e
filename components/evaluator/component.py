"""ServedBaselineEvaluator component: TFX's Evaluator spec plus the two gate parameters."""

from __future__ import annotations

import tensorflow_model_analysis as tfma
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.orchestration import data_types
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import json_utils

from components.evaluator import executor


class ServedBaselineEvaluatorSpec(standard_component_specs.EvaluatorSpec):
    """TFX's EvaluatorSpec with ``accuracy_floor``, ``max_accuracy_drop`` and
    ``min_class_recall``."""

    PARAMETERS = {
        **standard_component_specs.EvaluatorSpec.PARAMETERS,
        **{name: ExecutionParameter(type=kind) for name, kind in executor.RUNTIME_SETTINGS.items()},
    }


class ServedBaselineEvaluator(base_beam_component.BaseBeamComponent):
    """TFX's Evaluator (TFMA), blessing a candidate that passes the accuracy gate.

    The gate: overall ``SparseCategoricalAccuracy`` at least ``accuracy_floor``, and, when
    ``baseline_model`` holds a model, at most ``max_accuracy_drop`` below it; with
    ``min_class_recall`` above 0, every class's recall at least that. Each may be a
    ``RuntimeParameter``. Outputs as TFX's Evaluator: ``evaluation`` and ``blessing``.
    """

    SPEC_CLASS = ServedBaselineEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        baseline_model: types.BaseChannel,
        eval_config: tfma.EvalConfig,
        accuracy_floor: float | data_types.RuntimeParameter,
        max_accuracy_drop: float | data_types.RuntimeParameter,
        min_class_recall: float | data_types.RuntimeParameter = 0.0,
    ):
        """Args:
        examples: the examples to evaluate on (the eval split).
        model: the candidate (Trainer's model).
        baseline_model: ServedModelBaseline's output (may hold no model).
        eval_config: metrics and slices; the gated metric's thresholds are set from
            ``accuracy_floor`` and ``max_accuracy_drop`` when the executor runs.
        accuracy_floor: smallest overall accuracy that blesses (0..1).
        max_accuracy_drop: largest accuracy drop against the baseline that blesses (0..1).
        min_class_recall: smallest recall of every class that blesses (0: no per-class gate).
        """
        super().__init__(
            spec=ServedBaselineEvaluatorSpec(
                examples=examples,
                model=model,
                baseline_model=baseline_model,
                eval_config=eval_config,
                example_splits=json_utils.dumps(None),
                fairness_indicator_thresholds=json_utils.dumps(None),
                accuracy_floor=accuracy_floor,
                max_accuracy_drop=max_accuracy_drop,
                min_class_recall=min_class_recall,
                evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
                blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            )
        )
