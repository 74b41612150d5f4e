"""VersionedPusher: TFX's Pusher with an atomic, integer-versioned filesystem executor."""

from __future__ import annotations

from tfx.components.pusher.component import Pusher
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import channel

from components.versioned_pusher import executor


class VersionedPusher(Pusher):
    """Publishes blessed models to ``SERVING_DIR/MODEL_NAME/<1, 2, 3...>``.

    Versions appear whole or not at all, only the newest ``keep_versions`` are kept, and
    ``SERVING_DIR/models.config`` lists every model for TF Serving's --model_config_file.
    """

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: channel.BaseChannel,
        model_blessing: channel.BaseChannel,
        model_dir: str,
        keep_versions: int = 5,
        models_config_base_path: str = "",
        infra_blessing: channel.BaseChannel | None = None,
    ):
        """Args:
        model: the Trainer's model.
        model_blessing: the Evaluator's blessing; unblessed models are never pushed.
        model_dir: SERVING_DIR/MODEL_NAME.
        keep_versions: how many of the newest versions to keep.
        models_config_base_path: where TF Serving sees SERVING_DIR (models.config paths).
        infra_blessing: the infra check's blessing; when given, it must pass too.
        """
        super().__init__(
            model=model,
            model_blessing=model_blessing,
            infra_blessing=infra_blessing,
            push_destination=pusher_pb2.PushDestination(
                filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=model_dir)
            ),
            custom_config={
                executor.KEEP_VERSIONS_KEY: keep_versions,
                executor.SERVER_BASE_PATH_KEY: models_config_base_path,
            },
        )
