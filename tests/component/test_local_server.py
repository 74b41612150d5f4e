"""The local TF Serving stand-in over a tiny SavedModel with the pipeline's signature contract.

The tiny model decodes each PNG (so undecodable bytes fail like the real model) and answers
fixed probabilities favouring class ``version``, so a test can tell which version answered.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import client
from serving.server import LocalModelServer, start_server_subprocess
from tests.tiny_model import save_tiny_model
from trainer_module import features

MODEL_NAME = "tiny"
NUM_CLASSES = 10
CLASS_NAMES = [f"class_{i}" for i in range(NUM_CLASSES)]
MAX_REQUEST_BYTES = 1024 * 1024
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def tiny_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """SavedModels for versions 1 and 2 (favouring class 1 and class 2), to copy from."""
    root = tmp_path_factory.mktemp("tiny_templates")
    paths = {}
    for version in (1, 2):
        paths[version] = save_tiny_model(root / str(version), NUM_CLASSES, favourite=version)
    return paths


@pytest.fixture(scope="module")
def png(holdout_dir: Path) -> bytes:
    return next(iter(sorted(holdout_dir.glob("*/*.png")))).read_bytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_versions) -> LocalModelServer:
    """A server on version 1 of the tiny model, shared by the read-only tests."""
    base = tmp_path_factory.mktemp("serving") / MODEL_NAME
    base.mkdir()
    shutil.copytree(tiny_versions[1], base / "1")
    server = LocalModelServer(
        base, rest_port=0, grpc_port=0, poll_interval=0.2, max_request_bytes=MAX_REQUEST_BYTES
    )
    server.start()
    yield server
    server.stop()


# --- Helpers ----------------------------------------------------------------------------------


def http_call(server, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
    """One request on a fresh connection; (status, JSON body)."""
    if isinstance(body, dict | list):
        body = json.dumps(body)
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def predict_path(version: int | None = None, model: str = MODEL_NAME) -> str:
    return f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"


def rest_class(server, png: bytes, version: int | None = None) -> tuple[int, str]:
    status, body = http_call(server, "POST", predict_path(version), {"instances": [b64(png)]})
    assert status == 200, body
    return body["predictions"][0]["class_id"], body["predictions"][0]["class_name"]


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def status_by_version(server) -> dict[str, dict]:
    status, body = http_call(server, "GET", f"/v1/models/{MODEL_NAME}")
    assert status == 200, body
    return {s["version"]: s for s in body["model_version_status"]}


def grpc_request(png: bytes, model: str = MODEL_NAME) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[features.SERVING_INPUT_KEY].CopyFrom(tf.make_tensor_proto([png, png]))
    return request


# --- Status and metadata ----------------------------------------------------------------------


def test_model_status(served):
    expected = {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert http_call(served, "GET", f"/v1/models/{MODEL_NAME}") == (200, expected)
    assert http_call(served, "GET", f"/v1/models/{MODEL_NAME}/versions/1") == (200, expected)


def test_model_metadata(served):
    status, body = http_call(served, "GET", f"/v1/models/{MODEL_NAME}/metadata")
    assert status == 200, body
    assert body["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"][features.SERVING_SIGNATURE]
    image_input = signature["inputs"][features.SERVING_INPUT_KEY]
    assert image_input["dtype"] == "DT_STRING"
    assert image_input["tensor_shape"]["dim"][0]["size"] == "-1"
    assert signature["outputs"][features.PROBABILITIES_OUTPUT]["dtype"] == "DT_FLOAT"
    assert signature["outputs"][features.CLASS_ID_OUTPUT]["dtype"] == "DT_INT64"
    assert signature["outputs"][features.CLASS_NAME_OUTPUT]["dtype"] == "DT_STRING"
    assert signature["method_name"] == "tensorflow/serving/predict"


# --- Predict ----------------------------------------------------------------------------------


def test_predict_rest_instances(served, png):
    status, body = http_call(
        served,
        "POST",
        predict_path(),
        {"instances": [b64(png), b64(png)]},
    )
    assert status == 200, body
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        assert set(prediction) == {
            features.PROBABILITIES_OUTPUT,
            features.CLASS_ID_OUTPUT,
            features.CLASS_NAME_OUTPUT,
        }
        assert prediction[features.CLASS_ID_OUTPUT] == 1
        assert prediction[features.CLASS_NAME_OUTPUT] == "class_1"
        assert prediction[features.PROBABILITIES_OUTPUT][1] == pytest.approx(0.9)
        assert len(prediction[features.PROBABILITIES_OUTPUT]) == NUM_CLASSES
    named = {
        "signature_name": features.SERVING_SIGNATURE,
        "instances": [{features.SERVING_INPUT_KEY: b64(png)}],
    }
    status, body = http_call(served, "POST", predict_path(version=1), named)
    assert status == 200 and body["predictions"][0][features.CLASS_NAME_OUTPUT] == "class_1"


def test_predict_rest_inputs(served, png):
    for inputs in ([b64(png)] * 3, {features.SERVING_INPUT_KEY: [b64(png)] * 3}):
        status, body = http_call(served, "POST", predict_path(), {"inputs": inputs})
        assert status == 200, body
        outputs = body["outputs"]
        assert outputs[features.CLASS_NAME_OUTPUT] == ["class_1"] * 3
        assert outputs[features.CLASS_ID_OUTPUT] == [1] * 3
        assert np.asarray(outputs[features.PROBABILITIES_OUTPUT]).shape == (3, NUM_CLASSES)


def test_predict_grpc_metadata_and_status(served, png):
    with grpc.insecure_channel(served.grpc_target) as channel:
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = predictions.Predict(grpc_request(png), timeout=TIMEOUT)
        assert response.model_spec.name == MODEL_NAME
        assert response.model_spec.version.value == 1
        assert response.model_spec.signature_name == features.SERVING_SIGNATURE
        outputs = {name: tf.make_ndarray(t) for name, t in response.outputs.items()}
        assert outputs[features.CLASS_NAME_OUTPUT].tolist() == [b"class_1", b"class_1"]
        assert outputs[features.CLASS_ID_OUTPUT].tolist() == [1, 1]
        assert outputs[features.PROBABILITIES_OUTPUT].shape == (2, NUM_CLASSES)

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = MODEL_NAME
        request.metadata_field.append("signature_def")
        metadata = predictions.GetModelMetadata(request, timeout=TIMEOUT)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        metadata.metadata["signature_def"].Unpack(signatures)
        assert features.SERVING_SIGNATURE in signatures.signature_def
        assert metadata.model_spec.version.value == 1

        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = MODEL_NAME
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            status_request, timeout=TIMEOUT
        )
        assert [(s.version, s.state) for s in status.model_version_status] == [
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        ]


# --- Bad requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", predict_path(), {"instances": [b64(b"not an image")]}, 400, "PNG"),
        ("POST", predict_path(), {"instances": [b64(b"")]}, 400, ""),
        ("POST", predict_path(), {"instance": [b64(b"x")]}, 400, "Missing 'inputs' or 'instances'"),
        ("POST", predict_path(), {"inputs": {"image": [b64(b"x")]}}, 400, "Missing named input"),
        ("POST", predict_path(), {"instances": [{"img": b64(b"x")}]}, 400, "named input: img"),
        ("POST", predict_path(), {"instances": [{"b64": "%%%"}]}, 400, "Unable to base64 decode"),
        ("POST", predict_path(), "{not json", 400, "JSON Parse error"),
        ("POST", predict_path(), "", 400, "JSON Parse error: The document is empty"),
        (
            "POST",
            predict_path(),
            {"signature_name": "nope", "instances": [b64(b"x")]},
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            "POST",
            predict_path(model="nope"),
            {"instances": [b64(b"x")]},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "POST",
            predict_path(version=99),
            {"instances": [b64(b"x")]},
            404,
            f"Servable not found for request: Specific({MODEL_NAME}, 99)",
        ),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        (
            "GET",
            f"/v1/models/{MODEL_NAME}/versions/99",
            None,
            404,
            f"Could not find version 99 of model {MODEL_NAME}",
        ),
        ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found for request"),
        ("GET", predict_path(), None, 400, "Malformed request"),
        ("PUT", f"/v1/models/{MODEL_NAME}", "{}", 400, "Malformed request"),
        (
            "POST",
            f"/v1/models/{MODEL_NAME}:classify",
            "{}",
            400,
            "When method is classify, key 'examples' is expected and was not found",
        ),
        (
            "POST",
            f"/v1/models/{MODEL_NAME}:classify",
            {"examples": [{"image": b64(b"x")}]},
            400,
            "Expected classification signature method_name to be tensorflow/serving/classify. "
            "Was: tensorflow/serving/predict",
        ),
        (
            "POST",
            f"/v1/models/{MODEL_NAME}/labels/stable:predict",
            {"instances": [b64(b"x")]},
            400,
            "Unrecognized servable version label: stable",
        ),
    ],
)
def test_bad_rest_requests_get_tf_serving_errors(served, png, method, path, body, status, message):
    got_status, got_body = http_call(served, method, path, body)
    assert got_status == status, got_body
    assert set(got_body) == {"error"}
    assert message in got_body["error"]
    assert rest_class(served, png) == (1, "class_1")  # And the server still answers.


def test_undecodable_image_message_names_the_problem(served):
    status, body = http_call(served, "POST", predict_path(), {"instances": [b64(b"GIF89a?")]})
    assert status == 400
    assert "Graph execution error" not in body["error"]
    assert body["error"].splitlines()[0].strip()


def test_oversized_bodies_get_413(served, png):
    big = {"instances": [b64(b"x" * MAX_REQUEST_BYTES)]}
    status, body = http_call(served, "POST", predict_path(), big)
    assert status == 413 and "exceeds the limit" in body["error"]

    connection = http.client.HTTPConnection("127.0.0.1", served.rest_port, timeout=TIMEOUT)
    try:  # Chunked, no Content-Length: counted while streaming.
        chunks = (b" " * (256 * 1024) for _ in range(6))
        connection.request("POST", predict_path(), body=chunks, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413
        assert "exceeds the limit" in json.loads(response.read())["error"]
    finally:
        connection.close()

    connection = http.client.HTTPConnection("127.0.0.1", served.rest_port, timeout=TIMEOUT)
    try:  # A declared size too large even to drain is answered at once.
        connection.putrequest("POST", predict_path())
        connection.putheader("Content-Length", str(10**12))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
    finally:
        connection.close()
    assert rest_class(served, png) == (1, "class_1")


def test_bad_grpc_requests_get_status_codes(served, png):
    with grpc.insecure_channel(served.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        cases = []
        cases.append((grpc_request(png, model="nope"), grpc.StatusCode.NOT_FOUND, "Latest(nope)"))
        request = grpc_request(png)
        request.model_spec.version.value = 7
        cases.append((request, grpc.StatusCode.NOT_FOUND, f"Specific({MODEL_NAME}, 7)"))
        request = grpc_request(b"not a png")
        cases.append((request, grpc.StatusCode.INVALID_ARGUMENT, ""))
        request = grpc_request(png)
        request.inputs["image"].CopyFrom(request.inputs.pop(features.SERVING_INPUT_KEY))
        cases.append((request, grpc.StatusCode.INVALID_ARGUMENT, "image"))
        request = grpc_request(png)
        request.inputs[features.SERVING_INPUT_KEY].CopyFrom(tf.make_tensor_proto([1.0]))
        # The graph's own check, as TF Serving's Session::Run reports it.
        cases.append((request, grpc.StatusCode.INVALID_ARGUMENT, "Type mismatch: actual float"))
        request = grpc_request(png)
        request.model_spec.signature_name = "nope"
        cases.append((request, grpc.StatusCode.FAILED_PRECONDITION, "nope"))
        for request, code, message in cases:
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=TIMEOUT)
            assert info.value.code() == code, info.value.details()
            assert message in info.value.details()
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as info:
            model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                status_request, timeout=TIMEOUT
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert stub.Predict(grpc_request(png), timeout=TIMEOUT).model_spec.version.value == 1


# --- Versions ---------------------------------------------------------------------------------


def push(source: Path, base: Path, version: int) -> None:
    """As a pusher does: write under a temporary name, then rename into place."""
    temporary = base / f".{version}.incomplete"
    shutil.copytree(source, temporary)
    os.rename(temporary, base / str(version))


def test_new_versions_are_picked_up_and_removed_ones_dropped(tmp_path, tiny_versions, png):
    base = tmp_path / MODEL_NAME
    base.mkdir()
    push(tiny_versions[1], base, 1)
    with LocalModelServer(base, rest_port=0, grpc_port=None, poll_interval=0.1) as server:
        assert rest_class(server, png) == (1, "class_1")

        # Half-written: no saved_model.pb yet. Never loaded, never reported.
        shutil.copytree(
            tiny_versions[2], base / "2", ignore=shutil.ignore_patterns("saved_model.pb")
        )
        time.sleep(0.5)
        assert server.manager.available_versions() == [1]
        assert set(status_by_version(server)) == {"1"}
        shutil.rmtree(base / "2")

        push(tiny_versions[2], base, 2)
        assert server.wait_for_versions([2], timeout=TIMEOUT)
        assert rest_class(server, png) == (2, "class_2")
        states = status_by_version(server)
        assert states["2"]["state"] == "AVAILABLE" and states["1"]["state"] == "END"
        status, body = http_call(server, "POST", predict_path(version=1), {"instances": [b64(png)]})
        assert status == 404 and f"Specific({MODEL_NAME}, 1)" in body["error"]

        # A broken push is reported with its error; the previous version keeps serving.
        (base / "3").mkdir()
        (base / "3" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        assert wait_until(lambda: status_by_version(server).get("3", {}).get("state") == "END")
        broken = status_by_version(server)["3"]["status"]
        assert broken["error_code"] != "OK" and broken["error_message"]
        assert server.manager.available_versions() == [2]
        assert rest_class(server, png) == (2, "class_2")

        # Removing the newer versions falls back to version 1.
        shutil.rmtree(base / "3")
        shutil.rmtree(base / "2")
        assert server.wait_for_versions([1], timeout=TIMEOUT)
        assert rest_class(server, png) == (1, "class_1")
        assert status_by_version(server)["2"]["state"] == "END"


def test_all_versions_policy(tmp_path, tiny_versions, png):
    base = tmp_path / MODEL_NAME
    base.mkdir()
    push(tiny_versions[1], base, 1)
    push(tiny_versions[2], base, 2)
    with LocalModelServer(
        base, rest_port=0, grpc_port=None, poll_interval=0.1, version_policy="all"
    ) as server:
        assert server.manager.available_versions() == [1, 2]
        assert rest_class(server, png, version=1) == (1, "class_1")
        assert rest_class(server, png, version=2) == (2, "class_2")
        assert rest_class(server, png) == (2, "class_2")  # Latest.
        shutil.rmtree(base / "1")
        assert server.wait_for_versions([2], timeout=TIMEOUT)
        status, _ = http_call(server, "POST", predict_path(version=1), {"instances": [b64(png)]})
        assert status == 404


def test_warmup_requests_are_replayed_and_a_failing_warmup_fails_the_load(
    tmp_path, tiny_versions, png
):
    from trainer_module.export import WARMUP_DIR, WARMUP_FILE, write_warmup_requests

    base = tmp_path / MODEL_NAME
    base.mkdir()
    good = tmp_path / "good"
    shutil.copytree(tiny_versions[1], good)
    write_warmup_requests(str(good), [png, png])  # The exporter's own warmup writer.
    push(good, base, 1)
    with LocalModelServer(base, rest_port=0, grpc_port=None, poll_interval=0.1) as server:
        # 2 single predicts, 1 batch predict, 1 Classify (its signature is missing here: see
        # test_warmup_replays_every_record_kind for a model that has one).
        assert server.manager.servable(MODEL_NAME).warmup_records == 4
        assert rest_class(server, png) == (1, "class_1")

        bad = tmp_path / "bad"
        shutil.copytree(tiny_versions[2], bad)
        write_warmup_requests(str(bad), [b"not a png"])
        push(bad, base, 2)
        assert wait_until(lambda: status_by_version(server).get("2", {}).get("state") == "END")
        error = status_by_version(server)["2"]["status"]
        assert (
            error["error_code"] == "INVALID_ARGUMENT"
            and "Warmup record 1" in error["error_message"]
        )
        assert rest_class(server, png) == (1, "class_1")

        corrupt = tmp_path / "corrupt"
        shutil.copytree(tiny_versions[2], corrupt)
        (corrupt / WARMUP_DIR).mkdir()
        (corrupt / WARMUP_DIR / WARMUP_FILE).write_bytes(b"not a TFRecord file at all")
        push(corrupt, base, 3)
        assert wait_until(lambda: status_by_version(server).get("3", {}).get("state") == "END")
        error = status_by_version(server)["3"]["status"]
        assert error["error_code"] == "DATA_LOSS" and "TFRecord" in error["error_message"]
        assert rest_class(server, png) == (1, "class_1")


def test_missing_model_folder_is_reported_not_fatal(tmp_path, png, tiny_versions):
    base = tmp_path / MODEL_NAME
    with LocalModelServer(base, rest_port=0, grpc_port=None, poll_interval=0.1) as server:
        status, body = http_call(server, "POST", predict_path(), {"instances": [b64(png)]})
        assert status == 404 and "Latest(tiny)" in body["error"]
        base.mkdir()
        push(tiny_versions[1], base, 1)
        assert server.wait_for_versions([1], timeout=TIMEOUT)
        assert rest_class(server, png) == (1, "class_1")


# --- Client -----------------------------------------------------------------------------------


def predict_args(server, paths, protocol="rest", **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    client.add_predict_arguments(parser)
    port = server.rest_port if protocol == "rest" else server.grpc_port
    args = parser.parse_args(
        [*map(str, paths), f"--protocol={protocol}", f"--port={port}", f"--model-name={MODEL_NAME}"]
    )
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_predict_client(served, holdout_dir, protocol, capsys):
    paths = sorted(holdout_dir.glob("bag/*.png"))[:3]
    assert client.run_predict(predict_args(served, paths, protocol, top_k=2)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for path, line in zip(paths, lines, strict=True):
        assert line.startswith(f"{path}: class_1 0.9000, ")


def test_predict_client_glob_and_json(served, holdout_dir, capsys):
    pattern = str(holdout_dir / "coat" / "*.png")
    assert client.run_predict(predict_args(served, [pattern], json=True, batch_size=4)) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(list((holdout_dir / "coat").glob("*.png")))
    assert all(row["top_k"][0]["class_name"] == "class_1" for row in rows)


def test_predict_client_errors_are_one_line(served, holdout_dir, tmp_path, capsys):
    image = sorted(holdout_dir.glob("bag/*.png"))[0]
    cases = [
        (predict_args(served, [image], model_name="nope"), 1, "Latest(nope)"),
        (predict_args(served, [image], port=1), 1, "connection refused"),
        (predict_args(served, [tmp_path / "none*.png"]), 2, "no file matches"),
        (predict_args(served, [Path(__file__)]), 1, "HTTP 400"),
    ]
    for args, code, message in cases:
        assert client.run_predict(args) == code
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err


# --- In a subprocess --------------------------------------------------------------------------


def test_server_subprocess_serves_and_stops_cleanly(tmp_path, tiny_versions, png):
    base = tmp_path / MODEL_NAME
    base.mkdir()
    push(tiny_versions[1], base, 1)
    handle = start_server_subprocess(base, poll_interval=0.2, startup_timeout=120)
    try:
        assert rest_class(handle, png) == (1, "class_1")
        with grpc.insecure_channel(handle.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(grpc_request(png), timeout=TIMEOUT).model_spec.version.value == 1
    finally:
        assert handle.stop(timeout=30) == 0, handle.log_tail()
    assert "Shutting down" in handle.log_tail()
