"""The infra check's decisions, free of servers and TFX: what to run, what to send, what to accept.

Everything a check can fail on for a reason that lies in the candidate or the environment is
raised as :class:`InfraCheckError` with a one-line message; the executor turns it into an
unblessed InfraBlessing. Other exceptions are programming errors and propagate.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    predict_pb2,
    prediction_log_pb2,
)

from serving import layout
from trainer_module import features

# Which server ran the check (the ``infra_check_server`` custom property).
TF_SERVING_BINARY = "tensorflow_model_server"
DOCKER = "docker"
LOCAL_SERVER = "local_server"
SERVER_KINDS = (TF_SERVING_BINARY, DOCKER, LOCAL_SERVER)

# The TF Serving image the Docker path runs (tensorflow-serving-api of the pinned stack).
TF_SERVING_IMAGE = "tensorflow/serving:2.16.1"
TF_SERVING_CONTAINER_GRPC_PORT = 8500
TF_SERVING_CONTAINER_BASE = "/models"  # The image's MODEL_BASE_PATH.
# Every container the check starts carries this label, so leftovers can be found and removed.
CONTAINER_LABEL = "tfx-image-pipeline.infra-check"

STAGED_VERSION = 1  # The candidate is served as <base>/<model_name>/1/.
MAX_WARMUP_RECORDS = 1000  # TF Serving refuses more (WarmupConsts::kMaxNumRecords).
MAX_MESSAGE_CHARS = 600

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_GRPC_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

# The output contract of the serving signature: name -> (dtype, rank).
OUTPUT_CONTRACT = {
    features.PROBABILITIES_OUTPUT: (tf.float32, 2),
    features.CLASS_ID_OUTPUT: (tf.int64, 1),
    features.CLASS_NAME_OUTPUT: (tf.string, 1),
}


class InfraCheckError(Exception):
    """The candidate failed the infra check (or could not be checked); ``str()`` says why."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` with all whitespace runs collapsed to one space, cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def validate_model_name(model_name: str) -> str:
    """A model name usable as a folder and a Docker mount: letters, digits, '_', '-', '.'."""
    if not isinstance(model_name, str) or not _MODEL_NAME.fullmatch(model_name):
        raise ValueError(
            f"model_name must be letters, digits, '_', '-' or '.' (not first), got {model_name!r}"
        )
    return model_name


# --- Server selection and commands ------------------------------------------------------------

# What a user may ask for (the ``infra_check_server`` config field): auto picks the first of
# binary, Docker, local that can run here.
AUTO = "auto"
LOCAL = "local"
REQUESTABLE_SERVERS = (AUTO, TF_SERVING_BINARY, DOCKER, LOCAL)


class InfraUnavailableError(Exception):
    """The model server the check needs cannot run here: an infrastructure problem, not a
    verdict on the model. The component fails with it (the model is neither blessed nor
    refused); ``str()`` names the cause and what to do."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


@dataclasses.dataclass(frozen=True)
class ServerChoice:
    kind: str  # One of SERVER_KINDS.
    reason: str  # Why, for the log, the blessing and the run summary.
    binary: str | None = None  # The tensorflow_model_server path, for that kind.
    image: str = TF_SERVING_IMAGE  # The image, for the docker kind.


@dataclasses.dataclass(frozen=True)
class DockerProbe:
    """What ``docker`` could do here: a daemon that answers, and the image (present or pulled)."""

    daemon: bool
    image_ready: bool = False
    detail: str = ""  # Why not, one line (docker's own error where it gave one).


def choose_server(
    requested: str,
    binary_path: str | None,
    docker: DockerProbe,
    image: str = TF_SERVING_IMAGE,
) -> ServerChoice:
    """The server for ``requested`` (one of REQUESTABLE_SERVERS).

    ``auto``: a ``tensorflow_model_server`` on PATH, else Docker when its daemon answers and
    ``image`` is present or could be pulled, else the local server, with the reason. An
    explicit request that cannot be met raises InfraUnavailableError naming the cause.
    """
    if requested not in REQUESTABLE_SERVERS:
        raise ValueError(
            f"infra_check_server: {requested!r} is not one of {', '.join(REQUESTABLE_SERVERS)}"
        )
    binary_reason = f"{TF_SERVING_BINARY} found at {binary_path}"
    docker_reason = f"a Docker daemon answers and {image} is present"
    if requested == TF_SERVING_BINARY:
        if not binary_path:
            raise InfraUnavailableError(
                f"infra_check_server={TF_SERVING_BINARY}, but no {TF_SERVING_BINARY} is on "
                "PATH; install TF Serving's binary or choose another infra_check_server"
            )
        return ServerChoice(TF_SERVING_BINARY, binary_reason, binary_path)
    if requested == DOCKER:
        if not docker.daemon or not docker.image_ready:
            raise InfraUnavailableError(
                f"infra_check_server=docker, but {docker.detail or 'Docker is not usable'}; "
                "start a Docker engine, make the image available (infra_check_image) or "
                "choose another infra_check_server"
            )
        return ServerChoice(DOCKER, f"requested; {docker_reason}", image=image)
    if requested == LOCAL:
        return ServerChoice(LOCAL_SERVER, "requested (infra_check_server=local)")
    if binary_path:
        return ServerChoice(TF_SERVING_BINARY, f"auto: {binary_reason}", binary_path)
    if docker.daemon and docker.image_ready:
        return ServerChoice(
            DOCKER, f"auto: no {TF_SERVING_BINARY} on PATH; {docker_reason}", image=image
        )
    why_not_docker = docker.detail or "no Docker daemon answers"
    return ServerChoice(
        LOCAL_SERVER,
        f"auto: no {TF_SERVING_BINARY} on PATH and {why_not_docker}: using serving.server",
    )


def docker_error_line(output: str) -> str:
    """The line of docker's output that says what went wrong.

    Docker ends its errors with a usage hint ("See 'docker run --help'." / "Run 'docker
    run --help' for more information"), which is not the error.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    hints = ("See 'docker", "Run 'docker")
    useful = [line for line in lines if not line.startswith(hints)]
    for line in useful:
        if "error" in line.lower():
            return line
    return useful[-1] if useful else (lines[-1] if lines else "(no output)")


def tf_serving_command(binary: str, grpc_port: int, model_name: str, base_path: str) -> list[str]:
    """``tensorflow_model_server`` serving ``base_path`` (REST off: --rest_api_port=0)."""
    return [
        binary,
        f"--port={grpc_port}",
        "--rest_api_port=0",
        f"--model_name={model_name}",
        f"--model_base_path={base_path}",
    ]


def docker_run_command(
    container_name: str,
    host_port: int,
    model_name: str,
    base_path: str,
    image: str = TF_SERVING_IMAGE,
) -> list[str]:
    """``docker run`` of TF Serving with ``base_path`` mounted read-only as its model."""
    return [
        "docker",
        "run",
        "-d",  # Not --rm: its log must outlive a crash; RunningServer.stop removes it.
        f"--name={container_name}",
        "-p",
        f"127.0.0.1:{host_port}:{TF_SERVING_CONTAINER_GRPC_PORT}",
        "-v",
        f"{base_path}:{TF_SERVING_CONTAINER_BASE}/{model_name}:ro",
        "--label",
        f"{CONTAINER_LABEL}=1",
        "-e",
        f"MODEL_NAME={model_name}",
        image,
    ]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# --- The candidate ----------------------------------------------------------------------------


def check_saved_model(model_path: str) -> None:
    """Raises InfraCheckError unless ``model_path`` holds a saved_model.pb (or .pbtxt)."""
    if not layout.has_saved_model(model_path):
        raise InfraCheckError(f"no SavedModel (saved_model.pb) in {model_path}")


# Ops that run Python code in the serving process (tf.py_function, tf.numpy_function): a
# stock tensorflow_model_server has no Python and refuses to load a graph that uses them.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


def saved_model_ops(model_path: str) -> set[str]:
    """Every op type in the SavedModel's graphs and their function libraries."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(model_path, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    ops: set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def check_ops_servable(model_path: str) -> None:
    """Raises InfraCheckError naming the ops a stock ``tensorflow_model_server`` cannot load.

    Python-backed ops (tf.py_function, tf.numpy_function), and ops that core TensorFlow does
    not register (custom ops, TF-Text's): TF Serving answers those with "Op type not
    registered" when it loads the model, while a Python server might load it and fail later.
    """
    from tensorflow.python.framework import op_def_registry

    if not tf.io.gfile.exists(os.path.join(model_path, "saved_model.pb")):
        return  # A text SavedModel (.pbtxt) is left to the server.
    try:
        ops = saved_model_ops(model_path)
    except Exception:  # noqa: BLE001 - unreadable or corrupt: the server's load error says why
        return
    python_ops = sorted(ops & PYTHON_OPS)
    if python_ops:
        raise InfraCheckError(
            f"the SavedModel uses {', '.join(python_ops)} (tf.py_function or "
            "tf.numpy_function), which runs Python: tensorflow_model_server cannot load it; "
            "express that step in TensorFlow ops"
        )
    unknown = sorted(op for op in ops - PYTHON_OPS if op_def_registry.get(op) is None)
    if unknown:
        raise InfraCheckError(
            f"the SavedModel uses ops outside core TensorFlow: {', '.join(unknown)} "
            "(Op type not registered in a stock tensorflow_model_server); build TF Serving "
            "with those ops or remove them from the graph"
        )


def stage_model(model_path: str, staging_root: str, model_name: str) -> str:
    """Copies the candidate to ``staging_root/model_name/1/``; returns the model base path.

    A copy (not a link), so a Docker bind mount of the base path sees real files; readable
    by all, as the container's user may differ from ours.
    """
    base_path = os.path.join(os.path.abspath(staging_root), model_name)
    layout.copy_tree(model_path, os.path.join(base_path, str(STAGED_VERSION)))
    for dirpath, _dirnames, filenames in os.walk(os.path.abspath(staging_root)):
        os.chmod(dirpath, 0o755)
        for filename in filenames:
            os.chmod(os.path.join(dirpath, filename), 0o644)
    return base_path


def read_warmup_requests(model_path: str) -> list[predict_pb2.PredictRequest]:
    """The PredictRequests of the candidate's TF Serving warmup file, in file order.

    Records of other kinds (classify, regress...) are skipped: the check speaks Predict.
    Raises InfraCheckError if the file is missing, unreadable, not a TFRecord of PredictionLogs,
    longer than TF Serving accepts, or holds no PredictRequest.
    """
    path = layout.warmup_path(model_path)
    relative = os.path.join(layout.WARMUP_DIR, layout.WARMUP_FILE)
    if not tf.io.gfile.exists(path):
        raise InfraCheckError(
            f"no warmup requests: {relative} is missing from the candidate, so there is "
            "nothing to send to the model server"
        )
    requests: list[predict_pb2.PredictRequest] = []
    count = 0
    try:
        for count, record in enumerate(tf.data.TFRecordDataset([path]).as_numpy_iterator(), 1):
            if count > MAX_WARMUP_RECORDS:
                raise InfraCheckError(
                    f"{relative} holds more than {MAX_WARMUP_RECORDS} records, which TF Serving "
                    "refuses to load"
                )
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except Exception as err:  # noqa: BLE001 - protobuf's DecodeError varies by backend
                raise InfraCheckError(
                    f"{relative} record {count} is not a PredictionLog: {err}"
                ) from None
            if log.WhichOneof("log_type") == "predict_log":
                requests.append(log.predict_log.request)
    except tf.errors.OpError as err:
        raise InfraCheckError(f"cannot read {relative} as a TFRecord file: {err.message}") from None
    if not requests:
        raise InfraCheckError(
            f"no warmup requests: {relative} holds {count} records and no PredictRequest"
        )
    return requests


# --- Requests and responses -------------------------------------------------------------------


def request_batch_size(request: predict_pb2.PredictRequest) -> int:
    """The batch size of a PredictRequest: the first dimension, shared by all its inputs."""
    if not request.inputs:
        raise InfraCheckError("a warmup PredictRequest has no inputs")
    sizes = {}
    for name, tensor in request.inputs.items():
        if tensor.tensor_shape.unknown_rank or not tensor.tensor_shape.dim:
            raise InfraCheckError(f"warmup input {name!r} has no batch dimension")
        sizes[name] = tensor.tensor_shape.dim[0].size
    if len(set(sizes.values())) != 1:
        raise InfraCheckError(f"warmup inputs disagree on the batch size: {sizes}")
    return next(iter(sizes.values()))


def prepare_request(
    request: predict_pb2.PredictRequest, model_name: str
) -> predict_pb2.PredictRequest:
    """A copy addressed to ``model_name`` (latest version) that asks for every output."""
    prepared = predict_pb2.PredictRequest()
    prepared.CopyFrom(request)
    prepared.model_spec.name = model_name
    prepared.model_spec.ClearField("version_choice")
    del prepared.output_filter[:]
    return prepared


def validate_predict_response(response: predict_pb2.PredictResponse, batch: int) -> int:
    """Checks the serving contract; returns the number of classes K.

    ``probabilities`` float [batch, K] (K >= 1, finite), ``class_id`` int64 [batch] (in
    [0, K)) and ``class_name`` string [batch]. Raises InfraCheckError naming what is wrong.
    """
    arrays = {}
    for name, (dtype, rank) in OUTPUT_CONTRACT.items():
        if name not in response.outputs:
            raise InfraCheckError(
                f"response has no {name!r} output (outputs: {sorted(response.outputs)})"
            )
        tensor = response.outputs[name]
        if tensor.dtype != dtype.as_datatype_enum:
            got = tf.dtypes.as_dtype(tensor.dtype).name if tensor.dtype else "unset"
            raise InfraCheckError(f"output {name!r} has dtype {got}, expected {dtype.name}")
        try:
            array = tf.make_ndarray(tensor)
        except (TypeError, ValueError) as err:
            raise InfraCheckError(f"output {name!r} is not a valid tensor: {err}") from None
        if array.ndim != rank or array.shape[0] != batch:
            want = "[batch, K]" if rank == 2 else "[batch]"
            raise InfraCheckError(
                f"output {name!r} has shape {list(array.shape)}, expected {want} with batch={batch}"
            )
        arrays[name] = array
    num_classes = arrays[features.PROBABILITIES_OUTPUT].shape[1]
    if num_classes < 1:
        raise InfraCheckError(f"output {features.PROBABILITIES_OUTPUT!r} has no classes")
    if not np.all(np.isfinite(arrays[features.PROBABILITIES_OUTPUT])):
        raise InfraCheckError(f"output {features.PROBABILITIES_OUTPUT!r} holds NaN or inf")
    class_ids = arrays[features.CLASS_ID_OUTPUT]
    if np.any((class_ids < 0) | (class_ids >= num_classes)):
        raise InfraCheckError(
            f"output {features.CLASS_ID_OUTPUT!r} holds ids outside [0, {num_classes}): "
            f"{class_ids.tolist()}"
        )
    return num_classes


# --- Model status -----------------------------------------------------------------------------

AVAILABLE = "AVAILABLE"
FAILED = "FAILED"
WAITING = "WAITING"


def interpret_model_status(
    response: get_model_status_pb2.GetModelStatusResponse,
    model_name: str,
    version: int = STAGED_VERSION,
) -> tuple[str, str]:
    """(AVAILABLE | FAILED | WAITING, detail) for ``version`` in a GetModelStatus answer.

    FAILED: the version reached END with an error (it failed to load or to warm up) or was
    unloaded. WAITING: not reported yet, or START/LOADING.
    """
    states = get_model_status_pb2.ModelVersionStatus.State
    for status in response.model_version_status:
        if status.version != version:
            continue
        state = states.Name(status.state)
        if status.state == states.AVAILABLE:
            return AVAILABLE, f"version {version} of {model_name} is AVAILABLE"
        if status.state == states.END:
            code = _GRPC_CODE_NAMES.get(status.status.error_code, str(status.status.error_code))
            if status.status.error_code != 0:
                return FAILED, (
                    f"version {version} of {model_name} failed to load: "
                    f"{code}: {status.status.error_message}"
                )
            return FAILED, f"version {version} of {model_name} was unloaded (state END)"
        return WAITING, f"version {version} of {model_name} is {state}"
    return WAITING, f"version {version} of {model_name} not reported yet"


def grpc_error_string(err: grpc.RpcError) -> str:
    """``CODE: details`` of a failed call."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    return f"{code.name if code else 'UNKNOWN'}: {details}"
