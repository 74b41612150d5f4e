"""VersionedPusher: TFX's Pusher with an atomic, integer-versioned filesystem executor."""

from __future__ import annotations

from tfx import types
from tfx.components.pusher.component import Pusher
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import pusher_pb2
from tfx.types import channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from components.model_exporter import ModelExports
from components.versioned_pusher import executor


class VersionedPusherSpec(standard_component_specs.PusherSpec):
    """TFX's PusherSpec plus the ModelExporter's output, published beside each version."""

    INPUTS = {
        **standard_component_specs.PusherSpec.INPUTS,
        executor.EXPORTS_KEY: ChannelParameter(type=ModelExports, optional=True),
    }


class VersionedPusher(Pusher):
    """Publishes blessed models to ``SERVING_DIR/MODEL_NAME/<1, 2, 3...>``.

    Versions appear whole or not at all, only the newest ``keep_versions`` are kept, and
    ``SERVING_DIR/models.config`` lists every model for TF Serving's --model_config_file.
    """

    SPEC_CLASS = VersionedPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: channel.BaseChannel,
        model_blessing: channel.BaseChannel,
        model_dir: str,
        keep_versions: int = 5,
        models_config_base_path: str = "",
        infra_blessing: channel.BaseChannel | None = None,
        model_exports: channel.BaseChannel | None = None,
    ):
        """Args:
        model: the Trainer's model.
        model_blessing: the Evaluator's blessing; unblessed models are never pushed.
        model_dir: SERVING_DIR/MODEL_NAME.
        keep_versions: how many of the newest versions to keep.
        models_config_base_path: where TF Serving sees SERVING_DIR (models.config paths).
        infra_blessing: the infra check's blessing; when given, it must pass too.
        model_exports: the ModelExporter's output; its exports that passed the gate are
          published to MODEL_DIR/exports/VERSION/ with the version.
        """
        # TFX's Pusher.__init__ builds its own spec, without the exports input.
        base_component.BaseComponent.__init__(
            self,
            spec=VersionedPusherSpec(
                model=model,
                model_blessing=model_blessing,
                infra_blessing=infra_blessing,
                model_exports=model_exports,
                push_destination=pusher_pb2.PushDestination(
                    filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=model_dir)
                ),
                custom_config=json_utils.dumps(
                    {
                        executor.KEEP_VERSIONS_KEY: keep_versions,
                        executor.SERVER_BASE_PATH_KEY: models_config_base_path,
                    }
                ),
                pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            ),
        )
