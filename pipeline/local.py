"""Runs the pipeline on this machine: LocalDagRunner, a SQLite MLMD store, a log file.

Used by ``tfx-image-pipeline run`` and ``local_runner.py``. TensorFlow and TFX are imported
inside the functions, so importing this module is cheap and configuration errors are
reported before any of them loads.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from pipeline.config import PipelineConfig

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_OK_STATES = ("COMPLETE", "CACHED")
# Tracebacks go to the log file only; the console gets the one-line reason.
_TRACEBACK_LOGGER = "pipeline.local.traceback"


class PipelineRunError(RuntimeError):
    """A local run failed; the message names the failed component and where to look."""


class _ProgressFilter(logging.Filter):
    """Lets warnings through, and the LocalDagRunner's 'Component X is running.' lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == _TRACEBACK_LOGGER:
            return False
        if record.levelno >= logging.WARNING:
            return True
        message = record.getMessage()
        return message.startswith("Component ") and message.endswith(
            ("is running.", "is finished.")
        )


def log_dir(config: PipelineConfig) -> Path:
    """Local runs write one log file per run here (next to the MLMD store)."""
    return Path(config.metadata_path).parent / "logs"


@contextlib.contextmanager
def _run_logging(config: PipelineConfig) -> Iterator[Path]:
    """INFO and above to a new log file; warnings and progress lines to stderr.

    Handlers that libraries installed on the root logger (some call ``logging.basicConfig``)
    and on TensorFlow's logger are detached for the run, so raising the root level to INFO
    neither floods the console nor prints TensorFlow's messages twice.
    """
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = log_dir(config) / f"{config.pipeline_name}-{stamp}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path)
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter(_LOG_FORMAT))
    to_console = logging.StreamHandler(sys.stderr)
    to_console.addFilter(_ProgressFilter())
    to_console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    detached = {logger: list(logger.handlers) for logger in (root, logging.getLogger("tensorflow"))}
    saved_level = root.level
    for logger, handlers in detached.items():
        for handler in handlers:
            logger.removeHandler(handler)
    root.addHandler(to_file)
    root.addHandler(to_console)
    root.setLevel(logging.INFO)
    try:
        yield path
    finally:
        for handler in (to_file, to_console):
            root.removeHandler(handler)
            handler.close()
        for logger, handlers in detached.items():
            for handler in handlers:
                logger.addHandler(handler)
        root.setLevel(saved_level)


def _run_ids(metadata_path: str) -> set[str]:
    if not os.path.exists(metadata_path):
        return set()
    from pipeline.run_summary import list_run_ids, open_store

    return set(list_run_ids(open_store(metadata_path)))


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
    config: PipelineConfig, runs_before: set[str], error: BaseException, log_path: Path | None
) -> str:
    """One line: which component failed (from MLMD), why, and where its logs and outputs are."""
    from pipeline.run_summary import list_run_ids, open_store, summarize_run

    lines = str(error).strip().splitlines()
    reason = shorten_keeping_paths(f"{type(error).__name__}: {lines[0]}" if lines else "")
    reason = reason or type(error).__name__
    logs = f"log: {log_path}" if log_path else "log: stderr above"
    try:
        store = open_store(config.metadata_path)
        new_runs = [r for r in list_run_ids(store) if r not in runs_before]
        summary = summarize_run(store, config.pipeline_name, new_runs[-1]) if new_runs else None
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


def run_locally(config: PipelineConfig):
    """Runs the pipeline with LocalDagRunner; returns the run's ``RunSummary``.

    Writes INFO logs to ``log_dir(config)``; prints warnings and component progress to
    stderr. Raises PipelineRunError naming the failed component.
    """
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline
    from pipeline.run_summary import open_store, summarize_run

    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    runs_before = _run_ids(config.metadata_path)
    with _run_logging(config) as log_path:
        logging.getLogger(__name__).info("configuration: %s", config.to_dict())
        try:
            metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
                config.metadata_path
            )
            tfx.orchestration.LocalDagRunner().run_with_ir(
                compile_for_local_run(create_pipeline(config, metadata))
            )
        except Exception as err:  # noqa: BLE001 - reported with the failed component's name
            logging.getLogger(_TRACEBACK_LOGGER).exception("pipeline run failed")
            raise PipelineRunError(describe_failure(config, runs_before, err, log_path)) from err
    return summarize_run(open_store(config.metadata_path), config.pipeline_name)
