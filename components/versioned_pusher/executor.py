"""Pusher executor: TFX's blessing checks, then an atomic integer-versioned publish."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.versioned_pusher import layout, model_card

KEEP_VERSIONS_KEY = "keep_versions"
SERVER_BASE_PATH_KEY = "models_config_base_path"
# 1 when the model was already the newest version (byte-identical) and nothing was published.
ALREADY_SERVED_PROPERTY = "already_served"
EXPORTS_KEY = "model_exports"
# MODEL_DIR/exports/VERSION when exports are published beside the version; "" otherwise.
EXPORTS_DESTINATION_PROPERTY = "exports_destination"


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

        try:
            training, evaluation = _card_inputs(input_dict)
        except (OSError, ValueError, tf.errors.OpError) as err:  # The card never stops a push.
            logging.warning("model card inputs unreadable (%s): the card says less", err)
            training, evaluation = None, None

        def card(version: int) -> dict[str, str]:
            name = os.path.basename(model_dir.rstrip("/"))
            return {
                model_card.CARD_PATH: model_card.build_model_card(
                    name, version, training, evaluation
                )
            }

        exports = input_dict.get(EXPORTS_KEY) or []
        result = layout.push(
            self.GetModelPath(input_dict),
            model_dir,
            keep=int(custom_config.get(KEEP_VERSIONS_KEY, 5)),
            base_path_in_server=custom_config.get(SERVER_BASE_PATH_KEY, ""),
            extra_files=card,
            extra_file_names=(model_card.CARD_PATH,),
            exports_dir=artifact_utils.get_single_instance(exports).uri if exports else None,
        )
        if result.exports_destination:
            logging.info(
                "Exports at %s (published now: %s)",
                result.exports_destination,
                ", ".join(result.exports_published) or "none, already there",
            )
        pushed_model.set_string_custom_property(
            EXPORTS_DESTINATION_PROPERTY, result.exports_destination
        )
        if result.published:
            logging.info("Model published to %s", result.destination)
        else:
            logging.info(
                "Model is byte-identical to the newest version %s: nothing published",
                result.destination,
            )
        if result.removed_versions:
            logging.info("Removed old versions %s of %s", result.removed_versions, model_dir)
        logging.info("TF Serving model config written to %s", result.models_config)
        pushed_model.set_int_custom_property(ALREADY_SERVED_PROPERTY, 0 if result.published else 1)
        self._MarkPushed(
            pushed_model, pushed_destination=result.destination, pushed_version=str(result.version)
        )


def _card_inputs(
    input_dict: dict[str, list[types.Artifact]],
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The Trainer's training record (in the model artifact) and the Evaluator's summary
    (in its blessing artifact), what the model card is made of; None where absent."""
    from components.evaluator.executor import EVALUATION_SUMMARY_FILE
    from trainer_module.training_record import read_record

    model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
    training = read_record(model.uri)
    evaluation = None
    blessings = input_dict.get(standard_component_specs.MODEL_BLESSING_KEY) or []
    if blessings:
        path = os.path.join(blessings[0].uri, EVALUATION_SUMMARY_FILE)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                evaluation = json.loads(f.read())
    return training, evaluation
