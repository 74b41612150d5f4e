"""ModelExporter component: Trainer's model + examples + Transform graph -> gated exports.

A component of its own rather than part of ``run_fn``: conversion and evaluation in other
runtimes are a separate step with separate failure modes (a converter that breaks must not
cost the training, and is retried alone), its output is an artifact the Pusher takes as an
input, and it runs after the Evaluator's blessing, so a model that will not be pushed is
not converted.
"""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.model_exporter import executor
from trainer_module.model_exports import DEFAULT_REPRESENTATIVE_IMAGES, EXPORT_KINDS


class ModelExports(types.Artifact):
    """A folder of exports that passed the accuracy gate, ``labels.txt`` and
    ``export_report.json`` (every export's accuracy, the refused ones with their reason)."""

    # "<namespace>.<Name>", the form a KFP v2 schema title takes, and the import path that
    # Kubeflow's v2 entrypoint recovers the class from (components/__init__.py).
    TYPE_NAME = "components.ModelExports"


class ModelExporterSpec(types.ComponentSpec):
    """model, examples, transform_graph (+ blessing) -> exports (ModelExports)."""

    PARAMETERS = {
        executor.EXPORTS_KEY: ExecutionParameter(type=str),
        executor.BACKBONE_KEY: ExecutionParameter(type=str),
        executor.MAX_DROP_KEY: ExecutionParameter(type=float),
        executor.REPRESENTATIVE_IMAGES_KEY: ExecutionParameter(type=int),
    }
    INPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
        executor.BLESSING_KEY: ChannelParameter(
            type=standard_artifacts.ModelBlessing, optional=True
        ),
    }
    OUTPUTS = {executor.EXPORTS_OUTPUT_KEY: ChannelParameter(type=ModelExports)}


class ModelExporter(base_component.BaseComponent):
    """Converts the Trainer's model to each of ``exports``, evaluates every export on the
    eval split in its own runtime (tf.lite.Interpreter, onnxruntime) and keeps those within
    ``max_export_accuracy_drop`` of the SavedModel's accuracy on the same images.

    With ``model_blessing``, an unblessed model is not converted (the report says so).
    Output ``exports`` custom properties: ``saved_model_accuracy``, ``accuracy_<kind>`` and
    ``exports_passed`` / ``exports_refused`` (comma-separated kinds).
    """

    SPEC_CLASS = ModelExporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: channel.BaseChannel,
        examples: channel.BaseChannel,
        transform_graph: channel.BaseChannel,
        exports: list[str],
        backbone: str,
        max_export_accuracy_drop: float = 0.01,
        model_blessing: channel.BaseChannel | None = None,
        representative_images: int = DEFAULT_REPRESENTATIVE_IMAGES,
    ):
        """Args:
        model, examples, transform_graph: the Trainer's model and inputs.
        exports: export kinds (``model_exports.EXPORT_KINDS``).
        backbone: the backbone's name (its normalization goes into the exports).
        max_export_accuracy_drop: largest accuracy drop against the SavedModel that passes.
        model_blessing: the Evaluator's blessing; an unblessed model is not converted.
        representative_images: training images in the int8 calibration set.
        """
        unknown = sorted(set(exports) - set(EXPORT_KINDS))
        if unknown:
            raise ValueError(
                f"exports: unknown {', '.join(unknown)}; choose from {', '.join(EXPORT_KINDS)}"
            )
        super().__init__(
            spec=ModelExporterSpec(
                model=model,
                examples=examples,
                transform_graph=transform_graph,
                model_blessing=model_blessing,
                exports=json.dumps(list(exports)),
                backbone=backbone,
                max_export_accuracy_drop=float(max_export_accuracy_drop),
                representative_images=int(representative_images),
                model_exports=types.Channel(type=ModelExports),
            )
        )
