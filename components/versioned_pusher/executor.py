"""Pusher executor: TFX's blessing checks, then an atomic integer-versioned publish."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.versioned_pusher import layout

KEEP_VERSIONS_KEY = "keep_versions"
SERVER_BASE_PATH_KEY = "models_config_base_path"


class Executor(tfx_pusher_executor.Executor):
    """Pushes a blessed model to ``BASE_DIRECTORY/<n+1>`` and prunes old versions."""

    def Do(  # noqa: N802 - TFX API
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed_model = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(pushed_model)
            return
        push_destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], push_destination
        )
        if push_destination.WhichOneof("destination") != "filesystem":
            raise ValueError("VersionedPusher supports filesystem push destinations only")
        model_dir = push_destination.filesystem.base_directory
        custom_config = (
            json.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null")
            or {}
        )

        version = layout.publish_version(self.GetModelPath(input_dict), model_dir)
        destination = os.path.join(model_dir, str(version))
        logging.info("Model published to %s", destination)
        removed = layout.prune_versions(model_dir, int(custom_config.get(KEEP_VERSIONS_KEY, 5)))
        if removed:
            logging.info("Removed old versions %s of %s", removed, model_dir)
        config_path = layout.write_models_config(
            os.path.dirname(model_dir.rstrip("/")), custom_config.get(SERVER_BASE_PATH_KEY, "")
        )
        logging.info("TF Serving model config written to %s", config_path)
        self._MarkPushed(pushed_model, pushed_destination=destination, pushed_version=str(version))
