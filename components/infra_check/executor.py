"""InfraCheck executor: serve the candidate in a model server, replay its warmup requests.

As TFX's InfraValidator: the model is loaded by a real model server (``tensorflow_model_server``
on PATH, else the tensorflow/serving Docker image, else our local ``serving.server``), and
requests are sent over gRPC. The InfraBlessing gets ``blessed`` = 1 or 0 and a marker file
``INFRA_BLESSED`` / ``INFRA_NOT_BLESSED``, which TFX's Pusher (and VersionedPusher) read.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components.infra_check import checks, servers

logger = logging.getLogger(__name__)

MODEL_KEY = "model"
BLESSING_KEY = "blessing"
MODEL_NAME_KEY = "model_name"
TIMEOUT_SECONDS_KEY = "timeout_seconds"
SERVER_KEY = "server"  # One of checks.REQUESTABLE_SERVERS.
IMAGE_KEY = "image"  # The TF Serving image of the docker server.
DEFAULT_TIMEOUT_SECONDS = 300

# Custom properties of the InfraBlessing. ``blessed`` is TFX's (model_utils.is_infra_validated).
BLESSED_PROPERTY = "blessed"
SERVER_PROPERTY = "infra_check_server"
SERVER_REASON_PROPERTY = "infra_check_server_reason"
MESSAGE_PROPERTY = "infra_check_message"
REQUESTS_PROPERTY = "infra_check_requests"
BLESSED_FILE = "INFRA_BLESSED"  # TFX InfraValidator's marker files.
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"

_STATUS_POLL_SECONDS = 0.25
WORK_DIR_PREFIX = "infra-check-"  # Under the temp folder: the staged model, server logs.
WORK_LOCK_FILE = ".lock"
_MAX_RPC_SECONDS = 60.0
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # Retry connecting quickly while the server starts (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class InfraCheckInfrastructureError(RuntimeError):
    """The component's failure when no model server could run the check (not a bad model)."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    blessed: bool
    server: str  # Which server ran (or was chosen, when the check stopped before starting it).
    message: str  # One line.
    requests: int  # Warmup requests answered with a valid response.
    server_reason: str = ""  # Why that server (auto's fallback reasons included).


class _Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())


def _wait_until_available(
    server: servers.RunningServer,
    channel: grpc.Channel,
    model_name: str,
    deadline: _Deadline,
) -> None:
    """Polls ModelService.GetModelStatus until the staged version is AVAILABLE."""
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model_name
    last = "no answer yet"
    while True:
        if not server.alive():
            raise checks.InfraCheckError(
                f"{server.exit_description()} (before version {checks.STAGED_VERSION} of "
                f"{model_name} was AVAILABLE)"
            )
        remaining = deadline.remaining()
        if remaining <= 0:
            raise checks.InfraCheckError(
                f"version {checks.STAGED_VERSION} of {model_name} was not AVAILABLE in "
                f"{server.kind} within timeout_seconds={deadline.seconds:g} (last: {last})"
            )
        try:
            response = stub.GetModelStatus(request, timeout=min(5.0, max(remaining, 0.1)))
        except grpc.RpcError as err:
            last = checks.grpc_error_string(err)
        else:
            state, detail = checks.interpret_model_status(response, model_name)
            if state == checks.AVAILABLE:
                logger.info("InfraCheck: %s in %s", detail, server.kind)
                return
            if state == checks.FAILED:
                raise checks.InfraCheckError(f"{detail} (in {server.kind})")
            last = detail
        time.sleep(min(_STATUS_POLL_SECONDS, deadline.remaining()))


def run_infra_check(
    model_path: str,
    model_name: str,
    timeout_seconds: float,
    server: str = checks.AUTO,
    image: str = checks.TF_SERVING_IMAGE,
) -> CheckResult:
    """Serves the SavedModel at ``model_path`` as ``model_name`` and replays its warmup requests.

    ``server`` is one of ``checks.REQUESTABLE_SERVERS``. Returns the verdict on the model.
    Raises ``checks.InfraUnavailableError`` when the server cannot run here (a requested
    server that is missing, a container engine that refuses to start it, a full disk): that
    is not a verdict on the model. The server is always stopped and the staged copy removed.
    """
    checks.validate_model_name(model_name)
    if timeout_seconds <= 0:
        raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
    deadline = _Deadline(timeout_seconds)
    # A pull may take a share of the check's time, never all of it (offline it just fails).
    pull_timeout = min(deadline.remaining() / 3, servers.DOCKER_PULL_TIMEOUT_SECONDS)
    choice = servers.select_server(server, image, pull_timeout=pull_timeout)
    logger.info("InfraCheck: model server %s (%s)", choice.kind, choice.reason)
    try:
        checks.check_saved_model(model_path)
        checks.check_ops_servable(model_path)
        requests = checks.read_warmup_requests(model_path)
    except checks.InfraCheckError as failure:
        return CheckResult(False, choice.kind, f"{failure} (no server started)", 0, choice.reason)

    removed = sweep_stale_work_dirs()
    if removed:
        logger.info("InfraCheck: removed work folders of killed checks: %s", removed)
    try:
        work_dir = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX))
        work_lock = open(work_dir / WORK_LOCK_FILE, "w")  # noqa: SIM115 - closed in finally
        fcntl.flock(work_lock, fcntl.LOCK_EX)
    except OSError as err:
        raise checks.InfraUnavailableError(f"cannot create a temporary folder: {err}") from None
    running: servers.RunningServer | None = None
    answered = 0
    try:
        try:
            base_path = checks.stage_model(model_path, str(work_dir / "models"), model_name)
        except (OSError, tf.errors.OpError) as err:
            raise checks.InfraUnavailableError(f"cannot stage the candidate: {err}") from None
        running = servers.start(choice, base_path, model_name, work_dir, deadline.remaining())
        with grpc.insecure_channel(running.grpc_target, options=_CHANNEL_OPTIONS) as channel:
            _wait_until_available(running, channel, model_name, deadline)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            batch_sizes = []
            num_classes = set()
            for index, request in enumerate(requests, 1):
                try:
                    batch = checks.request_batch_size(request)
                except checks.InfraCheckError as failure:
                    raise checks.InfraCheckError(
                        f"warmup request {index} of {len(requests)}: {failure}"
                    ) from None
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise checks.InfraCheckError(
                        f"timeout_seconds={timeout_seconds:g} ran out after {answered} of "
                        f"{len(requests)} warmup requests"
                    )
                try:
                    response = stub.Predict(
                        checks.prepare_request(request, model_name),
                        timeout=min(_MAX_RPC_SECONDS, remaining),
                    )
                except grpc.RpcError as err:
                    raise checks.InfraCheckError(
                        f"warmup request {index} of {len(requests)} (batch {batch}) failed in "
                        f"{running.kind}: {checks.grpc_error_string(err)}"
                    ) from None
                try:
                    num_classes.add(checks.validate_predict_response(response, batch))
                except checks.InfraCheckError as failure:
                    raise checks.InfraCheckError(
                        f"warmup request {index} of {len(requests)} (batch {batch}): {failure}"
                    ) from None
                answered += 1
                batch_sizes.append(batch)
            if len(num_classes) != 1:
                raise checks.InfraCheckError(
                    f"responses disagree on the number of classes: {sorted(num_classes)}"
                )
        message = (
            f"{running.kind} loaded version {checks.STAGED_VERSION} of {model_name} and answered "
            f"{answered} warmup Predict requests (batch sizes {_summary(batch_sizes)}) with "
            f"probabilities [batch, {num_classes.pop()}], class_id [batch], class_name [batch]"
        )
        return CheckResult(True, running.kind, checks.one_line(message), answered, choice.reason)
    except checks.InfraCheckError as failure:
        if running is not None:
            logger.warning("InfraCheck: %s log (last lines):\n%s", running.kind, running.log_tail())
        return CheckResult(False, choice.kind, str(failure), answered, choice.reason)
    finally:
        if running is not None:
            running.stop()
            logger.info("InfraCheck: %s stopped", running.kind)
        shutil.rmtree(work_dir, ignore_errors=True)
        work_lock.close()


def sweep_stale_work_dirs(temp_root: str | None = None) -> list[str]:
    """Deletes ``infra-check-*`` work folders of checks that were killed; returns them.

    A live check holds an flock on its folder's lock file, which the kernel releases when
    the check dies, so a folder whose lock can be taken is a dead check's copy of its model.
    Folders without a lock file (made before the lock existed) are left alone.
    """
    removed = []
    root = Path(temp_root or tempfile.gettempdir())
    for folder in sorted(root.glob(f"{WORK_DIR_PREFIX}*")):
        try:
            with open(folder / WORK_LOCK_FILE) as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)
        except (BlockingIOError, FileNotFoundError, NotADirectoryError):
            continue  # Alive, gone already, or not one of ours.
        removed.append(str(folder))
    return removed


def _summary(values: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def record_result(blessing: types.Artifact, result: CheckResult) -> None:
    """Writes the verdict into the InfraBlessing as TFX's InfraValidator does, plus details."""
    tf.io.gfile.makedirs(blessing.uri)
    marker = BLESSED_FILE if result.blessed else NOT_BLESSED_FILE
    with tf.io.gfile.GFile(os.path.join(blessing.uri, marker), "w") as f:
        f.write("")
    blessing.set_int_custom_property(BLESSED_PROPERTY, 1 if result.blessed else 0)
    blessing.set_string_custom_property(SERVER_PROPERTY, result.server)
    blessing.set_string_custom_property(SERVER_REASON_PROPERTY, result.server_reason)
    blessing.set_string_custom_property(MESSAGE_PROPERTY, result.message)
    blessing.set_int_custom_property(REQUESTS_PROPERTY, result.requests)


class Executor(base_executor.BaseExecutor):
    """Blesses the model if a model server loads it and answers its warmup requests."""

    def Do(  # noqa: N802 - TFX API
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        model_path = path_utils.serving_model_path(
            model.uri, path_utils.is_old_model_artifact(model)
        )
        timeout = exec_properties.get(TIMEOUT_SECONDS_KEY)
        try:
            result = run_infra_check(
                model_path,
                exec_properties[MODEL_NAME_KEY],
                int(DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout),
                server=exec_properties.get(SERVER_KEY) or checks.AUTO,
                image=exec_properties.get(IMAGE_KEY) or checks.TF_SERVING_IMAGE,
            )
        except checks.InfraUnavailableError as err:
            # No blessing either way: the run fails here, naming the infrastructure problem.
            raise InfraCheckInfrastructureError(
                f"infrastructure error, the model was not judged: {err}"
            ) from None
        record_result(blessing, result)
        if result.blessed:
            logger.info("InfraCheck: BLESSED by %s: %s", result.server, result.message)
        else:
            logger.warning("InfraCheck: NOT BLESSED (%s): %s", result.server, result.message)
