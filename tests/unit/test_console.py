"""The run's console: start and end lines, progress, what is kept off it, the absl fix."""

from __future__ import annotations

import io
import logging
import os

from pipeline.config import load_config
from pipeline.console import ConsoleHandler
from trainer_module.features import PROGRESS_LOGGER


def _record(message: str, name: str = "absl", level: int = logging.INFO, **extra):
    record = logging.LogRecord(name, level, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_start_and_one_end_line_per_component_with_its_figure():
    stream = io.StringIO()
    handler = ConsoleHandler(stream, figure=lambda c: f"figure of {c}", total_components=10)
    handler.handle(_record("Component Trainer is running."))
    handler.handle(_record("Component Trainer is finished."))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[ 1/10] Trainer ..."
    assert lines[1].strip().startswith("Trainer done in ")
    assert lines[1].endswith(": figure of Trainer")


def test_a_failing_figure_never_fails_the_line():
    stream = io.StringIO()

    def broken(component: str) -> str:
        raise OSError("store locked")

    handler = ConsoleHandler(stream, figure=broken)
    handler.handle(_record("Component Pusher is running."))
    handler.handle(_record("Component Pusher is finished."))
    assert "(figure unavailable: OSError)" in stream.getvalue()


def test_library_noise_stays_off_the_console_and_own_warnings_show():
    stream = io.StringIO()
    handler = ConsoleHandler(stream)
    handler.handle(
        _record("Tables initialized inside a tf.function", "tensorflow", logging.WARNING)
    )
    handler.handle(_record("ArtifactQuery.property_predicate is not supported.", "root", 30))
    handler.handle(_record("an INFO line", "components.x", logging.INFO))
    handler.handle(_record("version 3 was taken", "components.versioned_pusher.layout", 30))
    handler.handle(_record("a library error", "tensorflow", logging.ERROR))
    assert stream.getvalue().splitlines() == [
        "WARNING: version 3 was taken",
        "ERROR: a library error",
    ]


def test_verbose_prints_every_record():
    stream = io.StringIO()
    ConsoleHandler(stream, verbose=True).handle(_record("noise", "tensorflow", logging.INFO))
    assert stream.getvalue() == "INFO tensorflow: noise\n"


def _batch(step: int):
    progress = {"phase": "phase1", "epoch": 1, "epochs": 2, "step": step, "steps": 4}
    progress.update(loss=1.0, accuracy=0.5)
    return _record("batch", PROGRESS_LOGGER, logging.DEBUG, progress=progress)


def _epoch():
    return _record("phase1 epoch 1/2: loss 1.0", PROGRESS_LOGGER, progress={"epoch": 1})


def test_progress_is_a_line_per_epoch_off_a_terminal():
    stream = io.StringIO()
    handler = ConsoleHandler(stream)
    for step in (1, 2, 3, 4):
        handler.handle(_batch(step))
    handler.handle(_epoch())
    assert stream.getvalue() == "    phase1 epoch 1/2: loss 1.0\n"


def test_progress_is_a_bar_in_place_on_a_terminal():
    stream = _Terminal()
    handler = ConsoleHandler(stream)
    handler.handle(_batch(2))
    handler.handle(_batch(4))
    handler.handle(_epoch())
    text = stream.getvalue()
    assert text.count("\r    phase1 epoch 1/2 [") == 2
    assert "[############------------] 2/4" in text
    assert text.endswith("\r\x1b[K    phase1 epoch 1/2: loss 1.0\n")


def test_run_logging_keeps_component_lines_after_tensorflow_resets_absl(tmp_path, capfd):
    """TF's SavedModel walk sets absl's verbosity to FATAL and back to get_verbosity(); absl's
    flag default made that WARNING, and every later "Component X is running." was lost."""
    from absl import logging as absl_logging

    from pipeline.local import _run_logging

    config = load_config(overrides={"output_dir": str(tmp_path)}, validate=False)
    with _run_logging(config) as (log_path, _):
        saved = absl_logging.get_verbosity()  # What autotrackable._trackable_children does.
        absl_logging.set_verbosity(absl_logging.FATAL)
        absl_logging.set_verbosity(saved)
        absl_logging.info("Component Transform is running.")
        os.write(2, b"W0000 op_level_cost_estimator.cc:699] C++ noise\n")
    console = capfd.readouterr().err
    log = log_path.read_text()
    assert "Transform ..." in console
    assert "Component Transform is running." in log
    # File descriptor 2 went to the log during the run: C++ logging lands there, not here.
    assert "C++ noise" in log
    assert "C++ noise" not in console
