"""``create_pipeline(config)``: wires the TFX components; builds nothing else."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.evaluator import ServedBaselineEvaluator
from components.evaluator.executor import GATED_METRIC_CLASS, accuracy_threshold, class_slicing
from components.evaluator.executor import RUNTIME_SETTINGS as EVALUATOR_RUNTIME_SETTINGS
from components.image_example_gen import ImageExampleGen
from components.image_example_gen.options import IngestOptions
from components.infra_check import InfraCheck
from components.model_exporter import ModelExporter
from components.served_baseline import ServedModelBaseline
from components.trainer import ImageTrainer
from components.trainer.executor import RUNTIME_SETTINGS as TRAINER_RUNTIME_SETTINGS
from components.versioned_pusher import VersionedPusher
from pipeline import run_summary
from pipeline.config import PipelineConfig, beam_flag_name, uses_direct_runner
from trainer_module import features
from trainer_module.settings import TrainingSettings, TransformSettings, TuningSettings

PREPROCESSING_FN = "trainer_module.preprocessing.preprocessing_fn"
RUN_FN = "trainer_module.train.run_fn"
TUNER_FN = "trainer_module.tuning.tuner_fn"
# Metric names in the Evaluator's output.
ACCURACY_METRIC = run_summary.ACCURACY_METRIC
TOP_K_METRIC = "top_k_accuracy"
CUSTOM_METRICS_MODULE = "trainer_module.metrics"

# Beam flags that tell TFX where Beam workers get their Python dependencies from.
_BEAM_DEPENDENCY_FLAGS = (
    "--extra_package",
    "--extra_packages",
    "--setup_file",
    "--requirements_file",
    "--sdk_container_image",
    "--worker_harness_container_image",
)
# Stands in for an image name on local runs, where the DirectRunner ignores it.
LOCAL_WORKER_ENVIRONMENT = "this-python-environment"

# Component ids, in pipeline order; runners and tests refer to components by these.
EXAMPLE_GEN = "ImageExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "SchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
TRANSFORM = "Transform"
TUNER = "Tuner"
TRAINER = "Trainer"
SERVED_BASELINE = "ServedModelBaseline"
# Components whose output depends on the world outside the pipeline (the serving directory),
# so a cached result would be stale: runners switch caching off for them.
UNCACHEABLE_COMPONENTS = (SERVED_BASELINE,)
EVALUATOR = "Evaluator"
INFRA_CHECK = "InfraCheck"
MODEL_EXPORTER = "ModelExporter"
PUSHER = "Pusher"


def build_eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """TFMA config: metrics on the raw eval split, gated by a floor and by the baseline.

    Labels are class names in the raw data; the model's ``transform_features`` signature
    maps them to ids with the vocabulary the model was trained with. Reported: accuracy,
    top-k accuracy, the multi-class confusion matrix (per-class precision, recall and F1
    are derived from it) and the expected calibration error of the top-1 confidence,
    overall and per label slice. Overall accuracy gates the blessing, and with
    ``min_class_recall`` the accuracy of each label slice (the class's recall) too; the
    executor sets those thresholds from its parameters.
    """
    overall = tfma.SlicingSpec()
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=features.EXAMPLES_SIGNATURE,
                preprocessing_function_names=[features.TRANSFORM_SIGNATURE],
                label_key=features.TRANSFORMED_LABEL_KEY,
                prediction_key=features.PROBABILITIES_OUTPUT,
            )
        ],
        slicing_specs=[overall, class_slicing()],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    # The executor sets this threshold again from its accuracy_floor and
                    # max_accuracy_drop parameters (runtime parameters on Kubeflow).
                    tfma.MetricConfig(
                        class_name=GATED_METRIC_CLASS,
                        per_slice_thresholds=[
                            tfma.PerSliceMetricThreshold(
                                slicing_specs=[overall],
                                threshold=accuracy_threshold(
                                    config.accuracy_floor, config.max_accuracy_drop
                                ),
                            )
                        ],
                    ),
                    tfma.MetricConfig(
                        class_name="SparseTopKCategoricalAccuracy",
                        config=json.dumps({"k": config.top_k, "name": TOP_K_METRIC}),
                    ),
                    tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
                    # TFMA's own calibration metrics are binary; see trainer_module.metrics.
                    tfma.MetricConfig(
                        class_name="ExpectedCalibrationError", module=CUSTOM_METRICS_MODULE
                    ),
                ]
            ),
        ],
    )


def example_gen_options(config: PipelineConfig) -> IngestOptions:
    """ImageExampleGen's options: every IngestOptions field, from the configuration."""
    return config.settings_for(IngestOptions)


def transform_custom_config(config: PipelineConfig) -> dict[str, Any]:
    """The Transform's custom_config: every TransformSettings field, from the configuration."""
    return dataclasses.asdict(config.settings_for(TransformSettings))


def trainer_custom_config(config: PipelineConfig) -> dict[str, Any]:
    """The Trainer's custom_config: every TrainingSettings field, from the configuration."""
    return dataclasses.asdict(config.settings_for(TrainingSettings))


def tuner_custom_config(config: PipelineConfig) -> dict[str, Any]:
    """The Tuner's custom_config: every TrainingSettings and TuningSettings field."""
    return {
        **trainer_custom_config(config),
        **dataclasses.asdict(config.settings_for(TuningSettings)),
    }


def tuner_component(
    examples, transform_graph, schema, config: PipelineConfig
) -> tfx.components.Tuner:
    """TFX's Tuner running ``tuner_fn`` (KerasTuner) on ``examples``, for ``config``."""
    return tfx.components.Tuner(
        tuner_fn=TUNER_FN,
        examples=examples,
        transform_graph=transform_graph,
        schema=schema,
        train_args=tfx.proto.TrainArgs(),
        eval_args=tfx.proto.EvalArgs(),
        custom_config=tuner_custom_config(config),
    ).with_id(TUNER)


def transform_component(examples, schema, config: PipelineConfig) -> tfx.components.Transform:
    """The Transform of ``examples`` and their ``schema`` (channels), for ``config``.

    It only analyses (the label vocabulary); images are decoded in the Trainer's input
    pipeline and in the serving graph, so nothing is materialised twice on disk.
    """
    return tfx.components.Transform(
        examples=examples,
        schema=schema,
        preprocessing_fn=PREPROCESSING_FN,
        materialize=False,
        disable_statistics=True,
        custom_config=transform_custom_config(config),
    )


def component_beam_args(config: PipelineConfig) -> list[str]:
    """The Beam arguments the data components run with.

    Unless Beam arguments say where workers get their dependencies, every TFX Beam executor
    (ExampleGen, StatisticsGen, Transform, Evaluator) packages the installed TFX into an
    sdist first: about 2.5 s per component and a 40 MB copy of TFX left in the temp folder
    every time. DirectRunner workers, in-process or subprocess, run in this Python
    environment (on Kubeflow: in the pipeline's container image), so there is nothing to
    stage; naming that environment as the worker image skips the build. Other runners keep
    the arguments as given (configs/dataflow.yaml names its worker image).
    """
    args = list(config.beam_pipeline_args)
    if not uses_direct_runner(args) or any(
        beam_flag_name(a) in _BEAM_DEPENDENCY_FLAGS for a in args
    ):
        return args
    return [*args, f"--sdk_container_image={config.container_image or LOCAL_WORKER_ENVIRONMENT}"]


# Settings that become runtime parameters of a compiled Kubeflow/Vertex pipeline (a run can
# be submitted with new values without recompiling): field -> type, as the Trainer and the
# Evaluator components name them.
RUNTIME_PARAMETER_FIELDS: dict[str, type] = {
    **TRAINER_RUNTIME_SETTINGS,
    **EVALUATOR_RUNTIME_SETTINGS,
}


def runtime_parameters(config: PipelineConfig) -> dict[str, tfx.dsl.experimental.RuntimeParameter]:
    """One RuntimeParameter per RUNTIME_PARAMETER_FIELDS entry, defaulting to ``config``'s value."""
    return {
        name: tfx.dsl.experimental.RuntimeParameter(
            name=name, ptype=kind, default=kind(getattr(config, name))
        )
        for name, kind in RUNTIME_PARAMETER_FIELDS.items()
    }


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config=None,
    *,
    with_runtime_parameters: bool = False,
) -> tfx.dsl.Pipeline:
    """Returns the TFX pipeline for ``config``; a pure function of its arguments.

    ``metadata_connection_config`` is the MLMD store for local runs; orchestrators such
    as Kubeflow supply their own and pass None. ``with_runtime_parameters`` (for compiling)
    makes the RUNTIME_PARAMETER_FIELDS runtime parameters whose defaults are ``config``'s.
    """
    runtime = runtime_parameters(config) if with_runtime_parameters else {}
    example_gen = ImageExampleGen(input_base=config.data_root, options=example_gen_options(config))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
    )
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    transform = transform_component(
        example_gen.outputs["examples"], schema_gen.outputs["schema"], config
    )
    # Only with a trial budget: the Tuner trains trials, which cost what training costs.
    tuner = (
        tuner_component(
            example_gen.outputs["examples"],
            transform.outputs["transform_graph"],
            schema_gen.outputs["schema"],
            config,
        )
        if config.tuner_trials > 0
        else None
    )
    trainer = ImageTrainer(
        run_fn=RUN_FN,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        custom_config=trainer_custom_config(config),
        runtime_parameters={k: v for k, v in runtime.items() if k in TRAINER_RUNTIME_SETTINGS},
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
    ).with_id(TRAINER)
    # The baseline is the model being served now, read from the serving directory: no MLMD
    # resolver, so the same gate runs locally, on open-source Kubeflow and on Vertex AI.
    served_baseline = ServedModelBaseline(model_dir=config.model_serving_dir).with_id(
        SERVED_BASELINE
    )
    evaluator = ServedBaselineEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=served_baseline.outputs["model"],
        eval_config=build_eval_config(config),
        accuracy_floor=runtime.get("accuracy_floor", config.accuracy_floor),
        max_accuracy_drop=runtime.get("max_accuracy_drop", config.max_accuracy_drop),
        min_class_recall=runtime.get("min_class_recall", config.min_class_recall),
    ).with_id(EVALUATOR)
    # Loads the candidate in a model server and sends its warmup requests (InfraValidator
    # semantics); the Pusher needs this blessing as well as the Evaluator's.
    infra_check = InfraCheck(
        model=trainer.outputs["model"],
        model_name=config.model_name,
        timeout_seconds=config.infra_check_timeout,
        server=config.infra_check_server,
        image=config.infra_check_image,
    ).with_id(INFRA_CHECK)
    # TFLite/ONNX copies, converted only once the Evaluator blessed the model, each evaluated
    # in its own runtime; the Pusher publishes those within max_export_accuracy_drop.
    exporter = None
    if config.exports:
        exporter = ModelExporter(
            model=trainer.outputs["model"],
            examples=example_gen.outputs["examples"],
            transform_graph=transform.outputs["transform_graph"],
            model_blessing=evaluator.outputs["blessing"],
            exports=config.exports,
            backbone=config.backbone,
            max_export_accuracy_drop=config.max_export_accuracy_drop,
        ).with_id(MODEL_EXPORTER)
    pusher = VersionedPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        model_dir=config.model_serving_dir,
        keep_versions=config.keep_versions,
        models_config_base_path=config.models_config_base_path,
        infra_blessing=infra_check.outputs["blessing"],
        model_exports=exporter.outputs["model_exports"] if exporter else None,
    ).with_id(PUSHER)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            transform,
            *([tuner] if tuner else []),
            trainer,
            served_baseline,
            evaluator,
            infra_check,
            *([exporter] if exporter else []),
            pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=component_beam_args(config),
    )
