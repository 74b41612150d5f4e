"""ImageTrainer component: TFX's Trainer spec plus one parameter per runtime setting."""

from __future__ import annotations

from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration import data_types
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import json_utils

from components.trainer import executor


class ImageTrainerSpec(standard_component_specs.TrainerSpec):
    """TFX's TrainerSpec with one optional parameter per ``executor.RUNTIME_SETTINGS``."""

    PARAMETERS = {
        **standard_component_specs.TrainerSpec.PARAMETERS,
        **{
            name: ExecutionParameter(type=kind, optional=True)
            for name, kind in executor.RUNTIME_SETTINGS.items()
        },
    }


class ImageTrainer(base_component.BaseComponent):
    """TFX's Trainer running ``run_fn`` on examples and a Transform graph.

    ``custom_config`` is the trainer module's whole settings dict; the keys named in
    ``executor.RUNTIME_SETTINGS`` are taken out of it and passed as execution parameters
    (plain values, or ``RuntimeParameter``s on Kubeflow/Vertex AI), then merged back by
    the executor. Outputs as TFX's Trainer: ``model`` and ``model_run``.
    """

    SPEC_CLASS = ImageTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        transform_graph: types.BaseChannel,
        schema: types.BaseChannel,
        run_fn: str,
        custom_config: dict[str, Any],
        runtime_parameters: dict[str, data_types.RuntimeParameter] | None = None,
        hyperparameters: types.BaseChannel | None = None,
    ):
        """Args:
        examples, transform_graph, schema: as TFX's Trainer.
        run_fn: dotted name of the trainer module's ``run_fn``.
        custom_config: every training setting (JSON-serialisable).
        runtime_parameters: RuntimeParameters replacing some runtime settings' values.
        hyperparameters: the Tuner's best hyperparameters, which ``run_fn`` trains with.
        """
        settings = dict(custom_config)
        runtime = {
            name: settings.pop(name) for name in executor.RUNTIME_SETTINGS if name in settings
        }
        runtime.update(runtime_parameters or {})
        unknown = sorted(set(runtime) - set(executor.RUNTIME_SETTINGS))
        if unknown:
            raise ValueError(f"not runtime settings of the Trainer: {', '.join(unknown)}")
        super().__init__(
            spec=ImageTrainerSpec(
                examples=examples,
                transform_graph=transform_graph,
                schema=schema,
                hyperparameters=hyperparameters,
                train_args=trainer_pb2.TrainArgs(),
                eval_args=trainer_pb2.EvalArgs(),
                run_fn=run_fn,
                custom_config=json_utils.dumps(settings),
                model=types.Channel(type=standard_artifacts.Model),
                model_run=types.Channel(type=standard_artifacts.ModelRun),
                **runtime,
            )
        )
