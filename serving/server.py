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
binary or Docker engine is available here. The JSON<->tensor conversion below follows
tensorflow_serving/util/json_tensor.cc and the HTTP codes tensorflow_serving/model_servers/
http_server.cc; it is pure Python/NumPy so it can be tested without TensorFlow.

    python -m serving.server --model-base-path outputs/serving/image_classifier
    python -m serving.server --model-base-path ... --port 0 --rest-api-port 0   # free ports
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Before TensorFlow is imported anywhere.

import numpy as np  # noqa: E402

from trainer_module import features  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 8500  # tensorflow_model_server --port
DEFAULT_REST_PORT = 8501  # tensorflow_model_server --rest_api_port
DEFAULT_POLL_SECONDS = 1.0  # --file_system_poll_wait_seconds
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_NUM_THREADS = 4
DEFAULT_SIGNATURE = features.SERVING_SIGNATURE  # TF's kDefaultServingSignatureDefKey
VERSION_POLICIES = ("latest", "all")

REPO_ROOT = Path(__file__).resolve().parent.parent

# Request formats of the predict API (json_tensor.h's JsonPredictRequestFormat).
ROW_FORMAT = "row"  # {"instances": [...]} -> {"predictions": [...]}
COLUMNAR_FORMAT = "columnar"  # {"inputs": ...} -> {"outputs": ...}

# ---------------------------------------------------------------------------------------------
# Status codes
# ---------------------------------------------------------------------------------------------

# Canonical (gRPC / tensorflow.error.Code) status codes.
STATUS_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
_CODE_NAMES = {number: name for name, number in STATUS_CODES.items()}

# The HTTP status TF Serving answers for each canonical code (http_server.cc ToHTTPStatusCode).
HTTP_STATUS_FOR_CODE = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A failed request: a canonical status code (``NOT_FOUND``...) and TF Serving's message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        if code not in STATUS_CODES:
            raise ValueError(f"unknown status code {code!r}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers for this error."""
        return HTTP_STATUS_FOR_CODE[self.code]

    def status_string(self) -> str:
        """``CODE: message``, like ``absl::Status::ToString()`` (nested into other messages)."""
        return f"{self.code}: {self.message}"

    def to_json(self) -> bytes:
        """The REST error body: ``{"error": "<message>"}``."""
        return json.dumps({"error": self.message}).encode()


def _invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def code_name(code: int) -> str:
    """The canonical name of a numeric status code (``tf.errors.OpError.error_code``)."""
    return _CODE_NAMES.get(code, "UNKNOWN")


# ---------------------------------------------------------------------------------------------
# Tensor types and specs (TF-free)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DType:
    """What the JSON conversion needs to know about one ``tensorflow.DataType``."""

    name: str  # "DT_FLOAT"
    tf_name: str  # "float", as tensorflow::DataTypeString prints it
    numpy: Any  # numpy dtype of the values (object for strings)
    json_kind: str | None  # how JSON values are checked on input; None: input unsupported


_INT32_RANGE = (-(2**31), 2**31 - 1)
DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("DT_FLOAT", "float", np.float32, "float"),
        DType("DT_DOUBLE", "double", np.float64, "double"),
        DType("DT_INT32", "int32", np.int32, "int32"),
        DType("DT_INT16", "int16", np.int16, "int32"),
        DType("DT_INT8", "int8", np.int8, "int32"),
        DType("DT_UINT8", "uint8", np.uint8, "int32"),
        DType("DT_INT64", "int64", np.int64, "int64"),
        DType("DT_UINT32", "uint32", np.uint32, "uint32"),
        DType("DT_UINT64", "uint64", np.uint64, "uint64"),
        DType("DT_BOOL", "bool", np.bool_, "bool"),
        DType("DT_STRING", "string", object, "string"),
        DType("DT_HALF", "half", np.float16, None),
        DType("DT_UINT16", "uint16", np.uint16, None),
    )
}


def dtype_of_array(array: np.ndarray) -> DType | None:
    """The DType whose values ``array`` holds (strings: object/bytes arrays), or None."""
    if array.dtype == object or array.dtype.kind in "SU":
        return DTYPES["DT_STRING"]
    for dtype in DTYPES.values():
        if dtype.numpy is not object and array.dtype == np.dtype(dtype.numpy):
            return dtype
    return None


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A signature input: its DataType name and shape (None: unknown rank; None dims: any)."""

    dtype: str
    shape: tuple[int | None, ...] | None = None

    def describe(self) -> str:
        return _shape_string(self.shape)

    def is_compatible(self, shape: Sequence[int]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape, strict=True)
        )


def _shape_string(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ",".join("-1" if d is None else str(d) for d in shape) + "]"


# ---------------------------------------------------------------------------------------------
# JSON -> tensors (json_tensor.cc FillPredictRequestFromJson)
# ---------------------------------------------------------------------------------------------

_MAX_WARMUP_RECORDS = 1000  # WarmupConsts::kMaxNumRecords
_MAX_RANK = 64  # Deeper JSON lists are refused before any recursion.
_MAX_ERROR_VALUE_CHARS = 256  # JSON values quoted in error messages are cut to this length.


def _json_repr(value: Any) -> str:
    """A JSON value as quoted in error messages, cut short so payloads never echo back whole."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    if len(text) > _MAX_ERROR_VALUE_CHARS:
        text = text[:_MAX_ERROR_VALUE_CHARS] + "...(truncated)"
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value: Any, dtype: DType) -> ServingError:
    return _invalid(
        f"JSON Value: {_json_repr(value)} Type: {_json_type(value)} "
        f"is not of expected type: {dtype.tf_name}"
    )


def is_b64_object(value: Any) -> bool:
    """``{"b64": "<string>"}`` and nothing else: how binary strings travel in JSON."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64_object(value: Any) -> bytes:
    """The bytes of a ``{"b64": ...}`` object (standard alphabet; padding may be omitted)."""
    if not is_b64_object(value):
        raise _invalid(f"JSON Value: {_json_repr(value)} not formatted correctly for base64 data")
    text = value["b64"].strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Unable to base64 decode") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _scalar_value(value: Any, dtype: DType) -> Any:
    """One JSON scalar checked and converted for ``dtype`` (json_tensor.cc AddValueToTensor)."""
    kind = dtype.json_kind
    if kind in ("float", "double"):
        if not (_is_int(value) or isinstance(value, float)):
            raise _type_error(value, dtype)
        mantissa_bits, largest = (24, 3.4028234663852886e38) if kind == "float" else (53, None)
        lossless = True
        if _is_int(value):
            lossless = abs(value) <= 2**mantissa_bits - 1
        elif largest is not None and math.isfinite(value):
            lossless = abs(value) <= largest
        if not lossless:
            raise _invalid(
                f"Cannot convert JSON value: {_json_repr(value)} to {kind} "
                "without loss of precision."
            )
        return value
    if kind == "int32":
        if not (_is_int(value) and _INT32_RANGE[0] <= value <= _INT32_RANGE[1]):
            raise _type_error(value, dtype)
        info = np.iinfo(dtype.numpy)
        if not info.min <= value <= info.max:
            raise _invalid(f"JSON Value: {value} is out of range for type: {dtype.tf_name}")
        return value
    if kind == "int64":
        if not (_is_int(value) and -(2**63) <= value < 2**63):
            raise _type_error(value, dtype)
        return value
    if kind in ("uint32", "uint64"):
        bits = 32 if kind == "uint32" else 64
        if not (_is_int(value) and 0 <= value < 2**bits):
            raise _type_error(value, dtype)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8", "surrogatepass")
    raise ServingError(
        "UNIMPLEMENTED", f"Conversion of JSON Value: {_json_repr(value)} to type: {dtype.tf_name}"
    )


def _dense_shape(value: Any) -> list[int]:
    """The shape implied by following the first element of each nested list."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > _MAX_RANK:
            raise _invalid(f"JSON lists are nested deeper than the maximum rank {_MAX_RANK}")
        if not value:
            break
        value = value[0]
    return shape


def _fill_values(value: Any, level: int, shape: list[int], dtype: DType, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(
                f"JSON Value: {_json_repr(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype.name != "DT_STRING":
                raise _type_error(value, dtype)
            out.append(decode_b64_object(value))
        else:
            out.append(_scalar_value(value, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise _invalid(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill_values(item, level + 1, shape, dtype, out)


def tensor_from_json(value: Any, dtype: str | DType) -> np.ndarray:
    """A dense tensor from a JSON scalar or nested list; strings come back as bytes objects."""
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    shape = _dense_shape(value)
    values: list = []
    _fill_values(value, 0, shape, dtype, values)
    if dtype.numpy is object:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=dtype.numpy).reshape(shape)


def parse_json_body(body: bytes | str) -> dict[str, Any]:
    """The request's top-level JSON object (json_tensor.cc ParseJson)."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except json.JSONDecodeError as err:
        raise _invalid(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    except (RecursionError, UnicodeDecodeError, ValueError) as err:
        raise _invalid(f"JSON Parse error: {type(err).__name__}: {err}") from None
    if not isinstance(document, dict):
        raise _invalid(f"JSON Value: {_json_repr(document)} Is not object")
    return document


def signature_name_of(document: Mapping[str, Any]) -> str:
    """The optional "signature_name" of a request ("" when absent)."""
    if "signature_name" not in document:
        return ""
    name = document["signature_name"]
    if not isinstance(name, str):
        raise _invalid(
            f"JSON Value: {_json_repr(dict(document))} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not is_b64_object(value)


def _add_instance_item(
    value: Any,
    name: str,
    specs: Mapping[str, TensorSpec],
    collected: dict[str, list[np.ndarray]],
) -> None:
    if name not in specs:
        raise _invalid(f"JSON object: does not have named input: {name}")
    tensor = tensor_from_json(value, specs[name].dtype)
    if collected.get(name):
        first = collected[name][0]
        if first.size != tensor.size:
            raise _invalid(f"Expecting tensor size: {first.size} but got: {tensor.size}")
        if first.shape != tensor.shape:
            raise _invalid(
                f"Expecting shape {_shape_string(first.shape)} but got: "
                f"{_shape_string(tensor.shape)}"
            )
    collected.setdefault(name, []).append(tensor)


def _stack(items: list[np.ndarray]) -> np.ndarray:
    if items[0].dtype == object:
        out = np.empty(sum(item.size for item in items), dtype=object)
        out[:] = [value for item in items for value in item.reshape(-1)]
        return out.reshape((len(items), *items[0].shape))
    return np.stack(items)


def _tensors_from_instances(
    instances: list, specs: Mapping[str, TensorSpec]
) -> dict[str, np.ndarray]:
    """Row format: one element per batch item, batched along a new first dimension."""
    if not isinstance(instances[0], dict) and len(specs) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    objects = _is_element_object(instances[0])
    names = sorted(specs)
    collected: dict[str, list[np.ndarray]] = {}
    for index, element in enumerate(instances):
        if objects:
            if not _is_element_object(element):
                raise _invalid(f"Expecting object but got list at item {index} of input list")
            for key, value in element.items():
                try:
                    _add_instance_item(value, key, specs, collected)
                except ServingError as err:
                    raise _invalid(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: {err.status_string()}"
                    ) from None
            if set(element) != set(specs):
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_json_repr(element)} must only have keys: {','.join(names)}"
                )
        else:
            if _is_element_object(element):
                raise _invalid(f"Expecting value/list but got object at item {index} of input list")
            try:
                _add_instance_item(element, names[0], specs, collected)
            except ServingError as err:
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {err.status_string()}"
                ) from None
    return {name: _stack(items) for name, items in collected.items()}


def _tensors_from_inputs(value: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """Columnar format: one (batched) value per named input."""
    names = sorted(specs)
    if not isinstance(value, dict) or is_b64_object(value):
        if len(specs) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        return {names[0]: tensor_from_json(value, specs[names[0]].dtype)}
    tensors = {}
    for name in names:
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = tensor_from_json(value[name], specs[name].dtype)
    return tensors


def parse_predict_inputs(
    document: Mapping[str, Any], specs: Mapping[str, TensorSpec], signature_name: str = ""
) -> tuple[dict[str, np.ndarray], str]:
    """The input tensors of a predict request and its format (ROW_FORMAT or COLUMNAR_FORMAT)."""
    if not specs:
        raise _invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances and has_inputs:
        raise _invalid(
            f"JSON Value: {_json_repr(dict(document))} Not formatted correctly expecting only "
            "one of 'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise _invalid(
                f"JSON Value: {_json_repr(dict(document))} Excepting 'instances' to be an "
                "list/array"
            )
        if not instances:
            raise _invalid(
                f"JSON Value: {_json_repr(dict(document))} No values in 'instances' array"
            )
        return _tensors_from_instances(instances, specs), ROW_FORMAT
    if has_inputs:
        return _tensors_from_inputs(document["inputs"], specs), COLUMNAR_FORMAT
    raise _invalid("Missing 'inputs' or 'instances' key")


@dataclasses.dataclass(frozen=True)
class PredictRequestJson:
    """A parsed REST predict request."""

    signature_name: str  # "" when the request named none
    inputs: dict[str, np.ndarray]
    format: str


def parse_predict_request(
    body: bytes | str, input_specs: Callable[[str], Mapping[str, TensorSpec]]
) -> PredictRequestJson:
    """Parses a REST predict body; ``input_specs(signature_name)`` gives the signature's inputs.

    The order of the checks is TF Serving's: JSON syntax, then the signature (which looks the
    model up and so may raise NOT_FOUND), then the tensors.
    """
    document = parse_json_body(body)
    signature = signature_name_of(document)
    specs = input_specs(signature)
    inputs, request_format = parse_predict_inputs(document, specs, signature)
    return PredictRequestJson(signature, inputs, request_format)


# ---------------------------------------------------------------------------------------------
# Tensors -> JSON (json_tensor.cc MakeJsonFromTensors)
# ---------------------------------------------------------------------------------------------


def _string_json(value: Any, as_bytes: bool) -> Any:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if not as_bytes:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass  # Not valid UTF-8: JSON cannot carry it as a string.
    return {"b64": base64.b64encode(raw).decode("ascii")}


def tensor_to_json(array: np.ndarray, name: str = "") -> Any:
    """A tensor as nested JSON-ready lists.

    float32/float16 values are written in their shortest round-tripping decimal form (TF
    Serving does the same, so 0.1f is 0.1, not 0.10000000149011612). String tensors are UTF-8
    text, or ``{"b64": ...}`` when the output name ends in ``_bytes`` (TF Serving's rule) or the
    bytes are not valid UTF-8.
    """
    array = np.asarray(array)
    flat = array.reshape(-1)
    kind = array.dtype.kind
    if array.dtype == object or kind in "SU":
        as_bytes = name.endswith("_bytes")
        values = [_string_json(v, as_bytes) for v in flat]
    elif kind == "f" and array.dtype.itemsize <= 4:
        values = [float(str(v)) for v in flat]
    elif kind in "fiub":
        values = flat.tolist()
    else:
        raise _invalid(f"Failed to write JSON value for tensor type: {array.dtype}")
    if array.ndim == 0:
        return values[0]
    nested = np.empty(len(values), dtype=object)
    nested[:] = values
    return nested.reshape(array.shape).tolist()


def predict_response_json(outputs: Mapping[str, np.ndarray], request_format: str) -> dict:
    """The predict response body: "predictions" (row format) or "outputs" (columnar)."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if request_format == COLUMNAR_FORMAT:
        if len(names) == 1:
            return {"outputs": tensor_to_json(outputs[names[0]], names[0])}
        return {"outputs": {name: tensor_to_json(outputs[name], name) for name in names}}
    if request_format != ROW_FORMAT:
        raise _invalid("Invalid request format")
    batch_size = 0
    for name in names:
        array = np.asarray(outputs[name])
        if array.ndim == 0:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        if array.shape[0] < 1:
            raise _invalid(f"Tensor name: {name} has invalid batch size: {array.shape[0]}")
        if batch_size and array.shape[0] != batch_size:
            raise _invalid(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch_size}"
            )
        batch_size = array.shape[0]
    values = {name: tensor_to_json(outputs[name], name) for name in names}
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{name: values[name][i] for name in names} for i in range(batch_size)]}


def dumps(payload: Any) -> bytes:
    """JSON bytes as TF Serving writes them (NaN and Infinity as bare tokens)."""
    return json.dumps(payload, allow_nan=True).encode()


# ---------------------------------------------------------------------------------------------
# REST routes (http_rest_api_util.cc)
# ---------------------------------------------------------------------------------------------

_V1_PATH = re.compile(r"(?i)/v1/.*", re.S)
_PREDICT_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)"
)
_STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)
_INT64_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class RestRoute:
    """What a REST request asks for."""

    kind: str  # "predict", "classify", "regress", "status" or "metadata"
    model_name: str
    version: int | None = None
    label: str | None = None


def parse_rest_route(method: str, uri: str) -> RestRoute:
    """The route of ``METHOD URI`` (the URI with its query, as TF Serving matches it)."""
    if not _V1_PATH.fullmatch(uri):
        raise ServingError("NOT_FOUND", f"Not found: {method} {uri}")
    malformed = _invalid(f"Malformed request: {method} {uri}")
    if method == "POST":
        match = _PREDICT_PATH.fullmatch(uri)
    elif method == "GET":
        match = _STATUS_PATH.fullmatch(uri)
    else:
        raise malformed
    if match is None:
        raise malformed
    name = urllib.parse.unquote(match.group(1) or "")
    version = None
    if match.group(2):
        version = int(match.group(2))
        if version > _INT64_MAX:
            raise _invalid(f"Failed to convert version: {match.group(2)} to numeric.")
    label = urllib.parse.unquote(match.group(3)) if match.group(3) else None
    if method == "POST":
        kind = match.group(4)
        if kind not in ("classify", "regress", "predict"):
            raise malformed  # TF Serving compares the (case-insensitively matched) verb exactly.
    else:
        kind = "metadata" if match.group(4) == "metadata" else "status"
        if not name:
            raise _invalid("Missing model name in request.")
    return RestRoute(kind, name, version, label)


def model_status_json(statuses: Iterable[VersionStatus]) -> dict:
    """GetModelStatusResponse as TF Serving prints it (always_print_primitive_fields)."""
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": s.state,
                "status": {"error_code": s.error_code, "error_message": s.error_message},
            }
            for s in statuses
        ]
    }


def _servable_request(name: str, version: int | None) -> str:
    return f"Specific({name}, {version})" if version is not None else f"Latest({name})"


# ---------------------------------------------------------------------------------------------
# Loaded versions and the version manager
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class VersionStatus:
    """One version's state, as ModelService.GetModelStatus reports it."""

    version: int
    state: str = "START"  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


def _clean_tf_message(message: str) -> str:
    """The op's own message from a TF runtime error, without the eager call-site preamble.

    ``Graph execution error: ... Detected at node X ... <reason>\\n\\t [[{{node X}}]] [Op:..]``
    becomes ``<reason>\\n\\t [[{{node X}}]]``, close to what TF Serving's Session::Run gives.
    """
    lines = message.split("\n")
    for index, line in enumerate(lines):
        if line.startswith("\t [[") and index > 0:
            node = re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", line)
            return f"{lines[index - 1].strip()}\n{node}"
    text = re.sub(r"^Graph execution error:\s*", "", message.strip())
    return re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", text)


def _error_from_exception(err: BaseException) -> ServingError:
    """A ServingError for anything a TensorFlow call raised."""
    if isinstance(err, ServingError):
        return err
    error_code = getattr(err, "error_code", None)
    if isinstance(error_code, int):
        return ServingError(code_name(error_code), _clean_tf_message(getattr(err, "message", "")))
    if isinstance(err, TypeError | ValueError):
        return _invalid(str(err))
    return ServingError("INTERNAL", f"{type(err).__name__}: {err}")


def read_signature_defs(saved_model_dir: str | os.PathLike) -> dict[str, Any]:
    """The SignatureDef protos of the 'serve' MetaGraph, as TF Serving's metadata reports them."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    path = Path(saved_model_dir)
    if (path / "saved_model.pb").exists():
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # Partial parses warn; refuse them.
            try:
                saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
            except (RuntimeWarning, ValueError) as err:  # DecodeError is a ValueError.
                raise ServingError(
                    "DATA_LOSS", f"{path / 'saved_model.pb'} is not a valid SavedModel: {err}"
                ) from None
    else:
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ServingError("NOT_FOUND", f"No MetaGraph tagged 'serve' in {saved_model_dir}")


class LoadedVersion:
    """One loaded SavedModel version: its signatures and the functions that run them."""

    def __init__(self, model_name: str, version: int, path: str):
        import tensorflow as tf
        from tensorflow.core.framework import types_pb2

        self.model_name = model_name
        self.version = version
        self.path = path
        self.signature_defs = read_signature_defs(path)
        self.module = tf.saved_model.load(path, tags=["serve"])
        self.functions = dict(self.module.signatures)
        self.input_specs: dict[str, dict[str, TensorSpec]] = {}
        for signature, definition in self.signature_defs.items():
            specs = {}
            for name, info in definition.inputs.items():
                shape = None
                if not info.tensor_shape.unknown_rank:
                    shape = tuple(d.size if d.size >= 0 else None for d in info.tensor_shape.dim)
                specs[name] = TensorSpec(types_pb2.DataType.Name(info.dtype), shape)
            self.input_specs[signature] = specs
        self.warmup_records = self._replay_warmup_requests()

    def _replay_warmup_requests(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` as TF Serving does at load time.

        Every record is a PredictionLog, run once; any failure fails the load (TF Serving's
        saved_model_warmup_util.cc). Only predict_log records are supported here. Returns the
        number of records replayed (0 without a warmup file).
        """
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        from trainer_module.export import WARMUP_DIR, WARMUP_FILE

        path = os.path.join(self.path, WARMUP_DIR, WARMUP_FILE)
        if not os.path.isfile(path):
            return 0
        count = 0
        try:
            for record in tf.data.TFRecordDataset(path):
                count += 1
                if count > _MAX_WARMUP_RECORDS:
                    raise _invalid(
                        f"Number of warmup records exceeds the maximum ({_MAX_WARMUP_RECORDS}) "
                        f"at {path}"
                    )
                log = prediction_log_pb2.PredictionLog()
                try:
                    log.ParseFromString(record.numpy())
                except Exception:  # noqa: BLE001 - DecodeError and friends
                    raise _invalid(f"Failed to parse warmup record {count} from {path}") from None
                kind = log.WhichOneof("log_type")
                if kind != "predict_log":
                    raise ServingError(
                        "UNIMPLEMENTED",
                        f"Warmup record {count} in {path} is a {kind}; the local server "
                        "replays predict_log records only",
                    )
                request = log.predict_log.request
                inputs = {name: _array_from_tensor_proto(t) for name, t in request.inputs.items()}
                try:
                    self.predict(
                        request.model_spec.signature_name, inputs, list(request.output_filter)
                    )
                except ServingError as err:
                    raise ServingError(
                        err.code, f"Warmup record {count} from {path} failed: {err.message}"
                    ) from None
        except tf.errors.DataLossError as err:
            raise ServingError(
                "DATA_LOSS",
                f"{_clean_tf_message(err.message)}. Please verify your warmup data is in "
                "TFRecord format.",
            ) from None
        logger.info("Replayed %d warmup records from %s", count, path)
        return count

    def inputs_for(self, signature_name: str) -> dict[str, TensorSpec]:
        """The inputs of a signature; INVALID_ARGUMENT as the REST API words it when absent."""
        signature = signature_name or DEFAULT_SIGNATURE
        if signature not in self.input_specs:
            raise _invalid(f'Serving signature name: "{signature}" not found in signature def')
        return self.input_specs[signature]

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Runs a signature (predict_util.cc RunPredict); errors as ServingError."""
        import tensorflow as tf
        from tensorflow.core.framework import types_pb2

        signature = signature_name or DEFAULT_SIGNATURE
        function = self.functions.get(signature)
        if function is None or signature not in self.input_specs:
            raise ServingError(
                "FAILED_PRECONDITION", f'Serving signature key "{signature}" not found.'
            )
        specs = self.input_specs[signature]
        if set(inputs) != set(specs):
            sent, wanted = sorted(inputs), sorted(specs)
            if len(sent) != len(wanted):
                raise _invalid(
                    f"input size does not match signature: {len(sent)}!={len(wanted)} "
                    f"len({{{','.join(sent)}}}) != len({{{','.join(wanted)}}}). "
                    f"Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
                    f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}."
                )
            extra = sorted(set(sent) - set(wanted))[0]
            raise _invalid(
                f"input tensor alias not found in signature: {extra}. "
                f"Inputs expected to be in the set {{{','.join(wanted)}}}."
            )
        outputs_wanted = list(output_filter)
        known_outputs = set(self.signature_defs[signature].outputs)
        for alias in outputs_wanted:
            if alias not in known_outputs:
                raise _invalid(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(known_outputs))}}}."
                )
        if len(set(outputs_wanted)) != len(outputs_wanted):
            raise _invalid("duplicate output tensor alias")
        tensors = {}
        for index, name in enumerate(sorted(specs)):
            spec, array = specs[name], np.asarray(inputs[name])
            got = dtype_of_array(array)
            if got is None or got.name != spec.dtype:
                want_name = DTYPES[spec.dtype].tf_name if spec.dtype in DTYPES else spec.dtype
                got_name = got.tf_name if got else str(array.dtype)
                raise _invalid(f"Expects arg[{index}] to be {want_name} but {got_name} is provided")
            if not spec.is_compatible(array.shape):
                raise _invalid(
                    f"Input '{name}' has shape {_shape_string(array.shape)}, which does not "
                    f"match the signature's shape {spec.describe()}"
                )
            tf_dtype = tf.dtypes.as_dtype(types_pb2.DataType.Value(spec.dtype))
            tensors[name] = tf.constant(array, dtype=tf_dtype)
        try:
            result = function(**tensors)
        except Exception as err:  # noqa: BLE001 - every runtime error becomes a status
            raise _error_from_exception(err) from None
        outputs = {name: value.numpy() for name, value in result.items()}
        if outputs_wanted:
            outputs = {name: outputs[name] for name in outputs_wanted}
        return outputs


def _version_fingerprint(path: str) -> tuple:
    """Names, sizes and mtimes of a version's files: a changed directory is retried."""
    entries = []
    for root, _, files in os.walk(path):
        for file_name in files:
            full = os.path.join(root, file_name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


_VERSION_NAME = re.compile(r"\d+", re.ASCII)
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def scan_versions(base_path: str | os.PathLike) -> dict[int, str]:
    """Complete version directories under ``base_path``: integer names holding saved_model.pb.

    A pusher writes a version under a temporary name and renames it into place; directories
    without a ``saved_model.pb`` (or .pbtxt) are still being written and are skipped.
    """
    versions: dict[int, str] = {}
    try:
        entries = list(os.scandir(base_path))
    except OSError:
        return versions
    for entry in entries:
        if not _VERSION_NAME.fullmatch(entry.name) or not entry.is_dir():
            continue
        version = int(entry.name)
        if version > _INT64_MAX:
            continue
        if any(os.path.isfile(os.path.join(entry.path, f)) for f in _SAVED_MODEL_FILES):
            versions.setdefault(version, entry.path)
    return versions


class ModelManager:
    """Loads, serves and unloads the versions of one model, like TF Serving's ServerCore.

    ``version_policy``: "latest" serves the newest version only (TF Serving's default), "all"
    every version. As in TF Serving's availability-preserving policy, a version that is no
    longer wanted stays loaded until a wanted one is available, so a broken new push leaves the
    previous version serving.
    """

    def __init__(
        self,
        model_name: str,
        base_path: str | os.PathLike,
        version_policy: str = "latest",
        loader: Callable[[str, int, str], LoadedVersion] = LoadedVersion,
    ):
        if version_policy not in VERSION_POLICIES:
            raise ValueError(f"version_policy must be one of {VERSION_POLICIES}")
        self.model_name = model_name
        self.base_path = str(base_path)
        self.version_policy = version_policy
        self._loader = loader
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._available: dict[int, LoadedVersion] = {}
        self._states: dict[int, VersionStatus] = {}
        self._failed: dict[int, tuple] = {}
        self._reported_empty = False

    # -- queries (any thread) --

    def servable(self, model_name: str, version: int | None = None) -> LoadedVersion:
        """The loaded version asked for (newest when ``version`` is None), else NOT_FOUND."""
        with self._lock:
            if model_name == self.model_name and self._available:
                if version is None:
                    return self._available[max(self._available)]
                if version in self._available:
                    return self._available[version]
        raise ServingError(
            "NOT_FOUND", f"Servable not found for request: {_servable_request(model_name, version)}"
        )

    def status(self, model_name: str, version: int | None = None) -> list[VersionStatus]:
        """Every version seen so far (or one), like ModelService.GetModelStatus."""
        with self._lock:
            known = self._states if model_name == self.model_name else {}
            if version is not None:
                if version not in known:
                    raise ServingError(
                        "NOT_FOUND", f"Could not find version {version} of model {model_name}"
                    )
                return [dataclasses.replace(known[version])]
            if not known:
                raise ServingError(
                    "NOT_FOUND", f"Could not find any versions of model {model_name}"
                )
            return [dataclasses.replace(known[v]) for v in sorted(known, reverse=True)]

    def available_versions(self) -> list[int]:
        with self._lock:
            return sorted(self._available)

    # -- polling (one thread at a time) --

    def poll(self) -> None:
        """Scans the model folder once; loads wanted versions and unloads unwanted ones."""
        with self._poll_lock:
            on_disk = scan_versions(self.base_path)
            if not on_disk and not self._reported_empty:
                logger.warning(
                    "No versions of servable %s found under base path %s",
                    self.model_name,
                    self.base_path,
                )
            self._reported_empty = not on_disk
            if self.version_policy == "all":
                wanted = set(on_disk)
            else:
                wanted = {max(on_disk)} if on_disk else set()
            for version in sorted(wanted, reverse=True):
                with self._lock:
                    if version in self._available:
                        continue
                fingerprint = _version_fingerprint(on_disk[version])
                if self._failed.get(version) == fingerprint:
                    continue  # Failed before and unchanged since: do not retry.
                self._load(version, on_disk[version], fingerprint)
            with self._lock:
                loaded = sorted(self._available)
            unwanted = [v for v in loaded if v not in wanted]
            if unwanted and not any(v in loaded for v in wanted):
                unwanted = unwanted[:-1]  # Keep the newest until a wanted version is up.
            for version in unwanted:
                self._unload(version)

    def _set_state(self, version: int, state: str, code: str = "OK", message: str = "") -> None:
        with self._lock:
            self._states[version] = VersionStatus(version, state, code, message)

    def _load(self, version: int, path: str, fingerprint: tuple) -> None:
        logger.info("Loading servable %s version %d from %s", self.model_name, version, path)
        self._set_state(version, "LOADING")
        started = time.monotonic()
        try:
            loaded = self._loader(self.model_name, version, path)
        except Exception as err:  # noqa: BLE001 - a bad version is reported, never fatal
            error = _error_from_exception(err)
            if error.code == "INTERNAL":
                error = ServingError("UNKNOWN", error.message)
            logger.error(
                "Loading servable %s version %d failed: %s", self.model_name, version, error.message
            )
            after = _version_fingerprint(path)
            # Retry on a later poll only if the files changed (e.g. were still being written).
            self._failed[version] = fingerprint if after == fingerprint else ()
            self._set_state(version, "END", error.code, error.message)
            return
        self._failed.pop(version, None)
        with self._lock:
            self._available[version] = loaded
            self._states[version] = VersionStatus(version, "AVAILABLE")
        logger.info(
            "Servable %s version %d is AVAILABLE (loaded in %.1f s)",
            self.model_name,
            version,
            time.monotonic() - started,
        )

    def _unload(self, version: int) -> None:
        with self._lock:
            self._states[version] = VersionStatus(version, "UNLOADING")
            self._available.pop(version, None)
            self._states[version] = VersionStatus(version, "END")
        logger.info("Unloaded servable %s version %d", self.model_name, version)


# ---------------------------------------------------------------------------------------------
# The APIs, independent of the transports
# ---------------------------------------------------------------------------------------------


def _tensor_proto_from_array(array: np.ndarray):
    """A TensorProto with typed value fields, as TF Serving's AsProtoField writes outputs."""
    from tensorflow.core.framework import tensor_pb2, types_pb2

    array = np.asarray(array)
    proto = tensor_pb2.TensorProto()
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    flat = array.reshape(-1)
    dtype = dtype_of_array(array)
    name = dtype.name if dtype else ""
    if name == "DT_STRING":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif name == "DT_FLOAT":
        proto.dtype = types_pb2.DT_FLOAT
        proto.float_val.extend(flat.tolist())
    elif name == "DT_DOUBLE":
        proto.dtype = types_pb2.DT_DOUBLE
        proto.double_val.extend(flat.tolist())
    elif name in ("DT_INT32", "DT_INT16", "DT_INT8", "DT_UINT8", "DT_UINT16"):
        proto.dtype = types_pb2.DataType.Value(name)
        proto.int_val.extend(flat.tolist())
    elif name == "DT_INT64":
        proto.dtype = types_pb2.DT_INT64
        proto.int64_val.extend(flat.tolist())
    elif name == "DT_UINT32":
        proto.dtype = types_pb2.DT_UINT32
        proto.uint32_val.extend(flat.tolist())
    elif name == "DT_UINT64":
        proto.dtype = types_pb2.DT_UINT64
        proto.uint64_val.extend(flat.tolist())
    elif name == "DT_BOOL":
        proto.dtype = types_pb2.DT_BOOL
        proto.bool_val.extend(flat.tolist())
    elif name == "DT_HALF":
        proto.dtype = types_pb2.DT_HALF
        proto.half_val.extend(flat.view(np.uint16).tolist())
    else:
        import tensorflow as tf

        proto = tf.make_tensor_proto(array)
    return proto


def _array_from_tensor_proto(proto) -> np.ndarray:
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except Exception as err:  # noqa: BLE001 - a malformed proto is the client's error
        raise _invalid(f"Cannot convert TensorProto: {type(err).__name__}: {err}") from None


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
                raise _invalid(
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
            raise _invalid(
                f"Version labels are not supported by the local server: {model_spec.version_label}"
            )
        return model_spec.version.value if model_spec.HasField("version") else None

    def grpc_predict(self, request):
        from tensorflow_serving.apis import predict_pb2

        spec = request.model_spec
        servable = self.manager.servable(spec.name, self._spec_version(spec))
        signature = spec.signature_name or DEFAULT_SIGNATURE
        inputs = {name: _array_from_tensor_proto(t) for name, t in request.inputs.items()}
        outputs = servable.predict(signature, inputs, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(_tensor_proto_from_array(array))
        return response

    def grpc_metadata(self, request):
        from tensorflow_serving.apis import get_model_metadata_pb2

        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise _invalid(f"Metadata field {field} is not supported")
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
            raise _invalid("Missing ModelSpec")
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
) -> ServerProcess:
    """Starts ``python -m serving.server`` and waits until it serves (free ports by default).

    The child writes its ports to a ready file once both APIs listen; its output goes to
    ``log_path`` (a temporary file by default). Raises RuntimeError if it exits first and
    TimeoutError after ``startup_timeout`` seconds (the child is then killed).
    """
    work_dir = Path(tempfile.mkdtemp(prefix="local-serving-"))
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
