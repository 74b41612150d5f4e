"""ModelExporter executor: convert, evaluate in each runtime, gate, record."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from serving.layout import EXPORT_REPORT_FILE
from trainer_module.backbone_specs import get_backbone_spec
from trainer_module.model_exports import export_and_gate, write_report

logger = logging.getLogger(__name__)

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
TRANSFORM_GRAPH_KEY = "transform_graph"
BLESSING_KEY = "model_blessing"
EXPORTS_OUTPUT_KEY = "model_exports"
EXPORTS_KEY = "exports"
BACKBONE_KEY = "backbone"
MAX_DROP_KEY = "max_export_accuracy_drop"
REPRESENTATIVE_IMAGES_KEY = "representative_images"
# Custom properties of the output artifact.
SAVED_MODEL_ACCURACY_PROPERTY = "saved_model_accuracy"
PASSED_PROPERTY = "exports_passed"
REFUSED_PROPERTY = "exports_refused"
SKIPPED_PROPERTY = "exports_skipped"  # why nothing was converted (an unblessed model)


def _split_patterns(examples: types.Artifact, split: str) -> list[str]:
    return [io_utils.all_files_pattern(artifact_utils.get_split_uri([examples], split))]


class Executor(base_executor.BaseExecutor):
    """Writes the exports that pass the gate and ``export_report.json`` to the output."""

    def Do(  # noqa: N802 - TFX API
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        output = artifact_utils.get_single_instance(output_dict[EXPORTS_OUTPUT_KEY])
        kinds = json.loads(exec_properties[EXPORTS_KEY])
        blessings = input_dict.get(BLESSING_KEY) or []
        if blessings and not model_utils.is_model_blessed(blessings[0]):
            reason = "the Evaluator did not bless the model: no export made"
            logger.info("ModelExporter: %s", reason)
            write_report(output.uri, {"skipped": reason, "exports": []})
            output.set_string_custom_property(SKIPPED_PROPERTY, reason)
            return
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        transform_graph = artifact_utils.get_single_instance(input_dict[TRANSFORM_GRAPH_KEY])
        report = export_and_gate(
            saved_model_dir=path_utils.serving_model_path(model.uri),
            transform_output=transform_graph.uri,
            train_patterns=_split_patterns(examples, "train"),
            eval_patterns=_split_patterns(examples, "eval"),
            output_dir=output.uri,
            kinds=kinds,
            spec=get_backbone_spec(exec_properties[BACKBONE_KEY]),
            max_accuracy_drop=float(exec_properties[MAX_DROP_KEY]),
            representative_images=int(exec_properties[REPRESENTATIVE_IMAGES_KEY]),
        )
        output.set_float_custom_property(
            SAVED_MODEL_ACCURACY_PROPERTY, report["saved_model_accuracy"]
        )
        for export in report["exports"]:
            output.set_float_custom_property(f"accuracy_{export['kind']}", export["accuracy"])
            if export["pushed"]:
                logger.info(
                    "ModelExporter: %s passed (accuracy %.4f)", export["kind"], export["accuracy"]
                )
            else:
                logger.warning("ModelExporter: refused %s", export["reason"])
        output.set_string_custom_property(
            PASSED_PROPERTY, ",".join(e["kind"] for e in report["exports"] if e["pushed"])
        )
        output.set_string_custom_property(
            REFUSED_PROPERTY, ",".join(e["kind"] for e in report["exports"] if not e["pushed"])
        )
        logger.info("ModelExporter: report in %s", os.path.join(output.uri, EXPORT_REPORT_FILE))
