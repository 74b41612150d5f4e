"""Runs a compiled PipelineSpec task by task in containers, as open-source KFP executes it.

A conformance harness for the compiled spec and the image, not a Kubeflow Pipelines
backend: there is no Kubernetes, Argo, MLMD or cache here. What it reproduces is the
contract between the backend and a task's container, read from kubeflow/pipelines'
``backend/src/v2`` sources:

- ``compiler/argocompiler`` (container.go, dag.go): each task of ``root.dag`` runs once its
  ``dependentTasks`` have succeeded, in a container of ``deploymentSpec.executors[label]
  .container.image`` with that executor's ``command`` and ``args``. The backend rejects
  ``resolver`` executors ("resolver executors not implemented"), so this harness refuses
  them too, and it runs no ``lifecycle`` hooks (the open-source driver has none).
- ``driver/resolve.go``: a task's input parameters come from ``runtimeValue.constant``
  (schema 2.1; 2.0's ``constantValue`` is not resolved) or ``componentInputParameter``
  (the run's parameter value, else the root's ``defaultValue``); input artifacts are the
  producer task's output artifacts (``taskOutputArtifact``).
- ``launcher`` (launcher-v2.go, executor_input): the ExecutorInput holds
  ``inputs.parameterValues`` only (never the deprecated ``inputs.parameters``), input and
  output artifacts with their type schema, URIs under the pipeline root, and
  ``outputs.outputFile``; the ``{{$}}`` placeholder in the args is replaced by it as JSON;
  after the container exits 0, ``executor_output.json`` gives the output artifacts'
  metadata, which downstream tasks receive.

Paths (data root, pipeline root, serving dir) are bind-mounted at the same path in every
container, as a shared volume would be mounted in every pod.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"


class TaskFailedError(RuntimeError):
    """A task's container exited non-zero; the message holds the end of its output."""


@dataclasses.dataclass
class TaskRun:
    """One executed task."""

    name: str
    seconds: float
    outputs: dict[str, list[dict[str, Any]]]  # Output key -> RuntimeArtifacts (JSON dicts).
    log: str


def load_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A compiled PipelineSpec (.yaml) or the spec inside a PipelineJob (.json)."""
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        return json.loads(text)["pipelineSpec"]
    return yaml.safe_load(text)


def task_order(spec: dict[str, Any]) -> list[str]:
    """Task names of ``root.dag`` in an order that respects ``dependentTasks``."""
    tasks = spec["root"]["dag"]["tasks"]
    done: list[str] = []
    pending = dict(tasks)
    while pending:
        ready = sorted(
            name
            for name, task in pending.items()
            if all(dep in done for dep in task.get("dependentTasks", []))
        )
        if not ready:
            raise ValueError(f"the DAG has a cycle among {sorted(pending)}")
        for name in ready:
            done.append(name)
            del pending[name]
    return done


def check_runnable(spec: dict[str, Any]) -> None:
    """Refuses what the open-source backend's compiler and driver refuse."""
    if spec.get("schemaVersion") != "2.1.0":
        raise ValueError(f"schemaVersion {spec.get('schemaVersion')}: the driver needs 2.1.0")
    for label, executor in spec["deploymentSpec"]["executors"].items():
        if "resolver" in executor:
            raise ValueError(f"{label}: resolver executors not implemented")
        if "container" not in executor:
            raise ValueError(f"{label}: only container executors run here")


def _parameter_values(
    spec: dict[str, Any], task: dict[str, Any], run_parameters: dict[str, Any]
) -> dict[str, Any]:
    root_parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    values: dict[str, Any] = {}
    for name, source in task.get("inputs", {}).get("parameters", {}).items():
        if "runtimeValue" in source:
            runtime_value = source["runtimeValue"]
            if "constant" not in runtime_value:
                raise ValueError(f"parameter {name}: only runtimeValue.constant is resolved")
            values[name] = runtime_value["constant"]
        elif "componentInputParameter" in source:
            key = source["componentInputParameter"]
            if key in run_parameters:
                values[name] = run_parameters[key]
            elif "defaultValue" in root_parameters.get(key, {}):
                values[name] = root_parameters[key]["defaultValue"]
            else:
                raise ValueError(f"parameter {name}: pipeline parameter {key} has no value")
        else:
            raise ValueError(f"parameter {name}: unsupported source {sorted(source)}")
    return values


class ContainerDagRunner:
    """Runs every task of a compiled spec in a container of its executor's image."""

    def __init__(
        self,
        spec: dict[str, Any],
        pipeline_root: Path,
        mounts: list[Path],
        docker: str = "docker",
        timeout_seconds: float = 1800,
    ):
        check_runnable(spec)
        self.spec = spec
        self.pipeline_root = pipeline_root
        self.mounts = sorted({str(Path(m).resolve()) for m in [pipeline_root, *mounts]})
        self.docker = docker
        self.timeout_seconds = timeout_seconds

    def run(self, run_parameters: dict[str, Any] | None = None) -> dict[str, TaskRun]:
        """Executes the whole DAG once; returns each task's run. Raises TaskFailedError."""
        run_id = f"run-{uuid.uuid4().hex[:8]}"
        name = self.spec["pipelineInfo"]["name"]
        run_root = self.pipeline_root / name / run_id
        runs: dict[str, TaskRun] = {}
        for task_name in task_order(self.spec):
            runs[task_name] = self._run_task(task_name, run_root, run_parameters or {}, runs)
        return runs

    def _run_task(
        self,
        task_name: str,
        run_root: Path,
        run_parameters: dict[str, Any],
        done: dict[str, TaskRun],
    ) -> TaskRun:
        task = self.spec["root"]["dag"]["tasks"][task_name]
        component = self.spec["components"][task["componentRef"]["name"]]
        executor = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]
        container = executor["container"]
        task_root = run_root / task_name
        input_types = component.get("inputDefinitions", {}).get("artifacts", {})
        output_types = component.get("outputDefinitions", {}).get("artifacts", {})

        inputs_artifacts = {}
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            producer = source["taskOutputArtifact"]
            upstream = done[producer["producerTask"]].outputs[producer["outputArtifactKey"]]
            inputs_artifacts[key] = {
                "artifacts": [{**a, "type": input_types[key]["artifactType"]} for a in upstream]
            }
        outputs_artifacts = {
            key: {
                "artifacts": [
                    {
                        "name": f"{run_root.name}-{task_name}-{key}",
                        "type": definition["artifactType"],
                        "uri": str(task_root / key),
                        "metadata": {},
                    }
                ]
            }
            for key, definition in output_types.items()
        }
        output_file = task_root / "executor_output.json"
        executor_input = {
            "inputs": {
                "parameterValues": _parameter_values(self.spec, task, run_parameters),
                "artifacts": inputs_artifacts,
            },
            "outputs": {"artifacts": outputs_artifacts, "outputFile": str(output_file)},
        }
        task_root.mkdir(parents=True, exist_ok=True)
        serialized = json.dumps(executor_input)
        args = [a.replace(EXECUTOR_INPUT_PLACEHOLDER, serialized) for a in container["args"]]
        container_name = f"kfp-{run_root.name}-{task_name.lower()}"
        command = [
            self.docker,
            "run",
            "--rm",
            f"--name={container_name}",
            # No task needs the network (data and outputs are mounted; the infra check talks
            # to its server on loopback), and none gets it: the run proves nothing is fetched.
            "--network=none",
            *[f"--volume={m}:{m}" for m in self.mounts],
            f"--entrypoint={container['command'][0]}",
            container["image"],
            *container["command"][1:],
            *args,
        ]
        started = time.monotonic()
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=self.timeout_seconds
            )
        except subprocess.TimeoutExpired:
            subprocess.run([self.docker, "rm", "-f", container_name], check=False)
            raise TaskFailedError(
                f"{task_name}: timed out after {self.timeout_seconds} s"
            ) from None
        seconds = time.monotonic() - started
        log = result.stdout + result.stderr
        if result.returncode != 0:
            raise TaskFailedError(
                f"{task_name}: container exited with {result.returncode}:\n{log[-8000:]}"
            )
        produced = json.loads(output_file.read_text()) if output_file.exists() else {}
        outputs = {}
        for key, listed in outputs_artifacts.items():
            written = produced.get("artifacts", {}).get(key, {}).get("artifacts")
            # The launcher records what the executor reported; default to what it was given.
            outputs[key] = [
                {k: v for k, v in artifact.items() if k != "type"}
                for artifact in (written or listed["artifacts"])
            ]
        return TaskRun(task_name, seconds, outputs, log)
