"""The compiled open-source-KFP spec, executed task by task in containers of the project image.

A conformance test for ``tfx-image-pipeline compile --target kubeflow`` and deploy/Dockerfile
(see kfp_harness for the Kubeflow Pipelines sources it follows). The DAG runs twice on one
serving folder: run 1 trains normally and pushes version 1; run 2 is submitted with runtime
parameters that cripple training (no recompile), finds version 1 as its served baseline, is
not blessed and pushes nothing. Then the pushed model answers a predict request from a
server in a container of the same image.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.conftest import HOLDOUT_DIR, SAMPLE_DIR
from tests.containers.kfp_harness import ContainerDagRunner, load_spec

pytestmark = [pytest.mark.slow, pytest.mark.containers]

MODEL_NAME = "kfp_fashion"
# Run 1: a short but real budget (the model must clear the 0.5 accuracy floor).
FIRST_RUN = {"epochs": 2, "fine_tune_epochs": 1}
# Run 2: a learning rate that cannot learn, as the LocalDagRunner end-to-end test does.
SECOND_RUN = {"epochs": 1, "fine_tune_epochs": 0, "learning_rate": 1e-9}


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())


def _metadata(run, task: str, key: str) -> dict:
    return run[task].outputs[key][0].get("metadata", {})


@pytest.fixture(scope="module")
def kfp_runs(tmp_path_factory, container_engine, project_image):
    """Both DAG runs; the compiled spec and where they wrote."""
    os.environ["DOCKER_HOST"] = container_engine  # For the harness's and the tests' docker calls.
    root = tmp_path_factory.mktemp("kfp-containers")
    pipeline_root, serving_dir = root / "pipeline_root", root / "serving"
    serving_dir.mkdir()
    spec_path = root / "pipeline.yaml"
    assert (
        main(
            [
                "compile",
                "--target=kubeflow",
                f"--output={spec_path}",
                f"--container-image={project_image}",
                f"--data-root={SAMPLE_DIR}",
                f"--pipeline-root={pipeline_root}",
                f"--serving-dir={serving_dir}",
                "--pipeline-name=kfp-containers",
                f"--model-name={MODEL_NAME}",
                "--image-size=96",
                "--infra-check-server=local",
            ]
        )
        == 0
    )
    runner = ContainerDagRunner(
        load_spec(spec_path), pipeline_root, mounts=[SAMPLE_DIR, serving_dir]
    )
    first = runner.run(FIRST_RUN)
    versions_after_first = _versions(serving_dir / MODEL_NAME)
    second = runner.run(SECOND_RUN)
    return {
        "first": first,
        "second": second,
        "serving_dir": serving_dir,
        "versions_after_first": versions_after_first,
        "versions_after_second": _versions(serving_dir / MODEL_NAME),
    }


def test_every_task_ran_in_a_container(kfp_runs):
    spec_tasks = {
        "ImageExampleGen",
        "StatisticsGen",
        "SchemaGen",
        "ExampleValidator",
        "Transform",
        "Trainer",
        "ServedModelBaseline",
        "Evaluator",
        "InfraCheck",
        "ModelExporter",
        "Pusher",
    }
    assert set(kfp_runs["first"]) == spec_tasks
    assert set(kfp_runs["second"]) == spec_tasks


def test_first_run_is_blessed_and_pushes_version_1(kfp_runs):
    first = kfp_runs["first"]
    assert _metadata(first, "ServedModelBaseline", "model")["served_version"] == 0
    assert _metadata(first, "Evaluator", "blessing")["blessed"] == 1
    assert _metadata(first, "InfraCheck", "blessing")["blessed"] == 1
    assert _metadata(first, "InfraCheck", "blessing")["infra_check_server"] == "local_server"
    assert kfp_runs["versions_after_first"] == [1]
    version_dir = kfp_runs["serving_dir"] / MODEL_NAME / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (kfp_runs["serving_dir"] / "models.config").is_file()
    # The ModelExporter's passed exports were published beside version 1.
    exports = kfp_runs["serving_dir"] / MODEL_NAME / "exports" / "1"
    assert (exports / "labels.txt").is_file() and list(exports.glob("model_*.tflite"))


def test_second_run_is_gated_against_version_1_and_pushes_nothing(kfp_runs):
    second = kfp_runs["second"]
    baseline = _metadata(second, "ServedModelBaseline", "model")
    assert baseline["served_version"] == 1
    assert baseline["served_model_path"] == str(kfp_runs["serving_dir"] / MODEL_NAME / "1")
    assert _metadata(second, "Evaluator", "blessing")["blessed"] == 0
    assert kfp_runs["versions_after_second"] == [1]
    # The crippled settings reached the Trainer as runtime parameters.
    assert "1e-09" in second["Trainer"].log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_pushed_model_answers_predict_from_a_container(kfp_runs, project_image):
    model_dir = kfp_runs["serving_dir"] / MODEL_NAME
    port = _free_port()
    name = f"kfp-serve-{uuid.uuid4().hex[:8]}"
    started = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            f"--name={name}",
            f"--volume={model_dir}:{model_dir}:ro",
            # The host's network: a TF Serving pod's REST port, without depending on the
            # engine's bridge.
            "--network=host",
            "--entrypoint=python",
            project_image,
            "-m",
            "serving.server",
            f"--model-base-path={model_dir}",
            f"--model-name={MODEL_NAME}",
            "--host=127.0.0.1",
            f"--rest-api-port={port}",
            f"--port={_free_port()}",
        ],
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stderr
    try:
        image_path = sorted((HOLDOUT_DIR / "trouser").glob("*.png"))[0]
        body = json.dumps(
            {"instances": [{"b64": base64.b64encode(image_path.read_bytes()).decode()}]}
        ).encode()
        url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"
        deadline = time.monotonic() + 180
        answer, last_error = None, None
        while answer is None and time.monotonic() < deadline:
            try:
                request = urllib.request.Request(
                    url, data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
            except OSError as err:  # Not listening yet, or the model is still loading.
                last_error = err
                time.sleep(1)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        assert answer is not None, f"{last_error}\n{logs.stdout}{logs.stderr}"
        prediction = answer["predictions"][0]
        assert len(prediction["probabilities"]) == 10
        classes = {p.name for p in SAMPLE_DIR.iterdir() if p.is_dir()}
        assert prediction["class_name"] in classes
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
