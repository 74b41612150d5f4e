"""The local server's TF Serving surface beyond Predict: model config files, version labels,
Classify, Regress and MultiInference, input shapes, warmup kinds, metrics and batching.

Models: the tiny classifier (tests/tiny_model.py, with the exported model's serving_default
and classification signatures) and TF Serving's "half plus two" with two inputs (a predict,
a regress and a classify signature over one tf.Example input).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from components.versioned_pusher import layout
from serving.batching import BatchingOptions
from serving.metrics import DEFAULT_PROMETHEUS_PATH
from serving.protocol import ServingError
from serving.server import (
    LocalModelServer,
    add_pipeline_serve_arguments,
    add_serve_arguments,
    main,
    server_from_args,
)
from tests.component.test_local_server import TIMEOUT, b64, http_call, push, wait_until
from tests.conftest import REPO_ROOT
from tests.tiny_model import (
    CLASSIFY_SIGNATURE,
    REGRESS_SIGNATURE,
    SCALE_SIGNATURE,
    save_half_plus_two,
    save_tiny_model,
)
from trainer_module import features
from trainer_module.export import WARMUP_DIR, WARMUP_FILE

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    """SavedModels to copy from: tiny versions 1-3 (favouring class N) and half plus two."""
    root = tmp_path_factory.mktemp("templates")
    paths = {f"tiny{v}": save_tiny_model(root / f"tiny{v}", NUM_CLASSES, v) for v in (1, 2, 3)}
    paths["half"] = save_half_plus_two(root / "half")
    return paths


@pytest.fixture(scope="module")
def png(holdout_dir: Path) -> bytes:
    return next(iter(sorted(holdout_dir.glob("*/*.png")))).read_bytes()


@pytest.fixture(scope="module")
def half_server(tmp_path_factory, templates):
    """half plus two (version 1) with Prometheus metrics, shared by read-only tests."""
    base = tmp_path_factory.mktemp("half") / "half"
    base.mkdir()
    shutil.copytree(templates["half"], base / "1")
    with LocalModelServer(
        base, rest_port=0, grpc_port=0, poll_interval=0, monitoring_path=DEFAULT_PROMETHEUS_PATH
    ) as server:
        yield server


def write_config(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def model_entry(name: str, base_path: Path, extra: str = "") -> str:
    return (
        f'config {{ name: "{name}" base_path: "{base_path}" model_platform: "tensorflow" '
        f"{extra} }}\n"
    )


def predicted_class(server, path: str, png: bytes) -> int:
    status, body = http_call(server, "POST", path, {"instances": [b64(png)]})
    assert status == 200, body
    return body["predictions"][0][features.CLASS_ID_OUTPUT]


def versions_of(server, model: str) -> dict[str, str]:
    status, body = http_call(server, "GET", f"/v1/models/{model}")
    assert status == 200, body
    return {s["version"]: s["state"] for s in body["model_version_status"]}


def examples_input(*features_list: dict, context: dict | None = None) -> input_pb2.Input:
    request_input = input_pb2.Input()
    examples = (
        request_input.example_list_with_context.examples
        if context is not None
        else request_input.example_list.examples
    )
    if context is not None:
        for name, value in context.items():
            request_input.example_list_with_context.context.features.feature[
                name
            ].float_list.value.append(value)
    for feature_map in features_list:
        example = examples.add()
        for name, value in feature_map.items():
            if isinstance(value, bytes):
                example.features.feature[name].bytes_list.value.append(value)
            else:
                example.features.feature[name].float_list.value.append(value)
    return request_input


# --- --model_config_file: several models, version policies, labels --------------------------


def test_model_config_file_serves_models_with_version_policies_and_labels(tmp_path, templates, png):
    root = tmp_path / "serving"
    for model in ("specific", "latest2", "every"):
        (root / model).mkdir(parents=True)
        for version in (1, 2, 3):
            push(templates[f"tiny{version}"], root / model, version)
    (root / "half").mkdir()
    push(templates["half"], root / "half", 1)
    config = root / "models.config"
    write_config(
        config,
        "model_config_list {\n"
        + model_entry(
            "specific",
            root / "specific",
            "model_version_policy { specific { versions: 1 versions: 3 } } "
            'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 }',
        )
        + model_entry(
            "latest2", root / "latest2", "model_version_policy { latest { num_versions: 2 } }"
        )
        + model_entry("every", root / "every", "model_version_policy { all {} }")
        + model_entry("half", root / "half")
        + "}\n",
    )
    with LocalModelServer(model_config_file=config, rest_port=0, grpc_port=0) as server:
        assert server.core.model_names() == ["every", "half", "latest2", "specific"]
        assert server.core.available_versions("specific") == [1, 3]
        assert server.core.available_versions("latest2") == [2, 3]
        assert server.core.available_versions("every") == [1, 2, 3]
        assert versions_of(server, "specific") == {"3": "AVAILABLE", "1": "AVAILABLE"}

        # REST: /labels/LABEL on predict, status and metadata.
        assert predicted_class(server, "/v1/models/specific/labels/stable:predict", png) == 1
        assert predicted_class(server, "/v1/models/specific/labels/canary:predict", png) == 3
        assert predicted_class(server, "/v1/models/specific:predict", png) == 3  # Latest.
        assert predicted_class(server, "/v1/models/every/versions/2:predict", png) == 2
        status, body = http_call(server, "GET", "/v1/models/specific/labels/stable")
        assert status == 200 and [s["version"] for s in body["model_version_status"]] == ["1"]
        status, body = http_call(server, "GET", "/v1/models/specific/labels/canary/metadata")
        assert status == 200 and body["model_spec"]["version"] == "3"
        status, body = http_call(
            server, "POST", "/v1/models/specific/labels/beta:predict", {"instances": [b64(png)]}
        )
        assert (status, body) == (400, {"error": "Unrecognized servable version label: beta"})
        status, body = http_call(
            server, "POST", "/v1/models/specific/versions/2:predict", {"instances": [b64(png)]}
        )
        assert status == 404 and "Specific(specific, 2)" in body["error"]

        # gRPC: version_label in the ModelSpec, for Predict, Classify and GetModelStatus.
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "specific"
            request.model_spec.version_label = "stable"
            request.inputs[features.SERVING_INPUT_KEY].CopyFrom(tf.make_tensor_proto([png]))
            response = stub.Predict(request, timeout=TIMEOUT)
            assert response.model_spec.version.value == 1
            assert tf.make_ndarray(response.outputs[features.CLASS_ID_OUTPUT]).tolist() == [1]
            classify = classification_pb2.ClassificationRequest()
            classify.model_spec.name = "specific"
            classify.model_spec.version_label = "canary"
            classify.model_spec.signature_name = features.CLASSIFY_SIGNATURE
            classify.input.CopyFrom(examples_input({features.IMAGE_KEY: png}))
            result = stub.Classify(classify, timeout=TIMEOUT)
            assert result.model_spec.version.value == 3
            assert max(result.result.classifications[0].classes, key=lambda c: c.score).label == (
                "class_3"
            )
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "specific"
            status_request.model_spec.version_label = "canary"
            statuses = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                status_request, timeout=TIMEOUT
            )
            assert [s.version for s in statuses.model_version_status] == [3]
            request.model_spec.version_label = "nope"
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "Unrecognized servable version label: nope"


def test_model_config_file_is_polled_and_a_bad_file_keeps_the_running_config(
    tmp_path, templates, png, caplog
):
    root = tmp_path / "serving"
    (root / "tiny").mkdir(parents=True)
    push(templates["tiny1"], root / "tiny", 1)
    push(templates["tiny2"], root / "tiny", 2)
    config = root / "models.config"
    policy = "model_version_policy { all {} }"
    write_config(
        config,
        "model_config_list {" + model_entry("tiny", root / "tiny", policy) + "}",
    )
    with LocalModelServer(
        model_config_file=config, rest_port=0, grpc_port=None, config_poll_interval=0.2
    ) as server:
        assert server.core.model_names() == ["tiny"]
        (root / "second").mkdir()
        push(templates["tiny3"], root / "second", 7)
        write_config(
            config,
            "model_config_list {"
            + model_entry(
                "tiny", root / "tiny", policy + ' version_labels { key: "stable" value: 1 }'
            )
            + model_entry("second", root / "second")
            + "}",
        )
        assert wait_until(lambda: server.core.model_names() == ["second", "tiny"])
        assert wait_until(lambda: server.core.labels("tiny") == {"stable": 1})
        assert predicted_class(server, "/v1/models/second:predict", png) == 3
        assert predicted_class(server, "/v1/models/tiny/labels/stable:predict", png) == 1

        # A label naming a version that is not available fails the reload; labels stay.
        caplog.set_level(logging.ERROR, logger="serving.server")
        write_config(
            config,
            "model_config_list {"
            + model_entry(
                "tiny", root / "tiny", policy + ' version_labels { key: "stable" value: 9 }'
            )
            + model_entry("second", root / "second")
            + "}",
        )
        assert wait_until(lambda: "version 9 of model tiny" in caplog.text)
        assert "which is not currently available for inference" in caplog.text
        assert server.core.labels("tiny") == {"stable": 1}

        # A malformed file is reported with TF Serving's error; the models keep serving.
        write_config(config, "model_config_list { config { nmae: 'tiny' } }")
        assert wait_until(lambda: f"Invalid protobuf file: '{config}'" in caplog.text)
        assert 'no field named "nmae"' in caplog.text
        assert predicted_class(server, "/v1/models/second:predict", png) == 3

        # Removing a model from the file unloads it.
        write_config(config, "model_config_list {" + model_entry("second", root / "second") + "}")
        assert wait_until(lambda: server.core.model_names() == ["second"])
        status, body = http_call(
            server, "POST", "/v1/models/tiny:predict", {"instances": [b64(png)]}
        )
        assert status == 404 and "Latest(tiny)" in body["error"]
        assert versions_of(server, "tiny") == {"2": "END", "1": "END"}


def test_malformed_or_inconsistent_config_files_fail_the_start(tmp_path, templates, caplog):
    root = tmp_path / "serving"
    (root / "tiny").mkdir(parents=True)
    push(templates["tiny1"], root / "tiny", 1)
    config = root / "models.config"
    cases = [
        ("model_config_list { config { name: 'tiny' base_path: ", "Invalid protobuf file"),
        (
            "model_config_list {" + model_entry("tiny", root / "tiny") * 2 + "}",
            "Illegal to list model tiny multiple times in config list",
        ),
        (
            "model_config_list {"
            + model_entry("tiny", root / "tiny", 'version_labels { key: "stable" value: 2 }')
            + "}",
            "Request to assign label to version 2 of model tiny, which is not currently "
            "available for inference",
        ),
    ]
    for text, message in cases:
        write_config(config, text)
        server = LocalModelServer(model_config_file=config, rest_port=None, grpc_port=None)
        with pytest.raises(ServingError) as info:
            server.start()
        assert message in info.value.message
        # The command line reports the same and exits 1.
        caplog.clear()
        assert main([f"--model_config_file={config}", "--port=-1", "--rest_api_port=-1"]) == 1
        assert message in caplog.text
    # Neither a model nor a config: TF Serving's error.
    caplog.clear()
    assert main(["--port=-1", "--rest_api_port=-1"]) == 1
    assert "Both server_options.model_base_path and server_options.model_config_file" in (
        caplog.text
    )


def test_serve_defaults_to_the_pushers_models_config(tmp_path, templates, png, monkeypatch):
    """`tfx-image-pipeline serve` with no model flag serves OUTPUT_DIR/serving/models.config,
    whose base paths the Pusher wrote as the TF Serving container sees them (/models)."""
    monkeypatch.chdir(tmp_path)
    serving_dir = tmp_path / "outputs" / "serving"
    for name, template in (("image_classifier", "tiny2"), ("other", "tiny3")):
        layout.publish_version(str(templates[template]), str(serving_dir / name))
    config_path = layout.write_models_config(str(serving_dir), "/models")
    assert '"/models/image_classifier"' in Path(config_path).read_text()

    parser = argparse.ArgumentParser()
    add_pipeline_serve_arguments(parser)
    server = server_from_args(parser.parse_args(["--port=0", "--rest_api_port=0"]))
    with server:
        assert server.model_config_file == config_path
        assert server.core.model_names() == ["image_classifier", "other"]
        assert predicted_class(server, "/v1/models/image_classifier:predict", png) == 2
        assert predicted_class(server, "/v1/models/other/versions/1:predict", png) == 3


def test_tfx_image_pipeline_serve_command_serves_the_pushed_models(tmp_path, templates, png):
    """The command itself, in a child process, from a folder holding outputs/serving/."""
    serving_dir = tmp_path / "outputs" / "serving"
    layout.publish_version(str(templates["tiny2"]), str(serving_dir / "image_classifier"))
    layout.write_models_config(str(serving_dir), "/models")
    ready = tmp_path / "ready.json"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "pipeline", "serve", "--port=-1", "--rest_api_port=0"]
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(
            [*command, f"--ready_file={ready}"], cwd=tmp_path, env=env, stdout=log, stderr=log
        )
    try:
        assert wait_until(lambda: ready.exists() or process.poll() is not None, timeout=180)
        assert ready.exists(), (tmp_path / "serve.log").read_text()[-3000:]
        port = json.loads(ready.read_text())["rest_port"]
        server = argparse.Namespace(rest_port=port)
        assert predicted_class(server, "/v1/models/image_classifier:predict", png) == 2
    finally:
        process.terminate()
        assert process.wait(60) == 0, (tmp_path / "serve.log").read_text()[-3000:]


# --- Classify, Regress, MultiInference --------------------------------------------------------


def test_classify_over_rest_and_grpc(tmp_path, templates, png):
    base = tmp_path / "tiny"
    base.mkdir()
    push(templates["tiny1"], base, 1)
    with LocalModelServer(base, rest_port=0, grpc_port=0, poll_interval=0) as server:
        body = {
            "signature_name": features.CLASSIFY_SIGNATURE,
            "examples": [{features.IMAGE_KEY: b64(png)}, {features.IMAGE_KEY: b64(png)}],
        }
        status, result = http_call(server, "POST", "/v1/models/tiny:classify", body)
        assert status == 200, result
        assert len(result["result"]) == 2
        classes = result["result"][0]
        assert [label for label, _ in classes] == [f"class_{i}" for i in range(NUM_CLASSES)]
        assert classes[1][1] == pytest.approx(0.9)
        # The image may come from the context; each example's own features override it.
        body = {
            "signature_name": features.CLASSIFY_SIGNATURE,
            "context": {features.IMAGE_KEY: b64(png)},
            "examples": [{}, {features.IMAGE_KEY: b64(b"not a png")}],
        }
        status, result = http_call(server, "POST", "/v1/models/tiny/versions/1:classify", body)
        assert status == 400 and "Unknown image file format" in result["error"]
        body["examples"] = [{}]
        status, result = http_call(server, "POST", "/v1/models/tiny:classify", body)
        assert status == 200 and result["result"][0][1][1] == pytest.approx(0.9)

        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = classification_pb2.ClassificationRequest()
            request.model_spec.name = "tiny"
            request.model_spec.signature_name = features.CLASSIFY_SIGNATURE
            request.input.CopyFrom(examples_input({features.IMAGE_KEY: png}))
            response = stub.Classify(request, timeout=TIMEOUT)
            assert response.model_spec.version.value == 1
            assert response.model_spec.signature_name == features.CLASSIFY_SIGNATURE
            top = max(response.result.classifications[0].classes, key=lambda c: c.score)
            assert (top.label, round(top.score, 4)) == ("class_1", 0.9)
            cases = [
                (
                    "",
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Expected classification signature method_name to be "
                    "tensorflow/serving/classify. Was: tensorflow/serving/predict",
                ),
                (
                    "nope",
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "No signature was found with the name: nope",
                ),
            ]
            for signature, code, message in cases:
                request.model_spec.signature_name = signature
                with pytest.raises(grpc.RpcError) as info:
                    stub.Classify(request, timeout=TIMEOUT)
                assert (info.value.code(), info.value.details()) == (code, message)
            request.model_spec.signature_name = features.CLASSIFY_SIGNATURE
            request.input.CopyFrom(input_pb2.Input())
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(request, timeout=TIMEOUT)
            assert info.value.details() == "Input is empty."


def test_regress_over_rest_and_grpc(half_server):
    path = "/v1/models/half:regress"
    body = {
        "signature_name": REGRESS_SIGNATURE,
        "examples": [{"x": 1.0}, {"x": [3.0], "offset": 1.0}],
    }
    assert http_call(half_server, "POST", path, body) == (200, {"result": [2.5, 4.5]})
    body = {
        "signature_name": REGRESS_SIGNATURE,
        "context": {"offset": 10.0},
        "examples": [{"x": 2.0}, {"x": 2.0, "offset": 0.5}],
    }
    assert http_call(half_server, "POST", path, body) == (200, {"result": [13.0, 3.5]})
    status, error = http_call(half_server, "POST", path, {"examples": [{"x": 1.0}]})
    assert status == 400 and error["error"] == (
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/predict"
    )
    status, error = http_call(
        half_server,
        "POST",
        path,
        {"signature_name": REGRESS_SIGNATURE, "examples": [{"x": [1.0, "a"]}]},
    )
    assert (status, error) == (
        400,
        {"error": "Unexpected element type in feature: x expecting type: float"},
    )
    status, error = http_call(
        half_server, "POST", path, {"signature_name": REGRESS_SIGNATURE, "examples": [{"x": 1}]}
    )  # An int64 feature where the graph parses a float one: the graph's own error.
    assert status == 400 and "Data types don't match" in error["error"]

    with grpc.insecure_channel(half_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "half"
        request.model_spec.signature_name = REGRESS_SIGNATURE
        request.input.CopyFrom(examples_input({"x": 4.0}, {"x": 0.0}, context={"offset": 1.0}))
        response = stub.Regress(request, timeout=TIMEOUT)
        assert [r.value for r in response.result.regressions] == [5.0, 3.0]
        assert response.model_spec.version.value == 1


def test_multi_inference_runs_classify_and_regress_signatures_in_one_call(half_server):
    request = inference_pb2.MultiInferenceRequest()
    request.input.CopyFrom(examples_input({"x": 2.0}, {"x": 4.0}))
    for signature, method in (
        (REGRESS_SIGNATURE, "tensorflow/serving/regress"),
        (CLASSIFY_SIGNATURE, "tensorflow/serving/classify"),
    ):
        task = request.tasks.add()
        task.model_spec.name = "half"
        task.model_spec.signature_name = signature
        task.method_name = method
    with grpc.insecure_channel(half_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.MultiInference(request, timeout=TIMEOUT)
        regression, classification = response.results
        assert [r.value for r in regression.regression_result.regressions] == [3.0, 4.0]
        scores = [c.classes[0].score for c in classification.classification_result.classifications]
        assert scores == [3.0, 4.0]
        assert regression.model_spec.signature_name == REGRESS_SIGNATURE
        assert classification.model_spec.version.value == 1

        bad = inference_pb2.MultiInferenceRequest()
        bad.CopyFrom(request)
        bad.tasks[1].model_spec.signature_name = REGRESS_SIGNATURE
        bad.tasks[1].method_name = "tensorflow/serving/regress"
        with pytest.raises(grpc.RpcError) as info:
            stub.MultiInference(bad, timeout=TIMEOUT)
        assert info.value.details() == f"Duplicate evaluation of signature: {REGRESS_SIGNATURE}"
        bad.tasks[1].model_spec.signature_name = CLASSIFY_SIGNATURE
        bad.tasks[1].method_name = "tensorflow/serving/predict"
        with pytest.raises(grpc.RpcError) as info:
            stub.MultiInference(bad, timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "Unsupported signature method_name: tensorflow/serving/predict" in (
            info.value.details()
        )


# --- Input shapes and message size -------------------------------------------------------------


def test_row_format_scalars_and_shapes_checked_by_the_graph(half_server, tmp_path, templates, png):
    # The signature says x is [batch, 1]; TF Serving feeds what the request holds and the
    # elementwise graph accepts scalars per row as well.
    body = {"signature_name": SCALE_SIGNATURE, "instances": [1.0, 2.0]}
    assert http_call(half_server, "POST", "/v1/models/half:predict", body) == (
        200,
        {"predictions": [2.5, 3.0]},
    )
    body = {"signature_name": SCALE_SIGNATURE, "inputs": [[1.0, 2.0, 3.0]]}
    assert http_call(half_server, "POST", "/v1/models/half:predict", body) == (
        200,
        {"outputs": [[2.5, 3.0, 3.5]]},
    )
    body = {"instances": [{"x": [1.0], "offset": [1.0]}, {"x": [2.0], "offset": [0.0]}]}
    assert http_call(half_server, "POST", "/v1/models/half:predict", body) == (
        200,
        {"predictions": [[3.5], [3.0]]},
    )
    # A shape the graph cannot run is refused by the graph itself.
    base = tmp_path / "tiny"
    base.mkdir()
    push(templates["tiny1"], base, 1)
    with LocalModelServer(base, rest_port=0, grpc_port=None, poll_interval=0) as server:
        status, error = http_call(
            server, "POST", "/v1/models/tiny:predict", {"instances": [[b64(png)]]}
        )
        assert status == 400 and "from a tensor with shape [1]" in error["error"]


def test_grpc_accepts_messages_larger_than_grpcs_default(half_server):
    """TF Serving raises gRPC's message limit to 2 GiB; 40 MB of floats pass both ways."""
    x = np.arange(10_000_000, dtype=np.float32).reshape(-1, 1)
    with grpc.insecure_channel(
        half_server.grpc_target, options=[("grpc.max_receive_message_length", -1)]
    ) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half"
        request.model_spec.signature_name = SCALE_SIGNATURE
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
        assert request.ByteSize() > 32 * 1024 * 1024
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        y = tf.make_ndarray(stub.Predict(request, timeout=120).outputs["y"])
    assert y.shape == x.shape and y[-1, 0] == pytest.approx(0.5 * x[-1, 0] + 2)


# --- Warmup of every kind ------------------------------------------------------------------------


def test_warmup_replays_every_record_kind(tmp_path, templates):
    version = tmp_path / "half" / "1"
    shutil.copytree(templates["half"], version)
    (version / WARMUP_DIR).mkdir()
    predict = predict_pb2.PredictRequest()
    predict.model_spec.signature_name = SCALE_SIGNATURE
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((2, 1), np.float32)))
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.signature_name = REGRESS_SIGNATURE
    regress.input.CopyFrom(examples_input({"x": 1.0}))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.signature_name = CLASSIFY_SIGNATURE
    classify.input.CopyFrom(examples_input({"x": 1.0}))
    multi = inference_pb2.MultiInferenceRequest()
    multi.input.CopyFrom(examples_input({"x": 1.0}))
    task = multi.tasks.add()
    task.model_spec.name = "half"
    task.model_spec.signature_name = REGRESS_SIGNATURE
    task.method_name = "tensorflow/serving/regress"
    logs = [
        prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=predict)
        ),
        prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(request=regress)
        ),
        prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=classify)
        ),
        prediction_log_pb2.PredictionLog(
            multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)
        ),
    ]
    warmup = version / WARMUP_DIR / WARMUP_FILE

    def write(records) -> None:
        with tf.io.TFRecordWriter(str(warmup)) as writer:
            for log in records:
                writer.write(log.SerializeToString())

    write(logs)
    with LocalModelServer(version.parent, rest_port=None, grpc_port=None, poll_interval=0) as s:
        assert s.manager.servable("half").warmup_records == 4

    # A session_run_log is a kind TF Serving refuses to replay: the version does not load.
    write(
        [
            *logs,
            prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog()),
        ]
    )
    with LocalModelServer(version.parent, rest_port=None, grpc_port=None, poll_interval=0) as s:
        (state,) = s.core.status("half")
        assert (state.state, state.error_code) == ("END", "UNIMPLEMENTED")
        assert "Warmup record 5" in state.error_message
        assert "Unsupported log_type for warmup: session_run_log" in state.error_message

    # --enable_model_warmup=false skips the file altogether.
    with LocalModelServer(
        version.parent, rest_port=None, grpc_port=None, poll_interval=0, enable_warmup=False
    ) as s:
        assert s.manager.servable("half").warmup_records == 0


# --- Prometheus metrics ---------------------------------------------------------------------------


def test_prometheus_metrics_count_requests_per_model_api_and_status(half_server):
    for _ in range(3):
        http_call(
            half_server,
            "POST",
            "/v1/models/half:predict",
            {"signature_name": SCALE_SIGNATURE, "instances": [1.0]},
        )
    http_call(half_server, "POST", "/v1/models/half:predict", {"instances": [1.0]})  # 400
    with grpc.insecure_channel(half_server.grpc_target) as channel:
        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "half"
        request.model_spec.signature_name = REGRESS_SIGNATURE
        request.input.CopyFrom(examples_input({"x": 1.0}, {"x": 2.0}))
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Regress(request, timeout=TIMEOUT)

    connection = http.client.HTTPConnection("127.0.0.1", half_server.rest_port, timeout=TIMEOUT)
    try:
        connection.request("GET", DEFAULT_PROMETHEUS_PATH)
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/plain")
        page = response.read().decode()
    finally:
        connection.close()
    lines = page.splitlines()
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    ok = [
        line
        for line in lines
        if line.startswith(':tensorflow:serving:request_count{model_name="half",status="OK"}')
    ]
    assert ok and int(ok[0].split()[-1]) >= 4
    assert any(
        line.startswith(
            ':tensorflow:serving:request_count{model_name="half",status="INVALID_ARGUMENT"}'
        )
        for line in lines
    )
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines
    rest_count = [
        line
        for line in lines
        if line.startswith(
            ':tensorflow:serving:request_latency_count{model_name="half",API="Predict",'
            'entrypoint="REST",status="OK"}'
        )
    ]
    assert rest_count and int(rest_count[0].split()[-1]) >= 3
    assert any(
        line.startswith(
            ':tensorflow:serving:request_latency_bucket{model_name="half",API="Regress",'
            'entrypoint="GRPC",status="OK",le="+Inf"}'
        )
        for line in lines
    )
    (total,) = [
        line
        for line in lines
        if line.startswith(':tensorflow:serving:request_example_count_total{model="half"}')
    ]
    assert int(total.split()[-1]) >= 2


def test_monitoring_config_file_flag(tmp_path, templates):
    base = tmp_path / "half"
    base.mkdir()
    push(templates["half"], base, 1)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(
        [
            f"--model_base_path={base}",
            f"--monitoring_config_file={monitoring}",
            "--port=-1",
            "--rest_api_port=0",
        ]
    )
    with server_from_args(args) as server:
        assert server.monitoring_path == "/metrics"
        http_call(server, "GET", "/v1/models/half")
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=TIMEOUT)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        page = response.read().decode()
        connection.close()
        assert response.status == 200
        assert 'API="GetModelStatus",entrypoint="REST",status="OK"' in page
    monitoring.write_text("prometheus_config { enable: yes please }")
    with pytest.raises(ServingError) as info:
        server_from_args(args)
    assert f"Invalid protobuf file: '{monitoring}'" in info.value.message


# --- Batching -------------------------------------------------------------------------------------


def test_batching_merges_concurrent_requests_into_one_model_call(tmp_path, templates):
    base = tmp_path / "half"
    base.mkdir()
    push(templates["half"], base, 1)
    options = BatchingOptions(
        max_batch_size=8, batch_timeout_micros=500_000, num_batch_threads=1, max_enqueued_batches=4
    )
    with LocalModelServer(
        base, rest_port=0, grpc_port=0, poll_interval=0, batching=options, num_threads=16
    ) as server:
        batcher = server.batcher
        assert batcher is not None
        start = threading.Barrier(8)

        def predict(value: float) -> list:
            start.wait()
            status, body = http_call(
                server,
                "POST",
                "/v1/models/half:predict",
                {"signature_name": SCALE_SIGNATURE, "instances": [[value]]},
            )
            assert status == 200, body
            return body["predictions"]

        before = batcher.batches_run
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(predict, [float(i) for i in range(8)]))
        # Each caller gets its own row back, from far fewer model calls than requests.
        assert answers == [[[0.5 * i + 2.0]] for i in range(8)]
        assert batcher.batches_run - before <= 4
        assert batcher.tasks_run >= 8

        status, body = http_call(
            server,
            "POST",
            "/v1/models/half:predict",
            {"signature_name": SCALE_SIGNATURE, "instances": [[1.0]] * 9},
        )
        assert (status, body) == (
            400,
            {"error": "Task size 9 is larger than maximum input batch size 8"},
        )


def test_batching_parameters_file_flag(tmp_path, templates):
    base = tmp_path / "half"
    base.mkdir()
    push(templates["half"], base, 1)
    parameters = tmp_path / "batching_parameters.txt"
    parameters.write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 1000 }\n"
        "max_enqueued_batches { value: 20 }\nnum_batch_threads { value: 2 }\n"
        "allowed_batch_sizes: 4\nallowed_batch_sizes: 16\n"
    )
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(
        [
            f"--model_base_path={base}",
            "--enable_batching",
            f"--batching_parameters_file={parameters}",
            "--port=0",
            "--rest_api_port=-1",
        ]
    )
    with server_from_args(args) as server:
        assert server.batching == BatchingOptions(16, 1000, 20, 2, allowed_batch_sizes=(4, 16))
        with grpc.insecure_channel(server.grpc_target) as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "half"
            request.model_spec.signature_name = SCALE_SIGNATURE
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.full((3, 1), 2.0, np.float32)))
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            y = tf.make_ndarray(stub.Predict(request, timeout=TIMEOUT).outputs["y"])
        assert y.tolist() == [[3.0]] * 3  # Padded to 4 inside, 3 rows back.
    parameters.write_text("max_batch_size { value: 16 }\nbatch_timeout { value: 1 }\n")
    with pytest.raises(ServingError) as info:
        server_from_args(args)
    assert f"Invalid protobuf file: '{parameters}'" in info.value.message


# --- Errors from inside Python, reload over gRPC -------------------------------------------------


def test_python_errors_get_tf_serving_shaped_messages(half_server):
    def post(body: bytes) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", half_server.rest_port, timeout=TIMEOUT)
        try:
            connection.request("POST", "/v1/models/half:predict", body=body)
            response = connection.getresponse()
            return response.status, json.loads(response.read())["error"]
        finally:
            connection.close()

    status, error = post(b'{"instances": ["\xff\xfe"]}')
    assert status == 400 and error == "JSON Parse error: Invalid encoding in string. at offset: 16"
    status, error = post(b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert (status, error) == (400, "JSON Parse error: The document is nested too deeply to parse.")
    for text in (status, error):
        assert "RecursionError" not in str(text) and "UnicodeDecodeError" not in str(text)


def test_reload_config_over_grpc(tmp_path, templates, png):
    root = tmp_path / "serving"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        push(templates["tiny1"], root / name, 1)
    config = root / "models.config"
    write_config(config, "model_config_list {" + model_entry("a", root / "a") + "}")
    with LocalModelServer(model_config_file=config, rest_port=0, grpc_port=0) as server:
        request = model_management_pb2.ReloadConfigRequest()
        for name in ("a", "b"):
            model = request.config.model_config_list.config.add()
            model.name, model.base_path, model.model_platform = name, str(root / name), "tensorflow"
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            response = stub.HandleReloadConfigRequest(request, timeout=TIMEOUT)
            assert response.status.error_code == 0, response.status.error_message
            assert server.core.model_names() == ["a", "b"]
            request.config.model_config_list.config[1].version_labels["x"] = 5
            response = stub.HandleReloadConfigRequest(request, timeout=TIMEOUT)
            assert response.status.error_code == 9  # FAILED_PRECONDITION
            assert "version 5 of model b" in response.status.error_message
        assert predicted_class(server, "/v1/models/b:predict", png) == 1


def test_tf_serving_command_line_flags(tmp_path, templates, png):
    """A tensorflow_model_server command line, as a container would run it, configures the
    local server; --allow_version_labels_for_unavailable_models lets a label run ahead."""
    root = tmp_path / "serving"
    (root / "tiny").mkdir(parents=True)
    push(templates["tiny1"], root / "tiny", 1)
    config = root / "models.config"
    write_config(
        config,
        "model_config_list {"
        + model_entry("tiny", root / "tiny", 'version_labels { key: "next" value: 5 }')
        + "}",
    )
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    flags = [
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=7",
        "--file_system_poll_wait_seconds=0",
        "--enable_model_warmup=false",
        "--allow_version_labels_for_unavailable_models",
        "--rest_api_num_threads=3",
        "--grpc_max_threads=6",
        "--port=0",
        "--rest_api_port=0",
    ]
    args = parser.parse_args(flags)
    dashed = parser.parse_args(
        [
            f"{name.replace('_', '-')}={value}"
            for name, value in (f.split("=", 1) for f in flags[:3])
        ]
    )
    assert dashed.model_config_file == str(config)
    assert dashed.model_config_file_poll_wait_seconds == 7
    server = server_from_args(args)
    assert (server.config_poll_interval, server.poll_interval) == (7, 0)
    assert (server.enable_warmup, server.num_threads) == (False, 6)
    with server:
        assert server.core.labels("tiny") == {"next": 5}
        status, body = http_call(
            server, "POST", "/v1/models/tiny/labels/next:predict", {"instances": [b64(png)]}
        )
        assert (status, body["error"]) == (404, "Servable not found for request: Specific(tiny, 5)")
        assert predicted_class(server, "/v1/models/tiny:predict", png) == 1
