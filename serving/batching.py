"""Server-side request batching, like TF Serving's batching session (``--enable_batching``).

Concurrent Session runs of the same signature (same feeds and fetches, same inner shapes and
dtypes) wait in a queue and are merged along the first dimension into one model call, whose
outputs are split back to the callers (tensorflow_serving/batching/batching_session.cc over a
SharedBatchScheduler). The parameters are TF Serving's ``BatchingParameters``, read from the
text file of ``--batching_parameters_file``:

    max_batch_size { value: 32 }
    batch_timeout_micros { value: 2000 }
    max_enqueued_batches { value: 100 }
    num_batch_threads { value: 4 }

A batch is run when it is full, or when its oldest request has waited batch_timeout_micros
and a batch thread is free; while every batch thread is busy, new requests join the open
batch. Unlike TF Serving, requests whose inner shapes differ go to separate batches instead
of failing the merge (pad_variable_length_inputs is not implemented).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.protocol import ServingError, invalid_argument

logger = logging.getLogger(__name__)

DEFAULT_THREAD_POOL_NAME = "model_server_batch_threads"  # server.cc's default


def _batching_parameters_class():
    """tensorflow_serving.BatchingParameters (session_bundle_config.proto), built here
    because tensorflow-serving-api does not ship that proto's Python module."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, name, type_name in (
        (1, "max_batch_size", ".google.protobuf.Int64Value"),
        (2, "batch_timeout_micros", ".google.protobuf.Int64Value"),
        (3, "max_enqueued_batches", ".google.protobuf.Int64Value"),
        (4, "num_batch_threads", ".google.protobuf.Int64Value"),
        (5, "thread_pool_name", ".google.protobuf.StringValue"),
        (8, "enable_large_batch_splitting", ".google.protobuf.BoolValue"),
        (9, "max_execution_batch_size", ".google.protobuf.Int64Value"),
    ):
        message.field.add(
            name=name,
            number=number,
            type=field.TYPE_MESSAGE,
            type_name=type_name,
            label=field.LABEL_OPTIONAL,
        )
    message.field.add(
        name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED
    )
    message.field.add(
        name="pad_variable_length_inputs",
        number=7,
        type=field.TYPE_BOOL,
        label=field.LABEL_OPTIONAL,
    )
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's batching parameters with its defaults (BasicBatchScheduler::Options)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    allowed_batch_sizes: tuple[int, ...] = ()
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be positive")
        if self.num_batch_threads < 1:
            raise ValueError("num_batch_threads must be positive")
        if self.max_enqueued_batches < 1:
            raise ValueError("max_enqueued_batches must be positive")
        if self.batch_timeout_micros < 0:
            raise ValueError("batch_timeout_micros must be non-negative")
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if sizes != sorted(set(sizes)):
                raise ValueError("allowed_batch_sizes entries must be monotonically increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    "final entry in allowed_batch_sizes must equal max_batch_size when "
                    "enable_large_batch_splitting is False"
                )


def parse_batching_parameters(text: str, source: str) -> BatchingOptions:
    """BatchingOptions from a BatchingParameters text proto; errors name the file."""
    from google.protobuf import text_format

    proto = _batching_parameters_class()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise invalid_argument(
            f"Invalid protobuf file: '{source}' "
            f"(Error parsing text-format tensorflow.serving.BatchingParameters: {err})"
        ) from None
    if proto.pad_variable_length_inputs:
        raise ServingError(
            "UNIMPLEMENTED", f"{source}: pad_variable_length_inputs is not implemented here"
        )
    if proto.enable_large_batch_splitting.value:
        raise ServingError(
            "UNIMPLEMENTED", f"{source}: enable_large_batch_splitting is not implemented here"
        )
    values: dict[str, Any] = {}
    for name in (
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "thread_pool_name",
    ):
        if proto.HasField(name):
            values[name] = getattr(proto, name).value
    if proto.allowed_batch_sizes:
        values["allowed_batch_sizes"] = tuple(proto.allowed_batch_sizes)
    try:
        return BatchingOptions(**values)
    except ValueError as err:
        raise invalid_argument(f"{source}: {err}") from None


def read_batching_parameters(path: str | os.PathLike) -> BatchingOptions:
    """Reads ``--batching_parameters_file``."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ServingError(
            "NOT_FOUND", f"{path}: cannot read the batching parameters: {err}"
        ) from None
    return parse_batching_parameters(text, os.fspath(path))


@dataclasses.dataclass
class _Task:
    feeds: Mapping[str, np.ndarray]
    size: int
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: list[np.ndarray] | None = None
    error: ServingError | None = None


@dataclasses.dataclass
class _Batch:
    created: float
    tasks: list[_Task] = dataclasses.field(default_factory=list)
    size: int = 0


@dataclasses.dataclass
class _Queue:
    servable: Any
    feed_names: tuple[str, ...]
    fetches: tuple[str, ...]
    batches: collections.deque = dataclasses.field(default_factory=collections.deque)


def _task_size(feeds: Mapping[str, np.ndarray]) -> int:
    """batching_session.cc ComputeInputSize: the shared 0th dimension of the inputs."""
    if not feeds:
        raise invalid_argument("Batching session Run() must have at least one input tensor")
    sizes = set()
    for array in feeds.values():
        if array.ndim == 0:
            raise invalid_argument(
                "Batching session Run() input tensors must have at least one dimension"
            )
        sizes.add(array.shape[0])
    if len(sizes) != 1:
        raise invalid_argument(
            "Batching session Run() input tensors must have equal 0th-dimension size"
        )
    return sizes.pop()


class BatchScheduler:
    """Merges concurrent Session runs into batches, run on ``num_batch_threads`` threads."""

    def __init__(self, options: BatchingOptions):
        self.options = options
        self._condition = threading.Condition()
        self._queues: dict[tuple, _Queue] = {}
        self._stopped = False
        self.batches_run = 0  # For tests and metrics: merged model calls so far.
        self.tasks_run = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"{options.thread_pool_name}-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def queued_tasks(self) -> int:
        """Requests waiting in a batch that no batch thread has taken yet."""
        with self._condition:
            return sum(len(b.tasks) for q in self._queues.values() for b in q.batches)

    def stop(self) -> None:
        """Fails queued requests with UNAVAILABLE and stops the batch threads."""
        with self._condition:
            self._stopped = True
            queues = list(self._queues.values())
            self._queues.clear()
            self._condition.notify_all()
        for queue in queues:
            for batch in queue.batches:
                for task in batch.tasks:
                    task.error = ServingError("UNAVAILABLE", "The batch scheduler is stopping")
                    task.done.set()
        for thread in self._threads:
            thread.join(10)

    def run(
        self, servable: Any, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]
    ) -> list[np.ndarray]:
        """Runs ``servable.run_session(feeds, fetches)`` as part of a batch; blocks."""
        feeds = {name: np.asarray(array) for name, array in feeds.items()}
        size = _task_size(feeds)
        if size > self.options.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{self.options.max_batch_size}"
            )
        names = tuple(sorted(feeds))
        key = (
            id(servable),
            names,
            tuple(fetches),
            tuple((feeds[n].dtype.str, feeds[n].shape[1:]) for n in names),
        )
        task = _Task(feeds, size)
        with self._condition:
            if self._stopped:
                raise ServingError("UNAVAILABLE", "The batch scheduler is stopping")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(servable, names, tuple(fetches))
            batch = queue.batches[-1] if queue.batches else None
            if batch is None or batch.size + size > self.options.max_batch_size:
                if len(queue.batches) >= self.options.max_enqueued_batches:
                    raise ServingError(
                        "UNAVAILABLE",
                        "The batch scheduling queue to which this task was submitted is full",
                    )
                batch = _Batch(time.monotonic())
                queue.batches.append(batch)
            batch.tasks.append(task)
            batch.size += size
            self._condition.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    # -- batch threads --

    def _ready(self, now: float) -> tuple[tuple | None, float | None]:
        """The key of the oldest queue whose first batch may run now, and else the time at
        which the earliest one will be (None: nothing queued)."""
        timeout = self.options.batch_timeout_micros / 1e6
        best_key, best_created, earliest = None, None, None
        for key, queue in self._queues.items():
            if not queue.batches:
                continue
            batch = queue.batches[0]
            closed = len(queue.batches) > 1 or batch.size >= self.options.max_batch_size
            deadline = batch.created + timeout
            if closed or now >= deadline:
                if best_created is None or batch.created < best_created:
                    best_key, best_created = key, batch.created
            elif earliest is None or deadline < earliest:
                earliest = deadline
        return best_key, earliest

    def _work(self) -> None:
        while True:
            with self._condition:
                while True:
                    if self._stopped:
                        return
                    key, earliest = self._ready(time.monotonic())
                    if key is not None:
                        break
                    wait = None if earliest is None else max(earliest - time.monotonic(), 0)
                    self._condition.wait(wait)
                queue = self._queues[key]
                batch = queue.batches.popleft()
                if not queue.batches:
                    del self._queues[key]
            self._process(queue, batch)

    def _padded_size(self, size: int) -> int:
        sizes = self.options.allowed_batch_sizes
        if not sizes:
            return size
        return sizes[bisect.bisect_left(sizes, size)]

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        tasks = batch.tasks
        try:
            padded = self._padded_size(batch.size)
            merged = {}
            for name in queue.feed_names:
                parts = [task.feeds[name] for task in tasks]
                if padded > batch.size:  # Padded with copies of the first row, as TF Serving.
                    first = parts[0][:1]
                    parts.append(np.repeat(first, padded - batch.size, axis=0))
                merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
            outputs = queue.servable.run_session(merged, queue.fetches)
            for output in outputs:
                if output.ndim == 0:
                    raise invalid_argument("Batched output tensor has 0 dimensions")
                if output.shape[0] != padded:
                    raise invalid_argument(
                        "Batched output tensor's 0th dimension does not equal the sum of the "
                        "0th dimension sizes of the input tensors"
                    )
            offset = 0
            for task in tasks:
                task.outputs = [output[offset : offset + task.size] for output in outputs]
                offset += task.size
        except ServingError as err:
            for task in tasks:
                task.error = err
        except Exception as err:  # noqa: BLE001 - every caller gets the failure
            logger.exception("Batch failed")
            for task in tasks:
                task.error = ServingError("INTERNAL", str(err))
        with self._condition:
            self.batches_run += 1
            self.tasks_run += len(tasks)
        for task in tasks:
            task.done.set()
