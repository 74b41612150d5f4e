"""The TF Serving stand-in image: tensorflow/serving's command line, our local server inside.

It is run exactly as TF Serving's image is run (a model folder mounted at /models/NAME,
MODEL_NAME set, gRPC 8500 published) and asked over gRPC from the host.
"""

from __future__ import annotations

import shutil

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from components.infra_check.checks import free_port
from tests.containers import docker_cli
from tests.tiny_model import save_tiny_model

MODEL_NAME = "tiny"
NUM_CLASSES = 4
START_TIMEOUT_SECONDS = 180


@pytest.fixture(scope="module")
def model_base_path(tmp_path_factory) -> str:
    """MODEL_NAME/1: a tiny SavedModel with the pipeline's serving signature."""
    base = tmp_path_factory.mktemp("standin") / MODEL_NAME
    save_tiny_model(base / "1", NUM_CLASSES, favourite=1)
    yield str(base)
    shutil.rmtree(base, ignore_errors=True)


def _model_status(port: int) -> get_model_status_pb2.GetModelStatusResponse | None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            return model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                request, timeout=5
            )
        except grpc.RpcError:
            return None


def _available_versions(port: int) -> list[int]:
    status = _model_status(port)
    if status is None:
        return []
    available = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
    return [v.version for v in status.model_version_status if v.state == available]


def test_standin_serves_a_mounted_model_like_tf_serving(
    container_engine, tf_serving_standin_image, model_base_path
):
    """docker run -p PORT:8500 -v BASE:/models/NAME -e MODEL_NAME=NAME IMAGE, as for TF Serving."""
    port = free_port()
    options = [
        "-p",
        f"127.0.0.1:{port}:8500",
        "-v",
        f"{model_base_path}:/models/{MODEL_NAME}:ro",
        "-e",
        f"MODEL_NAME={MODEL_NAME}",
    ]
    with docker_cli.running_container(
        container_engine, tf_serving_standin_image, options=options, name_prefix="standin"
    ) as name:
        docker_cli.wait_until(
            lambda: _available_versions(port) == [1],
            START_TIMEOUT_SECONDS,
            "version 1 AVAILABLE over gRPC",
            docker_host=container_engine,
            name=name,
        )
        logs = docker_cli.logs(container_engine, name)
    assert "--model-base-path=/models/tiny" in logs and "--host=0.0.0.0" in logs
    assert not docker_cli.is_running(container_engine, name)  # removed


def test_standin_takes_tf_serving_flags_and_refuses_unknown_ones(
    container_engine, tf_serving_standin_image
):
    """Tuning flags are ignored with a note; a flag TF Serving does not have is an error."""
    result = docker_cli.docker(
        container_engine,
        "run",
        "--rm",
        "--network=none",
        tf_serving_standin_image,
        "--tensorflow_intra_op_parallelism=2",
        "--no_such_flag=1",
        check=False,
    )
    assert result.returncode == 2
    assert "--no_such_flag=1" in result.stderr
