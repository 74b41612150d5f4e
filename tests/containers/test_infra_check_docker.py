"""InfraCheck's Docker path for real: a container engine, and an image with TF Serving's
command line (the stand-in image, since tensorflow/serving cannot be pulled here).

The executor runs ``docker run`` exactly as it would with tensorflow/serving: the staged
model mounted read-only at /models/NAME, MODEL_NAME in the environment, the gRPC port
published on 127.0.0.1, readiness through GetModelStatus, the warmup requests replayed, and
the container removed afterwards.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from components.infra_check import checks, executor
from tests.component.test_infra_check import (
    NUM_CLASSES,
    NUM_IMAGES,
    model_artifact,
    run_executor,
    serving_dir,
    verdict,
)
from tests.tiny_model import save_tiny_model
from trainer_module.export import write_warmup_requests

pytestmark = [pytest.mark.slow, pytest.mark.containers]


@pytest.fixture(autouse=True)
def _docker_host(container_engine, monkeypatch):
    """The executor runs the docker client: point it at the test session's engine."""
    monkeypatch.setenv("DOCKER_HOST", container_engine)


@pytest.fixture(scope="module")
def candidate(tmp_path_factory, holdout_dir: Path) -> Path:
    """The infra check tests' tiny SavedModel with real warmup requests."""
    classes = sorted(p for p in holdout_dir.iterdir() if p.is_dir())[:NUM_IMAGES]
    pngs = [sorted(c.glob("*.png"))[0].read_bytes() for c in classes]
    path = save_tiny_model(
        tmp_path_factory.mktemp("candidate") / "saved_model", NUM_CLASSES, favourite=1
    )
    write_warmup_requests(str(path), pngs)
    return path


def _labelled_containers() -> list[str]:
    result = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={checks.CONTAINER_LABEL}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_docker_server_blesses_a_good_model(tmp_path, candidate, tf_serving_standin_image):
    before = _labelled_containers()
    model = model_artifact(tmp_path, candidate)
    blessing, _ = run_executor(tmp_path, model, server="docker", image=tf_serving_standin_image)
    result = verdict(blessing)
    assert result["blessed"] == 1, result
    assert result["server"] == "docker"
    assert result["requests"] == NUM_IMAGES + 1
    assert result["message"].startswith("docker loaded version 1 of tiny")
    assert blessing.get_string_custom_property("infra_check_server_reason").startswith(
        "requested; a Docker daemon answers"
    )
    assert _labelled_containers() == before  # The container is removed.


def test_auto_picks_docker_when_the_image_is_present(
    tmp_path, candidate, tf_serving_standin_image, monkeypatch
):
    from components.infra_check import servers

    monkeypatch.setattr(servers, "find_tf_serving_binary", lambda: None)
    choice = servers.select_server("auto", tf_serving_standin_image)
    assert choice.kind == "docker" and choice.reason.startswith("auto: no tensorflow_model_server")


def test_model_that_fails_to_load_in_docker_is_not_blessed(
    tmp_path, candidate, tf_serving_standin_image
):
    model = model_artifact(tmp_path, candidate)
    saved_model_pb = serving_dir(model) / "saved_model.pb"
    saved_model_pb.write_bytes(saved_model_pb.read_bytes()[: saved_model_pb.stat().st_size // 2])
    blessing, _ = run_executor(tmp_path, model, server="docker", image=tf_serving_standin_image)
    result = verdict(blessing)
    assert result["blessed"] == 0, result
    assert result["server"] == "docker"
    assert "version 1 of tiny failed to load" in result["message"]


def test_missing_image_is_an_infrastructure_error(tmp_path, candidate, container_engine):
    model = model_artifact(tmp_path, candidate)
    with pytest.raises(executor.InfraCheckInfrastructureError) as raised:
        run_executor(tmp_path, model, server="docker", image="local/no-such-image:0")
    message = str(raised.value)
    assert "local/no-such-image:0 is not present and cannot be pulled" in message
    assert "--help" not in message


def test_auto_falls_back_to_the_local_server_when_tf_serving_cannot_be_pulled(
    container_engine, monkeypatch
):
    """The bug report's machine: a Docker engine answers, but the TF Serving image is neither
    present nor pullable. auto must pick the local server and say why, not docker. (An image
    name no registry has, so the test means the same on a machine with network access.)"""
    from components.infra_check import servers

    image = "tfx-image-pipeline-tests/no-such-tf-serving:0"
    monkeypatch.setattr(servers, "find_tf_serving_binary", lambda: None)
    choice = servers.select_server("auto", image, pull_timeout=60)
    assert choice.kind == "local_server"
    assert f"a Docker daemon answers, but {image} is not present" in choice.reason
