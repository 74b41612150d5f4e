"""A local server that speaks TensorFlow Serving's REST and gRPC APIs, for development.

It serves the integer version directories under ``SERVING_DIR/MODEL_NAME`` (what the pipeline's
Pusher writes) the way ``tensorflow_model_server --model_name=NAME --model_base_path=PATH`` does:

- REST (tornado): ``GET /v1/models/NAME[/versions/N]``, ``GET .../metadata`` and
  ``POST /v1/models/NAME[/versions/N]:predict`` with the "instances" (row) or "inputs"
  (columnar) JSON formats; errors as ``{"error": "..."}`` with TF Serving's HTTP status codes.
- gRPC (``tensorflow-serving-api`` stubs): ``PredictionService.Predict``,
  ``PredictionService.GetModelMetadata`` and ``ModelService.GetModelStatus``.
- The model folder is polled: new versions are loaded, removed ones unloaded; only directories
  with a ``saved_model.pb`` are considered, and a version that fails to load is reported with
  its error in the model status, never taking the server down.
- Warmup requests (``assets.extra/tf_serving_warmup_requests``) are replayed at load, and a
  version whose warmup fails is not served, as in TF Serving.

Production uses the real TF Serving; this module exists because no ``tensorflow_model_server``
binary or Docker engine is available here. The wire protocol (JSON<->tensor conversion after
tensorflow_serving/util/json_tensor.cc, TF Serving's status and HTTP codes) is in
``serving.protocol``; loading, warmup and version polling in ``serving.model_manager``; this
module holds the transports, the server and its command line.

    python -m serving.server --model-base-path outputs/serving/image_classifier
    python -m serving.server --model-base-path ... --port 0 --rest-api-port 0   # free ports
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Before TensorFlow is imported anywhere.


from serving.model_manager import VERSION_POLICIES, LoadedVersion, ModelManager  # noqa: E402
from serving.protocol import (  # noqa: E402
    DEFAULT_SIGNATURE,
    STATUS_CODES,
    ServingError,
    TensorSpec,
    array_from_tensor_proto,
    dumps,
    invalid_argument,
    model_status_json,
    parse_predict_request,
    parse_rest_route,
    predict_response_json,
    tensor_proto_from_array,
)

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 8500  # tensorflow_model_server --port
DEFAULT_REST_PORT = 8501  # tensorflow_model_server --rest_api_port
DEFAULT_POLL_SECONDS = 1.0  # --file_system_poll_wait_seconds
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_NUM_THREADS = 4

REPO_ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# The APIs, independent of the transports
# ---------------------------------------------------------------------------------------------


class ServingApi:
    """TF Serving's request handling over a ModelManager, shared by REST and gRPC."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    # -- REST --

    def handle_rest(self, method: str, uri: str, body: bytes) -> tuple[int, bytes]:
        """Answers one REST request: (HTTP status, JSON body). Never raises."""
        try:
            route = parse_rest_route(method, uri)
            if route.label is not None:
                raise invalid_argument(
                    f"Version labels are not supported by the local server: {route.label}"
                )
            if route.kind == "predict":
                return 200, self.rest_predict(route.model_name, route.version, body)
            if route.kind in ("classify", "regress"):
                raise ServingError(
                    "UNIMPLEMENTED",
                    f"The local server does not implement :{route.kind}; use :predict",
                )
            if route.kind == "metadata":
                return 200, dumps(self.metadata_json(route.model_name, route.version))
            return 200, dumps(
                model_status_json(self.manager.status(route.model_name, route.version))
            )
        except ServingError as err:
            return err.http_status, err.to_json()
        except Exception as err:  # noqa: BLE001 - answer 500, keep serving
            logger.exception("Unexpected error answering %s %s", method, uri)
            return 500, ServingError("INTERNAL", f"{type(err).__name__}: {err}").to_json()

    def rest_predict(self, model_name: str, version: int | None, body: bytes) -> bytes:
        holder: dict[str, LoadedVersion] = {}

        def input_specs(signature: str) -> Mapping[str, TensorSpec]:
            holder["servable"] = self.manager.servable(model_name, version)
            return holder["servable"].inputs_for(signature)

        request = parse_predict_request(body, input_specs)
        outputs = holder["servable"].predict(request.signature_name, request.inputs)
        return dumps(predict_response_json(outputs, request.format))

    def metadata_json(self, model_name: str, version: int | None) -> dict:
        """GET .../metadata: model_spec and the signature_def map, as TF Serving prints them."""
        from google.protobuf import json_format

        servable = self.manager.servable(model_name, version)
        signature_map = json_format.MessageToDict(
            self._signature_def_map(servable),
            including_default_value_fields=True,
            preserving_proto_field_name=True,
        )
        return {
            "model_spec": {
                "name": servable.model_name,
                "signature_name": "",
                "version": str(servable.version),
            },
            "metadata": {"signature_def": signature_map},
        }

    @staticmethod
    def _signature_def_map(servable: LoadedVersion):
        from tensorflow_serving.apis import get_model_metadata_pb2

        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, definition in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(definition)
        return signature_map

    # -- gRPC (request and response protos) --

    @staticmethod
    def _spec_version(model_spec) -> int | None:
        if model_spec.WhichOneof("version_choice") == "version_label":
            raise invalid_argument(
                f"Version labels are not supported by the local server: {model_spec.version_label}"
            )
        return model_spec.version.value if model_spec.HasField("version") else None

    def grpc_predict(self, request):
        from tensorflow_serving.apis import predict_pb2

        spec = request.model_spec
        servable = self.manager.servable(spec.name, self._spec_version(spec))
        signature = spec.signature_name or DEFAULT_SIGNATURE
        inputs = {name: array_from_tensor_proto(t) for name, t in request.inputs.items()}
        outputs = servable.predict(signature, inputs, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(tensor_proto_from_array(array))
        return response

    def grpc_metadata(self, request):
        from tensorflow_serving.apis import get_model_metadata_pb2

        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid_argument(f"Metadata field {field} is not supported")
        spec = request.model_spec
        servable = self.manager.servable(spec.name, self._spec_version(spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.model_name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(self._signature_def_map(servable))
        return response

    def grpc_status(self, request):
        from tensorflow_serving.apis import get_model_status_pb2

        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.manager.status(spec.name, self._spec_version(spec)):
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
            entry.status.error_code = STATUS_CODES[status.error_code]
            entry.status.error_message = status.error_message
        return response


def _grpc_servicers(api: ServingApi):
    """PredictionService and ModelService implementations over ``api``."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    def call(handler, request, context):
        try:
            return handler(request)
        except ServingError as err:
            error = err
        except Exception as err:  # noqa: BLE001 - report INTERNAL, keep serving
            logger.exception("Unexpected error in gRPC handler")
            error = ServingError("INTERNAL", f"{type(err).__name__}: {err}")
        context.abort(grpc.StatusCode[error.code], error.message)

    class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 - gRPC method name
            return call(api.grpc_predict, request, context)

        def GetModelMetadata(self, request, context):  # noqa: N802 - gRPC method name
            return call(api.grpc_metadata, request, context)

    class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):  # noqa: N802 - gRPC method name
            return call(api.grpc_status, request, context)

    return (
        (PredictionServicer(), prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server),
        (ModelServicer(), model_service_pb2_grpc.add_ModelServiceServicer_to_server),
    )


# ---------------------------------------------------------------------------------------------
# REST transport (tornado)
# ---------------------------------------------------------------------------------------------


def _make_rest_handler(server: LocalModelServer):
    import tornado.ioloop
    import tornado.web

    @tornado.web.stream_request_body
    class RestHandler(tornado.web.RequestHandler):
        """Streams the body (to answer 413 without buffering it) and hands it to ServingApi."""

        def set_default_headers(self) -> None:
            self.set_header("Content-Type", "application/json")

        def prepare(self) -> None:
            self._chunks: list[bytes] = []
            self._received = 0
            self._too_large = False
            limit = server.max_request_bytes
            length = self.request.headers.get("Content-Length")
            declared = int(length) if length and length.isdigit() else None
            if declared is not None and declared > limit:
                self._too_large = True
                if declared > server.discard_limit:
                    self._reply_too_large(declared)  # Too big even to drain: answer and close.
                    return
                self.request.connection.set_max_body_size(declared)
            else:
                self.request.connection.set_max_body_size(server.discard_limit)

        def data_received(self, chunk: bytes) -> None:
            self._received += len(chunk)
            if self._too_large:
                return  # Drain, keeping nothing, so the client reads the 413.
            if self._received > server.max_request_bytes:
                self._too_large = True
                self._chunks.clear()
                return
            self._chunks.append(chunk)

        def _reply_too_large(self, size: int) -> None:
            self.set_status(413)
            self.finish(
                ServingError(
                    "RESOURCE_EXHAUSTED",
                    f"Request body of {size} bytes exceeds the limit of "
                    f"{server.max_request_bytes} bytes",
                ).to_json()
            )

        async def _dispatch(self) -> None:
            if self._too_large:
                self._reply_too_large(self._received)
                return
            body = b"".join(self._chunks)
            self._chunks = []
            status, payload = await tornado.ioloop.IOLoop.current().run_in_executor(
                server.executor, server.api.handle_rest, self.request.method, self.request.uri, body
            )
            self.set_status(status)
            self.finish(payload)

        async def get(self, *_: str) -> None:
            await self._dispatch()

        async def post(self, *_: str) -> None:
            await self._dispatch()

        async def put(self, *_: str) -> None:
            await self._dispatch()

        async def delete(self, *_: str) -> None:
            await self._dispatch()

        async def patch(self, *_: str) -> None:
            await self._dispatch()

        async def head(self, *_: str) -> None:
            await self._dispatch()

        def write_error(self, status_code: int, **kwargs: Any) -> None:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error": self._reason}))

    return RestHandler


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


def _log_rest_request(handler: Any) -> None:
    logger.debug(
        "%d %s %s %.1f ms",
        handler.get_status(),
        handler.request.method,
        handler.request.uri,
        1000 * handler.request.request_time(),
    )


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LocalModelServer:
    """Serves one model over REST and gRPC from this process, on background threads.

        with LocalModelServer("outputs/serving/image_classifier", rest_port=0, grpc_port=0) as s:
            requests.get(f"{s.rest_url}/v1/models/image_classifier")

    ``rest_port``/``grpc_port``: 0 picks a free port (read back from ``.rest_port`` and
    ``.grpc_port`` after ``start()``), None disables that API. ``poll_interval`` <= 0 scans
    the model folder only once, at start.
    """

    def __init__(
        self,
        model_base_path: str | os.PathLike,
        model_name: str | None = None,
        *,
        host: str = DEFAULT_HOST,
        rest_port: int | None = DEFAULT_REST_PORT,
        grpc_port: int | None = DEFAULT_GRPC_PORT,
        version_policy: str = "latest",
        poll_interval: float = DEFAULT_POLL_SECONDS,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        num_threads: int = DEFAULT_NUM_THREADS,
    ):
        base_path = os.path.abspath(os.fspath(model_base_path))
        self.model_name = model_name or os.path.basename(base_path.rstrip(os.sep))
        self.host = host
        self.poll_interval = poll_interval
        self.max_request_bytes = max_request_bytes
        # Oversized bodies up to this size are read and dropped so the client sees the 413.
        self.discard_limit = max(4 * max_request_bytes, 256 * 1024 * 1024)
        self.manager = ModelManager(self.model_name, base_path, version_policy)
        self.api = ServingApi(self.manager)
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self._num_threads = num_threads
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._poll_thread: threading.Thread | None = None
        self._rest_thread: threading.Thread | None = None
        self._rest_loop: asyncio.AbstractEventLoop | None = None
        self._http_server = None
        self._grpc_server = None
        self._started = False

    @property
    def rest_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return _grpc_address(self.host, self.grpc_port)

    def start(self) -> LocalModelServer:
        """Loads the model's versions, then opens the ports. Raises OSError if a port is taken."""
        if self._started:
            raise RuntimeError("server already started")
        self._started = True
        self._stop.clear()
        self.manager.poll()
        self.executor = concurrent.futures.ThreadPoolExecutor(
            self._num_threads, thread_name_prefix="serving"
        )
        try:
            if self.grpc_port is not None:
                self._start_grpc()
            if self.rest_port is not None:
                self._start_rest()
        except BaseException:
            self.stop()
            raise
        if self.poll_interval > 0:
            self._poll_thread = threading.Thread(
                target=self._poll_loop, name="serving-poll", daemon=True
            )
            self._poll_thread.start()
        logger.info(
            "Serving model %s from %s: REST %s, gRPC %s",
            self.model_name,
            self.manager.base_path,
            self.rest_url if self.rest_port is not None else "off",
            self.grpc_target if self.grpc_port is not None else "off",
        )
        return self

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.manager.poll()
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                logger.exception("Polling %s failed", self.manager.base_path)

    def _start_grpc(self) -> None:
        import grpc

        options = [
            ("grpc.max_receive_message_length", self.max_request_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # Fail on a taken port instead of sharing it.
        ]
        server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(self._num_threads, thread_name_prefix="grpc"),
            options=options,
        )
        for servicer, add in _grpc_servicers(self.api):
            add(servicer, server)
        address = _grpc_address(self.host, self.grpc_port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as err:
            raise OSError(f"cannot bind the gRPC port {address}: {err}") from None
        if port == 0:
            raise OSError(f"cannot bind the gRPC port {address}")
        server.start()
        self._grpc_server = server
        self.grpc_port = port

    def _start_rest(self) -> None:
        import tornado.httpserver
        import tornado.netutil
        import tornado.web

        sockets = tornado.netutil.bind_sockets(self.rest_port, address=self.host)
        self.rest_port = sockets[0].getsockname()[1]
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                app = tornado.web.Application(
                    [(r".*", _make_rest_handler(self))], log_function=_log_rest_request
                )
                self._http_server = tornado.httpserver.HTTPServer(
                    app,
                    max_body_size=self.discard_limit,
                    body_timeout=120.0,
                    idle_connection_timeout=300.0,
                )
                self._http_server.add_sockets(sockets)
                self._rest_loop = loop
            except BaseException as err:  # noqa: BLE001 - handed to start()
                failure.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._rest_thread = threading.Thread(target=run, name="serving-rest", daemon=True)
        self._rest_thread.start()
        ready.wait()
        if failure:
            for sock in sockets:
                sock.close()
            raise failure[0]

    def stop(self, grace: float = 5.0) -> None:
        """Closes the ports and stops polling; in-flight gRPC calls get ``grace`` seconds."""
        self._stop.set()
        if self._rest_loop is not None and self._rest_thread is not None:
            http_server, loop = self._http_server, self._rest_loop

            async def shutdown() -> None:
                http_server.stop()
                with contextlib.suppress(Exception):  # Stopping anyway.
                    await asyncio.wait_for(http_server.close_all_connections(), grace)
                loop.stop()

            with contextlib.suppress(RuntimeError):  # The loop is already closed.
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(shutdown()))
            self._rest_thread.join(grace + 5)
        self._rest_loop = self._rest_thread = self._http_server = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait(grace + 5)
            self._grpc_server = None
        if self._poll_thread is not None:
            self._poll_thread.join(30)
            self._poll_thread = None
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        self._started = False

    def wait_for_versions(
        self, versions: Iterable[int], timeout: float = 30.0, *, exact: bool = True
    ) -> bool:
        """Waits until the available versions are ``versions`` (or include them)."""
        wanted = sorted(versions)
        deadline = time.monotonic() + timeout
        while True:
            available = self.manager.available_versions()
            if (available == wanted) if exact else set(wanted) <= set(available):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def __enter__(self) -> LocalModelServer:
        return self.start() if not self._started else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Running in a subprocess
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ServerProcess:
    """A server running in a child process (``python -m serving.server``)."""

    process: subprocess.Popen
    host: str
    rest_port: int | None
    grpc_port: int | None
    log_path: Path

    @property
    def rest_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return _grpc_address(self.host, self.grpc_port)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server_subprocess(
    model_base_path: str | os.PathLike,
    model_name: str | None = None,
    *,
    host: str = DEFAULT_HOST,
    rest_port: int | None = 0,
    grpc_port: int | None = 0,
    version_policy: str = "latest",
    poll_interval: float = DEFAULT_POLL_SECONDS,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    startup_timeout: float = 180.0,
    log_path: str | os.PathLike | None = None,
    extra_env: Mapping[str, str] | None = None,
    work_dir: str | os.PathLike | None = None,
) -> ServerProcess:
    """Starts ``python -m serving.server`` and waits until it serves (free ports by default).

    The child writes its ports to a ready file once both APIs listen; its output goes to
    ``log_path`` (a temporary file by default). Raises RuntimeError if it exits first and
    TimeoutError after ``startup_timeout`` seconds (the child is then killed). The ready file
    lies in a new ``local-serving-*`` folder inside ``work_dir`` (default: the temp folder).
    """
    work_dir = Path(tempfile.mkdtemp(prefix="local-serving-", dir=work_dir))
    ready_file = work_dir / "ready.json"
    log = Path(log_path) if log_path else work_dir / "server.log"
    command = [
        sys.executable,
        "-m",
        "serving.server",
        f"--model-base-path={os.path.abspath(os.fspath(model_base_path))}",
        f"--host={host}",
        f"--port={-1 if grpc_port is None else grpc_port}",
        f"--rest-api-port={-1 if rest_port is None else rest_port}",
        f"--model-version-policy={version_policy}",
        f"--file-system-poll-wait-seconds={poll_interval}",
        f"--max-request-bytes={max_request_bytes}",
        f"--ready-file={ready_file}",
    ]
    if model_name:
        command.append(f"--model-name={model_name}")
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONUNBUFFERED="1", PYTHONPATH=python_path)
    env.update(extra_env or {})
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    handle = ServerProcess(process, host, None, None, log)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if ready_file.exists():
            ports = json.loads(ready_file.read_text())
            handle.rest_port, handle.grpc_port = ports["rest_port"], ports["grpc_port"]
            return handle
        if process.poll() is not None:
            raise RuntimeError(
                f"serving.server exited with code {process.returncode} before it was ready:\n"
                f"{handle.log_tail()}"
            )
        time.sleep(0.1)
    handle.stop(timeout=5)
    raise TimeoutError(
        f"serving.server was not ready after {startup_timeout:.0f} s:\n{handle.log_tail()}"
    )


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the server's flags (named after tensorflow_model_server's) to ``parser``."""
    parser.add_argument(
        "--model-base-path",
        required=True,
        help="The model's folder of integer version directories: SERVING_DIR/MODEL_NAME.",
    )
    parser.add_argument(
        "--model-name",
        default=None,
        help="Name in the URLs and ModelSpecs (default: the last component of the base path).",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"Address to bind (default {DEFAULT_HOST})."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_GRPC_PORT,
        help=f"gRPC port (default {DEFAULT_GRPC_PORT}); 0 picks a free port, -1 disables gRPC.",
    )
    parser.add_argument(
        "--rest-api-port",
        type=int,
        default=DEFAULT_REST_PORT,
        help=f"REST port (default {DEFAULT_REST_PORT}); 0 picks a free port, -1 disables REST.",
    )
    parser.add_argument(
        "--model-version-policy",
        choices=VERSION_POLICIES,
        default="latest",
        help="Serve the newest version only (default, as TF Serving) or all versions.",
    )
    parser.add_argument(
        "--file-system-poll-wait-seconds",
        type=float,
        default=DEFAULT_POLL_SECONDS,
        help="Seconds between scans for new or removed versions; 0 scans once at start.",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="Largest REST body / gRPC message accepted; larger REST bodies get HTTP 413.",
    )
    parser.add_argument(
        "--num-threads",
        type=int,
        default=DEFAULT_NUM_THREADS,
        help="Worker threads for REST requests and for gRPC calls (each).",
    )
    parser.add_argument(
        "--ready-file",
        default=None,
        help="Write {rest_port, grpc_port, pid} as JSON here once the server listens.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )


def _write_ready_file(path: str, server: LocalModelServer) -> None:
    payload = {
        "rest_port": server.rest_port,
        "grpc_port": server.grpc_port,
        "host": server.host,
        "pid": os.getpid(),
    }
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        json.dump(payload, handle)
    os.replace(temporary, path)


def run_serve(args: argparse.Namespace) -> int:
    """Serves until SIGINT or SIGTERM, then shuts down cleanly; returns the exit code."""
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.log_level != "DEBUG":
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
    server = LocalModelServer(
        args.model_base_path,
        args.model_name,
        host=args.host,
        rest_port=None if args.rest_api_port < 0 else args.rest_api_port,
        grpc_port=None if args.port < 0 else args.port,
        version_policy=args.model_version_policy,
        poll_interval=args.file_system_poll_wait_seconds,
        max_request_bytes=args.max_request_bytes,
        num_threads=args.num_threads,
    )
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        try:
            server.start()
        except OSError as err:
            logger.error("Cannot start the server: %s", err)
            return 1
        if args.ready_file:
            _write_ready_file(args.ready_file, server)
        while not stop.wait(0.5):
            pass
        logger.info("Shutting down")
        return 0
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Serve SERVING_DIR/MODEL_NAME over TensorFlow Serving's REST and gRPC APIs.",
    )
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
