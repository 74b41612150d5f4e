"""TF Serving's JSON <-> tensor rules as implemented by serving.protocol (no TensorFlow needed).

The expected messages and status codes are those of tensorflow_serving/util/json_tensor.cc,
model_servers/http_rest_api_util.cc and model_servers/http_server.cc.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from serving.protocol import (
    COLUMNAR_FORMAT,
    HTTP_STATUS_FOR_CODE,
    ROW_FORMAT,
    ServingError,
    TensorSpec,
    VersionStatus,
    array_from_tensor_proto,
    decode_b64_object,
    model_status_json,
    parse_predict_request,
    parse_rest_route,
    predict_response_json,
    tensor_from_json,
    tensor_proto_from_array,
    tensor_to_json,
)
from trainer_module import features

IMAGES = {features.SERVING_INPUT_KEY: TensorSpec("DT_STRING", (None,))}
TWO_INPUTS = {"x": TensorSpec("DT_FLOAT", (None, 2)), "n": TensorSpec("DT_INT64", (None,))}


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def parse(body, specs=IMAGES):
    if not isinstance(body, str | bytes):
        body = json.dumps(body)
    return parse_predict_request(body, lambda signature: specs)


def error_of(body, specs=IMAGES) -> ServingError:
    with pytest.raises(ServingError) as info:
        parse(body, specs)
    return info.value


# --- Requests ---------------------------------------------------------------------------------


def test_row_format_with_b64_strings_is_batched_along_the_first_dimension():
    request = parse({"instances": [b64(b"\x89PNG one"), b64(b"two")]})
    assert request.format == ROW_FORMAT
    assert request.signature_name == ""
    images = request.inputs[features.SERVING_INPUT_KEY]
    assert images.shape == (2,)
    assert list(images) == [b"\x89PNG one", b"two"]


def test_row_format_with_named_objects_and_signature_name():
    request = parse(
        {
            "signature_name": features.SERVING_SIGNATURE,
            "instances": [{features.SERVING_INPUT_KEY: b64(b"a")}],
        }
    )
    assert request.signature_name == features.SERVING_SIGNATURE
    assert list(request.inputs[features.SERVING_INPUT_KEY]) == [b"a"]


def test_columnar_format_single_input_as_plain_list_or_named_object():
    plain = parse({"inputs": [b64(b"a"), "text"]})
    named = parse({"inputs": {features.SERVING_INPUT_KEY: [b64(b"a"), "text"]}})
    for request in (plain, named):
        assert request.format == COLUMNAR_FORMAT
        assert list(request.inputs[features.SERVING_INPUT_KEY]) == [b"a", b"text"]


def test_multiple_inputs_numeric_types():
    row = parse({"instances": [{"x": [1, 2.5], "n": 7}, {"x": [3, 4], "n": -1}]}, TWO_INPUTS)
    assert row.inputs["x"].dtype == np.float32 and row.inputs["x"].shape == (2, 2)
    np.testing.assert_array_equal(row.inputs["n"], np.array([7, -1], np.int64))
    columnar = parse({"inputs": {"x": [[1, 2]], "n": [5]}}, TWO_INPUTS)
    assert columnar.inputs["x"].tolist() == [[1.0, 2.0]]


def test_b64_padding_may_be_omitted_but_bad_base64_is_rejected():
    assert decode_b64_object({"b64": "YWJj"}) == b"abc"
    assert decode_b64_object({"b64": "YWI"}) == b"ab"
    err = error_of({"instances": [{"b64": "***not base64***"}]})
    assert err.code == "INVALID_ARGUMENT" and err.http_status == 400
    assert "Unable to base64 decode" in err.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", "JSON Parse error: The document is empty"),
        ("{not json", "JSON Parse error: "),
        ("[1, 2]", "Is not object"),
        ({"instance": [b64(b"a")]}, "Missing 'inputs' or 'instances' key"),
        ({"instances": [], "inputs": []}, "expecting only one of 'inputs' or 'instances'"),
        ({"instances": b64(b"a")}, "Excepting 'instances' to be an list/array"),
        ({"instances": []}, "No values in 'instances' array"),
        ({"signature_name": 3, "instances": ["a"]}, "'signature_name' key must be a string"),
        ({"inputs": {"image": [b64(b"a")]}}, "Missing named input: images in 'inputs' object."),
        (
            {"instances": [{"image": b64(b"a")}]},
            "Failed to process element: 0 key: image of 'instances' list. Error: "
            "INVALID_ARGUMENT: JSON object: does not have named input: image",
        ),
        ({"instances": [{"c": 1}]}, "does not have named input: c"),
        ({"instances": [5]}, "Type: Number is not of expected type: string"),
        ({"instances": [{"b64": "YQ==", "extra": 1}]}, "does not have named input: b64"),
        ({"instances": ["a", ["b"]]}, "Expecting shape [] but got: [1]"),
        ({"inputs": ["a", ["b"]]}, "Encountered list at unexpected level: 1 expected < 1"),
        ({"inputs": [["a"], "b"]}, "found at incorrect level: 2 in the JSON DOM"),
    ],
)
def test_malformed_requests_are_invalid_argument(body, expected):
    err = error_of(body)
    assert err.code == "INVALID_ARGUMENT"
    assert err.http_status == 400
    assert expected in err.message
    assert json.loads(err.to_json()) == {"error": err.message}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"instances": [[1, 2], {"x": [1, 2], "n": 1}]}, "instances is a plain list"),
        ({"inputs": [[1, 2]]}, "inputs is a plain value/list, but expecting an object"),
        ({"instances": [{"x": [1, 2]}]}, "must only have keys: n,x"),
        ({"instances": [{"x": [1, 2], "n": 1}, {"x": [1], "n": 1}]}, "Expecting tensor size"),
        ({"instances": [{"x": [1, 2], "n": 1.5}]}, "is not of expected type: int64"),
        ({"instances": [{"x": [1, True], "n": 1}]}, "Type: True is not of expected type: float"),
        ({"instances": [{"x": [1, 2**30], "n": 1}]}, "without loss of precision"),
        ({"instances": [{"x": [[1, 2], [3]], "n": 1}]}, "Encountered list at unexpected size"),
        ({"instances": [{"x": [1, 2], "n": 1}, [1, 2]]}, "Expecting object but got list"),
    ],
)
def test_malformed_multi_input_requests(body, expected):
    err = error_of(body, TWO_INPUTS)
    assert err.http_status == 400
    assert expected in err.message


def test_signature_lookup_errors_pass_through_after_json_is_parsed():
    def unknown_model(signature):
        raise ServingError("NOT_FOUND", "Servable not found for request: Latest(nope)")

    with pytest.raises(ServingError) as info:
        parse_predict_request(json.dumps({"instances": ["a"]}), unknown_model)
    assert info.value.http_status == 404
    with pytest.raises(ServingError) as info:  # Malformed JSON is reported first, as TF Serving.
        parse_predict_request("{oops", unknown_model)
    assert info.value.http_status == 400


def test_error_values_are_truncated():
    err = error_of({"instances": {"b64": "A" * 100_000}})
    assert len(err.message) < 1000


def test_tensor_from_json_scalars_and_unsupported_types():
    assert tensor_from_json(3, "DT_INT32").shape == ()
    assert tensor_from_json([[True], [False]], "DT_BOOL").dtype == np.bool_
    with pytest.raises(ServingError) as info:
        tensor_from_json(300, "DT_UINT8")
    assert info.value.http_status == 400
    with pytest.raises(ServingError) as info:
        tensor_from_json(1.0, "DT_HALF")
    assert info.value.code == "UNIMPLEMENTED" and info.value.http_status == 501


# --- Responses --------------------------------------------------------------------------------


OUTPUTS = {
    features.PROBABILITIES_OUTPUT: np.array([[0.1, 0.9], [0.75, 0.25]], np.float32),
    features.CLASS_ID_OUTPUT: np.array([1, 0], np.int64),
    features.CLASS_NAME_OUTPUT: np.array([b"bag", b"coat"], dtype=object),
}


def test_row_response_with_several_outputs_is_a_list_of_objects():
    body = predict_response_json(OUTPUTS, ROW_FORMAT)
    assert body == {
        "predictions": [
            {"class_id": 1, "class_name": "bag", "probabilities": [0.1, 0.9]},
            {"class_id": 0, "class_name": "coat", "probabilities": [0.75, 0.25]},
        ]
    }


def test_columnar_response_with_several_outputs_is_an_object_of_tensors():
    body = predict_response_json(OUTPUTS, COLUMNAR_FORMAT)
    assert body["outputs"]["class_name"] == ["bag", "coat"]
    assert body["outputs"]["probabilities"] == [[0.1, 0.9], [0.75, 0.25]]


def test_single_output_responses_are_bare_values():
    only = {"scores": np.array([[1.0], [2.0]], np.float32)}
    assert predict_response_json(only, ROW_FORMAT) == {"predictions": [[1.0], [2.0]]}
    assert predict_response_json(only, COLUMNAR_FORMAT) == {"outputs": [[1.0], [2.0]]}


def test_float32_values_are_written_in_shortest_form_and_nan_survives():
    values = tensor_to_json(np.array([0.1, 1 / 3, np.nan, -np.inf], np.float32))
    assert values[:2] == [0.1, 0.33333334]
    assert np.isnan(values[2]) and values[3] == -np.inf
    assert json.dumps(values) == "[0.1, 0.33333334, NaN, -Infinity]"


def test_strings_that_are_not_utf8_or_named_bytes_are_base64():
    raw = np.array([b"ok", b"\xff\xfe"], dtype=object)
    assert tensor_to_json(raw, "name") == ["ok", {"b64": base64.b64encode(b"\xff\xfe").decode()}]
    assert tensor_to_json(raw[:1], "image_bytes") == [{"b64": "b2s="}]


def test_row_response_batch_size_errors():
    with pytest.raises(ServingError, match="inconsistent batch size"):
        predict_response_json({"a": np.zeros(2), "b": np.zeros(3)}, ROW_FORMAT)
    with pytest.raises(ServingError, match="has no shape information"):
        predict_response_json({"a": np.float32(1)}, ROW_FORMAT)


# --- Routes and status ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "uri", "route"),
    [
        ("GET", "/v1/models/m", ("status", "m", None)),
        ("GET", "/v1/models/m/versions/3", ("status", "m", 3)),
        ("GET", "/v1/models/m/metadata", ("metadata", "m", None)),
        ("GET", "/v1/models/m/versions/3/metadata", ("metadata", "m", 3)),
        ("POST", "/v1/models/m:predict", ("predict", "m", None)),
        ("POST", "/V1/MODELS/m/versions/12:predict", ("predict", "m", 12)),
        ("POST", "/v1/models/my%20model:predict", ("predict", "my model", None)),
    ],
)
def test_rest_routes(method, uri, route):
    parsed = parse_rest_route(method, uri)
    assert (parsed.kind, parsed.model_name, parsed.version) == route


@pytest.mark.parametrize(
    ("method", "uri", "status", "message"),
    [
        ("GET", "/v1/models/m:predict", 400, "Malformed request: GET /v1/models/m:predict"),
        ("POST", "/v1/models/m", 400, "Malformed request: POST /v1/models/m"),
        ("DELETE", "/v1/models/m", 400, "Malformed request"),
        ("POST", "/v1/models/m:predict?x=1", 400, "Malformed request"),
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/models/m/versions/99999999999999999999", 400, "Failed to convert version"),
        ("GET", "/healthz", 404, "Not found"),
    ],
)
def test_bad_rest_routes(method, uri, status, message):
    with pytest.raises(ServingError) as info:
        parse_rest_route(method, uri)
    assert info.value.http_status == status
    assert message in info.value.message


def test_http_status_mapping_follows_tf_serving():
    assert HTTP_STATUS_FOR_CODE["INVALID_ARGUMENT"] == 400
    assert HTTP_STATUS_FOR_CODE["FAILED_PRECONDITION"] == 400
    assert HTTP_STATUS_FOR_CODE["NOT_FOUND"] == 404
    assert HTTP_STATUS_FOR_CODE["RESOURCE_EXHAUSTED"] == 429
    assert HTTP_STATUS_FOR_CODE["UNIMPLEMENTED"] == 501
    assert HTTP_STATUS_FOR_CODE["UNAVAILABLE"] == 503


def test_model_status_json_matches_tf_serving_field_names():
    body = model_status_json([VersionStatus(2, "AVAILABLE"), VersionStatus(1, "END")])
    assert body["model_version_status"][0] == {
        "version": "2",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }


@pytest.mark.parametrize(
    "array",
    [
        np.array([[1.5, -2.0]], np.float32),
        np.array([0.25], np.float64),
        np.array([[1, -2], [3, 4]], np.int32),
        np.array([-3], np.int8),
        np.array([255], np.uint8),
        np.array([2**40], np.int64),
        np.array([2**33], np.uint64),
        np.array([True, False]),
        np.array([1.5, -0.5], np.float16),
        np.array([b"png bytes", b""], object),
        np.zeros((0, 3), np.float32),
    ],
    ids=lambda a: str(a.dtype),
)
def test_tensor_proto_round_trip_keeps_dtype_shape_and_values(array):
    proto = tensor_proto_from_array(array)
    assert not proto.tensor_content  # typed value fields, as TF Serving writes outputs
    back = array_from_tensor_proto(proto)
    assert back.shape == array.shape
    assert back.dtype == array.dtype
    assert back.tolist() == array.tolist()


# --- Classify / regress requests and results ---------------------------------------------------


def test_classify_regress_json_becomes_examples_with_typed_features():
    from serving.protocol import parse_classify_regress_request, serialized_examples

    signature, request_input = parse_classify_regress_request(
        json.dumps(
            {
                "signature_name": "classify_x",
                "context": {"country": "fr", "weights": [0.5, 1.5]},
                "examples": [{"x": 1, "flag": True, "raw": b64(b"\x00\xff")}, {"x": [2, 3]}],
            }
        ),
        "classify",
    )
    assert signature == "classify_x"
    context = request_input.example_list_with_context.context.features.feature
    assert context["country"].bytes_list.value == [b"fr"]
    assert list(context["weights"].float_list.value) == [0.5, 1.5]
    first, second = request_input.example_list_with_context.examples
    assert first.features.feature["x"].int64_list.value == [1]
    assert first.features.feature["flag"].int64_list.value == [1]
    assert first.features.feature["raw"].bytes_list.value == [b"\x00\xff"]
    assert second.features.feature["x"].int64_list.value == [2, 3]
    # Serialized with the context in front: the example's own features override it.
    serialized = serialized_examples(request_input)
    assert serialized.shape == (2,) and serialized[0].startswith(
        request_input.example_list_with_context.context.SerializeToString()
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "When method is classify, key 'examples' is expected and was not found"),
        ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
        ({"examples": [1]}, "Example must be JSON object but got JSON Number"),
        ({"examples": [{"x": None}]}, "Feature: x has element with unexpected JSON type: Null"),
        ({"examples": [{"x": [[1]]}]}, "Feature: x has element with unexpected JSON type: Array"),
        ({"examples": [{"x": {"a": 1}}]}, "Feature: x has element with unexpected JSON type"),
        (
            {"examples": [{"x": [1, 2.5]}]},
            "Unexpected element type in feature: x expecting type: int64",
        ),
        (
            {"examples": [{"x": [1.5, "a"]}]},
            "Unexpected element type in feature: x expecting type: float",
        ),
        ({"examples": [{"x": 2**63}]}, "Feature: x has uint64 element. Only int64 is supported."),
        ({"examples": [{"x": 1e300}]}, "to float without loss of precision"),
        ({"context": [], "examples": [{}]}, "Example must be JSON object but got JSON Array"),
        ({"examples": [{"\ud800": 1}]}, 'Feature name "\\ud800" is not valid UTF-8'),
    ],
)
def test_bad_classify_regress_json(body, expected):
    from serving.protocol import parse_classify_regress_request

    with pytest.raises(ServingError) as info:
        parse_classify_regress_request(json.dumps(body), "classify")
    assert info.value.code == "INVALID_ARGUMENT"
    assert expected in info.value.message


def test_classification_and_regression_results_as_tf_serving_writes_them():
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    from serving.protocol import classification_result_json, regression_result_json

    result = classification_pb2.ClassificationResult()
    for label, score in (("cat", 0.1), ("dog", 0.9)):
        cls = result.classifications.add().classes.add()
        cls.label, cls.score = label, score
    assert classification_result_json(result) == {"result": [[["cat", 0.1]], [["dog", 0.9]]]}
    regression = regression_pb2.RegressionResult()
    regression.regressions.add().value = 2.5
    assert regression_result_json(regression) == {"result": [2.5]}
    for empty, convert in (
        (classification_pb2.ClassificationResult(), classification_result_json),
        (regression_pb2.RegressionResult(), regression_result_json),
    ):
        with pytest.raises(ServingError, match="Cannot convert empty"):
            convert(empty)


def test_python_exceptions_become_tf_serving_shaped_statuses():
    from serving.protocol import python_error_status

    try:
        b"ab\xff".decode("utf-8")
    except UnicodeDecodeError as err:
        status = python_error_status(err, "JSON Parse error: ")
    assert (status.code, status.message) == (
        "INVALID_ARGUMENT",
        "JSON Parse error: Invalid encoding in string. at offset: 2",
    )
    status = python_error_status(RecursionError("maximum recursion depth exceeded"))
    assert status.code == "INVALID_ARGUMENT" and "recursion" not in status.message
    assert python_error_status(MemoryError()).code == "RESOURCE_EXHAUSTED"
    assert python_error_status(KeyError("x")).code == "INTERNAL"
    body = b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    with pytest.raises(ServingError) as info:
        parse(body)
    assert info.value.message.startswith("JSON Parse error: ")
    assert "RecursionError" not in info.value.message
