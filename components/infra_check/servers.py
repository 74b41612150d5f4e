"""Starting and stopping the three model servers the infra check can run the candidate in.

Each ``start_*`` returns a :class:`RunningServer` (gRPC target, liveness, log, stop) or raises
``InfraCheckError`` when the server cannot be started. ``stop()`` never raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

from components.infra_check import checks

logger = logging.getLogger(__name__)

DOCKER_INFO_TIMEOUT_SECONDS = 10.0
DOCKER_COMMAND_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 20.0
LOG_TAIL_CHARS = 4000


def find_tf_serving_binary() -> str | None:
    """The ``tensorflow_model_server`` on PATH, or None."""
    return shutil.which(checks.TF_SERVING_BINARY)


def docker_daemon_available(timeout: float = DOCKER_INFO_TIMEOUT_SECONDS) -> bool:
    """Whether ``docker info`` exits 0 within ``timeout`` seconds (a client and a daemon)."""
    docker = shutil.which("docker")
    if not docker:
        return False
    try:
        result = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def select_server() -> checks.ServerChoice:
    """The server to run: the binary on PATH, else Docker if its daemon answers, else local."""
    binary = find_tf_serving_binary()
    return checks.choose_server(binary, docker_available=not binary and docker_daemon_available())


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
        raise checks.InfraCheckError(f"cannot start {binary}: {err}") from None
    return BinaryServer(process, port, log_path)


class DockerServer(RunningServer):
    """The tensorflow/serving image in a container named ``container_name``."""

    kind = checks.DOCKER

    def __init__(self, container_name: str, host_port: int):
        self.container_name = container_name
        self.grpc_target = f"127.0.0.1:{host_port}"
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
        return f"the {checks.TF_SERVING_IMAGE} container exited (removed with --rm)"

    def stop(self) -> None:
        try:
            self._docker("rm", "-f", self.container_name)
        except (OSError, subprocess.SubprocessError) as err:
            logger.warning(
                "InfraCheck: could not remove container %s: %s", self.container_name, err
            )


def start_docker(base_path: str, model_name: str, timeout: float) -> DockerServer:
    port = checks.free_port()
    name = f"infra-check-{uuid.uuid4().hex[:12]}"
    command = checks.docker_run_command(name, port, model_name, base_path)
    logger.info("InfraCheck: starting %s", " ".join(command))
    server = DockerServer(name, port)
    try:
        result = subprocess.run(
            command, capture_output=True, timeout=max(timeout, 1.0), check=False, text=True
        )
    except (OSError, subprocess.SubprocessError) as err:
        server.stop()  # It may have been created after all (e.g. a slow image pull).
        raise checks.InfraCheckError(
            f"docker run {checks.TF_SERVING_IMAGE} failed: {err}"
        ) from None
    if result.returncode != 0:
        server.stop()
        raise checks.InfraCheckError(
            f"docker run {checks.TF_SERVING_IMAGE} exited with code {result.returncode}: "
            f"{last_line(result.stderr or result.stdout)}"
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
        raise checks.InfraCheckError(
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
        return start_docker(base_path, model_name, timeout)
    if choice.kind == checks.LOCAL_SERVER:
        return start_local(base_path, model_name, work_dir, timeout)
    raise ValueError(f"unknown server kind {choice.kind!r}")
