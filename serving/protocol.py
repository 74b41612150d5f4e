"""TensorFlow Serving's wire protocol in pure Python/NumPy: status codes, tensor types,
the REST JSON formats and routes.

The JSON<->tensor conversion follows tensorflow_serving/util/json_tensor.cc and the HTTP codes
tensorflow_serving/model_servers/http_server.cc. Only the TensorProto conversions of the gRPC
API import TensorFlow (when called), so the JSON protocol is tested on its own
(tests/unit/test_serving_protocol.py).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from trainer_module import features

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = features.SERVING_SIGNATURE  # TF's kDefaultServingSignatureDefKey

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


def invalid_argument(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def python_error_status(err: BaseException, prefix: str = "") -> ServingError:
    """A TF Serving-shaped status for an exception raised inside Python's own code.

    TF Serving's C++ never says ``UnicodeDecodeError: 'utf-8' codec can't decode...``; its
    JSON parser (rapidjson) says ``Invalid encoding in string. at offset: N``. Python's
    exception names and wording are replaced by such messages, with the byte offset kept.
    """
    if isinstance(err, ServingError):
        return err
    if isinstance(err, UnicodeDecodeError):
        return invalid_argument(f"{prefix}Invalid encoding in string. at offset: {err.start}")
    if isinstance(err, UnicodeEncodeError):
        return invalid_argument(f"{prefix}Invalid encoding in string. at offset: {err.start}")
    if isinstance(err, RecursionError):
        return invalid_argument(f"{prefix}The document is nested too deeply to parse.")
    if isinstance(err, MemoryError):
        return ServingError("RESOURCE_EXHAUSTED", f"{prefix}Out of memory")
    if isinstance(err, json.JSONDecodeError):
        return invalid_argument(f"{prefix}{err.msg} at offset: {err.pos}")
    if isinstance(err, TypeError | ValueError):
        return invalid_argument(f"{prefix}{err}")
    return ServingError("INTERNAL", f"{prefix}{err}")


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
        return shape_string(self.shape)

    def is_compatible(self, shape: Sequence[int]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape, strict=True)
        )


def shape_string(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ",".join("-1" if d is None else str(d) for d in shape) + "]"


# ---------------------------------------------------------------------------------------------
# JSON -> tensors (json_tensor.cc FillPredictRequestFromJson)
# ---------------------------------------------------------------------------------------------

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
    return invalid_argument(
        f"JSON Value: {_json_repr(value)} Type: {_json_type(value)} "
        f"is not of expected type: {dtype.tf_name}"
    )


def is_b64_object(value: Any) -> bool:
    """``{"b64": "<string>"}`` and nothing else: how binary strings travel in JSON."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64_object(value: Any) -> bytes:
    """The bytes of a ``{"b64": ...}`` object (standard alphabet; padding may be omitted)."""
    if not is_b64_object(value):
        raise invalid_argument(
            f"JSON Value: {_json_repr(value)} not formatted correctly for base64 data"
        )
    text = value["b64"].strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


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
            raise invalid_argument(
                f"Cannot convert JSON value: {_json_repr(value)} to {kind} "
                "without loss of precision."
            )
        return value
    if kind == "int32":
        if not (_is_int(value) and _INT32_RANGE[0] <= value <= _INT32_RANGE[1]):
            raise _type_error(value, dtype)
        info = np.iinfo(dtype.numpy)
        if not info.min <= value <= info.max:
            raise invalid_argument(f"JSON Value: {value} is out of range for type: {dtype.tf_name}")
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
            raise invalid_argument(
                f"JSON lists are nested deeper than the maximum rank {_MAX_RANK}"
            )
        if not value:
            break
        value = value[0]
    return shape


def _fill_values(value: Any, level: int, shape: list[int], dtype: DType, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
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
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
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
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except json.JSONDecodeError as err:
        raise invalid_argument(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    except (RecursionError, UnicodeDecodeError, ValueError) as err:
        raise python_error_status(err, "JSON Parse error: ") from None
    if not isinstance(document, dict):
        raise invalid_argument(f"JSON Value: {_json_repr(document)} Is not object")
    return document


def signature_name_of(document: Mapping[str, Any]) -> str:
    """The optional "signature_name" of a request ("" when absent)."""
    if "signature_name" not in document:
        return ""
    name = document["signature_name"]
    if not isinstance(name, str):
        raise invalid_argument(
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
        raise invalid_argument(f"JSON object: does not have named input: {name}")
    tensor = tensor_from_json(value, specs[name].dtype)
    if collected.get(name):
        first = collected[name][0]
        if first.size != tensor.size:
            raise invalid_argument(f"Expecting tensor size: {first.size} but got: {tensor.size}")
        if first.shape != tensor.shape:
            raise invalid_argument(
                f"Expecting shape {shape_string(first.shape)} but got: {shape_string(tensor.shape)}"
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
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    objects = _is_element_object(instances[0])
    names = sorted(specs)
    collected: dict[str, list[np.ndarray]] = {}
    for index, element in enumerate(instances):
        if objects:
            if not _is_element_object(element):
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for key, value in element.items():
                try:
                    _add_instance_item(value, key, specs, collected)
                except ServingError as err:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: {err.status_string()}"
                    ) from None
            if set(element) != set(specs):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_json_repr(element)} must only have keys: {','.join(names)}"
                )
        else:
            if _is_element_object(element):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                _add_instance_item(element, names[0], specs, collected)
            except ServingError as err:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {err.status_string()}"
                ) from None
    return {name: _stack(items) for name, items in collected.items()}


def _tensors_from_inputs(value: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """Columnar format: one (batched) value per named input."""
    names = sorted(specs)
    if not isinstance(value, dict) or is_b64_object(value):
        if len(specs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        return {names[0]: tensor_from_json(value, specs[names[0]].dtype)}
    tensors = {}
    for name in names:
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = tensor_from_json(value[name], specs[name].dtype)
    return tensors


def parse_predict_inputs(
    document: Mapping[str, Any], specs: Mapping[str, TensorSpec], signature_name: str = ""
) -> tuple[dict[str, np.ndarray], str]:
    """The input tensors of a predict request and its format (ROW_FORMAT or COLUMNAR_FORMAT)."""
    if not specs:
        raise invalid_argument(
            f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
        )
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {_json_repr(dict(document))} Not formatted correctly expecting only "
            "one of 'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(
                f"JSON Value: {_json_repr(dict(document))} Excepting 'instances' to be an "
                "list/array"
            )
        if not instances:
            raise invalid_argument(
                f"JSON Value: {_json_repr(dict(document))} No values in 'instances' array"
            )
        return _tensors_from_instances(instances, specs), ROW_FORMAT
    if has_inputs:
        return _tensors_from_inputs(document["inputs"], specs), COLUMNAR_FORMAT
    raise invalid_argument("Missing 'inputs' or 'instances' key")


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
        raise invalid_argument(f"Failed to write JSON value for tensor type: {array.dtype}")
    if array.ndim == 0:
        return values[0]
    nested = np.empty(len(values), dtype=object)
    nested[:] = values
    return nested.reshape(array.shape).tolist()


def predict_response_json(outputs: Mapping[str, np.ndarray], request_format: str) -> dict:
    """The predict response body: "predictions" (row format) or "outputs" (columnar)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if request_format == COLUMNAR_FORMAT:
        if len(names) == 1:
            return {"outputs": tensor_to_json(outputs[names[0]], names[0])}
        return {"outputs": {name: tensor_to_json(outputs[name], name) for name in names}}
    if request_format != ROW_FORMAT:
        raise invalid_argument("Invalid request format")
    batch_size = 0
    for name in names:
        array = np.asarray(outputs[name])
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if array.shape[0] < 1:
            raise invalid_argument(f"Tensor name: {name} has invalid batch size: {array.shape[0]}")
        if batch_size and array.shape[0] != batch_size:
            raise invalid_argument(
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
# Classify and regress over REST (json_tensor.cc FillClassifyRegressRequestFromJson)
# ---------------------------------------------------------------------------------------------


def _feature_kind_error(name: str, kind: str | None) -> ServingError:
    names = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
    return invalid_argument(
        f"Unexpected element type in feature: {name} expecting type: "
        f"{names.get(kind or '', 'UNKNOWN')}"
    )


def _add_feature_value(value: Any, name: str, feature) -> None:
    """One JSON value appended to a tf.train.Feature (json_tensor.cc AddValueToFeature)."""
    kind = feature.WhichOneof("kind")

    def check(wanted: str) -> None:
        if kind not in (None, wanted):
            raise _feature_kind_error(name, kind)

    if value is None or isinstance(value, list):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
        )
    if isinstance(value, bool):
        check("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        if not is_b64_object(value):
            raise invalid_argument(
                f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
            )
        check("bytes_list")
        feature.bytes_list.value.append(decode_b64_object(value))
    elif isinstance(value, str):
        check("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, float):
        check("float_list")
        if math.isfinite(value) and abs(value) > 3.4028234663852886e38:
            raise invalid_argument(
                f"Cannot convert JSON value: {_json_repr(value)} to float without loss of "
                "precision."
            )
        feature.float_list.value.append(value)
    else:
        check("int64_list")
        if value >= 2**63:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        if value < -(2**63):
            raise invalid_argument(f"Feature: {name} has element out of the int64 range.")
        feature.int64_list.value.append(value)


def example_from_json(value: Any):
    """A tf.train.Example from a JSON object of feature name -> value or list of values."""
    from tensorflow.core.example import example_pb2

    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        try:
            feature = example.features.feature[name]
        except (UnicodeEncodeError, ValueError):  # A lone surrogate: not valid UTF-8.
            raise invalid_argument(f"Feature name {_json_repr(name)} is not valid UTF-8") from None
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
    return example


def parse_classify_regress_request(body: bytes | str, method: str):
    """A REST :classify / :regress body as (signature_name, tensorflow.serving.Input)."""
    from tensorflow_serving.apis import input_pb2

    document = parse_json_body(body)
    signature = signature_name_of(document)
    request_input = input_pb2.Input()
    has_context = "context" in document
    if has_context:
        request_input.example_list_with_context.context.CopyFrom(
            example_from_json(document["context"])
        )
    if "examples" not in document:
        raise invalid_argument(
            f"JSON Value: {_json_repr(dict(document))} When method is {method}, key "
            "'examples' is expected and was not found"
        )
    examples = document["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(
            f"JSON Value: {_json_repr(dict(document))} Expecting 'examples' value to be an "
            "list/array"
        )
    if not examples:
        raise invalid_argument(
            f"JSON Value: {_json_repr(dict(document))} 'examples' value is an empty array"
        )
    target = (
        request_input.example_list_with_context.examples
        if has_context
        else request_input.example_list.examples
    )
    for item in examples:
        target.add().CopyFrom(example_from_json(item))
    return signature, request_input


def _score_json(score: float) -> Any:
    return float(str(np.float32(score)))  # TF Serving writes floats in shortest form.


def classification_result_json(result) -> dict:
    """A ClassificationResult as TF Serving's REST API writes it: {"result": [[[label, score]]]}.

    Without a classes output the label is ""; without a scores output the score is 0.
    """
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    return {
        "result": [
            [[cls.label, _score_json(cls.score)] for cls in classifications.classes]
            for classifications in result.classifications
        ]
    }


def regression_result_json(result) -> dict:
    """A RegressionResult as TF Serving's REST API writes it: {"result": [value, ...]}."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return {"result": [_score_json(r.value) for r in result.regressions]}


def serialized_examples(request_input) -> np.ndarray:
    """The DT_STRING batch a classify/regress signature is fed (util.cc
    InputToSerializedExampleTensor): each Example serialized, with the context's bytes in
    front when there is one, so the example's own features override the context's."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        context = with_context.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in with_context.examples]
    else:
        serialized = []
    if not serialized:
        raise invalid_argument("Input is empty.")
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


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
INT64_MAX = 2**63 - 1


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
    malformed = invalid_argument(f"Malformed request: {method} {uri}")
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
        if version > INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {match.group(2)} to numeric.")
    label = urllib.parse.unquote(match.group(3)) if match.group(3) else None
    if method == "POST":
        kind = match.group(4)
        if kind not in ("classify", "regress", "predict"):
            raise malformed  # TF Serving compares the (case-insensitively matched) verb exactly.
    else:
        kind = "metadata" if match.group(4) == "metadata" else "status"
        if not name:
            raise invalid_argument("Missing model name in request.")
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


def servable_request(name: str, version: int | None) -> str:
    return f"Specific({name}, {version})" if version is not None else f"Latest({name})"


@dataclasses.dataclass
class VersionStatus:
    """One version's state, as ModelService.GetModelStatus reports it."""

    version: int
    state: str = "START"  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


# ---------------------------------------------------------------------------------------------
# TensorProto <-> NumPy (the gRPC API)
# ---------------------------------------------------------------------------------------------


# TensorProto's typed value field for each dtype (tensor.proto); others go through TF.
_PROTO_VALUE_FIELDS = {
    "DT_FLOAT": "float_val",
    "DT_DOUBLE": "double_val",
    "DT_INT32": "int_val",
    "DT_INT16": "int_val",
    "DT_INT8": "int_val",
    "DT_UINT8": "int_val",
    "DT_UINT16": "int_val",
    "DT_INT64": "int64_val",
    "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
    "DT_BOOL": "bool_val",
}


def tensor_proto_from_array(array: np.ndarray):
    """A TensorProto with typed value fields, as TF Serving's AsProtoField writes outputs."""
    from tensorflow.core.framework import tensor_pb2, types_pb2

    array = np.asarray(array)
    dtype = dtype_of_array(array)
    name = dtype.name if dtype else ""
    if name not in _PROTO_VALUE_FIELDS and name not in ("DT_STRING", "DT_HALF"):
        import tensorflow as tf

        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(name))
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    flat = array.reshape(-1)
    if name == "DT_STRING":
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif name == "DT_HALF":
        proto.half_val.extend(flat.view(np.uint16).tolist())  # the float16 bit patterns
    else:
        getattr(proto, _PROTO_VALUE_FIELDS[name]).extend(flat.tolist())
    return proto


def array_from_tensor_proto(proto) -> np.ndarray:
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except Exception as err:  # noqa: BLE001 - a malformed proto is the client's error
        raise invalid_argument(f"Cannot convert TensorProto: {type(err).__name__}: {err}") from None
