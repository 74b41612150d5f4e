"""Prometheus metrics like TF Serving's (``--monitoring_config_file``).

TF Serving exports its TensorFlow monitoring metrics on the REST port, at the path of its
MonitoringConfig (default ``/monitoring/prometheus/metrics``), in Prometheus' text format
(tensorflow_serving/util/prometheus_exporter.cc): metric names with ``/`` turned into ``:``,
histograms as cumulative ``_bucket{le=...}`` lines with ``_sum`` and ``_count``. This module
keeps the per-model request metrics of tensorflow_serving/servables/tensorflow/util.cc:

- ``:tensorflow:serving:request_count{model_name, status}``: requests, by status code;
- ``:tensorflow:serving:request_latency{model_name, API, entrypoint, status}``: wall time in
  microseconds, TF Serving's buckets (10 us growing by 1.8x, 33 buckets);
- ``:tensorflow:serving:request_example_counts{model}`` and ``..._total``: tf.Examples per
  Classify/Regress/MultiInference request.

The monitoring config file is TF Serving's MonitoringConfig text proto:

    prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from serving.protocol import ServingError, invalid_argument

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath

REQUEST_COUNT = "/tensorflow/serving/request_count"
REQUEST_LATENCY = "/tensorflow/serving/request_latency"
EXAMPLE_COUNTS = "/tensorflow/serving/request_example_counts"
EXAMPLE_COUNT_TOTAL = "/tensorflow/serving/request_example_count_total"


def _exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """tensorflow::monitoring::Buckets::Exponential bucket limits (the last is +Inf)."""
    return tuple(scale * growth**i for i in range(count))


LATENCY_BUCKETS = _exponential_buckets(10, 1.8, 33)  # util.cc request_latency
EXAMPLE_BUCKETS = _exponential_buckets(1, 2, 15)  # util.cc request_example_counts


def _monitoring_config_class():
    """tensorflow.serving.MonitoringConfig (monitoring_config.proto), built here because
    tensorflow-serving-api does not ship that proto's Python module."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=field.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=field.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def parse_monitoring_config(text: str, source: str) -> str | None:
    """The Prometheus path a MonitoringConfig text proto enables, or None when disabled."""
    from google.protobuf import text_format

    proto = _monitoring_config_class()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise invalid_argument(
            f"Invalid protobuf file: '{source}' "
            f"(Error parsing text-format tensorflow.serving.MonitoringConfig: {err})"
        ) from None
    if not proto.prometheus_config.enable:
        return None
    path = proto.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
    if not path.startswith("/"):
        raise invalid_argument(f"{source}: prometheus_config.path must start with '/': {path}")
    return path


def read_monitoring_config(path: str | os.PathLike) -> str | None:
    """Reads ``--monitoring_config_file``; returns the metrics path, or None if disabled."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ServingError(
            "NOT_FOUND", f"{path}: cannot read the monitoring config: {err}"
        ) from None
    return parse_monitoring_config(text, os.fspath(path))


@dataclasses.dataclass
class _Histogram:
    limits: tuple[float, ...]
    counts: list[int]
    total: float = 0.0

    def add(self, value: float) -> None:
        for index, limit in enumerate(self.limits):
            if value < limit:
                self.counts[index] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value


def _number(value: float) -> str:
    """A number as absl::StrCat writes a double (six significant digits)."""
    text = f"{value:.6g}"
    return text


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    return ",".join(f'{n}="{_label_value(v)}"' for n, v in zip(names, values, strict=True))


def prometheus_name(name: str) -> str:
    """prometheus_exporter.cc GetPrometheusMetricName: ``/a/b_c`` -> ``:a:b_c``."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "_") else ":" for c in name)
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


class ServingMetrics:
    """Request counts and latencies per model and API; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._latencies: dict[tuple[str, str, str, str], _Histogram] = {}
        self._examples: dict[str, _Histogram] = {}
        self._example_totals: dict[str, int] = {}

    def record_request(
        self, model_name: str, api: str, entrypoint: str, status: str, seconds: float
    ) -> None:
        """One finished request: ``api`` e.g. "Predict", ``entrypoint`` "GRPC" or "REST",
        ``status`` the canonical code name ("OK", "INVALID_ARGUMENT", ...)."""
        with self._lock:
            key = (model_name, status)
            self._counts[key] = self._counts.get(key, 0) + 1
            histogram = self._latencies.get((model_name, api, entrypoint, status))
            if histogram is None:
                histogram = _Histogram(LATENCY_BUCKETS, [0] * (len(LATENCY_BUCKETS) + 1))
                self._latencies[(model_name, api, entrypoint, status)] = histogram
            histogram.add(seconds * 1e6)

    def record_examples(self, model_name: str, count: int) -> None:
        """RecordRequestExampleCount: the tf.Examples of one Classify/Regress request."""
        with self._lock:
            histogram = self._examples.get(model_name)
            if histogram is None:
                histogram = _Histogram(EXAMPLE_BUCKETS, [0] * (len(EXAMPLE_BUCKETS) + 1))
                self._examples[model_name] = histogram
            histogram.add(count)
            self._example_totals[model_name] = self._example_totals.get(model_name, 0) + count

    def request_count(self, model_name: str, status: str = "OK") -> int:
        with self._lock:
            return self._counts.get((model_name, status), 0)

    def render(self) -> str:
        """The Prometheus text page (metrics sorted by name, as TF Serving's registry)."""
        with self._lock:
            counts = sorted(self._counts.items())
            latencies = sorted(
                (k, _Histogram(h.limits, list(h.counts), h.total))
                for k, h in self._latencies.items()
            )
            examples = sorted(
                (k, _Histogram(h.limits, list(h.counts), h.total))
                for k, h in self._examples.items()
            )
            totals = sorted(self._example_totals.items())
        lines: list[str] = []
        if examples:
            self._histogram_lines(
                lines, EXAMPLE_COUNTS, ("model",), [((m,), h) for m, h in examples]
            )
        if totals:
            name = prometheus_name(EXAMPLE_COUNT_TOTAL)
            lines.append(f"# TYPE {name} counter")
            lines += [f"{name}{{{_labels(('model',), (m,))}}} {n}" for m, n in totals]
        if counts:
            name = prometheus_name(REQUEST_COUNT)
            lines.append(f"# TYPE {name} counter")
            lines += [
                f"{name}{{{_labels(('model_name', 'status'), key)}}} {n}" for key, n in counts
            ]
        if latencies:
            self._histogram_lines(
                lines, REQUEST_LATENCY, ("model_name", "API", "entrypoint", "status"), latencies
            )
        return "\n".join(lines) + "\n"

    @staticmethod
    def _histogram_lines(lines: list[str], metric: str, label_names, points) -> None:
        name = prometheus_name(metric)
        lines.append(f"# TYPE {name} histogram")
        for label_values, histogram in points:
            labels = _labels(label_names, label_values)
            prefix = f"{name}_bucket{{{labels}{',' if labels else ''}"
            cumulative = 0
            for index, count in enumerate(histogram.counts):
                cumulative += count
                limit = (
                    _number(histogram.limits[index]) if index < len(histogram.limits) else "+Inf"
                )
                lines.append(f'{prefix}le="{limit}"}} {cumulative}')
            lines.append(f"{name}_sum{{{labels}}} {_number(histogram.total)}")
            lines.append(f"{name}_count{{{labels}}} {cumulative}")
