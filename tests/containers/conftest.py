"""Fixtures for tests that run containers: the engine, the project image, a TF Serving stand-in.

Every test under tests/containers/ is marked ``containers`` (``make test-containers`` runs
them alone). Without an engine they skip with the reason, unless REQUIRE_CONTAINER_ENGINE=1
(the Makefile sets it for ``make test`` and ``make test-containers``): then they fail, so CI
cannot skip them silently. ``make test`` provides the engine (deploy/container_engine.sh run);
for a plain ``pytest``, start one with ``deploy/container_engine.sh start`` and export the
DOCKER_HOST it prints.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.containers import docker_cli

CONTAINERS_DIR = Path(__file__).resolve().parent
STANDIN_CONTEXT = CONTAINERS_DIR / "tf_serving_standin"
STANDIN_REPOSITORY = "tfx-image-pipeline-tf-serving-standin"
# A cold image build (wheels, debootstrap base, docker build) takes minutes on 2 cores.
IMAGE_BUILD_TIMEOUT_SECONDS = 45 * 60


def pytest_collection_modifyitems(config, items):
    for item in items:
        if CONTAINERS_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.containers)


def _engine_required() -> bool:
    return os.environ.get(docker_cli.REQUIRE_ENGINE_VARIABLE, "") not in ("", "0")


@pytest.fixture(scope="session")
def container_engine() -> str:
    """The DOCKER_HOST of an engine that answers (see deploy/container_engine.sh find).

    Skips when there is none, or fails where REQUIRE_CONTAINER_ENGINE=1.
    """
    docker_host, why = docker_cli.find_engine()
    if docker_host is None:
        message = f"no container engine: {why}"
        if _engine_required():
            pytest.fail(f"{message} ({docker_cli.REQUIRE_ENGINE_VARIABLE}=1)", pytrace=False)
        pytest.skip(message)
    return docker_host


@pytest.fixture(scope="session")
def project_image(container_engine: str) -> str:
    """The image of deploy/Dockerfile built from this checkout, as ``make image`` builds it.

    Returns its content tag (tfx-image-pipeline:src-HASH): it names exactly this checkout's
    code, where tfx-image-pipeline:local is whatever was built last.
    """
    result = subprocess.run(
        [str(docker_cli.BUILD_SCRIPT)],
        env={**os.environ, "DOCKER_HOST": container_engine, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=IMAGE_BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"deploy/build_image.sh failed (exit {result.returncode}):\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def tf_serving_standin_image(container_engine: str, project_image: str) -> str:
    """An image that answers to tensorflow/serving's command line with our local server inside.

    Built FROM the project image (tests/containers/tf_serving_standin/), tagged by a digest of
    the project image tag and the stand-in's files, so it is built once per change.
    """
    digest = hashlib.sha256(project_image.encode())
    for path in sorted(STANDIN_CONTEXT.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    tag = f"{STANDIN_REPOSITORY}:src-{digest.hexdigest()[:16]}"
    if not docker_cli.image_exists(container_engine, tag):
        docker_cli.build_standin_image(container_engine, project_image, STANDIN_CONTEXT, tag)
    docker_cli.docker(container_engine, "tag", tag, f"{STANDIN_REPOSITORY}:local")
    return tag
