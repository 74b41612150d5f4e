"""What a local run prints on the console: a start and an end line per component, training
progress, warnings of this project's own code, and nothing else.

The LocalDagRunner logs "Component X is running." and "Component X is finished." (through
absl); the console handler turns those into the start and end lines, the end line with the
component's elapsed time and its key figure (read back from ML Metadata by a callback). The
Trainer's progress records (``trainer_module.training_record``) become a bar on a terminal
and one line per epoch otherwise. Everything else goes only to the run's log file.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TextIO

from trainer_module.features import PROGRESS_LOGGER

_COMPONENT_LINE = re.compile(r"^Component (\S+) is (running|finished)\.$")
# Loggers of the libraries whose warnings are noise to a user; they stay in the log file.
_LIBRARY_LOGGERS = (
    "absl",
    "tensorflow",
    "apache_beam",
    "tfx",
    "tfx_bsl",
    "tensorflow_transform",
    "tensorflow_model_analysis",
    "tensorflow_data_validation",
    "ml_metadata",
    "h5py",
    "matplotlib",
    "PIL",
    "py.warnings",
)
# Messages that TFX logs as warnings through the root logger and that say nothing to a user.
_NOISE_MESSAGES = ("ArtifactQuery.property_predicate is not supported",)
_BAR_WIDTH = 24

# component id -> its key figure ("412 images ingested, 3 skipped"); "" when it has none.
FigureFn = Callable[[str], str]


def component_event(record: logging.LogRecord) -> tuple[str, str] | None:
    """(component id, "running" or "finished") for the LocalDagRunner's progress lines."""
    match = _COMPONENT_LINE.match(record.getMessage())
    return (match.group(1), match.group(2)) if match else None


def is_library_logger(name: str) -> bool:
    """Whether ``name`` is a logger of TensorFlow, TFX, Beam and the like (or a child)."""
    return any(name == n or name.startswith(n + ".") for n in _LIBRARY_LOGGERS)


def _format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s"


class ConsoleHandler(logging.Handler):
    """Writes a run's readable progress to ``stream`` (see the module docstring).

    ``figure`` gives the end line's key figure; a failure of it never stops the run (the
    line is printed without one). With ``verbose``, every record is printed as well.
    """

    def __init__(
        self,
        stream: TextIO,
        figure: FigureFn | None = None,
        verbose: bool = False,
        total_components: int | None = None,
    ):
        super().__init__(level=logging.DEBUG)
        self.stream = stream
        self.figure = figure
        self.verbose = verbose
        self.total = total_components
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._started: dict[str, float] = {}
        self._bar_shown = False
        self._plain = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def _write(self, line: str) -> None:
        if self._bar_shown:  # The bar is on the current line: end it first.
            self.stream.write("\n")
            self._bar_shown = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def _counter(self) -> str:
        if not self.total:
            return ""
        return f"[{len(self._started):>{len(str(self.total))}}/{self.total}] "

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(record)
        except Exception:  # noqa: BLE001 - the console must never fail the run
            self.handleError(record)

    def _emit(self, record: logging.LogRecord) -> None:
        event = component_event(record)
        if event is not None:
            component, what = event
            if what == "running":
                self._started[component] = time.monotonic()
                self._write(f"{self._counter()}{component} ...")
            else:
                elapsed = time.monotonic() - self._started.get(component, time.monotonic())
                figure = ""
                if self.figure is not None:
                    try:
                        figure = self.figure(component)
                    except Exception as err:  # noqa: BLE001 - a figure is optional
                        figure = f"(figure unavailable: {type(err).__name__})"
                line = f"{' ' * len(self._counter())}{component} done in {_format_seconds(elapsed)}"
                self._write(line + (f": {figure}" if figure else ""))
            return
        progress = getattr(record, "progress", None)
        if record.name == PROGRESS_LOGGER and progress is not None:
            self._progress(record, progress)
            return
        if self.verbose:
            self._write(self._plain.format(record))
            return
        if record.levelno >= logging.ERROR or (
            record.levelno >= logging.WARNING
            and not is_library_logger(record.name)
            and not record.getMessage().startswith(_NOISE_MESSAGES)
        ):
            self._write(f"{record.levelname}: {record.getMessage()}")

    def _progress(self, record: logging.LogRecord, progress: dict) -> None:
        if "step" in progress:  # A batch: only a terminal shows it, as a bar in place.
            if not self.tty:
                return
            done = progress["step"] / max(1, progress["steps"])
            filled = int(done * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self.stream.write(
                f"\r    {progress['phase']} epoch {progress['epoch']}/{progress['epochs']} "
                f"[{bar}] {progress['step']}/{progress['steps']} loss {progress['loss']:.4f} "
                f"accuracy {progress['accuracy']:.4f}\x1b[K"
            )
            self.stream.flush()
            self._bar_shown = True
            return
        if self._bar_shown:
            self.stream.write("\r\x1b[K")
            self._bar_shown = False
        self._write(f"    {record.getMessage()}")


def key_figure(summary, component_id: str) -> str:
    """The one figure that says what ``component_id`` did in the run of ``summary``."""
    from pipeline.run_summary import gate_reason

    component = next((c for c in summary.components if c.component_id == component_id), None)
    cached = " (cached)" if component is not None and component.state == "CACHED" else ""
    if component_id == "ImageExampleGen" and summary.ingested_images is not None:
        skipped = (summary.skipped_bad_files or 0) + (summary.skipped_ignored_files or 0)
        return (
            f"{summary.ingested_images} images ingested, {skipped} files skipped "
            f"({summary.skipped_bad_files or 0} bad){cached}"
        )
    if component_id == "Trainer" and summary.model_uri:
        from trainer_module.training_record import read_record

        record = read_record(summary.model_uri)
        if not record:
            return cached.strip()
        epochs = sum(len(p["epochs"]) for p in record["phases"])
        best = max(
            (p for p in record["phases"] if p.get("best_eval_accuracy") is not None),
            key=lambda p: p["best_eval_accuracy"],
            default=None,
        )
        figure = f"{epochs} epochs ({len(record['phases'])} phases)"
        if best:
            figure += (
                f", best eval accuracy {best['best_eval_accuracy']:.4f} "
                f"({best['name']} epoch {best['best_epoch']})"
            )
        return figure + cached
    if component_id == "Evaluator" and summary.blessed is not None:
        verdict = "blessed" if summary.blessed else "NOT blessed"
        return f"{verdict}: {gate_reason(summary)}{cached}"
    if component_id == "InfraCheck" and summary.infra_blessed is not None:
        verdict = "passed" if summary.infra_blessed else "FAILED"
        return f"{verdict} on {summary.infra_check_server}{cached}"
    if component_id == "Pusher" and component is not None:
        if summary.pushed_destination:
            if summary.push_unchanged:
                return f"unchanged: the model is version {summary.pushed_version} already"
            return f"pushed version {summary.pushed_version} to {summary.pushed_destination}"
        reasons = []
        if summary.blessed is False:
            reasons.append("the Evaluator did not bless it")
        if summary.infra_blessed is False:
            reasons.append("the infra check failed")
        return "not pushed" + (f": {' and '.join(reasons)}" if reasons else "")
    if component_id == "ServedModelBaseline" and component is not None:
        if summary.served_version is None:
            return cached.strip()
        if summary.served_version:
            return f"baseline: served version {summary.served_version}"
        return "no served baseline yet"
    return cached.strip()


def run_figures(config, run_id: str) -> FigureFn:
    """The key-figure callback of a run: reads the run back from its MLMD store each time."""

    def figure(component_id: str) -> str:
        from pipeline.run_summary import open_store, summarize_run

        store = open_store(config.metadata_path, read_only=True)
        return key_figure(summarize_run(store, config.pipeline_name, run_id), component_id)

    return figure
