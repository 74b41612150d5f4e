"""TFX's generic Trainer executor, with some training settings as execution parameters.

The settings in :data:`RUNTIME_SETTINGS` travel as execution parameters of their own
instead of inside the JSON ``custom_config``, so Kubeflow Pipelines and Vertex AI can take
them as runtime parameters (a new run with other epochs or learning rates needs no
recompile). Before ``run_fn`` is called they are merged back into ``custom_config``, so
the trainer module sees one dict either way.
"""

from __future__ import annotations

import json
from typing import Any

from tfx import types
from tfx.components.trainer import executor as tfx_trainer_executor
from tfx.types import standard_component_specs

# Setting name -> type: what a user changes between runs.
RUNTIME_SETTINGS: dict[str, type] = {
    "epochs": int,
    "learning_rate": float,
    "fine_tune_epochs": int,
    "fine_tune_learning_rate": float,
}


def merge_runtime_settings(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """``exec_properties`` with the runtime settings moved into ``custom_config``."""
    merged = dict(exec_properties)
    key = standard_component_specs.CUSTOM_CONFIG_KEY
    custom_config = json.loads(merged.get(key) or "{}")
    for name, kind in RUNTIME_SETTINGS.items():
        if name in merged:
            value = merged.pop(name)
            if value is not None:
                custom_config[name] = kind(value)
    merged[key] = json.dumps(custom_config, sort_keys=True)
    return merged


class Executor(tfx_trainer_executor.GenericExecutor):
    """GenericExecutor that first merges the runtime settings into ``custom_config``."""

    def Do(  # noqa: N802 - TFX API
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        super().Do(input_dict, output_dict, merge_runtime_settings(exec_properties))
