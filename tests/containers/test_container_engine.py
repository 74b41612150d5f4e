"""deploy/container_engine.sh: finds an engine, hands it to the command, passes its exit code."""

from __future__ import annotations

import os
import subprocess

from tests.containers import docker_cli


def _engine_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(docker_cli.ENGINE_SCRIPT), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_uses_an_answering_engine_keeps_it_and_passes_the_exit_code(container_engine, tmp_path):
    """An engine that answers is used as it is, and left running when the command fails."""
    result = _engine_script(
        "run",
        "--",
        "sh",
        "-c",
        'echo "host=$DOCKER_HOST"; exit 7',
        env={"DOCKER_HOST": container_engine, "CONTAINER_ENGINE_DIR": str(tmp_path / "engine")},
    )
    assert result.returncode == 7, result.stderr
    assert f"host={container_engine}" in result.stdout
    assert "starting dockerd" not in result.stderr
    assert docker_cli.docker(container_engine, "info").returncode == 0


def test_find_names_every_place_it_looked(tmp_path):
    """No engine at DOCKER_HOST or the sockets: exit 1 and how to start one."""
    dead = f"unix://{tmp_path}/nothing.sock"
    engine_dir = tmp_path / "engine"
    result = _engine_script(
        "find", env={"DOCKER_HOST": dead, "CONTAINER_ENGINE_DIR": str(engine_dir)}
    )
    if result.returncode == 0:  # The machine's default socket answers: nothing to check here.
        assert result.stdout.strip() == "unix:///var/run/docker.sock"
        return
    assert result.returncode == 1
    assert dead in result.stderr and f"unix://{engine_dir}/docker.sock" in result.stderr
    assert "deploy/container_engine.sh start" in result.stderr
