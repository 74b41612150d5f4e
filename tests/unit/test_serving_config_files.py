"""TF Serving's text-format config files as the local server reads them, its Prometheus page
and its batch scheduler (no model: a fake servable whose calls are recorded)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from serving.batching import BatchingOptions, BatchScheduler, parse_batching_parameters
from serving.metrics import DEFAULT_PROMETHEUS_PATH, ServingMetrics, parse_monitoring_config
from serving.model_manager import ModelSpecConfig, VersionPolicy, parse_model_server_config
from serving.protocol import ServingError

CONFIG = """
model_config_list {
  config {
    name: "classifier"
    base_path: "/models/classifier"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 3 versions: 1 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 3 }
  }
  config {
    name: "latest" base_path: "/models/latest"
    model_version_policy { latest { num_versions: 2 } }
  }
  config { name: "every" base_path: "/elsewhere/every" model_version_policy { all {} } }
}
"""


def test_model_server_config_models_policies_labels_and_base_path_map():
    models = parse_model_server_config(CONFIG, "models.config", ("/models", "/srv/serving"))
    assert models == [
        ModelSpecConfig(
            "classifier",
            "/srv/serving/classifier",
            VersionPolicy("specific", versions=(1, 3)),
            (("canary", 3), ("stable", 1)),
        ),
        ModelSpecConfig("latest", "/srv/serving/latest", VersionPolicy("latest", 2)),
        ModelSpecConfig("every", "/elsewhere/every", VersionPolicy("all")),
    ]
    assert VersionPolicy("latest", 2).wanted([1, 5, 3]) == {3, 5}
    assert VersionPolicy("specific", versions=(1, 4)).wanted([1, 2, 3]) == {1}
    assert VersionPolicy().wanted([]) == set()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { nmae: 'x' } }", "Invalid protobuf file: 'models.config'"),
        ("model_config_list {", "Invalid protobuf file: 'models.config'"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' "
            "base_path: '/b' } }",
            "Illegal to list model a multiple times in config list",
        ),
        ("model_config_list { config { name: 'a' } }", "model a has no base_path"),
        ("model_config_list { config { base_path: '/a' } }", "needs a name"),
        ("model_config_list { config { name: 'a' base_path: 'rel' } }", "must be absolute"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } }",
            "requested model_platform 'onnx'",
        ),
    ],
)
def test_bad_model_server_configs_name_the_problem(text, message):
    with pytest.raises(ServingError) as info:
        parse_model_server_config(text, "models.config")
    assert message in info.value.message


def test_batching_parameters_and_defaults():
    options = parse_batching_parameters(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 100 } "
        "num_batch_threads { value: 3 } max_enqueued_batches { value: 5 } "
        "thread_pool_name { value: 'pool' } allowed_batch_sizes: 2 allowed_batch_sizes: 8",
        "b.txt",
    )
    assert options == BatchingOptions(8, 100, 5, 3, "pool", (2, 8))
    defaults = parse_batching_parameters("", "b.txt")
    assert (defaults.max_batch_size, defaults.batch_timeout_micros) == (1000, 0)
    for text, message in (
        ("max_batch_size: 8", "Invalid protobuf file: 'b.txt'"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "must equal max_batch_size"),
        ("num_batch_threads { value: 0 }", "num_batch_threads must be positive"),
        ("pad_variable_length_inputs: true", "not implemented"),
    ):
        with pytest.raises(ServingError) as info:
            parse_batching_parameters(text, "b.txt")
        assert message in info.value.message


def test_monitoring_config():
    assert parse_monitoring_config("prometheus_config { enable: true }", "m") == (
        DEFAULT_PROMETHEUS_PATH
    )
    assert parse_monitoring_config('prometheus_config { enable: true path: "/m" }', "m") == "/m"
    assert parse_monitoring_config("prometheus_config { enable: false }", "m") is None
    with pytest.raises(ServingError, match="Invalid protobuf file: 'm'"):
        parse_monitoring_config("prometheus { enable: true }", "m")


def test_prometheus_page_format():
    metrics = ServingMetrics()
    metrics.record_request("m", "Predict", "REST", "OK", 15e-6)
    metrics.record_request("m", "Predict", "REST", "OK", 1.0)
    metrics.record_request('q"x', "Classify", "GRPC", "NOT_FOUND", 0.0)
    lines = metrics.render().splitlines()
    assert lines[0] == "# TYPE :tensorflow:serving:request_count counter"
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 2' in lines
    assert ':tensorflow:serving:request_count{model_name="q\\"x",status="NOT_FOUND"} 1' in lines
    prefix = ':tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",'
    prefix += 'entrypoint="REST",status="OK",'
    assert f'{prefix}le="10"}} 0' in lines
    assert f'{prefix}le="18"}} 1' in lines  # 15 us falls in [10, 18)
    assert f'{prefix}le="+Inf"}} 2' in lines
    labels = 'model_name="m",API="Predict",entrypoint="REST",status="OK"'
    assert f":tensorflow:serving:request_latency_count{{{labels}}} 2" in lines
    assert (
        f":tensorflow:serving:request_latency_sum{{{labels}}} 1.00002e+06" in lines
    )  # %.6g, as absl::StrCat


class _RecordingServable:
    """run_session doubles its input and records each call's batch size; the first call
    waits for ``release`` (so that later requests queue up behind it)."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[int] = []
        self.delay = delay
        self.release = threading.Event()

    def run_session(self, feeds, fetches):
        (array,) = feeds.values()
        self.calls.append(array.shape[0])
        if len(self.calls) == 1:
            self.release.wait(10)
        time.sleep(self.delay)
        return [array * 2 for _ in fetches]


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_batch_scheduler_merges_pads_and_splits():
    servable = _RecordingServable()
    scheduler = BatchScheduler(
        BatchingOptions(
            max_batch_size=8,
            batch_timeout_micros=0,
            num_batch_threads=1,
            max_enqueued_batches=2,
            allowed_batch_sizes=(4, 8),
        )
    )
    try:
        results: dict[int, np.ndarray] = {}

        def call(i: int) -> None:
            results[i] = scheduler.run(servable, {"x": np.full((1, 2), i, np.float32)}, ["y"])[0]

        first = threading.Thread(target=call, args=(0,))
        first.start()
        _wait_for(lambda: servable.calls)  # The first runs alone (timeout 0) and blocks...
        others = [threading.Thread(target=call, args=(i,)) for i in (1, 2, 3)]
        for thread in others:
            thread.start()
        _wait_for(lambda: scheduler.queued_tasks() == 3)  # ...while three queue behind it.
        servable.release.set()
        for thread in [first, *others]:
            thread.join(10)
        assert {i: r.tolist() for i, r in results.items()} == {
            i: [[2.0 * i, 2.0 * i]] for i in range(4)
        }
        assert servable.calls == [4, 4]  # 1 padded to 4, then 3 merged and padded to 4.

        with pytest.raises(ServingError, match="Task size 9 is larger than maximum input"):
            scheduler.run(servable, {"x": np.zeros((9, 2), np.float32)}, ["y"])
        with pytest.raises(ServingError, match="must have equal 0th-dimension size"):
            scheduler.run(servable, {"a": np.zeros(2), "b": np.zeros(3)}, ["y"])
        with pytest.raises(ServingError, match="at least one dimension"):
            scheduler.run(servable, {"a": np.zeros(())}, ["y"])
    finally:
        scheduler.stop()


def test_batch_scheduler_queue_full_is_unavailable():
    servable = _RecordingServable()
    servable.release.set()
    servable.delay = 0.5
    scheduler = BatchScheduler(
        BatchingOptions(max_batch_size=1, num_batch_threads=1, max_enqueued_batches=1)
    )
    errors: list[ServingError] = []

    def call() -> None:
        try:
            scheduler.run(servable, {"x": np.zeros((1,))}, ["y"])
        except ServingError as err:
            errors.append(err)

    try:
        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join(10)
    finally:
        scheduler.stop()
    assert errors and all(e.code == "UNAVAILABLE" for e in errors)
    assert "The batch scheduling queue to which this task was submitted is full" in (
        errors[0].message
    )
