"""Runs the pipeline on this machine: LocalDagRunner, a SQLite MLMD store, a log file.

Used by ``tfx-image-pipeline run`` and ``local_runner.py``. TensorFlow and TFX are imported
inside the functions, so importing this module is cheap and configuration errors are
reported before any of them loads.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from pipeline.config import PipelineConfig
from pipeline.console import ConsoleHandler

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_OK_STATES = ("COMPLETE", "CACHED")
# Tracebacks go to the log file only; the console gets the one-line reason.
_TRACEBACK_LOGGER = "pipeline.local.traceback"


class PipelineRunError(RuntimeError):
    """A local run failed; the message names the failed component and where to look."""


def log_dir(config: PipelineConfig) -> Path:
    """Local runs write one log file per run here (next to the MLMD store)."""
    return Path(config.metadata_path).parent / "logs"


@contextlib.contextmanager
def _absl_logs_info() -> Iterator[None]:
    """Keeps absl's logger at INFO for the run, so the LocalDagRunner's "Component X is
    running." lines (absl INFO records) reach the log file and the console throughout.

    TensorFlow silences absl around every SavedModel walk (``autotrackable._trackable_children``
    calls ``absl.logging.set_verbosity(FATAL)`` and then restores ``get_verbosity()``). absl's
    verbosity flag defaults to WARNING, so the "restore" set the absl logger to WARNING from
    the first SavedModel on (Transform's), and every later component line was dropped.
    With the flag at INFO, the restore restores INFO.
    """
    from absl import logging as absl_logging

    saved = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        yield
    finally:
        absl_logging.set_verbosity(saved)


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[TextIO]:
    """Points file descriptor 2 at ``path`` (appending) for the run; yields the console.

    TensorFlow's C++ logging, Beam's worker processes and every library that writes to
    stderr then write into the run's log file; the console (the original stderr, yielded
    as a line-buffered stream) gets only what the run prints on purpose.
    """
    sys.stderr.flush()
    saved_fd = os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    console = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield console
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        console.close()


@contextlib.contextmanager
def _run_logging(
    config: PipelineConfig,
    verbose: bool = False,
    figure: Callable[[str], str] | None = None,
) -> Iterator[tuple[Path, ConsoleHandler]]:
    """INFO and above to a new log file; a readable progress view on the console.

    Yields the log file's path and the console handler.

    The console (``pipeline.console.ConsoleHandler``) shows a start and an end line per
    component, training progress, this project's warnings and errors. Unless ``verbose``,
    file descriptor 2 goes to the log file for the run, so TensorFlow's C++ logging and
    Beam's workers' output land there, not on the console. ``verbose`` keeps stderr as it
    is and prints every log record as well.

    Handlers that libraries installed on the root logger (some call ``logging.basicConfig``)
    and on TensorFlow's logger are detached for the run, so raising the root level to INFO
    neither floods the console nor prints TensorFlow's messages twice.
    """
    from trainer_module.features import PROGRESS_LOGGER

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = log_dir(config) / f"{config.pipeline_name}-{stamp}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path)
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter(_LOG_FORMAT))
    with contextlib.ExitStack() as stack:
        stack.enter_context(_absl_logs_info())
        console = sys.stderr if verbose else stack.enter_context(stderr_to(path))
        to_console = ConsoleHandler(console, figure=figure, verbose=verbose)
        to_console.addFilter(lambda record: record.name != _TRACEBACK_LOGGER)
        root = logging.getLogger()
        progress = logging.getLogger(PROGRESS_LOGGER)
        detached = {
            logger: list(logger.handlers) for logger in (root, logging.getLogger("tensorflow"))
        }
        saved_levels = (root.level, progress.level)
        for logger, handlers in detached.items():
            for handler in handlers:
                logger.removeHandler(handler)
        root.addHandler(to_file)
        root.addHandler(to_console)
        root.setLevel(logging.INFO)
        progress.setLevel(logging.DEBUG)  # Batch records reach the console, not the file.
        try:
            yield path, to_console
        finally:
            for handler in (to_file, to_console):
                root.removeHandler(handler)
                handler.close()
            for logger, handlers in detached.items():
                for handler in handlers:
                    logger.addHandler(handler)
            root.setLevel(saved_levels[0])
            progress.setLevel(saved_levels[1])


class RunInProgressError(PipelineRunError):
    """Another run holds the output root's run lock."""


def run_lock_path(config: PipelineConfig) -> str:
    """The lock a local run holds on its MLMD store (and so on its pipeline root)."""
    return f"{config.metadata_path}.lock"


def run_lock_holder(config: PipelineConfig) -> str | None:
    """What the live run holding the run lock wrote there (pid, run id), or None.

    Read-only: a missing lock file means no run holds it, and nothing is created.
    """
    path = run_lock_path(config)
    try:
        lock = open(path)  # noqa: SIM115 - closed below, after the lock test
    except OSError:
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock.read().strip() or "unknown"
        fcntl.flock(lock, fcntl.LOCK_UN)
        return None


@contextlib.contextmanager
def run_lock(config: PipelineConfig, run_id: str) -> Iterator[None]:
    """Holds the output root's run lock for a run; refuses a second concurrent run.

    Concurrent runs on one MLMD store and pipeline root are refused rather than supported:
    they would share execution ids, caches and the blessed baseline. The kernel releases
    the lock when its holder dies, so a killed run never blocks the next one.
    """
    path = run_lock_path(config)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise RunInProgressError(
                f"another run ({holder}) is using {config.metadata_path} and "
                f"{config.pipeline_root}; concurrent runs on one output root are refused. Wait "
                "for it to finish, or give this run its own --output-dir"
            ) from None
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()}, run {run_id}\n")
            lock.flush()
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_store_before_run(config: PipelineConfig) -> None:
    """Refuses to run on a damaged store, or on one that does not match the pipeline root."""
    from pipeline.run_summary import (
        StoreError,
        check_store,
        describe_mismatch,
        open_store,
        unrecorded_executions,
    )

    store = None
    if os.path.exists(config.metadata_path):
        try:
            check_store(config.metadata_path)
        except StoreError as err:
            raise PipelineRunError(f"not run: {err}") from None
        store = open_store(config.metadata_path, read_only=True)
    unknown = unrecorded_executions(store, config.pipeline_root)
    if unknown:
        raise PipelineRunError(
            "not run: " + describe_mismatch(config.metadata_path, config.pipeline_root, unknown)
        )


def _local_runner(run_id: str):
    """A LocalDagRunner that runs under ``run_id``, so the run can summarise itself."""
    from tfx.dsl.compiler import constants
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    from tfx.orchestration.portable import runtime_parameter_utils

    class RunIdDagRunner(LocalDagRunner):
        def run_with_ir(self, pipeline, run_options=None, **kwargs):
            # LocalDagRunner then substitutes its own timestamp only where none is set.
            runtime_parameter_utils.substitute_runtime_parameter(
                pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id}
            )
            return super().run_with_ir(pipeline, run_options, **kwargs)

    return RunIdDagRunner()


def shorten_keeping_paths(text: str, limit: int = 300) -> str:
    """``text`` cut to about ``limit`` characters between words, never inside a path.

    The words that do not fit are dropped, except paths (words with a '/'), which are kept
    whole after an ellipsis: the report or log a message names must stay usable.
    """
    if len(text) <= limit:
        return text
    words = text.split(" ")
    kept: list[str] = []
    length = 0
    for i, word in enumerate(words):
        if length + len(word) > limit and kept:
            paths = [w for w in words[i:] if "/" in w]
            return " ".join(kept) + " ..." + "".join(f" {p}" for p in paths)
        kept.append(word)
        length += len(word) + 1
    return text


def describe_failure(
    config: PipelineConfig, run_id: str, error: BaseException, log_path: Path | None
) -> str:
    """One line: which component of run ``run_id`` failed (from MLMD), why, and where to look."""
    from pipeline.run_summary import list_run_ids, open_store, summarize_run

    lines = str(error).strip().splitlines()
    reason = shorten_keeping_paths(f"{type(error).__name__}: {lines[0]}" if lines else "")
    reason = reason or type(error).__name__
    logs = f"log: {log_path}" if log_path else "log: stderr above"
    try:
        store = open_store(config.metadata_path, read_only=True)
        found = run_id in list_run_ids(store)
        summary = summarize_run(store, config.pipeline_name, run_id) if found else None
    except Exception:  # noqa: BLE001 - the store itself may be what broke
        summary = None
    failed = None
    if summary is not None:
        failed = next((c for c in summary.components if c.state == "FAILED"), None) or next(
            (c for c in summary.components if c.state not in _OK_STATES), None
        )
    if failed is None:
        return (
            f"{reason} (no failed component execution recorded in MLMD "
            f"{config.metadata_path}); {logs}"
        )
    return (
        f"component {failed.component_id} failed (MLMD execution {failed.execution_id}, "
        f"state {failed.state}, run {summary.run_id}): {reason}; {logs}; "
        f"artifacts: {os.path.join(config.pipeline_root, failed.component_id)}/"
    )


def compile_for_local_run(tfx_pipeline):
    """The pipeline's IR, with caching off for the nodes whose output is not a function of
    their inputs (the served-model baseline reads the serving directory)."""
    from tfx.orchestration.portable import tfx_runner

    from pipeline.pipeline import UNCACHEABLE_COMPONENTS

    ir = tfx_runner._make_pipeline_proto(tfx_pipeline)  # noqa: SLF001 - as LocalDagRunner.run
    for node in ir.nodes:
        if node.pipeline_node.node_info.id in UNCACHEABLE_COMPONENTS:
            node.pipeline_node.execution_options.caching_options.enable_cache = False
    return ir


def run_locally(config: PipelineConfig, verbose: bool = False):
    """Runs the pipeline with LocalDagRunner; returns this run's ``RunSummary``.

    Writes INFO logs (and, unless ``verbose``, everything written to stderr) to
    ``log_dir(config)``; the console shows each component's start and end with its key
    figure, and the Trainer's progress. Writes the run's HTML report at the end (also
    when a component failed). Holds the output root's run lock (a second concurrent run is
    refused), and refuses a damaged store or one that does not match the pipeline root.
    Raises PipelineRunError naming the failed component.
    """
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    run_id = datetime.datetime.now().isoformat()  # The form LocalDagRunner itself uses.
    with run_lock(config, run_id):  # Before TFX loads: a refusal takes a second.
        _check_store_before_run(config)
        from pipeline.console import run_figures
        from pipeline.report import record_run_start, write_report

        record_run_start(config, run_id)
        with _run_logging(config, verbose, run_figures(config, run_id)) as (log_path, console):
            logging.getLogger(__name__).info("run %s, configuration: %s", run_id, config.to_dict())
            failure = None
            try:
                # Imported here, so that TensorFlow's import-time noise goes to the log file.
                from tfx import v1 as tfx

                from pipeline.pipeline import create_pipeline

                metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
                    config.metadata_path
                )
                tfx_pipeline = create_pipeline(config, metadata)
                console.total = len(tfx_pipeline.components)
                _local_runner(run_id).run_with_ir(compile_for_local_run(tfx_pipeline))
            except Exception as err:  # noqa: BLE001 - reported with the failed component's name
                logging.getLogger(_TRACEBACK_LOGGER).exception("pipeline run failed")
                failure = PipelineRunError(describe_failure(config, run_id, err, log_path))
                failure.__cause__ = err
            report = write_report(config, run_id, log_path=log_path)
        if failure is not None:
            if report:
                failure.args = (f"{failure.args[0]}; report: {report}",)
            raise failure
        from pipeline.run_summary import open_store, summarize_run

        summary = summarize_run(
            open_store(config.metadata_path, read_only=True), config.pipeline_name, run_id
        )
        summary.report_path = str(report) if report else None
        return summary
