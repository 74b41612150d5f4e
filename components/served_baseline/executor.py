"""ServedModelBaseline executor: hand the newest whole served version to the Evaluator.

The baseline a candidate must beat is the model TF Serving serves now: the newest integer
version under SERVING_DIR/MODEL_NAME that holds a SavedModel. Unlike TFX's
LatestBlessedModelStrategy resolver, this needs no ML Metadata query, so it runs the same
under LocalDagRunner, open-source Kubeflow Pipelines (whose backend rejects resolver
executors) and Vertex AI, and it survives a lost metadata store.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from serving import layout

logger = logging.getLogger(__name__)

MODEL_DIR_KEY = "model_dir"
MODEL_KEY = "model"

# Custom properties of the output Model artifact.
SERVED_VERSION_PROPERTY = "served_version"  # 0: nothing is served yet.
SERVED_PATH_PROPERTY = "served_model_path"
NO_BASELINE_VERSION = 0


def newest_served_version(model_dir: str) -> int:
    """The newest whole version under ``model_dir``, or 0 when none is served."""
    versions = layout.list_versions(model_dir)
    return versions[-1] if versions else NO_BASELINE_VERSION


class Executor(base_executor.BaseExecutor):
    """Copies the newest served version into the output Model, or marks it empty."""

    def Do(  # noqa: N802 - TFX API
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(output_dict[MODEL_KEY])
        model_dir = exec_properties[MODEL_DIR_KEY]
        version = newest_served_version(model_dir)
        model.set_int_custom_property(SERVED_VERSION_PROPERTY, version)
        tf.io.gfile.makedirs(model.uri)
        if version == NO_BASELINE_VERSION:
            model.set_string_custom_property(SERVED_PATH_PROPERTY, "")
            logger.info("ServedModelBaseline: nothing served under %s: no baseline", model_dir)
            return
        served = os.path.join(model_dir, str(version))
        model.set_string_custom_property(SERVED_PATH_PROPERTY, served)
        # A copy, not a reference: the Pusher may prune this version while TFMA reads it.
        layout.copy_tree(served, path_utils.serving_model_path(model.uri))
        logger.info("ServedModelBaseline: baseline is version %d (%s)", version, served)
