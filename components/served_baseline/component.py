"""ServedModelBaseline component: no inputs, one Model output (the served model, if any)."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.served_baseline import executor


class ServedModelBaselineSpec(types.ComponentSpec):
    """model_dir (SERVING_DIR/MODEL_NAME) -> model (Model)."""

    PARAMETERS = {executor.MODEL_DIR_KEY: ExecutionParameter(type=str)}
    INPUTS: dict = {}
    OUTPUTS = {executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}


class ServedModelBaseline(base_component.BaseComponent):
    """The newest whole version in the serving directory, as a Model artifact.

    Output ``model`` custom properties: ``served_version`` (the version number; 0 when
    nothing is served yet, and then the artifact holds no model) and ``served_model_path``.
    Feed it to :class:`components.evaluator.ServedBaselineEvaluator`, which drops an empty
    baseline, so a first run is gated by the accuracy floor alone.

    Its output depends on the serving directory, not on its inputs, so it must never be
    taken from the cache: ``pipeline.local`` and ``pipeline.kubeflow`` switch caching off
    for it.
    """

    SPEC_CLASS = ServedModelBaselineSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model_dir: str):
        """Args:
        model_dir: SERVING_DIR/MODEL_NAME, the folder of integer versions the Pusher writes.
        """
        super().__init__(
            spec=ServedModelBaselineSpec(
                model_dir=model_dir, model=channel.Channel(type=standard_artifacts.Model)
            )
        )
