"""The run report: one self-contained HTML file per local run, with PNG plots (matplotlib).

``write_report`` collects what the run recorded into one ``RunFacts`` (ML Metadata, the
ingestion report, the Trainer's training record, the configuration the run started with)
and renders every registered section from it. A section is a function taking the facts
and returning HTML, or None when the run has nothing for it (e.g. a run that failed before
the Trainer): a run that failed part-way gets a report of what exists. Add one with
``@section("Title")``; see README "Run report".

Plots are PNGs embedded as base64 ``data:`` URIs, so the file reads offline and can be
mailed or archived alone.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import html
import io
import json
import logging
import os
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig

logger = logging.getLogger(__name__)

REPORTS_FOLDER = "reports"
# Versions shown in the lineage section.
_PACKAGES = (
    "tfx",
    "tensorflow",
    "tf-keras",
    "tensorflow-transform",
    "tensorflow-model-analysis",
    "apache-beam",
    "ml-metadata",
    "numpy",
    "matplotlib",
)
_SAMPLES_PER_CLASS = 4
_MAX_SAMPLE_CLASSES = 12
_MAX_RECORDS_SCANNED = 5000


def reports_dir(config: PipelineConfig) -> Path:
    """Local runs write their reports here (next to the MLMD store and the logs)."""
    return Path(config.metadata_path).parent / REPORTS_FOLDER


def _file_stem(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in run_id)


def report_path(config: PipelineConfig, run_id: str) -> Path:
    """Where the report of run ``run_id`` is written."""
    return reports_dir(config) / f"{_file_stem(run_id)}.html"


def _start_record_path(config: PipelineConfig, run_id: str) -> Path:
    return reports_dir(config) / f"{_file_stem(run_id)}.run.json"


def package_versions() -> dict[str, str]:
    """Installed versions of the stack's main packages."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def record_run_start(config: PipelineConfig, run_id: str) -> Path:
    """Writes what only the run's start knows (its configuration, the time, the package
    versions) beside the report, so ``inspect report`` can show it later."""
    path = _start_record_path(config, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "run_id": run_id,
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "packages": package_versions(),
    }
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(document, indent=1, default=str))
    os.replace(temp, path)
    return path


@dataclasses.dataclass
class RunFacts:
    """Everything the report's sections draw from, collected once per report."""

    run_id: str
    config: PipelineConfig
    summary: Any  # pipeline.run_summary.RunSummary
    start: dict[str, Any]  # record_run_start's document ({} for a run without one)
    log_path: str | None = None
    ingestion: dict[str, Any] | None = None  # ImageExampleGen's ingestion_report.json
    training: dict[str, Any] | None = None  # trainer_module.training_record's document
    # Component id -> output key -> [{"uri": ..., "properties": {...}}] of every artifact the
    # run's executions wrote: where a new section finds its own component's output.
    outputs: dict[str, dict[str, list[dict[str, Any]]]] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        """Class names in label-id order (the transform vocabulary)."""
        if self.summary.class_names:
            return list(self.summary.class_names)
        return list((self.training or {}).get("class_names", []))


# --- sections ----------------------------------------------------------------------------

SectionFn = Callable[[RunFacts], "str | None"]


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of the report: its title and the function rendering its HTML body."""

    title: str
    render: SectionFn


SECTIONS: list[Section] = []


def section(title: str) -> Callable[[SectionFn], SectionFn]:
    """Registers ``render`` as a report section (in registration order) under ``title``.

    ``render(facts)`` returns the section's HTML body, or None to leave the section out.
    An exception in it is shown as a problem of that section, never fails the report.
    """

    def register(render: SectionFn) -> SectionFn:
        SECTIONS.append(Section(title, render))
        return render

    return register


def esc(value: Any) -> str:
    """``value`` as HTML-escaped text."""
    return html.escape(str(value))


def table(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table of escaped cells; floats shown with 4 decimals."""

    def cell(value: Any) -> str:
        return esc(f"{value:.4f}" if isinstance(value, float) else value)

    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png(figure: Any, alt: str) -> str:
    """A matplotlib figure as an embedded PNG ``<img>`` (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # No display: render to files only.
    import matplotlib.pyplot as plt

    return plt


def _decode(image: bytes):
    """An encoded image (PNG, JPEG, ...) as an RGB array, through Pillow."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(image)) as opened:
        return np.asarray(opened.convert("RGB"))


def _image_grid(images: list[tuple[bytes, str]], columns: int, alt: str) -> str:
    plt = _pyplot()
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, caption) in zip(axes.flat, images):
        ax.imshow(_decode(image), cmap="gray")
        ax.set_title(caption, fontsize=7)
    return png(figure, alt)


def _sample_images(examples_uri: str, per_class: int) -> dict[str, list[bytes]]:
    """The first ``per_class`` images of each class in the train split of an examples artifact."""
    import tensorflow as tf

    from trainer_module import features

    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, "Split-train", "*")))
    samples: dict[str, list[bytes]] = {}
    if not files:
        return samples
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").take(_MAX_RECORDS_SCANNED)
    for record in records:
        example = tf.train.Example.FromString(record.numpy())
        feature = example.features.feature
        label = feature[features.LABEL_KEY].bytes_list.value[0].decode("utf-8", "replace")
        kept = samples.setdefault(label, [])
        if len(kept) < per_class:
            kept.append(feature[features.IMAGE_KEY].bytes_list.value[0])
    return samples


@section("Data")
def data_section(facts: RunFacts) -> str | None:
    """Images per class per split, skipped files by reason, duplicates, sample images."""
    report = facts.ingestion
    if report is None:
        return None
    plt = _pyplot()
    parts = []
    totals = report["totals"]
    parts.append(
        f"<p>{totals['ingested']} images in {totals['classes']} classes from "
        f"<code>{esc(report['data_root'])}</code> ({esc(report['data_format'])}); skipped "
        f"{totals['skipped_bad']} bad and {totals['skipped_ignored']} ignored files. "
        f'Ingestion report: <a href="file://{esc(report["report_path"])}">'
        f"{esc(report['report_path'])}</a></p>"
    )
    splits = report["splits"]
    classes = report["class_names"]
    figure, ax = plt.subplots(figsize=(max(6, len(classes) * 0.7), 3.2))
    width = 0.8 / max(1, len(splits))
    for i, (split, info) in enumerate(splits.items()):
        ax.bar(
            [c + i * width for c in range(len(classes))],
            [info["classes"].get(name, 0) for name in classes],
            width,
            label=f"{split} ({info['images']})",
        )
    ax.set_xticks([c + width * (len(splits) - 1) / 2 for c in range(len(classes))])
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    ax.set_title("Images per class and split")
    parts.append(png(figure, "images per class and split"))
    rows = [
        [split] + [info["classes"].get(name, 0) for name in classes]
        for split, info in splits.items()
    ]
    parts.append(table(["split", *classes], rows))
    if report["skipped_by_reason"]:
        parts.append("<h3>Skipped files by reason</h3>")
        parts.append(
            table(
                ["reason", "files", "counts as bad", "meaning"],
                [
                    [code, info["count"], "yes" if info["counts_as_bad"] else "no", info["meaning"]]
                    for code, info in report["skipped_by_reason"].items()
                ],
            )
        )
    dup = report["duplicates"]
    parts.append(
        f"<p>Duplicates: {dup['groups']} groups of byte-identical images ({dup['images']} "
        f"images), {dup['label_conflicts']} with different labels, {dup['across_splits']} "
        "across given splits.</p>"
    )
    for warning in report.get("warnings", []):
        parts.append(f'<p class="warn">{esc(warning)}</p>')
    if facts.summary.examples_uri:
        samples = _sample_images(facts.summary.examples_uri, _SAMPLES_PER_CLASS)
        grid = [
            (image, name)
            for name in sorted(samples)[:_MAX_SAMPLE_CLASSES]
            for image in samples[name]
        ]
        if grid:
            parts.append("<h3>Sample training images per class</h3>")
            parts.append(_image_grid(grid, _SAMPLES_PER_CLASS * 2, "sample images per class"))
    return "\n".join(parts)


@section("Training")
def training_section(facts: RunFacts) -> str | None:
    """Loss, accuracy and learning-rate curves of every phase, boundaries and best epochs."""
    record = facts.training
    if record is None:
        return None
    plt = _pyplot()
    epochs = []  # (global epoch, phase, values)
    boundaries = []
    for phase in record["phases"]:
        if epochs:
            boundaries.append((len(epochs) + 0.5, phase["name"]))
        for values in phase["epochs"]:
            epochs.append((len(epochs) + 1, phase["name"], values))
    if not epochs:
        return "<p>No epochs recorded (training resumed after its recorded phases).</p>"
    x = [e for e, _, _ in epochs]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, metric, title in (
        (axes[0], "loss", "Loss"),
        (axes[1], "accuracy", "Accuracy"),
    ):
        ax.plot(x, [v.get(metric) for _, _, v in epochs], "o-", label="train")
        ax.plot(x, [v.get(f"val_{metric}") for _, _, v in epochs], "o-", label="eval")
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[2].plot(x, [v.get("learning_rate") for _, _, v in epochs], "o-", color="tab:green")
    axes[2].set_title("Learning rate (at each epoch's end)")
    axes[2].set_xlabel("epoch")
    axes[2].set_yscale("log")
    offset = 0
    best_rows = []
    for phase in record["phases"]:
        if phase.get("best_epoch"):
            best = offset + phase["best_epoch"]
            label = "restored best" if phase.get("restores_best") else "best eval"
            axes[1].axvline(best, color="tab:red", linestyle=":", linewidth=1)
            axes[1].annotate(
                f"{label} ({phase['name']})",
                (best, axes[1].get_ylim()[0]),
                fontsize=7,
                rotation=90,
                va="bottom",
                color="tab:red",
            )
            best_rows.append(
                [
                    phase["name"],
                    len(phase["epochs"]),
                    phase.get("epochs_planned"),
                    phase.get("learning_rate"),
                    phase["best_epoch"],
                    phase.get("best_eval_accuracy"),
                    "yes" if phase.get("restores_best") else "no (last epoch kept)",
                ]
            )
        offset += len(phase["epochs"])
    for ax in axes:
        for position, name in boundaries:
            ax.axvline(position, color="gray", linestyle="--", linewidth=1)
            ax.annotate(f"{name} starts", (position, ax.get_ylim()[1]), fontsize=7, va="top")
    axes[0].legend(fontsize=8)
    parts = [png(figure, "training curves")]
    parts.append(
        table(
            [
                "phase",
                "epochs run",
                "epochs planned",
                "learning rate",
                "best epoch",
                "best eval accuracy",
                "best weights restored",
            ],
            best_rows,
        )
    )
    parts.append(
        f"<p>{record['train_examples']} training and {record['eval_examples']} eval examples, "
        f"images {record['image_size']} px, backbone "
        f"{esc(record['settings'].get('backbone'))} "
        f"({'pretrained' if record['pretrained'] else 'trained from scratch'}).</p>"
    )
    return "\n".join(parts)


@section("Tuning")
def tuning_section(facts: RunFacts) -> str | None:
    """The Tuner's search table, best trial first (only in runs with a Tuner)."""
    trials = facts.summary.tuning_trials
    if not trials:
        return None
    from pipeline.run_summary import tuning_columns

    names = tuning_columns(trials)
    rows = [
        [trial["trial_id"], f"{float(trial['score']):.4f}", *(trial.get(n, "-") for n in names)]
        for trial in trials
    ]
    return (
        f"<p>{len(trials)} trials (KerasTuner random search); the Trainer trained with the "
        "first row's hyperparameters. Score: the trial's best eval accuracy.</p>"
        + table(["trial", "score", *names], rows)
    )


@section("Evaluation")
def evaluation_section(facts: RunFacts) -> str | None:
    """Overall metrics, the confusion matrix, per-class metrics, calibration, mistakes."""
    summary = facts.summary
    if not summary.metrics and not facts.training:
        return None
    plt = _pyplot()
    parts = []
    if summary.metrics:
        parts.append("<p>The Evaluator's (TFMA) metrics of the candidate on the eval split:</p>")
        parts.append(
            table(["metric", "value"], [[k, v] for k, v in sorted(summary.metrics.items())])
        )
    names = facts.class_names
    if summary.confusion and names:
        import numpy as np

        matrix = np.zeros((len(names), len(names)))
        for actual, predicted, count in summary.confusion:
            if 0 <= actual < len(names) and 0 <= predicted < len(names):
                matrix[actual, predicted] += count
        figure, ax = plt.subplots(figsize=(1.0 + 0.5 * len(names), 0.8 + 0.5 * len(names)))
        image = ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(names)))
        ax.set_yticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set_yticklabels(names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                color = "white" if value > matrix.max() / 2 else "black"
                ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=7, color=color)
        figure.colorbar(image, ax=ax)
        ax.set_title("Confusion matrix (Evaluator)")
        parts.append(png(figure, "confusion matrix"))
    if summary.per_class:
        parts.append(
            table(
                ["class", "precision", "recall", "F1", "support"],
                [
                    [name, m["precision"], m["recall"], m["f1"], int(m["support"])]
                    for name, m in summary.per_class.items()
                ],
            )
        )
    predictions = (facts.training or {}).get("eval_predictions")
    if predictions:
        bins = [b for b in predictions["reliability"] if b["count"]]
        figure, ax = plt.subplots(figsize=(4.2, 4.0))
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
        ax.bar(
            [(b["lower"] + b["upper"]) / 2 for b in bins],
            [b["accuracy"] for b in bins],
            width=0.09,
            alpha=0.7,
            label="accuracy in bin",
        )
        ax.plot(
            [b["mean_confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            "o",
            color="k",
            label="mean confidence",
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top-1 confidence")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title("Reliability diagram")
        parts.append("<h3>Calibration</h3>")
        ece = summary.metrics.get("expected_calibration_error")
        if ece is not None:
            parts.append(f"<p>Expected calibration error (Evaluator): {ece:.4f}.</p>")
        parts.append(png(figure, "reliability diagram"))
        parts.append(
            table(
                ["confidence", "images", "mean confidence", "accuracy"],
                [
                    [
                        f"{b['lower']:.1f}-{b['upper']:.1f}",
                        b["count"],
                        b["mean_confidence"],
                        b["accuracy"],
                    ]
                    for b in bins
                ],
            )
        )
        mistakes = predictions["misclassified"]
        parts.append(
            f"<h3>Misclassified eval images</h3><p>{predictions['misclassified_total']} of "
            f"{predictions['eval_examples']} eval images misclassified by the trained model "
            f"(the Trainer's predictions); {len(mistakes)} shown.</p>"
        )

        def name(index: int) -> str:
            return names[index] if 0 <= index < len(names) else str(index)

        if mistakes:
            grid = [
                (
                    base64.b64decode(m["image"]),
                    f"{name(m['label'])}\n-> {name(m['predicted'])} {m['confidence']:.0%}",
                )
                for m in mistakes
            ]
            parts.append(_image_grid(grid, 8, "misclassified eval images"))
    return "\n".join(parts)


@section("Gate and infra check")
def gate_section(facts: RunFacts) -> str | None:
    """The candidate beside the baseline, the thresholds, the decisions and their reasons."""
    from pipeline.run_summary import gate_reason

    summary = facts.summary
    if summary.blessed is None and summary.infra_blessed is None:
        return None
    parts = []
    if summary.blessed is not None:
        verdict = "blessed" if summary.blessed else "NOT blessed"
        parts.append(f"<p><b>{verdict}</b>: {esc(gate_reason(summary))}</p>")
        parts.append(
            f"<p>Thresholds: accuracy at least {esc(summary.accuracy_floor)}, and at most "
            f"{esc(summary.max_accuracy_drop)} below the served baseline.</p>"
        )
        names = sorted(set(summary.metrics) | set(summary.baseline_metrics))
        baseline = (
            f"baseline (served version {summary.baseline_version})"
            if summary.baseline_version
            else "baseline (none served)"
        )
        parts.append(
            table(
                ["metric", "candidate", baseline],
                [
                    [n, summary.metrics.get(n, "-"), summary.baseline_metrics.get(n, "-")]
                    for n in names
                ],
            )
        )
    if summary.infra_blessed is not None:
        parts.append(
            f"<p>Infra check: <b>{'passed' if summary.infra_blessed else 'FAILED'}</b> on "
            f"{esc(summary.infra_check_server)}: {esc(summary.infra_check_message)}</p>"
            f"<p>Why that server: {esc(summary.infra_check_server_reason)}</p>"
        )
    return "\n".join(parts)


@section("Exports")
def exports_section(facts: RunFacts) -> str | None:
    """Each TFLite/ONNX export's size, eval accuracy and agreement beside the SavedModel's,
    and the export gate's verdict (from the ModelExporter's report)."""
    from pipeline.run_summary import export_verdict

    exports = facts.summary.exports
    if not exports:
        return None
    if exports.get("skipped"):
        return f"<p>No exports made: {esc(exports['skipped'])}</p>"
    parts = [
        f"<p>Evaluated on {esc(exports['eval_examples'])} eval images, each in its own runtime. "
        f"SavedModel accuracy {exports['saved_model_accuracy']:.4f}; an export more than "
        f"{esc(exports['max_export_accuracy_drop'])} below it is not pushed.</p>"
    ]
    rows = [
        [
            e["kind"],
            f"{e['size_bytes'] / 1e6:.2f}",
            f"{e['accuracy']:.4f}",
            f"{e['agreement']:.4f}",
            export_verdict(e),
        ]
        for e in exports["exports"]
    ]
    parts.append(table(["export", "MB", "accuracy", "agreement with SavedModel", "gate"], rows))
    if facts.summary.exports_destination:
        parts.append(f"<p>Published at <code>{esc(facts.summary.exports_destination)}</code></p>")
    return "\n".join(parts)


@section("Push and wall times")
def push_section(facts: RunFacts) -> str | None:
    """The pushed version, its path, the models.config entry, and each component's time."""
    summary = facts.summary
    parts = []
    if summary.pushed_destination:
        parts.append(
            f"<p>Pushed version {esc(summary.pushed_version)} to "
            f"<code>{esc(summary.pushed_destination)}</code>"
            + (
                " (byte-identical to the newest version: nothing published)"
                if summary.push_unchanged
                else ""
            )
            + "</p>"
        )
        config_path = Path(summary.pushed_destination).parent.parent / "models.config"
        if config_path.is_file():
            parts.append(
                f"<p><code>{esc(config_path)}</code>:</p><pre>{esc(config_path.read_text())}</pre>"
            )
    elif any(c.component_id == "Pusher" for c in summary.components):
        parts.append("<p>Not pushed.</p>")
    rows = [[c.component_id, c.state, f"{c.seconds:.1f}"] for c in summary.components]
    rows.append(["total", "", f"{sum(c.seconds for c in summary.components):.1f}"])
    parts.append(table(["component", "state", "seconds"], rows))
    return "\n".join(parts)


@section("Lineage")
def lineage_section(facts: RunFacts) -> str | None:
    """The run id, the configuration, the data and its content digest, package versions."""
    config = facts.start.get("config") or {}
    parts = [
        f"<p>Run <code>{esc(facts.run_id)}</code>, started "
        f"{esc(facts.start.get('started_utc', 'unknown'))} UTC. ML Metadata: "
        f"<code>{esc(facts.config.metadata_path)}</code>. "
        f"Log: <code>{esc(facts.log_path)}</code></p>"
    ]
    record = facts.training or {}
    if record.get("data_fingerprints"):
        digest = hashlib.sha256(
            json.dumps(record["data_fingerprints"], sort_keys=True).encode()
        ).hexdigest()
        parts.append(
            f"<p>Data root <code>{esc(config.get('data_root', facts.config.data_root))}</code>; "
            "content digest of the ingested examples (order-independent): "
            f"<code>{digest}</code></p>"
        )
    if config:
        parts.append(table(["field", "value"], [[k, json.dumps(v)] for k, v in config.items()]))
    else:
        parts.append("<p>No configuration recorded for this run (not started by this CLI).</p>")
    packages = facts.start.get("packages") or package_versions()
    parts.append(table(["package", "version"], sorted(packages.items())))
    return "\n".join(parts)


# --- collecting and writing ----------------------------------------------------------------


def _outputs(store, pipeline_name: str, run_id: str) -> dict[str, dict[str, list[dict]]]:
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.run_summary import _node_ids_by_execution

    [run] = [c for c in store.get_contexts_by_type("pipeline_run") if c.name == run_id]
    node_ids = _node_ids_by_execution(store, pipeline_name)
    outputs: dict[str, dict[str, list[dict]]] = {}
    for execution in store.get_executions_by_context(run.id):
        events = [
            e
            for e in store.get_events_by_execution_ids([execution.id])
            if e.type == metadata_store_pb2.Event.OUTPUT
        ]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        component = outputs.setdefault(node_ids.get(execution.id, execution.type), {})
        for event in events:
            artifact = artifacts[event.artifact_id]
            key = event.path.steps[0].key if event.path.steps else ""
            properties = {
                name: getattr(value, value.WhichOneof("value"))
                for props in (artifact.properties, artifact.custom_properties)
                for name, value in props.items()
                if value.WhichOneof("value")
            }
            component.setdefault(key, []).append({"uri": artifact.uri, "properties": properties})
    return outputs


def _failed_ingestion_report(config: PipelineConfig, summary: Any) -> str | None:
    """The ingestion report a failed ImageExampleGen kept beside its (deleted) output."""
    failed = [
        c for c in summary.components if c.component_id == "ImageExampleGen" and c.state == "FAILED"
    ]
    if not failed or "://" in config.pipeline_root:
        return None
    from components.image_example_gen.executor import failed_report_path

    examples_uri = os.path.join(
        config.pipeline_root, "ImageExampleGen", "examples", str(failed[0].execution_id)
    )
    path = failed_report_path(examples_uri)
    return path if os.path.isfile(path) else None


def collect_facts(config: PipelineConfig, run_id: str, log_path: str | None = None) -> RunFacts:
    """Reads everything the report shows of run ``run_id`` (whatever of it exists)."""
    import tensorflow as tf

    from pipeline.run_summary import open_store, summarize_run
    from trainer_module.training_record import read_record

    store = open_store(config.metadata_path, read_only=True)
    summary = summarize_run(store, config.pipeline_name, run_id)
    start_path = _start_record_path(config, run_id)
    start = json.loads(start_path.read_text()) if start_path.is_file() else {}
    facts = RunFacts(
        run_id=run_id,
        config=config,
        summary=summary,
        start=start,
        log_path=str(log_path) if log_path else start.get("log_path"),
        outputs=_outputs(store, config.pipeline_name, run_id),
        problems=list(summary.problems),
    )
    ingestion_report = summary.ingestion_report or _failed_ingestion_report(config, summary)
    if ingestion_report:
        try:
            with tf.io.gfile.GFile(ingestion_report) as f:
                facts.ingestion = json.load(f)
        except Exception as err:  # noqa: BLE001 - a deleted artifact leaves the section out
            facts.problems.append(f"ingestion report {ingestion_report}: {err}")
    if summary.model_uri:
        try:
            facts.training = read_record(summary.model_uri)
        except Exception as err:  # noqa: BLE001
            facts.problems.append(f"training record in {summary.model_uri}: {err}")
    return facts


_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 1em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.warn { color: #a60; } .problem { color: #b00; }
code, pre { background: #f4f4f4; font-size: 0.9em; }
"""


def render(facts: RunFacts) -> str:
    """The report's HTML: every section that has something to show, and the problems."""
    summary = facts.summary
    states = {c.state for c in summary.components}
    outcome = "failed" if states - {"COMPLETE", "CACHED"} else "complete"
    body = [
        f"<h1>Pipeline run {esc(facts.run_id)}</h1>",
        f"<p>Pipeline <code>{esc(facts.config.pipeline_name)}</code>: run {outcome}, "
        f"{len(summary.components)} component executions. Report written "
        f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}.</p>",
    ]
    problems = list(facts.problems)
    for item in SECTIONS:
        try:
            content = item.render(facts)
        except Exception as err:  # noqa: BLE001 - one broken section must not lose the rest
            logger.exception("report section %r failed", item.title)
            problems.append(
                f"section {item.title!r} could not be drawn: {type(err).__name__}: {err}"
            )
            continue
        if content:
            body.append(f"<h2>{esc(item.title)}</h2>\n{content}")
    if problems:
        body.append("<h2>Problems</h2>")
        body.extend(f'<p class="problem">{esc(p)}</p>' for p in problems)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Run {esc(facts.run_id)}</title><style>{_STYLE}</style></head>"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    config: PipelineConfig, run_id: str, log_path: str | Path | None = None
) -> Path | None:
    """Writes the report of run ``run_id``; returns its path, or None if it could not be
    written (the reason is logged: a report never fails the run it reports on).

    Written to a temporary file and renamed: a reader never sees half a report.
    """
    try:
        facts = collect_facts(config, run_id, str(log_path) if log_path else None)
        text = render(facts)
        path = report_path(config, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".html.tmp")
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except LookupError as err:  # The run failed before ML Metadata recorded it.
        logger.info("no run report of %s: %s", run_id, err)
        return None
    except Exception:  # noqa: BLE001
        logger.exception("the run report of %s could not be written", run_id)
        return None
    if log_path:
        _remember_log(config, run_id, str(log_path))
    return path


def _remember_log(config: PipelineConfig, run_id: str, log_path: str) -> None:
    """Adds the log's path to the run's start record, for a later ``inspect report``."""
    path = _start_record_path(config, run_id)
    if path.is_file():
        document = json.loads(path.read_text())
        if document.get("log_path") != log_path:
            document["log_path"] = log_path
            temp = path.with_suffix(".tmp")
            temp.write_text(json.dumps(document, indent=1, default=str))
            os.replace(temp, path)
