"""Compiles ``create_pipeline(config)`` for Kubeflow Pipelines (v2) and Vertex AI Pipelines.

TFX 1.16's ``KubeflowV2DagRunner`` only compiles: it writes a PipelineSpec and runs nothing.
The output format follows the file extension:

- ``.yaml`` / ``.yml``: a bare PipelineSpec, what Kubeflow Pipelines takes (UI upload,
  ``kfp pipeline create``, ``kfp.Client().create_run_from_pipeline_package``), with
  ``defaultPipelineRoot`` set to the configured pipeline_root;
- ``.json``: a PipelineJob (display name, labels, runtime config with ``pipeline_root`` and
  the PipelineSpec), what Vertex AI's ``aiplatform.PipelineJob(template_path=...)`` takes.

Every component runs in ``config.container_image``, which must hold this project's code
(see deploy/Dockerfile): the pipeline refers to ``preprocessing_fn``/``run_fn`` by dotted
name, so nothing is packaged or uploaded to ``pipeline_root`` at compile time.

TFX and TensorFlow are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, PipelineConfig

# Extension -> (format name, what takes it).
SPEC_FORMATS = {
    ".yaml": ("yaml", "PipelineSpec YAML for Kubeflow Pipelines"),
    ".yml": ("yaml", "PipelineSpec YAML for Kubeflow Pipelines"),
    ".json": ("json", "PipelineJob JSON for Vertex AI Pipelines"),
}
# Compile target -> the output format it takes. Both are PipelineSpec schema 2.1: the
# open-source KFP v2 driver implements only 2.1's ``constant`` runtime values (not 2.0's
# ``constantValue``) and its launcher fills only ``parameterValues``; Vertex AI runs 2.1 too.
TARGETS = {"kubeflow": "yaml", "vertex": "json"}
PIPELINE_SPEC_SCHEMA = "2.1.0"


def target_for(output_path: str | os.PathLike[str], target: str | None) -> str:
    """The compile target: ``target`` if given (checked against the extension), else the
    extension's (.yaml: kubeflow, .json: vertex). ValueError when they disagree."""
    fmt = spec_format(output_path)
    if target is None:
        return next(name for name, f in TARGETS.items() if f == fmt)
    if target not in TARGETS:
        raise ValueError(f"--target {target}: choose one of {', '.join(TARGETS)}")
    if TARGETS[target] != fmt:
        wanted = ".yaml" if TARGETS[target] == "yaml" else ".json"
        raise ValueError(f"--target {target} writes a {wanted} file, but --output is {output_path}")
    return target


def spec_format(output_path: str | os.PathLike[str]) -> str:
    """'yaml' or 'json' by the file extension; ValueError for any other extension."""
    suffix = Path(output_path).suffix.lower()
    if suffix not in SPEC_FORMATS:
        raise ValueError(
            f"--output {output_path}: use a .yaml/.yml file (Kubeflow Pipelines) or a .json "
            "file (Vertex AI Pipelines)"
        )
    return SPEC_FORMATS[suffix][0]


def default_output_path(config: PipelineConfig, target: str | None = None) -> str:
    """OUTPUT_DIR/kubeflow/PIPELINE_NAME.yaml (.json for the vertex target)."""
    extension = TARGETS.get(target or "kubeflow", "yaml")
    return os.path.join(config.output_dir, "kubeflow", f"{config.pipeline_name}.{extension}")


def check_compile_config(config: PipelineConfig) -> None:
    """What compiling needs beyond the general validation; ConfigError names the field."""
    if not config.container_image:
        raise ConfigError(
            "container_image: required to compile; build and push deploy/Dockerfile and pass "
            "its name with --container-image (or container_image: in the YAML config)"
        )


def local_path_notes(config: PipelineConfig) -> list[str]:
    """Notes on paths that only exist on this machine unless mounted into the pods."""
    notes = []
    for name in ("data_root", "pipeline_root", "serving_dir"):
        value = getattr(config, name)
        if "://" not in value:
            notes.append(
                f"{name} {value} is a local path: the pods must mount it at that path "
                "(or use a gs:// / s3:// URI)"
            )
    return notes


def trainer_resources(config: PipelineConfig) -> dict[str, float]:
    """The Trainer's container limits as they appear in the spec (empty when unset)."""
    resources = {}
    if config.trainer_cpu:
        resources["cpu_limit"] = float(config.trainer_cpu)
    if config.trainer_memory_gb:
        resources["memory_limit"] = float(config.trainer_memory_gb)
    return resources


def build_kubeflow_pipeline(config: PipelineConfig):
    """``create_pipeline(config)`` with the Trainer's resource limits attached.

    Kubeflow supplies its own ML Metadata, so no connection config is passed. Limits go
    through ``with_platform_config``, which TFX 1.16's Kubeflow V2 compiler copies into the
    Trainer's ``PipelineContainerSpec.resources`` (cpuLimit in vCPU, memoryLimit in GB).
    """
    from kfp.pipeline_spec import pipeline_spec_pb2

    from pipeline.pipeline import TRAINER, create_pipeline

    tfx_pipeline = create_pipeline(config, with_runtime_parameters=True)
    resources = trainer_resources(config)
    if resources:
        spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
            **resources
        )
        trainer = next(c for c in tfx_pipeline.components if c.id == TRAINER)
        trainer.with_platform_config(spec)
    _check_nothing_to_upload(tfx_pipeline)
    return tfx_pipeline


def _check_nothing_to_upload(tfx_pipeline: Any) -> None:
    """KubeflowV2DagRunner packages ``module_file`` code into pipeline_root at compile time."""
    for component in tfx_pipeline.components:
        module_file = getattr(component, "exec_properties", {}).get("module_file")
        if module_file:
            raise ValueError(
                f"component {component.id} uses module_file={module_file}, which the Kubeflow "
                "compiler would upload to pipeline_root; use a dotted function name and bake the "
                "code into the container image"
            )


def compile_pipeline(
    config: PipelineConfig, output_path: str | os.PathLike[str], target: str | None = None
) -> Path:
    """Writes the Kubeflow/Vertex spec of ``config`` to ``output_path``; returns its path.

    ``target`` is ``kubeflow`` (.yaml) or ``vertex`` (.json); None takes it from the
    extension. Raises ConfigError (naming the field) or ValueError (bad ``output_path``).
    """
    target_for(output_path, target)
    check_compile_config(config)
    from tfx import v1 as tfx

    output = Path(output_path).resolve()
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=config.container_image, use_pipeline_spec_2_1=True
        ),
        output_dir=str(output.parent),
        output_filename=output.name,
    )
    runner.run(build_kubeflow_pipeline(config), write_out=True)
    _finish_spec(output, config)
    return output


def check_backend_accepts(pipeline_spec: dict[str, Any]) -> None:
    """Raises ValueError for what open-source Kubeflow Pipelines' backend rejects.

    Its workflow compiler (backend/src/v2/compiler/argocompiler) returns "resolver executors
    not implemented" for any resolver executor, and its driver resolves only schema 2.1
    runtime values.
    """
    version = pipeline_spec.get("schemaVersion")
    if version != PIPELINE_SPEC_SCHEMA:
        raise ValueError(f"schemaVersion is {version}, expected {PIPELINE_SPEC_SCHEMA}")
    executors = pipeline_spec.get("deploymentSpec", {}).get("executors", {})
    resolvers = sorted(name for name, e in executors.items() if "resolver" in e)
    if resolvers:
        raise ValueError(
            f"resolver executors {', '.join(resolvers)}: open-source Kubeflow Pipelines "
            "cannot run them"
        )


def _disable_cache_of_uncacheable_tasks(pipeline_spec: dict[str, Any]) -> None:
    """Caching off for tasks whose output is not a function of their inputs."""
    from pipeline.pipeline import UNCACHEABLE_COMPONENTS

    tasks = pipeline_spec["root"]["dag"]["tasks"]
    for name in UNCACHEABLE_COMPONENTS:
        if name in tasks:
            tasks[name]["cachingOptions"] = {"enableCache": False}


def runtime_parameter_defaults(config: PipelineConfig) -> dict[str, Any]:
    """The compiled pipeline's runtime parameters and their defaults (``config``'s values)."""
    from pipeline.pipeline import runtime_parameters

    return {name: parameter.default for name, parameter in runtime_parameters(config).items()}


def _set_parameter_defaults(pipeline_spec: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Writes each root parameter's ``defaultValue`` (TFX 1.16's 2.1 output leaves them out,
    so a run submitted without values would fail in the KFP driver)."""
    parameters = pipeline_spec["root"].get("inputDefinitions", {}).get("parameters", {})
    for name, value in defaults.items():
        if name in parameters:
            parameters[name]["defaultValue"] = value
            parameters[name]["isOptional"] = True


def _finish_spec(path: Path, config: PipelineConfig) -> None:
    """Post-processes the compiler's output in place and checks it.

    - each runtime parameter gets its default, the configured value;
    - caching off for the served-model baseline (TFX sets one caching option for all tasks);
    - YAML: records pipeline_root in the spec itself (``defaultPipelineRoot``). TFX writes it
      only into the PipelineJob's runtime config (the JSON output); a bare PipelineSpec
      would otherwise run with the cluster's default root (MinIO on a stock Kubeflow
      install), which TFX's file I/O cannot write to. A root given when the run is created
      still takes precedence.
    """
    import json

    import yaml

    defaults = runtime_parameter_defaults(config)
    text = path.read_text()
    if spec_format(path) == "yaml":
        lines = text.splitlines(keepends=True)
        header = "".join(itertools.takewhile(lambda line: line.startswith("#"), lines))
        body = yaml.safe_load(text)
        _set_parameter_defaults(body, defaults)
        _disable_cache_of_uncacheable_tasks(body)
        check_backend_accepts(body)
        body["defaultPipelineRoot"] = config.pipeline_root
        path.write_text(header + yaml.safe_dump(body, sort_keys=True))
    else:
        job = json.loads(text)
        _set_parameter_defaults(job["pipelineSpec"], defaults)
        job.setdefault("runtimeConfig", {}).setdefault("parameterValues", {}).update(defaults)
        _disable_cache_of_uncacheable_tasks(job["pipelineSpec"])
        check_backend_accepts(job["pipelineSpec"])
        path.write_text(json.dumps(job, indent=2, sort_keys=True))
