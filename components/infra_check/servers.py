"""Starting and stopping the three model servers the infra check can run the candidate in.

Each ``start_*`` returns a :class:`RunningServer` (gRPC target, liveness, log, stop) or raises
``InfraUnavailableError`` when the server cannot be started: that is an infrastructure
problem, never a verdict on the model. ``stop()`` never raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from components.infra_check import checks

logger = logging.getLogger(__name__)

DOCKER_INFO_TIMEOUT_SECONDS = 10.0
DOCKER_COMMAND_TIMEOUT_SECONDS = 30.0
DOCKER_PULL_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 20.0
LOG_TAIL_CHARS = 4000


def find_tf_serving_binary() -> str | None:
    """The ``tensorflow_model_server`` on PATH, or None."""
    return shutil.which(checks.TF_SERVING_BINARY)


def docker_daemon_available(timeout: float = DOCKER_INFO_TIMEOUT_SECONDS) -> bool:
    """Whether ``docker info`` exits 0 within ``timeout`` seconds (a client and a daemon)."""
    result = _docker(["info", "--format", "{{.ServerVersion}}"], timeout)
    return result is not None and result.returncode == 0


def _docker(args: list[str], timeout: float) -> subprocess.CompletedProcess | None:
    """``docker ARGS`` (text output), or None without a client or past ``timeout``."""
    docker = shutil.which("docker")
    if not docker:
        return None
    try:
        return subprocess.run(
            [docker, *args], capture_output=True, timeout=timeout, check=False, text=True
        )
    except (OSError, subprocess.SubprocessError):
        return None


def probe_docker(image: str, pull_timeout: float) -> checks.DockerProbe:
    """Whether a Docker daemon answers and ``image`` is present, or pulled within the timeout."""
    if not shutil.which("docker"):
        return checks.DockerProbe(False, detail="no docker client on PATH")
    if not docker_daemon_available():
        return checks.DockerProbe(False, detail="no Docker daemon answers (docker info failed)")
    inspected = _docker(["image", "inspect", "--format", "{{.Id}}", image], timeout=30)
    if inspected is not None and inspected.returncode == 0:
        return checks.DockerProbe(True, image_ready=True)
    started = time.monotonic()
    pulled = _docker(["pull", "--quiet", image], timeout=max(pull_timeout, 1.0))
    if pulled is None:
        return checks.DockerProbe(
            True,
            detail=f"a Docker daemon answers, but {image} is not present and `docker pull` did "
            f"not finish within {time.monotonic() - started:.0f} s",
        )
    if pulled.returncode != 0:
        return checks.DockerProbe(
            True,
            detail=f"a Docker daemon answers, but {image} is not present and cannot be pulled "
            f"({checks.docker_error_line(pulled.stderr or pulled.stdout)})",
        )
    return checks.DockerProbe(True, image_ready=True)


def select_server(
    requested: str = checks.AUTO,
    image: str = checks.TF_SERVING_IMAGE,
    pull_timeout: float = DOCKER_PULL_TIMEOUT_SECONDS,
) -> checks.ServerChoice:
    """The server for ``requested`` (see ``checks.choose_server``), probing only what it needs.

    Raises InfraUnavailableError when an explicitly requested server cannot run here.
    """
    binary = (
        find_tf_serving_binary() if requested in (checks.AUTO, checks.TF_SERVING_BINARY) else None
    )
    docker = checks.DockerProbe(False)
    if requested == checks.DOCKER or (requested == checks.AUTO and not binary):
        docker = probe_docker(image, pull_timeout)
    return checks.choose_server(requested, binary, docker, image)


def _tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def last_line(text: str) -> str:
    """The last non-empty line of a log, for one-line messages."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


class RunningServer:
    """A model server serving ``model_name`` on ``grpc_target``."""

    kind: str = ""
    grpc_target: str = ""

    def alive(self) -> bool:
        raise NotImplementedError

    def exit_description(self) -> str:
        """Why the server is gone (exit code and last log line)."""
        return f"{self.kind} exited: {last_line(self.log_tail())}"

    def log_tail(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class BinaryServer(RunningServer):
    """``tensorflow_model_server`` in its own process group (so children go with it)."""

    kind = checks.TF_SERVING_BINARY

    def __init__(self, process: subprocess.Popen, grpc_port: int, log_path: Path):
        self.process = process
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.log_path = log_path

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_description(self) -> str:
        return f"{self.kind} exited with code {self.process.poll()}: {last_line(self.log_tail())}"

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)  # Our own session: pgid == pid.

    def stop(self) -> None:
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(10)
        else:
            self._signal(signal.SIGKILL)  # Leftover children of an exited server, if any.


def start_binary(binary: str, base_path: str, model_name: str, work_dir: Path) -> BinaryServer:
    port = checks.free_port()
    command = checks.tf_serving_command(binary, port, model_name, base_path)
    log_path = work_dir / "tensorflow_model_server.log"
    logger.info("InfraCheck: starting %s", " ".join(command))
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as err:
        raise checks.InfraUnavailableError(f"cannot start {binary}: {err}") from None
    return BinaryServer(process, port, log_path)


class DockerServer(RunningServer):
    """The tensorflow/serving image in a container named ``container_name``."""

    kind = checks.DOCKER

    def __init__(self, container_name: str, host_port: int, image: str):
        self.container_name = container_name
        self.grpc_target = f"127.0.0.1:{host_port}"
        self.image = image
        self._last_log = ""

    def _docker(self, *args: str, timeout: float = DOCKER_COMMAND_TIMEOUT_SECONDS):
        return subprocess.run(
            ["docker", *args], capture_output=True, timeout=timeout, check=False, text=True
        )

    def alive(self) -> bool:
        try:
            result = self._docker("inspect", "-f", "{{.State.Running}}", self.container_name)
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0 and result.stdout.strip() == "true"

    def log_tail(self) -> str:
        try:
            result = self._docker("logs", "--tail", "50", self.container_name)
        except (OSError, subprocess.SubprocessError):
            return self._last_log
        if result.returncode == 0:
            self._last_log = (result.stdout + result.stderr)[-LOG_TAIL_CHARS:]
        return self._last_log

    def exit_description(self) -> str:
        return f"the {self.image} container exited: {last_line(self.log_tail())}"

    def stop(self) -> None:
        try:
            self._docker("rm", "-f", self.container_name)
        except (OSError, subprocess.SubprocessError) as err:
            logger.warning(
                "InfraCheck: could not remove container %s: %s", self.container_name, err
            )


def start_docker(base_path: str, model_name: str, image: str, timeout: float) -> DockerServer:
    port = checks.free_port()
    name = f"infra-check-{uuid.uuid4().hex[:12]}"
    command = checks.docker_run_command(name, port, model_name, base_path, image)
    logger.info("InfraCheck: starting %s", " ".join(command))
    server = DockerServer(name, port, image)
    try:
        result = subprocess.run(
            command, capture_output=True, timeout=max(timeout, 1.0), check=False, text=True
        )
    except (OSError, subprocess.SubprocessError) as err:
        server.stop()  # It may have been created after all (e.g. a slow image pull).
        raise checks.InfraUnavailableError(f"docker run {image} failed: {err}") from None
    if result.returncode != 0:
        server.stop()
        raise checks.InfraUnavailableError(
            f"docker run {image} exited with code {result.returncode}: "
            f"{checks.docker_error_line(result.stderr or result.stdout)}"
        )
    return server


class LocalServer(RunningServer):
    """``python -m serving.server`` (serving.server.start_server_subprocess), gRPC only."""

    kind = checks.LOCAL_SERVER

    def __init__(self, handle):
        self.handle = handle
        self.grpc_target = handle.grpc_target

    def alive(self) -> bool:
        return self.handle.process.poll() is None

    def exit_description(self) -> str:
        code = self.handle.process.poll()
        return f"{self.kind} exited with code {code}: {last_line(self.log_tail())}"

    def log_tail(self) -> str:
        return self.handle.log_tail(LOG_TAIL_CHARS)

    def stop(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.handle.stop(timeout=STOP_TIMEOUT_SECONDS)


def start_local(base_path: str, model_name: str, work_dir: Path, timeout: float) -> LocalServer:
    from serving.server import start_server_subprocess

    logger.info("InfraCheck: starting serving.server on %s", base_path)
    try:
        handle = start_server_subprocess(
            base_path,
            model_name,
            rest_port=None,
            grpc_port=0,
            startup_timeout=max(timeout, 1.0),
            log_path=work_dir / "local_server.log",
            work_dir=work_dir,  # Its ready file goes with the check's folder.
        )
    except (RuntimeError, TimeoutError, OSError) as err:
        message = str(err).strip().splitlines()
        first = message[0] if message else type(err).__name__
        detail = last_line("\n".join(message[1:])) if len(message) > 1 else ""
        raise checks.InfraUnavailableError(
            f"{checks.LOCAL_SERVER} failed to start: {first}" + (f" ({detail})" if detail else "")
        ) from None
    return LocalServer(handle)


def start(
    choice: checks.ServerChoice, base_path: str, model_name: str, work_dir: Path, timeout: float
) -> RunningServer:
    """Starts the chosen server on ``base_path`` (returns before the model is loaded)."""
    if choice.kind == checks.TF_SERVING_BINARY:
        return start_binary(choice.binary, base_path, model_name, work_dir)
    if choice.kind == checks.DOCKER:
        return start_docker(base_path, model_name, choice.image, timeout)
    if choice.kind == checks.LOCAL_SERVER:
        return start_local(base_path, model_name, work_dir, timeout)
    raise ValueError(f"unknown server kind {choice.kind!r}")
