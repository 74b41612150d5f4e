"""InfraCheck: TFX InfraValidator semantics with the model servers available to this project.

The candidate is loaded by a model server (``tensorflow_model_server`` on PATH, else the
tensorflow/serving Docker image, else our local ``serving.server``) and its own warmup requests
(``assets.extra/tf_serving_warmup_requests``) are sent over gRPC Predict. The ``blessing``
output is a standard InfraBlessing, so Pusher's ``infra_blessing`` input accepts it.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.infra_check import checks, executor


class InfraCheckSpec(types.ComponentSpec):
    """model (Trainer's Model) -> blessing (InfraBlessing)."""

    PARAMETERS = {
        executor.MODEL_NAME_KEY: ExecutionParameter(type=str),
        executor.TIMEOUT_SECONDS_KEY: ExecutionParameter(type=int),
        executor.SERVER_KEY: ExecutionParameter(type=str, optional=True),
        executor.IMAGE_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}
    OUTPUTS = {executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing)}


class InfraCheck(base_component.BaseComponent):
    """Blesses a model that a model server loads and that answers its warmup requests.

    Output ``blessing`` (InfraBlessing) custom properties: ``blessed`` (1/0, what Pusher
    reads), ``infra_check_server`` ("tensorflow_model_server", "docker" or "local_server"),
    ``infra_check_message`` (one line: what was checked, or why it failed) and
    ``infra_check_requests`` (warmup requests answered validly); plus the marker file
    INFRA_BLESSED or INFRA_NOT_BLESSED, as TFX's InfraValidator writes.
    """

    SPEC_CLASS = InfraCheckSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: channel.BaseChannel,
        model_name: str,
        timeout_seconds: int = executor.DEFAULT_TIMEOUT_SECONDS,
        server: str = checks.AUTO,
        image: str = checks.TF_SERVING_IMAGE,
    ):
        """Args:
        model: the Trainer's model (the SavedModel under its Format-Serving folder).
        model_name: the name the model is served under (as TF Serving's --model_name).
        timeout_seconds: bound on the whole check: server start, model load and requests.
        server: auto, tensorflow_model_server, docker or local (checks.choose_server).
        image: the TF Serving image the docker server runs.
        """
        checks.validate_model_name(model_name)
        if server not in checks.REQUESTABLE_SERVERS:
            raise ValueError(
                f"server must be one of {', '.join(checks.REQUESTABLE_SERVERS)}, got {server!r}"
            )
        if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, int):
            raise ValueError(f"timeout_seconds must be an int, got {timeout_seconds!r}")
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        super().__init__(
            spec=InfraCheckSpec(
                model=model,
                model_name=model_name,
                timeout_seconds=timeout_seconds,
                server=server,
                image=image,
                blessing=types.Channel(type=standard_artifacts.InfraBlessing),
            )
        )
