"""InfraCheck: the candidate is loaded by a model server and answers its own warmup requests.

The candidate is a tiny SavedModel with the pipeline's signature contract (encoded PNGs in;
probabilities, class_id and class_name out) and real warmup requests written by
trainer_module.export from holdout PNGs. The executor runs for real on real artifacts; which
server it picks is steered only through PATH: an empty PATH leaves the local server, a fake
``tensorflow_model_server`` (a shim that runs ``python -m serving.server`` with TF Serving's
flags translated) proves the binary path. Neither a real binary nor a Docker engine exists here.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2, prediction_log_pb2
from tfx.components.util import model_utils
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.infra_check import InfraCheck, checks, executor, servers
from tests.conftest import REPO_ROOT
from tests.tiny_model import save_tiny_model
from trainer_module import features
from trainer_module.export import WARMUP_DIR, WARMUP_FILE, write_warmup_requests

MODEL_NAME = "tiny"
NUM_CLASSES = 4
CLASS_NAMES = [f"class_{i}" for i in range(NUM_CLASSES)]
NUM_IMAGES = 3  # Warmup: one request per image and one with all of them.
TIMEOUT_SECONDS = 120


@pytest.fixture(scope="module")
def pngs(holdout_dir: Path) -> list[bytes]:
    classes = sorted(p for p in holdout_dir.iterdir() if p.is_dir())[:NUM_IMAGES]
    return [sorted(c.glob("*.png"))[0].read_bytes() for c in classes]


@pytest.fixture(scope="module")
def candidate(tmp_path_factory, pngs) -> Path:
    """The tiny SavedModel with warmup requests, to copy from."""
    path = save_tiny_model(
        tmp_path_factory.mktemp("candidate") / "saved_model", NUM_CLASSES, favourite=1
    )
    write_warmup_requests(str(path), pngs)
    return path


@pytest.fixture
def empty_path(tmp_path, monkeypatch) -> Path:
    """PATH with neither tensorflow_model_server nor docker: the local server is chosen."""
    bin_dir = tmp_path / "empty-bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def model_artifact(root: Path, source: Path) -> standard_artifacts.Model:
    """A Trainer-like Model artifact whose serving folder is a copy of ``source``."""
    model = standard_artifacts.Model()
    model.uri = str(root / "Trainer" / "model" / "1")
    shutil.copytree(source, path_utils.serving_model_path(model.uri))
    return model


def serving_dir(model: standard_artifacts.Model) -> Path:
    return Path(path_utils.serving_model_path(model.uri))


def run_executor(root: Path, model: standard_artifacts.Model, **exec_properties):
    """Runs InfraCheck's executor on ``model``; returns the InfraBlessing and the run time."""
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(root / "InfraCheck" / "blessing" / "2")
    os.makedirs(blessing.uri)
    properties = {"model_name": MODEL_NAME, "timeout_seconds": TIMEOUT_SECONDS, **exec_properties}
    started = time.monotonic()
    executor.Executor().Do({"model": [model]}, {"blessing": [blessing]}, properties)
    return blessing, time.monotonic() - started


def verdict(blessing) -> dict:
    return {
        "blessed": blessing.get_int_custom_property("blessed"),
        "server": blessing.get_string_custom_property("infra_check_server"),
        "message": blessing.get_string_custom_property("infra_check_message"),
        "requests": blessing.get_int_custom_property("infra_check_requests"),
        "files": sorted(os.listdir(blessing.uri)),
    }


def staging_dirs() -> set[str]:
    """The executor's temporary folders (staged model, server log) now present."""
    return {p.name for p in Path(tempfile.gettempdir()).glob("infra-check-*")}


# --- Through a real model server ----------------------------------------------------------------


@pytest.mark.slow
def test_local_server_blesses_a_good_model(tmp_path, candidate, empty_path):
    before = staging_dirs()
    model = model_artifact(tmp_path, candidate)
    blessing, _ = run_executor(tmp_path, model)
    result = verdict(blessing)
    assert result["blessed"] == 1, result
    assert model_utils.is_infra_validated(blessing)
    assert result["server"] == "local_server"
    assert result["requests"] == NUM_IMAGES + 1
    assert result["files"] == ["INFRA_BLESSED"]
    message = result["message"]
    assert "\n" not in message
    assert f"answered {NUM_IMAGES + 1} warmup Predict requests" in message
    assert f"batch sizes 1, 1, 1, {NUM_IMAGES}" in message
    assert f"probabilities [batch, {NUM_CLASSES}]" in message
    assert staging_dirs() <= before  # The staged copy is removed.


FAKE_TF_SERVING = """#!{python}
# A stand-in for tensorflow_model_server: TF Serving's flags -> python -m serving.server.
import argparse, json, os, sys

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--rest_api_port", type=int, default=8501)
parser.add_argument("--model_name", required=True)
parser.add_argument("--model_base_path", required=True)
args = parser.parse_args()
base = args.model_base_path
with open(os.environ["FAKE_TF_SERVING_RECORD"], "w") as record:
    json.dump({{
        "argv": sys.argv[1:],
        "pid": os.getpid(),
        "versions": sorted(os.listdir(base)),
        "files": sorted(os.listdir(os.path.join(base, "1"))),
    }}, record)
os.chdir({repo!r})
os.environ["PYTHONPATH"] = {repo!r}
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.execv(sys.executable, [
    sys.executable, "-m", "serving.server",
    "--model-base-path=" + base,
    "--model-name=" + args.model_name,
    "--port=%d" % args.port,
    # TF Serving: 0 turns REST off; serving.server: -1 does.
    "--rest-api-port=%d" % (args.rest_api_port or -1),
])
"""


@pytest.mark.slow
def test_tensorflow_model_server_on_path_is_used(tmp_path, candidate, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "tensorflow_model_server"
    shim.write_text(FAKE_TF_SERVING.format(python=sys.executable, repo=str(REPO_ROOT)))
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    record_path = tmp_path / "fake_tf_serving.json"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_TF_SERVING_RECORD", str(record_path))
    assert servers.select_server().kind == "tensorflow_model_server"
    assert servers.select_server("tensorflow_model_server").kind == "tensorflow_model_server"

    model = model_artifact(tmp_path, candidate)
    blessing, _ = run_executor(tmp_path, model)
    result = verdict(blessing)
    assert result["blessed"] == 1, result
    assert result["server"] == "tensorflow_model_server"
    assert result["requests"] == NUM_IMAGES + 1
    assert result["message"].startswith("tensorflow_model_server loaded version 1 of tiny")

    record = json.loads(record_path.read_text())
    argv = record["argv"]
    assert argv[0].startswith("--port=") and int(argv[0].split("=")[1]) > 0
    assert argv[1:3] == ["--rest_api_port=0", f"--model_name={MODEL_NAME}"]
    assert argv[3].startswith("--model_base_path=/") and argv[3].endswith(f"/{MODEL_NAME}")
    # A staged copy <tmp>/<model_name>/1/, not the artifact's own folder.
    assert record["versions"] == ["1"]
    assert "saved_model.pb" in record["files"] and WARMUP_DIR in record["files"]
    assert not argv[3].startswith(f"--model_base_path={tmp_path}")
    assert not Path(argv[3].split("=", 1)[1]).exists()  # Removed afterwards.
    with pytest.raises(ProcessLookupError):  # And the server was stopped.
        os.kill(record["pid"], 0)


@pytest.mark.slow
def test_corrupt_model_is_not_blessed(tmp_path, candidate, empty_path):
    model = model_artifact(tmp_path, candidate)
    saved_model_pb = serving_dir(model) / "saved_model.pb"
    saved_model_pb.write_bytes(saved_model_pb.read_bytes()[: saved_model_pb.stat().st_size // 2])
    blessing, _ = run_executor(tmp_path, model)
    result = verdict(blessing)
    assert result["blessed"] == 0, result
    assert not model_utils.is_infra_validated(blessing)
    assert result["server"] == "local_server"
    assert result["requests"] == 0
    assert result["files"] == ["INFRA_NOT_BLESSED"]
    assert "version 1 of tiny failed to load" in result["message"], result
    assert "(in local_server)" in result["message"]
    assert "\n" not in result["message"]


@pytest.mark.slow
def test_server_that_cannot_start_is_not_blessed(tmp_path, candidate, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "tensorflow_model_server"
    shim.write_text("#!/bin/sh\necho 'Could not bind: address in use' >&2\nexit 3\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    blessing, seconds = run_executor(tmp_path, model_artifact(tmp_path, candidate))
    result = verdict(blessing)
    assert result["blessed"] == 0 and result["server"] == "tensorflow_model_server"
    assert "exited with code 3" in result["message"]
    assert "Could not bind: address in use" in result["message"]
    assert seconds < 30


# --- Without a server ---------------------------------------------------------------------------


def test_missing_warmup_file_is_not_blessed(tmp_path, candidate, empty_path):
    model = model_artifact(tmp_path, candidate)
    shutil.rmtree(serving_dir(model) / WARMUP_DIR)
    blessing, seconds = run_executor(tmp_path, model)
    result = verdict(blessing)
    assert result["blessed"] == 0
    assert result["files"] == ["INFRA_NOT_BLESSED"]
    assert result["requests"] == 0
    assert result["server"] == "local_server"
    assert "no warmup requests" in result["message"]
    assert f"{WARMUP_DIR}/{WARMUP_FILE} is missing" in result["message"]
    assert "no server started" in result["message"]
    assert seconds < 10


def test_missing_saved_model_is_not_blessed(tmp_path, empty_path):
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "empty-model")
    blessing, _ = run_executor(tmp_path, model)
    result = verdict(blessing)
    assert result["blessed"] == 0 and "no SavedModel" in result["message"]


# --- The pure helpers ---------------------------------------------------------------------------


def test_auto_server_choice_order():
    ready = checks.DockerProbe(True, image_ready=True)
    binary = "/opt/tfs/tensorflow_model_server"
    assert checks.choose_server("auto", binary, ready).kind == "tensorflow_model_server"
    assert checks.choose_server("auto", None, ready).kind == "docker"
    assert checks.choose_server("auto", None, checks.DockerProbe(False)).kind == "local_server"
    # A daemon without the image: the local server, and the reason says why.
    no_image = checks.DockerProbe(True, detail="tensorflow/serving:2.16.1 cannot be pulled (x)")
    choice = checks.choose_server("auto", None, no_image)
    assert choice.kind == "local_server"
    assert "cannot be pulled (x)" in choice.reason and choice.reason.startswith("auto:")
    assert checks.choose_server("local", binary, ready).kind == "local_server"
    assert checks.choose_server("docker", binary, ready, image="my/tfs:1").image == "my/tfs:1"


def test_config_offers_exactly_the_servers_and_image_of_the_check():
    from pipeline import config

    assert config.INFRA_CHECK_SERVERS == checks.REQUESTABLE_SERVERS
    assert config.TF_SERVING_IMAGE == checks.TF_SERVING_IMAGE
    assert config.PipelineConfig().infra_check_server == checks.AUTO


def test_requested_server_that_cannot_run_is_an_infrastructure_error():
    with pytest.raises(checks.InfraUnavailableError, match="no tensorflow_model_server is on"):
        checks.choose_server("tensorflow_model_server", None, checks.DockerProbe(True, True))
    with pytest.raises(checks.InfraUnavailableError, match="cannot be pulled"):
        checks.choose_server(
            "docker", None, checks.DockerProbe(True, detail="X cannot be pulled (denied)")
        )
    with pytest.raises(ValueError, match="not one of"):
        checks.choose_server("podman", None, checks.DockerProbe(False))


FAKE_DOCKER = """#!/bin/sh
# A docker client: `info` exits $DOCKER_RC; images are absent and cannot be pulled; `run`
# fails as docker does when an image is missing, with its usage hint as the last line.
case "$1" in
  info) exit "$DOCKER_RC" ;;
  image) exit 1 ;;
  pull) echo "Error response from daemon: pull access denied for tensorflow/serving" >&2
        exit 1 ;;
  run) echo "docker: Error response from daemon: No such image: $RUN_IMAGE." >&2
       echo "See 'docker run --help'." >&2
       exit 125 ;;
  rm) exit 0 ;;
esac
exit 9
"""


@pytest.fixture
def fake_docker(tmp_path, monkeypatch) -> Path:
    """PATH holding only a fake docker client (see FAKE_DOCKER); its daemon answers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("DOCKER_RC", "0")
    return docker


def test_docker_daemon_is_probed_with_docker_info(tmp_path, fake_docker, monkeypatch):
    monkeypatch.setenv("DOCKER_RC", "1")  # A client without an engine.
    assert not servers.docker_daemon_available()
    choice = servers.select_server()
    assert choice.kind == "local_server" and "no Docker daemon answers" in choice.reason
    monkeypatch.setenv("DOCKER_RC", "0")
    assert servers.docker_daemon_available()
    fake_docker.write_text("#!/bin/sh\nsleep 30\n")
    started = time.monotonic()
    assert not servers.docker_daemon_available(timeout=0.5)  # A hung daemon is bounded.
    assert time.monotonic() - started < 10
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert "no docker client" in servers.select_server().reason


def test_docker_without_a_pullable_image_falls_back_to_the_local_server(fake_docker):
    """The machine of the bug report: a Docker engine, but TF Serving's image can't be had."""
    choice = servers.select_server("auto", "tensorflow/serving:2.16.1", pull_timeout=10)
    assert choice.kind == "local_server"
    assert "cannot be pulled (Error response from daemon: pull access denied" in choice.reason
    with pytest.raises(checks.InfraUnavailableError, match="pull access denied"):
        servers.select_server("docker", "tensorflow/serving:2.16.1", pull_timeout=10)


def test_docker_run_failure_names_dockers_error_not_its_usage_hint(fake_docker, monkeypatch):
    monkeypatch.setenv("RUN_IMAGE", "my/tfs:1")
    choice = checks.ServerChoice("docker", "test", image="my/tfs:1")
    with pytest.raises(checks.InfraUnavailableError) as raised:
        servers.start(choice, "/tmp/m", MODEL_NAME, Path("/tmp"), timeout=10)
    message = str(raised.value)
    assert "exited with code 125" in message
    assert "No such image: my/tfs:1" in message
    assert "--help" not in message


def test_requested_server_missing_fails_the_component(tmp_path, candidate, empty_path):
    model = model_artifact(tmp_path, candidate)
    with pytest.raises(executor.InfraCheckInfrastructureError) as raised:
        run_executor(tmp_path, model, server="tensorflow_model_server")
    assert "infrastructure error, the model was not judged" in str(raised.value)
    assert "no tensorflow_model_server is on PATH" in str(raised.value)


def _save_model_with_py_function(path: Path) -> Path:
    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x):
            return {"y": tf.py_function(lambda v: v * 2.0, [x], tf.float32)}

    model = Model()
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})
    return path


def test_python_ops_are_refused_before_any_server_starts(tmp_path, empty_path):
    saved = _save_model_with_py_function(tmp_path / "py_function_model")
    assert "EagerPyFunc" in checks.saved_model_ops(str(saved))
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "artifact")
    shutil.copytree(saved, path_utils.serving_model_path(model.uri))
    blessing, seconds = run_executor(tmp_path, model)
    result = verdict(blessing)
    assert result["blessed"] == 0, result
    assert "uses EagerPyFunc (tf.py_function or tf.numpy_function)" in result["message"]
    assert "no server started" in result["message"]
    assert seconds < 30


def test_ops_outside_core_tensorflow_are_refused(tmp_path, candidate):
    from tensorflow.core.protobuf import saved_model_pb2

    copy = tmp_path / "custom_op_model"
    shutil.copytree(candidate, copy)
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((copy / "saved_model.pb").read_bytes())
    function = saved_model.meta_graphs[0].graph_def.library.function[0]
    function.node_def[0].op = "SentencepieceTokenizeOp"  # A TF-Text op, not in core TF.
    (copy / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    with pytest.raises(checks.InfraCheckError, match="ops outside core TensorFlow: Sentence"):
        checks.check_ops_servable(str(copy))
    checks.check_ops_servable(str(candidate))  # The pipeline's own kind of model passes.


def test_server_commands():
    assert checks.tf_serving_command("/bin/tfs", 9000, "m", "/tmp/x/m") == [
        "/bin/tfs",
        "--port=9000",
        "--rest_api_port=0",
        "--model_name=m",
        "--model_base_path=/tmp/x/m",
    ]
    command = checks.docker_run_command("c1", 9001, "m", "/tmp/x/m")
    assert command[:3] == ["docker", "run", "-d"]
    assert "--rm" not in command  # Its log must outlive a crash; stop() removes it.
    assert "127.0.0.1:9001:8500" in command
    assert "/tmp/x/m:/models/m:ro" in command
    assert "MODEL_NAME=m" in command
    assert command[-1] == "tensorflow/serving:2.16.1"


def test_stage_model_copies_into_version_1(tmp_path, candidate):
    base = checks.stage_model(str(candidate), str(tmp_path / "staged"), MODEL_NAME)
    assert base == str(tmp_path / "staged" / MODEL_NAME)
    version = Path(base) / "1"
    assert (version / "saved_model.pb").read_bytes() == (candidate / "saved_model.pb").read_bytes()
    assert (version / WARMUP_DIR / WARMUP_FILE).is_file()
    assert not (version / "saved_model.pb").is_symlink()
    assert stat.S_IMODE((version / "saved_model.pb").stat().st_mode) == 0o644


def test_read_warmup_requests(tmp_path, candidate):
    requests = checks.read_warmup_requests(str(candidate))
    assert [checks.request_batch_size(r) for r in requests] == [1, 1, 1, NUM_IMAGES]
    assert requests[0].model_spec.signature_name == features.SERVING_SIGNATURE

    def warmup_file(data: bytes) -> str:
        model = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        (model / WARMUP_DIR).mkdir(parents=True)
        (model / WARMUP_DIR / WARMUP_FILE).write_bytes(data)
        return str(model)

    with pytest.raises(checks.InfraCheckError, match="cannot read .* as a TFRecord"):
        checks.read_warmup_requests(warmup_file(b"not a TFRecord file at all"))
    with pytest.raises(checks.InfraCheckError, match="holds 0 records and no PredictRequest"):
        checks.read_warmup_requests(warmup_file(b""))
    with pytest.raises(checks.InfraCheckError, match="is missing"):
        checks.read_warmup_requests(str(tmp_path / "nothing"))
    classify_only = tmp_path / "classify"
    (classify_only / WARMUP_DIR).mkdir(parents=True)
    with tf.io.TFRecordWriter(str(classify_only / WARMUP_DIR / WARMUP_FILE)) as writer:
        log = prediction_log_pb2.PredictionLog()
        log.classify_log.request.model_spec.name = "x"
        writer.write(log.SerializeToString())
    with pytest.raises(checks.InfraCheckError, match="holds 1 records and no PredictRequest"):
        checks.read_warmup_requests(str(classify_only))


def test_prepare_request_addresses_the_model_and_asks_for_every_output(candidate):
    request = checks.read_warmup_requests(str(candidate))[0]
    request.model_spec.version.value = 7
    request.output_filter.append(features.CLASS_ID_OUTPUT)
    prepared = checks.prepare_request(request, "served")
    assert prepared.model_spec.name == "served"
    assert not prepared.model_spec.HasField("version")
    assert not prepared.output_filter
    assert prepared.model_spec.signature_name == features.SERVING_SIGNATURE
    assert request.model_spec.version.value == 7  # The original is untouched.


def response(batch: int = 2, classes: int = 3, **overrides) -> predict_pb2.PredictResponse:
    outputs = {
        features.PROBABILITIES_OUTPUT: np.full((batch, classes), 1.0 / classes, np.float32),
        features.CLASS_ID_OUTPUT: np.zeros(batch, np.int64),
        features.CLASS_NAME_OUTPUT: np.array([b"a"] * batch, dtype=object),
    }
    outputs.update(overrides)
    result = predict_pb2.PredictResponse()
    for name, value in outputs.items():
        if value is not None:
            result.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return result


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({features.CLASS_NAME_OUTPUT: None}, "no 'class_name' output"),
        ({features.PROBABILITIES_OUTPUT: np.zeros((2, 3), np.float64)}, "dtype float64"),
        (
            {features.PROBABILITIES_OUTPUT: np.zeros(2, np.float32)},
            "shape [2], expected [batch, K]",
        ),
        ({features.PROBABILITIES_OUTPUT: np.zeros((1, 3), np.float32)}, "batch=2"),
        ({features.CLASS_ID_OUTPUT: np.zeros((2, 1), np.int64)}, "'class_id' has shape [2, 1]"),
        ({features.CLASS_ID_OUTPUT: np.zeros(3, np.int64)}, "'class_id' has shape [3]"),
        ({features.CLASS_ID_OUTPUT: np.zeros(2, np.int32)}, "dtype int32, expected int64"),
        ({features.CLASS_NAME_OUTPUT: np.array([b"a"], dtype=object)}, "'class_name' has shape"),
        ({features.CLASS_ID_OUTPUT: np.array([0, 3], np.int64)}, "outside [0, 3)"),
        (
            {features.PROBABILITIES_OUTPUT: np.array([[np.nan] * 3] * 2, np.float32)},
            "NaN or inf",
        ),
        ({features.PROBABILITIES_OUTPUT: np.zeros((2, 0), np.float32)}, "has no classes"),
    ],
)
def test_invalid_responses_are_named(overrides, message):
    with pytest.raises(checks.InfraCheckError) as info:
        checks.validate_predict_response(response(**overrides), batch=2)
    assert message in str(info.value)


def test_valid_response_gives_the_number_of_classes():
    assert checks.validate_predict_response(response(batch=2, classes=5), batch=2) == 5


def test_model_status_interpretation():
    states = get_model_status_pb2.ModelVersionStatus.State

    def status(state, code=0, message="", version=1):
        answer = get_model_status_pb2.GetModelStatusResponse()
        entry = answer.model_version_status.add(version=version, state=state)
        entry.status.error_code = code
        entry.status.error_message = message
        return answer

    assert checks.interpret_model_status(status(states.AVAILABLE), "m")[0] == checks.AVAILABLE
    assert checks.interpret_model_status(status(states.LOADING), "m")[0] == checks.WAITING
    assert checks.interpret_model_status(status(states.AVAILABLE, version=2), "m") == (
        checks.WAITING,
        "version 1 of m not reported yet",
    )
    assert checks.interpret_model_status(status(states.END, 15, "bad proto"), "m") == (
        checks.FAILED,
        "version 1 of m failed to load: DATA_LOSS: bad proto",
    )
    assert checks.interpret_model_status(status(states.END), "m")[0] == checks.FAILED


# --- The component ------------------------------------------------------------------------------


def _importer(uri: Path, artifact_type, custom_properties: dict):
    from tfx import v1 as tfx

    return tfx.dsl.Importer(
        source_uri=str(uri), artifact_type=artifact_type, custom_properties=custom_properties
    )


def test_component_contract():
    from tfx import v1 as tfx

    model = tfx.dsl.Channel(type=standard_artifacts.Model)
    component = InfraCheck(model=model, model_name=MODEL_NAME)
    assert component.exec_properties == {
        "model_name": MODEL_NAME,
        "timeout_seconds": 300,
        "server": "auto",
        "image": "tensorflow/serving:2.16.1",
    }
    assert component.outputs["blessing"].type == standard_artifacts.InfraBlessing
    assert component.id == "InfraCheck"
    for bad in ("", "a/b", "../x", " x"):
        with pytest.raises(ValueError, match="model_name"):
            InfraCheck(model=model, model_name=bad)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="timeout_seconds"):
            InfraCheck(model=model, model_name=MODEL_NAME, timeout_seconds=bad)


def _pusher_pipeline(
    tmp_path: Path, model_dir: Path, name: str, pipeline_root: str = "", server: str = "auto"
):
    """Imported model and ModelBlessing (blessed) -> InfraCheck -> VersionedPusher."""
    from tfx import v1 as tfx

    from components.versioned_pusher import VersionedPusher

    model = _importer(model_dir, standard_artifacts.Model, {"tfx_version": "1.16.0"}).with_id(
        "model_importer"
    )
    model_blessing = _importer(
        tmp_path / "model_blessing", standard_artifacts.ModelBlessing, {"blessed": 1}
    ).with_id("model_blessing_importer")
    infra_check = InfraCheck(
        model=model.outputs["result"], model_name=MODEL_NAME, timeout_seconds=60, server=server
    )
    pusher = VersionedPusher(
        model=model.outputs["result"],
        model_blessing=model_blessing.outputs["result"],
        model_dir=str(tmp_path / "serving" / MODEL_NAME),
        infra_blessing=infra_check.outputs["blessing"],
    )
    return tfx.dsl.Pipeline(
        pipeline_name=name,
        pipeline_root=pipeline_root or str(tmp_path / "root"),
        components=[model, model_blessing, infra_check, pusher],
        metadata_connection_config=None
        if pipeline_root
        else tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp_path / "metadata.sqlite")
        ),
    )


@pytest.mark.slow
def test_local_dag_runner_blocks_the_push_of_an_unservable_model(tmp_path, candidate, empty_path):
    from ml_metadata import metadata_store
    from tfx import v1 as tfx

    model_dir = tmp_path / "model"
    shutil.copytree(candidate, model_dir / "Format-Serving")
    shutil.rmtree(model_dir / "Format-Serving" / WARMUP_DIR)
    (tmp_path / "model_blessing").mkdir()
    pipeline = _pusher_pipeline(tmp_path, model_dir, "infra-check-local")
    tfx.orchestration.LocalDagRunner().run(pipeline)

    store = metadata_store.MetadataStore(pipeline.metadata_connection_config)
    [infra_blessing] = store.get_artifacts_by_type(standard_artifacts.InfraBlessing.TYPE_NAME)
    properties = infra_blessing.custom_properties
    assert properties["blessed"].int_value == 0
    assert properties["infra_check_server"].string_value == "local_server"
    assert "no warmup requests" in properties["infra_check_message"].string_value
    assert os.path.exists(os.path.join(infra_blessing.uri, "INFRA_NOT_BLESSED"))
    [pushed] = store.get_artifacts_by_type(standard_artifacts.PushedModel.TYPE_NAME)
    assert pushed.custom_properties["pushed"].int_value == 0
    assert not (tmp_path / "serving" / MODEL_NAME).exists()


@pytest.mark.slow
def test_an_infrastructure_error_fails_the_run_and_says_so(tmp_path, candidate, empty_path):
    """A requested server that cannot run: the run fails (exit 1), it does not refuse the model."""
    import dataclasses

    from ml_metadata import metadata_store
    from tfx import v1 as tfx

    from pipeline.config import PipelineConfig
    from pipeline.local import describe_failure

    model_dir = tmp_path / "model"
    shutil.copytree(candidate, model_dir / "Format-Serving")
    (tmp_path / "model_blessing").mkdir()
    name = "infra-check-missing-server"
    pipeline = _pusher_pipeline(tmp_path, model_dir, name, server="tensorflow_model_server")
    with pytest.raises(Exception) as raised:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    config = dataclasses.replace(
        PipelineConfig(),
        pipeline_name=name,
        metadata_path=str(tmp_path / "metadata.sqlite"),
        pipeline_root=str(tmp_path / "root"),
    )
    from pipeline.run_summary import list_run_ids, open_store

    [run_id] = list_run_ids(open_store(config.metadata_path))
    line = describe_failure(config, run_id, raised.value, None)
    assert line.startswith("component InfraCheck failed"), line
    assert "infrastructure error, the model was not judged" in line
    assert "no tensorflow_model_server is on PATH" in line
    store = metadata_store.MetadataStore(pipeline.metadata_connection_config)
    assert not store.get_artifacts_by_type(standard_artifacts.InfraBlessing.TYPE_NAME)
    assert not (tmp_path / "serving" / MODEL_NAME).exists()


@pytest.mark.slow
def test_kubeflow_v2_compiles_the_infra_check(tmp_path):
    pytest.importorskip("kfp")
    import yaml
    from tfx import v1 as tfx

    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image="img:1"),
        output_dir=str(tmp_path),
        output_filename="spec.yaml",
    )
    (tmp_path / "model_blessing").mkdir()
    pipeline = _pusher_pipeline(
        tmp_path, tmp_path / "model", "infra-check-kfp", pipeline_root="gs://no-such-bucket/root"
    )
    runner.run(pipeline, write_out=True)
    spec = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    container = spec["deploymentSpec"]["executors"]["InfraCheck_executor"]["container"]
    assert "components.infra_check.executor.Executor" in container["args"]
    task = spec["root"]["dag"]["tasks"]["InfraCheck"]
    parameters = {
        name: value["runtimeValue"]["constantValue"]
        for name, value in task["inputs"]["parameters"].items()
    }
    assert parameters == {
        "model_name": {"stringValue": MODEL_NAME},
        "timeout_seconds": {"intValue": "60"},
        "server": {"stringValue": "auto"},
        "image": {"stringValue": "tensorflow/serving:2.16.1"},
    }
    pusher_inputs = spec["root"]["dag"]["tasks"]["VersionedPusher"]["inputs"]["artifacts"]
    assert pusher_inputs["infra_blessing"]["taskOutputArtifact"] == {
        "outputArtifactKey": "blessing",
        "producerTask": "InfraCheck",
    }
