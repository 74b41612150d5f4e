"""Compiling for Kubeflow Pipelines / Vertex AI, checked with the kfp SDK of the pinned stack.

Nothing here needs a cluster: the spec is compiled offline (``tfx-image-pipeline compile``),
loaded with ``kfp.components.load_component_from_file`` and parsed strictly into the
``PipelineSpec`` / ``PipelineJob`` protos of kfp-pipeline-spec. pipeline_root and serving_dir
are gs:// URIs on a bucket that does not exist, so any upload at compile time would fail the
compilation. The data root is the embedded sample: ImageExampleGen reads the top of the data
root when the pipeline is built, so it must be readable where one compiles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from pipeline.cli import main
from pipeline.config import PipelineConfig, load_config
from tests.conftest import SAMPLE_DIR

IMAGE = "registry.example.com/team/tfx-image-pipeline:test-1"
BUCKET = "gs://no-such-bucket-tfx-image-pipeline-test"
BEAM_COMPONENTS = ("ImageExampleGen", "StatisticsGen", "Transform", "Evaluator")
FLAGS = [
    f"--container-image={IMAGE}",
    f"--data-root={SAMPLE_DIR}",
    f"--pipeline-root={BUCKET}/pipeline_root",
    f"--serving-dir={BUCKET}/serving",
    "--pipeline-name=kfp-compile-test",
    "--trainer-cpu=3",
    "--trainer-memory-gb=12.5",
    "--epochs=7",
    "--batch-size=16",
    "--beam-preset=multi-process",
    "--beam-num-workers=3",
    "--enable-cache=true",
]
EXPECTED_BEAM_ARGS = ["--direct_running_mode=multi_processing", "--direct_num_workers=3"]


@pytest.fixture(scope="module")
def config() -> PipelineConfig:
    overrides = {}
    for flag in FLAGS:
        name, value = flag[2:].split("=", 1)
        overrides[name.replace("-", "_")] = value
    return load_config(overrides=overrides)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, Path]:
    """The same configuration compiled to YAML (Kubeflow) and JSON (Vertex AI)."""
    out = tmp_path_factory.mktemp("kfp")
    paths = {"yaml": out / "pipeline.yaml", "json": out / "vertex-job.json"}
    for path in paths.values():
        assert main(["compile", *FLAGS, f"--output={path}"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pipeline.yaml", "vertex-job.json"]
    return paths


@pytest.fixture(scope="module")
def spec(compiled):
    """The YAML output parsed strictly into kfp-pipeline-spec's PipelineSpec proto."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    document = yaml.safe_load(compiled["yaml"].read_text())
    return json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec())


@pytest.fixture(scope="module")
def executors(spec) -> dict[str, Any]:
    from kfp.pipeline_spec import pipeline_spec_pb2

    deployment = json_format.ParseDict(
        json_format.MessageToDict(spec.deployment_spec),
        pipeline_spec_pb2.PipelineDeploymentConfig(),
    )
    return dict(deployment.executors)


def _task_parameter(spec, task: str, name: str) -> Any:
    """A task's constant parameter (schema 2.1: ``runtimeValue.constant``, a protobuf Value)."""
    return json_format.MessageToDict(
        spec.root.dag.tasks[task].inputs.parameters[name].runtime_value.constant
    )


def test_kfp_sdk_loads_the_yaml(compiled, config):
    import kfp.components

    component = kfp.components.load_component_from_file(str(compiled["yaml"]))
    assert component.name == config.pipeline_name
    assert component.pipeline_spec.root.dag.tasks, "the loaded pipeline has no tasks"


def test_json_is_a_vertex_pipeline_job_with_the_same_spec(compiled, config, spec):
    from kfp.pipeline_spec import pipeline_spec_pb2

    document = json.loads(compiled["json"].read_text())
    job = json_format.ParseDict(document, pipeline_spec_pb2.PipelineJob())
    assert job.runtime_config.gcs_output_directory == config.pipeline_root
    assert job.display_name == config.pipeline_name
    job_spec = json_format.ParseDict(document["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    # The YAML also records the root in the spec (Kubeflow has no runtime config file).
    assert spec.default_pipeline_root == config.pipeline_root
    yaml_spec = pipeline_spec_pb2.PipelineSpec()
    yaml_spec.CopyFrom(spec)
    yaml_spec.ClearField("default_pipeline_root")
    assert job_spec == yaml_spec


def test_every_component_of_create_pipeline_is_a_task(spec, config):
    from pipeline.pipeline import create_pipeline

    tasks = set(spec.root.dag.tasks)
    assert tasks == {c.id for c in create_pipeline(config).components}


def test_spec_is_what_open_source_kubeflow_runs(compiled, spec, executors):
    """Schema 2.1 (the KFP v2 driver resolves only its ``constant`` values) and no resolver
    executors (the KFP backend's workflow compiler rejects them)."""
    assert spec.schema_version == "2.1.0"
    assert not [name for name, e in executors.items() if e.HasField("resolver")]
    for task in spec.root.dag.tasks.values():
        for name, parameter in task.inputs.parameters.items():
            if parameter.HasField("runtime_value"):
                assert parameter.runtime_value.HasField("constant"), (name, parameter)
    document = yaml.safe_load(compiled["yaml"].read_text())
    assert "constantValue" not in json.dumps(document)


def test_runtime_parameters_default_to_the_configured_values(spec, compiled):
    from pipeline.pipeline import RUNTIME_PARAMETER_FIELDS, TRAINER

    parameters = spec.root.input_definitions.parameters
    assert set(parameters) == set(RUNTIME_PARAMETER_FIELDS)
    defaults = {name: json_format.MessageToDict(p.default_value) for name, p in parameters.items()}
    assert defaults["epochs"] == 7
    assert defaults["accuracy_floor"] == 0.5
    trainer_inputs = spec.root.dag.tasks[TRAINER].inputs.parameters
    assert trainer_inputs["epochs"].component_input_parameter == "epochs"
    job = json.loads(compiled["json"].read_text())
    assert job["runtimeConfig"]["parameterValues"]["epochs"] == 7


def test_served_baseline_task_is_never_cached(spec):
    from pipeline.pipeline import SERVED_BASELINE

    assert spec.root.dag.tasks[SERVED_BASELINE].caching_options.enable_cache is False
    assert spec.root.dag.tasks["Trainer"].caching_options.enable_cache is True  # cache is on


def test_a_resolver_is_refused(tmp_path):
    from pipeline.kubeflow import check_backend_accepts

    document = {
        "schemaVersion": "2.1.0",
        "deploymentSpec": {"executors": {"r": {"resolver": {"outputArtifactQueries": {}}}}},
    }
    with pytest.raises(ValueError, match="resolver executors r"):
        check_backend_accepts(document)
    with pytest.raises(ValueError, match="schemaVersion"):
        check_backend_accepts({"schemaVersion": "2.0.0"})


def test_every_container_runs_the_configured_image(executors):
    containers = {k: e.container for k, e in executors.items() if e.HasField("container")}
    assert len(containers) >= 8
    for label, container in containers.items():
        assert container.image == IMAGE, label


def test_beam_args_reach_the_beam_components(executors):
    for component in BEAM_COMPONENTS:
        args = list(executors[f"{component}_executor"].container.args)
        for arg in EXPECTED_BEAM_ARGS:
            assert arg in args, (component, args)
    # The ExampleGen driver (a pre-cache-check hook) gets them as well.
    driver = executors["ImageExampleGen_executor"].container.lifecycle.pre_cache_check
    assert all(arg in driver.args for arg in EXPECTED_BEAM_ARGS)


def test_trainer_custom_config_and_resources(spec, executors, config):
    from pipeline.pipeline import TRAINER, TRANSFORM, create_pipeline

    compiled_config = json.loads(_task_parameter(spec, TRAINER, "custom_config"))
    assert "epochs" not in compiled_config  # a runtime parameter of its own
    assert compiled_config["batch_size"] == 16
    assert compiled_config["backbone"] == config.backbone
    # The Trainer reads the image size from the Transform graph, not from its settings.
    assert "image_size" not in compiled_config
    transform_config = json.loads(_task_parameter(spec, TRANSFORM, "custom_config"))
    assert transform_config["image_size"] == config.image_size
    trainer = next(c for c in create_pipeline(config).components if c.id == TRAINER)
    expected = trainer.exec_properties["custom_config"]
    assert compiled_config == (json.loads(expected) if isinstance(expected, str) else expected)
    resources = executors["Trainer_executor"].container.resources
    assert (resources.cpu_limit, resources.memory_limit) == (3.0, 12.5)
    # Only the Trainer gets limits.
    assert not executors["Transform_executor"].container.HasField("resources")


def test_code_is_referenced_by_name_not_uploaded(spec, config):
    from pipeline.pipeline import PUSHER, RUN_FN, TRAINER, TRANSFORM

    assert _task_parameter(spec, TRAINER, "run_fn") == RUN_FN
    parameters = spec.root.dag.tasks[TRANSFORM].inputs.parameters
    assert "module_file" not in parameters or not _task_parameter(spec, TRANSFORM, "module_file")
    assert _task_parameter(spec, "ImageExampleGen", "input_base") == config.data_root
    pusher_parameters = spec.root.dag.tasks[PUSHER].inputs.parameters
    pusher_values = " ".join(str(_task_parameter(spec, PUSHER, n)) for n in pusher_parameters)
    assert f"{BUCKET}/serving/image_classifier" in pusher_values


def test_compiling_writes_nothing_under_a_local_pipeline_root(tmp_path):
    root = tmp_path / "pipeline_root"
    output = tmp_path / "spec" / "p.yaml"
    flags = [f for f in FLAGS if not f.startswith("--pipeline-root")]
    assert main(["compile", *flags, f"--pipeline-root={root}", f"--output={output}"]) == 0
    assert output.is_file()
    assert not root.exists(), f"compile wrote under pipeline_root: {list(root.rglob('*'))}"


def test_every_artifact_type_is_importable_by_its_schema_title(spec):
    """Kubeflow's v2 entrypoint recovers each artifact's class from its type schema's title
    (an import path for custom types): a title that imports nothing fails the task."""
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entry
    from tfx.utils import import_utils

    paths = {
        # The entrypoint's own mapping of a type schema to a class path.
        entry._retrieve_class_path(definition.artifact_type)
        for component in spec.components.values()
        for side in (component.input_definitions, component.output_definitions)
        for definition in side.artifacts.values()
    }
    assert "components.ModelExports" in paths
    for path in paths:
        assert import_utils.import_class_by_path(path)
