"""The docker command line for container tests: one engine, and containers always removed.

Tests talk to the engine through the ``docker`` client (what users have), with DOCKER_HOST set
to the engine the ``container_engine`` fixture found. Nothing here starts an engine: that is
deploy/container_engine.sh's job.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.conftest import REPO_ROOT

ENGINE_SCRIPT = REPO_ROOT / "deploy" / "container_engine.sh"
BUILD_SCRIPT = REPO_ROOT / "deploy" / "build_image.sh"
# Set by the Makefile (make test, make test-containers): no engine is a failure, not a skip.
REQUIRE_ENGINE_VARIABLE = "REQUIRE_CONTAINER_ENGINE"
COMMAND_TIMEOUT_SECONDS = 120


class DockerError(RuntimeError):
    """A docker command failed; the message holds its command line and its error output."""


def docker(
    docker_host: str,
    *args: str,
    timeout: float = COMMAND_TIMEOUT_SECONDS,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs ``docker ARGS`` against ``docker_host``; raises DockerError when ``check`` fails."""
    result = subprocess.run(
        ["docker", *args],
        env={**os.environ, **(env or {}), "DOCKER_HOST": docker_host},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise DockerError(
            f"docker {' '.join(args)} exited with {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result


def find_engine() -> tuple[str | None, str]:
    """(DOCKER_HOST of an engine that answers, '') or (None, why none does)."""
    result = subprocess.run(
        [str(ENGINE_SCRIPT), "find"], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode == 0:
        return result.stdout.strip(), ""
    return None, result.stderr.strip().removeprefix("container-engine: ")


def image_exists(docker_host: str, image: str) -> bool:
    """Whether the engine holds ``image``."""
    return docker(docker_host, "image", "inspect", image, check=False).returncode == 0


def unique_name(prefix: str) -> str:
    """A container name no other test run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def running_container(
    docker_host: str,
    image: str,
    command: Sequence[str] = (),
    *,
    options: Sequence[str] = (),
    name_prefix: str = "tfx-image-pipeline-test",
) -> Iterator[str]:
    """``docker run -d OPTIONS IMAGE COMMAND``; yields the container's name; always removes it."""
    name = unique_name(name_prefix)
    try:
        docker(docker_host, "run", "-d", f"--name={name}", *options, image, *command)
        yield name
    finally:
        docker(docker_host, "rm", "-f", name, check=False)


def logs(docker_host: str, name: str) -> str:
    """A container's stdout and stderr so far."""
    result = docker(docker_host, "logs", name, check=False)
    return result.stdout + result.stderr


def is_running(docker_host: str, name: str) -> bool:
    """Whether the container exists and runs."""
    result = docker(docker_host, "inspect", "-f", "{{.State.Running}}", name, check=False)
    return result.stdout.strip() == "true"


def wait_until(condition, timeout: float, what: str, *, docker_host: str, name: str) -> None:
    """Polls ``condition()`` until it is true; fails with the container's logs on timeout
    or when the container stops."""
    deadline = time.monotonic() + timeout
    while not condition():
        if not is_running(docker_host, name):
            raise AssertionError(
                f"container {name} stopped before {what}:\n{logs(docker_host, name)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {what} within {timeout:.0f}s; container {name}'s logs:\n"
                f"{logs(docker_host, name)}"
            )
        time.sleep(0.5)


def build_standin_image(docker_host: str, project_image: str, context: Path, tag: str) -> None:
    """Builds ``context``'s Dockerfile FROM ``project_image`` as ``tag`` (no registry needed)."""
    docker(
        docker_host,
        "build",
        "--quiet",
        "--force-rm",
        "--network=none",  # as the project image: nothing in the build reaches a network
        f"--build-arg=PROJECT_IMAGE={project_image}",
        f"--tag={tag}",
        str(context),
        timeout=600,
        # Docker's classic builder: any client has it, and this Dockerfile needs no BuildKit.
        env={"DOCKER_BUILDKIT": "0"},
    )
