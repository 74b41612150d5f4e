"""A local server that speaks TensorFlow Serving's REST and gRPC APIs, for development.

It serves what ``tensorflow_model_server`` serves, under its flags: one model
(``--model_name``/``--model_base_path``: integer version folders, as the Pusher writes them) or
the models of a ModelServerConfig (``--model_config_file``, the Pusher's ``models.config``):

- REST (tornado): ``GET /v1/models/NAME[/versions/N | /labels/L][/metadata]``,
  ``POST /v1/models/NAME[/versions/N | /labels/L]:predict`` ("instances" or "inputs"),
  ``:classify`` and ``:regress`` ("examples", "context"); errors as ``{"error": "..."}`` with
  TF Serving's HTTP status codes; Prometheus metrics at the MonitoringConfig's path.
- gRPC (``tensorflow-serving-api`` stubs): ``PredictionService`` Predict, Classify, Regress,
  MultiInference, GetModelMetadata; ``ModelService`` GetModelStatus, HandleReloadConfigRequest.
- Model folders are polled (new versions loaded, removed ones unloaded, a broken version
  reported in the model status, never taking the server down); the config file too.
- Warmup records are replayed at load; concurrent requests can be batched.

Production uses the real TF Serving; this module exists because no ``tensorflow_model_server``
binary is available here. The wire protocol is in ``serving.protocol``; Session-run versions,
model configs, labels, warmup and polling in ``serving.model_manager``; batching in
``serving.batching``; metrics in ``serving.metrics``; this module holds the APIs over them,
the transports, the server and its command line.

    python -m serving.server --model_base_path=outputs/serving/image_classifier
    python -m serving.server --model_config_file=outputs/serving/models.config \
        --models_config_base_path=/models --port=0 --rest_api_port=0   # free ports
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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from serving.batching import (
    BatchingOptions,
    BatchScheduler,
    read_batching_parameters,
)
from serving.metrics import ServingMetrics, read_monitoring_config
from serving.model_manager import (
    VERSION_POLICIES,
    LoadedVersion,
    ModelManager,
    ModelSpecConfig,
    ServerCore,
    VersionPolicy,
    parse_model_server_config,
    read_model_config_file,
)
from serving.protocol import (
    DEFAULT_SIGNATURE,
    STATUS_CODES,
    RestRoute,
    ServingError,
    TensorSpec,
    array_from_tensor_proto,
    classification_result_json,
    dumps,
    invalid_argument,
    model_status_json,
    parse_classify_regress_request,
    parse_predict_request,
    parse_rest_route,
    predict_response_json,
    python_error_status,
    regression_result_json,
    tensor_proto_from_array,
)

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 8500  # tensorflow_model_server --port
DEFAULT_REST_PORT = 8501  # tensorflow_model_server --rest_api_port
DEFAULT_POLL_SECONDS = 1.0  # --file_system_poll_wait_seconds
DEFAULT_MAX_REQUEST_BYTES = 2**31 - 1  # server.cc: builder.SetMaxMessageSize(kint32max)
DEFAULT_NUM_THREADS = 4

REPO_ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# The APIs, independent of the transports
# ---------------------------------------------------------------------------------------------


class ServingApi:
    """TF Serving's request handling over a ServerCore, shared by REST and gRPC.

    Every request is counted in ``metrics`` (request count and latency per model, API and
    entrypoint), as TF Serving's util.cc records them.
    """

    def __init__(self, core: ServerCore, metrics: ServingMetrics | None = None):
        self.core = core
        self.metrics = metrics or ServingMetrics()

    def _recorded(self, model_name: str, api: str, entrypoint: str, call):
        started = time.perf_counter()
        status = "OK"
        try:
            return call()
        except ServingError as err:
            status = err.code
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            self.metrics.record_request(
                model_name, api, entrypoint, status, time.perf_counter() - started
            )

    # -- REST --

    def handle_rest(self, method: str, uri: str, body: bytes) -> tuple[int, bytes]:
        """Answers one REST request: (HTTP status, JSON body). Never raises."""
        try:
            route = parse_rest_route(method, uri)
            api = _REST_APIS[route.kind]
            return 200, self._recorded(
                route.model_name, api, "REST", lambda: self._rest(route, body)
            )
        except ServingError as err:
            return err.http_status, err.to_json()
        except Exception as err:  # noqa: BLE001 - answer with a status, keep serving
            logger.exception("Unexpected error answering %s %s", method, uri)
            error = python_error_status(err)
            return error.http_status, error.to_json()

    def _rest(self, route: RestRoute, body: bytes) -> bytes:
        name, version, label = route.model_name, route.version, route.label
        if route.kind == "predict":
            return self.rest_predict(name, version, body, label)
        if route.kind in ("classify", "regress"):
            signature, request_input = parse_classify_regress_request(body, route.kind)
            servable = self.core.servable(name, version, label)
            if route.kind == "classify":
                result = servable.classify(signature, request_input)
                self.metrics.record_examples(name, len(result.classifications))
                return dumps(classification_result_json(result))
            result = servable.regress(signature, request_input)
            self.metrics.record_examples(name, len(result.regressions))
            return dumps(regression_result_json(result))
        if route.kind == "metadata":
            return dumps(self.metadata_json(name, version, label))
        return dumps(model_status_json(self.core.status(name, version, label)))

    def rest_predict(
        self, model_name: str, version: int | None, body: bytes, label: str | None = None
    ) -> bytes:
        holder: dict[str, LoadedVersion] = {}

        def input_specs(signature: str) -> Mapping[str, TensorSpec]:
            holder["servable"] = self.core.servable(model_name, version, label)
            return holder["servable"].inputs_for(signature)

        request = parse_predict_request(body, input_specs)
        outputs = holder["servable"].predict(request.signature_name, request.inputs)
        return dumps(predict_response_json(outputs, request.format))

    def metadata_json(self, model_name: str, version: int | None, label: str | None = None) -> dict:
        """GET .../metadata: model_spec and the signature_def map, as TF Serving prints them."""
        from google.protobuf import json_format

        servable = self.core.servable(model_name, version, label)
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

    def _servable_for(self, model_spec) -> LoadedVersion:
        choice = model_spec.WhichOneof("version_choice")
        version = model_spec.version.value if choice == "version" else None
        label = model_spec.version_label if choice == "version_label" else None
        return self.core.servable(model_spec.name, version, label)

    @staticmethod
    def _fill_spec(spec, servable: LoadedVersion, signature_name: str | None) -> None:
        """util.cc MakeModelSpec: name, signature (default filled in) and version."""
        spec.name = servable.model_name
        if signature_name is not None:
            spec.signature_name = signature_name or DEFAULT_SIGNATURE
        spec.version.value = servable.version

    def grpc(self, api: str, request):
        """Runs one gRPC API ("Predict", "Classify", ...) on its request proto."""
        handler = getattr(self, f"grpc_{_GRPC_HANDLERS[api]}")
        spec = getattr(request, "model_spec", None)
        if spec is None and api == "MultiInference" and request.tasks:
            spec = request.tasks[0].model_spec
        name = spec.name if spec is not None else ""
        return self._recorded(name, api, "GRPC", lambda: handler(request))

    def grpc_predict(self, request):
        from tensorflow_serving.apis import predict_pb2

        spec = request.model_spec
        servable = self._servable_for(spec)
        inputs = {name: array_from_tensor_proto(t) for name, t in request.inputs.items()}
        outputs = servable.predict(spec.signature_name, inputs, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        self._fill_spec(response.model_spec, servable, spec.signature_name)
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(tensor_proto_from_array(array))
        return response

    def grpc_classify(self, request):
        from tensorflow_serving.apis import classification_pb2

        servable = self._servable_for(request.model_spec)
        result = servable.classify(request.model_spec.signature_name, request.input)
        self.metrics.record_examples(servable.model_name, len(result.classifications))
        response = classification_pb2.ClassificationResponse()
        self._fill_spec(response.model_spec, servable, request.model_spec.signature_name)
        response.result.CopyFrom(result)
        return response

    def grpc_regress(self, request):
        from tensorflow_serving.apis import regression_pb2

        servable = self._servable_for(request.model_spec)
        result = servable.regress(request.model_spec.signature_name, request.input)
        self.metrics.record_examples(servable.model_name, len(result.regressions))
        response = regression_pb2.RegressionResponse()
        self._fill_spec(response.model_spec, servable, request.model_spec.signature_name)
        response.result.CopyFrom(result)
        return response

    def grpc_multi_inference(self, request):
        """prediction_service_impl.cc MultiInference: the first task's ModelSpec picks the
        servable; every task must name the same model (multi_inference.cc)."""
        if not request.tasks:
            raise invalid_argument("MultiInferenceRequest must specify at least one task")
        servable = self._servable_for(request.tasks[0].model_spec)
        response = servable.multi_inference(request)
        if response.results:
            first = response.results[0]
            kind = first.WhichOneof("result")
            result = getattr(first, kind)
            count = len(getattr(result, "classifications", None) or result.regressions)
            self.metrics.record_examples(servable.model_name, count)
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
        servable = self._servable_for(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self._fill_spec(response.model_spec, servable, None)
        response.metadata["signature_def"].Pack(self._signature_def_map(servable))
        return response

    def grpc_status(self, request):
        from tensorflow_serving.apis import get_model_status_pb2

        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.core.status(
            spec.name,
            spec.version.value if choice == "version" else None,
            spec.version_label if choice == "version_label" else None,
        ):
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
            entry.status.error_code = STATUS_CODES[status.error_code]
            entry.status.error_message = status.error_message
        return response

    def grpc_reload_config(self, request):
        """ModelService.HandleReloadConfigRequest: applies a new ModelServerConfig."""
        from google.protobuf import text_format
        from tensorflow_serving.apis import model_management_pb2

        response = model_management_pb2.ReloadConfigResponse()
        try:
            configs = parse_model_server_config(
                text_format.MessageToString(request.config), "ReloadConfigRequest.config"
            )
            self.core.reload_config(configs)
        except ServingError as err:
            response.status.error_code = STATUS_CODES[err.code]
            response.status.error_message = err.message
        return response


# The API names TF Serving's metrics use, per REST route kind and gRPC method.
_REST_APIS = {
    "predict": "Predict",
    "classify": "Classify",
    "regress": "Regress",
    "metadata": "GetModelMetadata",
    "status": "GetModelStatus",
}
_GRPC_HANDLERS = {
    "Predict": "predict",
    "Classify": "classify",
    "Regress": "regress",
    "MultiInference": "multi_inference",
    "GetModelMetadata": "metadata",
    "GetModelStatus": "status",
    "HandleReloadConfigRequest": "reload_config",
}


def _grpc_servicers(api: ServingApi):
    """PredictionService and ModelService implementations over ``api``."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    def call(name, request, context):
        try:
            return api.grpc(name, request)
        except ServingError as err:
            error = err
        except Exception as err:  # noqa: BLE001 - report INTERNAL, keep serving
            logger.exception("Unexpected error in gRPC handler")
            error = python_error_status(err)
        context.abort(grpc.StatusCode[error.code], error.message)

    def method(name):
        return lambda self, request, context: call(name, request, context)

    prediction_methods = ("Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata")
    prediction = type(
        "PredictionServicer",
        (prediction_service_pb2_grpc.PredictionServiceServicer,),
        {name: method(name) for name in prediction_methods},
    )
    model = type(
        "ModelServicer",
        (model_service_pb2_grpc.ModelServiceServicer,),
        {name: method(name) for name in ("GetModelStatus", "HandleReloadConfigRequest")},
    )
    return (
        (prediction(), prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server),
        (model(), model_service_pb2_grpc.add_ModelServiceServicer_to_server),
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
            metrics_path = server.monitoring_path
            if (
                metrics_path is not None
                and self.request.method == "GET"
                and self.request.path == metrics_path
            ):
                self.set_header("Content-Type", "text/plain")  # PrometheusExporter's page
                self.finish(server.api.metrics.render())
                return
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
    """Serves one model, or the models of a model config file, over REST and gRPC from this
    process, on background threads.

        with LocalModelServer("outputs/serving/image_classifier", rest_port=0, grpc_port=0) as s:
            requests.get(f"{s.rest_url}/v1/models/image_classifier")
        with LocalModelServer(model_config_file="outputs/serving/models.config", ...) as s: ...

    ``rest_port``/``grpc_port``: 0 picks a free port (read back from ``.rest_port`` and
    ``.grpc_port`` after ``start()``), None disables that API. ``poll_interval`` <= 0 scans
    the model folders only once, at start; ``config_poll_interval`` > 0 re-reads the model
    config file that often (TF Serving's --model_config_file_poll_wait_seconds).
    ``base_path_map`` = (PREFIX, DIRECTORY) serves base paths under PREFIX from DIRECTORY.
    ``batching``: BatchingOptions to merge concurrent requests (--enable_batching).
    ``monitoring_path``: where REST serves Prometheus metrics (None: not served).
    """

    def __init__(
        self,
        model_base_path: str | os.PathLike | None = None,
        model_name: str | None = None,
        *,
        model_config_file: str | os.PathLike | None = None,
        host: str = DEFAULT_HOST,
        rest_port: int | None = DEFAULT_REST_PORT,
        grpc_port: int | None = DEFAULT_GRPC_PORT,
        version_policy: str | VersionPolicy = "latest",
        poll_interval: float = DEFAULT_POLL_SECONDS,
        config_poll_interval: float = 0.0,
        base_path_map: tuple[str, str] | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        num_threads: int = DEFAULT_NUM_THREADS,
        batching: BatchingOptions | None = None,
        monitoring_path: str | None = None,
        enable_warmup: bool = True,
        allow_labels_for_unavailable: bool = False,
    ):
        if model_config_file is None and model_base_path is None:
            raise ValueError(
                "Both server_options.model_base_path and server_options.model_config_file "
                "are empty!"
            )
        self.model_config_file = (
            os.path.abspath(os.fspath(model_config_file)) if model_config_file else None
        )
        self.base_path_map = base_path_map
        if self.model_config_file is None:
            base_path = os.path.abspath(os.fspath(model_base_path))
            self.model_name = model_name or os.path.basename(base_path.rstrip(os.sep))
            self._single_model: ModelSpecConfig | None = ModelSpecConfig(
                self.model_name, base_path, VersionPolicy.of(version_policy)
            )
        else:
            self.model_name = model_name
            self._single_model = None
        self.host = host
        self.poll_interval = poll_interval
        self.config_poll_interval = config_poll_interval
        self.max_request_bytes = max_request_bytes
        # Oversized bodies up to this size are read and dropped so the client sees the 413.
        self.discard_limit = max(4 * max_request_bytes, 256 * 1024 * 1024)
        self.batching = batching
        self.batcher: BatchScheduler | None = None
        self.monitoring_path = monitoring_path
        self.enable_warmup = enable_warmup
        self.core = ServerCore(
            loader=self._load_version, allow_labels_for_unavailable=allow_labels_for_unavailable
        )
        self.api = ServingApi(self.core)
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.num_threads = num_threads
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._poll_thread: threading.Thread | None = None
        self._config_thread: threading.Thread | None = None
        self._config_text: str | None = None
        self._rest_thread: threading.Thread | None = None
        self._rest_loop: asyncio.AbstractEventLoop | None = None
        self._http_server = None
        self._grpc_server = None
        self._started = False

    def _load_version(self, model_name: str, version: int, path: str) -> LoadedVersion:
        return LoadedVersion(
            model_name, version, path, batcher=self.batcher, enable_warmup=self.enable_warmup
        )

    @property
    def manager(self) -> ModelManager:
        """The ModelManager of the server's model (the first one of a model config file)."""
        names = [self.model_name] if self.model_name else self.core.model_names()
        if not names or names[0] not in self.core.managers:
            raise RuntimeError("the server has no model (not started, or an empty config)")
        return self.core.managers[names[0]]

    def _read_config(self) -> list[ModelSpecConfig]:
        if self._single_model is not None:
            return [self._single_model]
        assert self.model_config_file is not None
        configs = read_model_config_file(self.model_config_file, self.base_path_map)
        self._config_text = Path(self.model_config_file).read_text()
        return configs

    def _config_poll_loop(self) -> None:
        """PollFilesystemAndReloadConfig: a changed or unparsable file is logged, and a bad
        one leaves the previous configuration serving."""
        while not self._stop.wait(self.config_poll_interval):
            try:
                assert self.model_config_file is not None
                text = Path(self.model_config_file).read_text()
                if text == self._config_text and self.core.pending_labels is None:
                    continue
                configs = read_model_config_file(self.model_config_file, self.base_path_map)
                self._config_text = text
                self.core.reload_config(configs)
                logger.info("Reloaded the model config from %s", self.model_config_file)
            except (OSError, ServingError) as err:
                message = err.message if isinstance(err, ServingError) else str(err)
                logger.error("Failed to reload the model config file: %s", message)
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                logger.exception("Reloading %s failed", self.model_config_file)

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
        if self.batching is not None:
            self.batcher = BatchScheduler(self.batching)
        try:
            self.core.reload_config(self._read_config())
        except BaseException:
            self.stop()
            raise
        self.executor = concurrent.futures.ThreadPoolExecutor(
            self.num_threads, thread_name_prefix="serving"
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
        if self.model_config_file and self.config_poll_interval > 0:
            self._config_thread = threading.Thread(
                target=self._config_poll_loop, name="serving-config-poll", daemon=True
            )
            self._config_thread.start()
        logger.info(
            "Serving %s from %s: REST %s, gRPC %s",
            ", ".join(self.core.model_names()) or "no model",
            self.model_config_file or self.core.configs[0].base_path,
            self.rest_url if self.rest_port is not None else "off",
            self.grpc_target if self.grpc_port is not None else "off",
        )
        return self

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.core.poll()
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                logger.exception("Polling the model folders failed")

    def _start_grpc(self) -> None:
        import grpc

        options = [
            ("grpc.max_receive_message_length", self.max_request_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # Fail on a taken port instead of sharing it.
        ]
        server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(self.num_threads, thread_name_prefix="grpc"),
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
        for thread in (self._poll_thread, self._config_thread):
            if thread is not None:
                thread.join(30)
        self._poll_thread = self._config_thread = None
        if self.batcher is not None:
            self.batcher.stop()
            self.batcher = None
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        self._started = False

    def wait_for_versions(
        self,
        versions: Iterable[int],
        timeout: float = 30.0,
        *,
        exact: bool = True,
        model_name: str | None = None,
    ) -> bool:
        """Waits until the available versions (of the server's model, or of ``model_name``)
        are ``versions`` (or include them)."""
        wanted = sorted(versions)
        deadline = time.monotonic() + timeout
        while True:
            name = model_name or self.manager.model_name
            available = self.core.available_versions(name)
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
    model_base_path: str | os.PathLike | None,
    model_name: str | None = None,
    *,
    model_config_file: str | os.PathLike | None = None,
    host: str = DEFAULT_HOST,
    rest_port: int | None = 0,
    grpc_port: int | None = 0,
    version_policy: str = "latest",
    poll_interval: float = DEFAULT_POLL_SECONDS,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 180.0,
    log_path: str | os.PathLike | None = None,
    extra_env: Mapping[str, str] | None = None,
    work_dir: str | os.PathLike | None = None,
) -> ServerProcess:
    """Starts ``python -m serving.server`` and waits until it serves (free ports by default).

    ``extra_args``: more of the server's flags (``--enable_batching``, ...). The child writes
    its ports to a ready file once both APIs listen; its output goes to ``log_path`` (a
    temporary file by default). Raises RuntimeError if it exits first and TimeoutError after
    ``startup_timeout`` seconds (the child is then killed). The ready file
    lies in a new ``local-serving-*`` folder inside ``work_dir`` (default: the temp folder).
    """
    work_dir = Path(tempfile.mkdtemp(prefix="local-serving-", dir=work_dir))
    ready_file = work_dir / "ready.json"
    log = Path(log_path) if log_path else work_dir / "server.log"
    command = [sys.executable, "-m", "serving.server"]
    if model_config_file is not None:
        command.append(f"--model_config_file={os.path.abspath(os.fspath(model_config_file))}")
    if model_base_path is not None:
        command.append(f"--model_base_path={os.path.abspath(os.fspath(model_base_path))}")
    command += [
        f"--host={host}",
        f"--port={-1 if grpc_port is None else grpc_port}",
        f"--rest_api_port={-1 if rest_port is None else rest_port}",
        f"--model_version_policy={version_policy}",
        f"--file_system_poll_wait_seconds={poll_interval}",
        f"--max_request_bytes={max_request_bytes}",
        f"--ready_file={ready_file}",
        *extra_args,
    ]
    if model_name:
        command.append(f"--model_name={model_name}")
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


def _flag_bool(text: str) -> bool:
    """TF Serving's boolean flags: --flag, --flag=true/false (also 1/0, yes/no)."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "t", "y"):
        return True
    if lowered in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _flag(parser: argparse.ArgumentParser, name: str, *aliases: str, **kwargs: Any) -> None:
    """A flag under TF Serving's name (``--rest_api_port``) and its dashed spelling."""
    names = [f"--{name}", f"--{name.replace('_', '-')}", *aliases]
    parser.add_argument(*dict.fromkeys(names), dest=name, **kwargs)


def _bool_flag(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    _flag(parser, name, type=_flag_bool, nargs="?", const=True, default=default, help=help)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the server's flags to ``parser``: tensorflow_model_server's names (``--port``,
    ``--rest_api_port``, ``--model_config_file``...; the dashed spellings work too), then a
    few of the local server's own."""
    tf_serving = parser.add_argument_group("tensorflow_model_server flags")
    _flag(
        tf_serving,
        "port",
        type=int,
        default=DEFAULT_GRPC_PORT,
        help=f"gRPC port (default {DEFAULT_GRPC_PORT}); 0 picks a free port, -1 disables gRPC.",
    )
    _flag(
        tf_serving,
        "rest_api_port",
        type=int,
        default=DEFAULT_REST_PORT,
        help=f"REST port (default {DEFAULT_REST_PORT}); 0 picks a free port, -1 disables REST.",
    )
    _flag(
        tf_serving,
        "model_name",
        default=None,
        help="Name of the model of --model_base_path (default: its last path component).",
    )
    _flag(
        tf_serving,
        "model_base_path",
        default=None,
        help="One model's folder of integer version directories: SERVING_DIR/MODEL_NAME.",
    )
    _flag(
        tf_serving,
        "model_config_file",
        default=None,
        help="A ModelServerConfig text file (the Pusher's SERVING_DIR/models.config): "
        "several models, version policies and labels. Overrides --model_base_path.",
    )
    _flag(
        tf_serving,
        "model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="Seconds between re-reads of --model_config_file; 0 reads it once.",
    )
    _flag(
        tf_serving,
        "file_system_poll_wait_seconds",
        type=float,
        default=DEFAULT_POLL_SECONDS,
        help="Seconds between scans for new or removed versions; 0 scans once at start.",
    )
    _bool_flag(
        tf_serving, "enable_batching", False, "Merge concurrent requests into batched model calls."
    )
    _flag(
        tf_serving,
        "batching_parameters_file",
        default=None,
        help="A BatchingParameters text file (max_batch_size, batch_timeout_micros, "
        "max_enqueued_batches, num_batch_threads, allowed_batch_sizes); implies batching.",
    )
    _flag(
        tf_serving,
        "monitoring_config_file",
        default=None,
        help="A MonitoringConfig text file; prometheus_config { enable: true } serves "
        "Prometheus metrics on the REST port (default path /monitoring/prometheus/metrics).",
    )
    _bool_flag(
        tf_serving,
        "enable_model_warmup",
        True,
        "Replay assets.extra/tf_serving_warmup_requests when a version loads.",
    )
    _bool_flag(
        tf_serving,
        "allow_version_labels_for_unavailable_models",
        False,
        "Allow a label to name a version that is not loaded yet.",
    )
    _flag(
        tf_serving,
        "rest_api_num_threads",
        "--num_threads",
        "--num-threads",
        type=int,
        default=DEFAULT_NUM_THREADS,
        help="Threads answering REST requests.",
    )
    _flag(
        tf_serving,
        "grpc_max_threads",
        type=int,
        default=DEFAULT_NUM_THREADS,
        help="Threads answering gRPC calls.",
    )
    local = parser.add_argument_group("local server flags (not tensorflow_model_server's)")
    _flag(
        local,
        "host",
        default=DEFAULT_HOST,
        help=f"Address to bind (default {DEFAULT_HOST}; TF Serving binds every address).",
    )
    _flag(
        local,
        "model_version_policy",
        choices=VERSION_POLICIES,
        default="latest",
        help="Versions of --model_base_path to serve: the newest (default) or all.",
    )
    _flag(
        local,
        "models_config_base_path",
        default="",
        help="Base paths in --model_config_file under this prefix are read from the "
        "config file's own folder (the Pusher writes them as the TF Serving container sees "
        "SERVING_DIR, e.g. /models).",
    )
    _flag(
        local,
        "max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="Largest REST body / gRPC message (default 2^31-1, TF Serving's gRPC limit); "
        "larger REST bodies get HTTP 413.",
    )
    _flag(
        local,
        "ready_file",
        default=None,
        help="Write {rest_port, grpc_port, pid} as JSON here once the server listens.",
    )
    _flag(local, "log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def add_pipeline_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """``tfx-image-pipeline serve``: the server's flags, serving the Pusher's
    SERVING_DIR/models.config (with its /models base paths) when no model is named."""
    from pipeline.config import PipelineConfig, load_config

    add_serve_arguments(parser)
    serving_dir = load_config(validate=False).serving_dir
    parser.set_defaults(
        default_model_config_file=os.path.join(serving_dir, "models.config"),
        models_config_base_path=PipelineConfig().models_config_base_path,
    )
    parser.epilog = (
        f"Without --model_base_path or --model_config_file: --model_config_file="
        f"{os.path.join(serving_dir, 'models.config')} (the Pusher's), its base paths under "
        f"{PipelineConfig().models_config_base_path} read from {serving_dir}."
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


def server_from_args(args: argparse.Namespace) -> LocalModelServer:
    """A LocalModelServer configured from the parsed flags; ServingError for bad files."""
    config_file = args.model_config_file
    if not config_file and not args.model_base_path:
        config_file = getattr(args, "default_model_config_file", None)
    if not config_file and not args.model_base_path:
        raise invalid_argument(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    batching = None
    if args.batching_parameters_file:
        batching = read_batching_parameters(args.batching_parameters_file)
    elif args.enable_batching:
        batching = BatchingOptions()
    monitoring_path = None
    if args.monitoring_config_file:
        monitoring_path = read_monitoring_config(args.monitoring_config_file)
    base_path_map = None
    if config_file and args.models_config_base_path:
        base_path_map = (
            args.models_config_base_path,
            os.path.dirname(os.path.abspath(config_file)),
        )
    return LocalModelServer(
        None if config_file else args.model_base_path,
        args.model_name,
        model_config_file=config_file or None,
        host=args.host,
        rest_port=None if args.rest_api_port < 0 else args.rest_api_port,
        grpc_port=None if args.port < 0 else args.port,
        version_policy=args.model_version_policy,
        poll_interval=args.file_system_poll_wait_seconds,
        config_poll_interval=args.model_config_file_poll_wait_seconds,
        base_path_map=base_path_map,
        max_request_bytes=args.max_request_bytes,
        num_threads=max(args.rest_api_num_threads, args.grpc_max_threads),
        batching=batching,
        monitoring_path=monitoring_path,
        enable_warmup=args.enable_model_warmup,
        allow_labels_for_unavailable=args.allow_version_labels_for_unavailable_models,
    )


def run_serve(args: argparse.Namespace) -> int:
    """Serves until SIGINT or SIGTERM, then shuts down cleanly; returns the exit code."""
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.log_level != "DEBUG":
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
    try:
        server = server_from_args(args)
    except ServingError as err:
        logger.error("%s", err.message)
        return 1
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
        except ServingError as err:
            logger.error("%s", err.message)
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
        allow_abbrev=False,
        prog="python -m serving.server",
        description="Serve SavedModels over TensorFlow Serving's REST and gRPC APIs.",
    )
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
