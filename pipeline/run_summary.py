"""Reads what a pipeline run did back out of ML Metadata and its artifacts."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.evaluation_results import (  # noqa: F401 - also read from here
    ACCURACY_METRIC,
    load_confusion_entries,
    load_overall_metrics,
    per_class_from_confusion,
)

_RUN_CONTEXT_TYPE = "pipeline_run"
_NODE_CONTEXT_TYPE = "node"


@dataclasses.dataclass
class ComponentRun:
    """One component execution of a run."""

    component_id: str
    state: str
    seconds: float
    execution_id: int


@dataclasses.dataclass
class RunSummary:
    """The outcome of one pipeline run."""

    run_id: str
    components: list[ComponentRun]
    blessed: bool | None = None
    pushed_destination: str | None = None
    # SERVING_DIR/MODEL_NAME the run's Pusher was configured with (pushed or not).
    model_dir: str | None = None
    # The Pusher found the model byte-identical to the newest version and published nothing.
    push_unchanged: bool = False
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    baseline_model_uri: str | None = None  # the served version the candidate was gated against
    baseline_version: int | None = None  # its version number; None when nothing was served
    candidate_model_uri: str | None = None
    infra_blessed: bool | None = None
    infra_check_server: str | None = None  # which model server the infra check used
    infra_check_message: str | None = None
    infra_check_server_reason: str | None = None  # why that server (auto's fallbacks included)
    evaluation_uri: str | None = None
    transform_graph_uri: str | None = None
    # class name -> precision, recall, f1, support (from TFMA's confusion matrix)
    per_class: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    # The baseline's overall metrics where the gate compared against a served version.
    baseline_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    class_names: list[str] = dataclasses.field(default_factory=list)  # in label-id order
    # (actual id, predicted id, count) cells of the candidate's confusion matrix.
    confusion: list[tuple[int, int, float]] = dataclasses.field(default_factory=list)
    # ImageExampleGen's figures (its examples artifact's properties) and its report.
    ingested_images: int | None = None
    skipped_bad_files: int | None = None
    skipped_ignored_files: int | None = None
    duplicate_groups: int | None = None
    ingestion_report: str | None = None
    examples_uri: str | None = None
    model_uri: str | None = None  # the Trainer's model artifact (its training record beside)
    model_run_uri: str | None = None
    pushed_version: int | None = None
    # The gate's thresholds (the Evaluator execution's parameters).
    accuracy_floor: float | None = None
    max_accuracy_drop: float | None = None
    report_path: str | None = None  # the run's HTML report, once written
    served_version: int | None = None  # what ServedModelBaseline found served (0: nothing)
    # The ModelExporter's export_report.json: the SavedModel's accuracy and, per export, its
    # size, accuracy, agreement with the SavedModel, and whether it passed the gate (reason).
    exports: dict[str, Any] = dataclasses.field(default_factory=dict)
    exports_destination: str | None = None  # MODEL_DIR/exports/VERSION when published
    # The Tuner's search table, best trial first: trial_id, score (eval accuracy) and the
    # hyperparameters of each completed trial; empty without a Tuner.
    tuning_trials: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # Artifacts MLMD lists that could not be read back (deleted or damaged files), one line each.
    problems: list[str] = dataclasses.field(default_factory=list)


class StoreError(Exception):
    """The local MLMD store is missing, damaged or does not match the artifacts on disk."""


_MLMD_TABLES = ("Artifact", "Context", "Execution", "Type")


def _way_out(metadata_path: str) -> str:
    return (
        f"restore {metadata_path} from a backup, or start over: move it and the pipeline root "
        "aside (or use a new --output-dir). A new store beside the old artifacts reuses their "
        "execution ids and collides with their folders, and it knows no blessed model, so "
        "the regression gate would have no baseline"
    )


def check_store(metadata_path: str) -> None:
    """Raises StoreError unless ``metadata_path`` is a readable, intact MLMD SQLite store.

    Read-only (SQLite's ``mode=ro``): never creates or changes the file. A 0-byte file (a
    truncated store, which MLMD would silently re-initialise), a malformed database and a
    SQLite file without MLMD's tables are each reported with the way out.
    """
    import sqlite3
    import urllib.parse

    if not os.path.isfile(metadata_path):
        raise StoreError(f"no ML Metadata store at {metadata_path}")
    if os.path.getsize(metadata_path) == 0:
        raise StoreError(
            f"the ML Metadata store {metadata_path} is empty (0 bytes: truncated?); "
            + _way_out(metadata_path)
        )
    uri = f"file:{urllib.parse.quote(os.path.abspath(metadata_path))}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        finally:
            connection.close()
    except sqlite3.DatabaseError as err:
        raise StoreError(
            f"the ML Metadata store {metadata_path} is damaged ({err}); " + _way_out(metadata_path)
        ) from None
    if problems != ["ok"]:
        raise StoreError(
            f"the ML Metadata store {metadata_path} is damaged ({'; '.join(problems[:3])}); "
            + _way_out(metadata_path)
        )
    missing = [t for t in _MLMD_TABLES if t not in tables]
    if missing:
        raise StoreError(
            f"{metadata_path} is a SQLite file but not an ML Metadata store (no tables "
            f"{', '.join(missing)}); " + _way_out(metadata_path)
        )


def open_store(metadata_path: str, read_only: bool = False) -> metadata_store.MetadataStore:
    """Opens the local SQLite MLMD store; ``read_only`` never creates or changes it.

    Read-only opens check the file first (``check_store``), so a damaged store is a
    StoreError with the way out instead of a SQLite traceback.
    """
    modes = metadata_store_pb2.SqliteMetadataSourceConfig
    if read_only:
        check_store(metadata_path)
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = modes.READONLY if read_only else modes.READWRITE
    return metadata_store.MetadataStore(config)


def execution_folders(pipeline_root: str) -> dict[int, str]:
    """Artifact folders TFX made for executions: PIPELINE_ROOT/NODE/OUTPUT_KEY/EXECUTION_ID."""
    folders: dict[int, str] = {}
    if "://" in pipeline_root or not os.path.isdir(pipeline_root):
        return folders
    for node in sorted(os.listdir(pipeline_root)):
        node_dir = os.path.join(pipeline_root, node)
        if node.startswith(".") or not os.path.isdir(node_dir):
            continue
        for key in sorted(os.listdir(node_dir)):
            key_dir = os.path.join(node_dir, key)
            if key.startswith(".") or not os.path.isdir(key_dir):
                continue
            for name in os.listdir(key_dir):
                if name.isascii() and name.isdigit():
                    folders.setdefault(int(name), os.path.join(key_dir, name))
    return folders


def unrecorded_executions(
    store: metadata_store.MetadataStore | None, pipeline_root: str
) -> dict[int, str]:
    """Execution folders under ``pipeline_root`` that the store knows nothing of.

    Any means the store was lost, truncated or replaced after those runs: its execution ids
    would collide with the folders, and its lineage (the blessed baseline) is gone.
    """
    folders = execution_folders(pipeline_root)
    known = {e.id for e in store.get_executions()} if store is not None and folders else set()
    return {i: path for i, path in folders.items() if i not in known}


def describe_mismatch(metadata_path: str, pipeline_root: str, unknown: dict[int, str]) -> str:
    """One line saying that the store does not match the artifacts on disk, and what to do."""
    ids = sorted(unknown)
    shown = ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
    return (
        f"the ML Metadata store {metadata_path} does not match {pipeline_root}: it knows none "
        f"of the {len(ids)} executions whose artifact folders are there (ids {shown}, e.g. "
        f"{unknown[ids[0]]}); " + _way_out(metadata_path)
    )


def _property(item: Any, name: str) -> Any:
    for props in (item.custom_properties, item.properties):
        if name in props:
            value = props[name]
            return getattr(value, value.WhichOneof("value"))
    return None


def _node_ids_by_execution(
    store: metadata_store.MetadataStore, pipeline_name: str
) -> dict[int, str]:
    node_ids: dict[int, str] = {}
    for context in store.get_contexts_by_type(_NODE_CONTEXT_TYPE):
        prefix = pipeline_name + "."
        if not context.name.startswith(prefix):
            continue
        for execution in store.get_executions_by_context(context.id):
            node_ids[execution.id] = context.name[len(prefix) :]
    return node_ids


def list_run_ids(store: metadata_store.MetadataStore) -> list[str]:
    """Run ids, oldest first."""
    contexts = sorted(
        store.get_contexts_by_type(_RUN_CONTEXT_TYPE), key=lambda c: c.create_time_since_epoch
    )
    return [c.name for c in contexts]


def summarize_run(
    store: metadata_store.MetadataStore, pipeline_name: str, run_id: str | None = None
) -> RunSummary:
    """Summarises ``run_id`` (default: the latest run) of ``pipeline_name``."""
    runs = sorted(
        store.get_contexts_by_type(_RUN_CONTEXT_TYPE), key=lambda c: c.create_time_since_epoch
    )
    if not runs:
        raise LookupError("the metadata store holds no pipeline runs")
    run = next((c for c in runs if c.name == run_id), None) if run_id else runs[-1]
    if run is None:
        raise LookupError(f"no run {run_id!r} in the metadata store")
    node_ids = _node_ids_by_execution(store, pipeline_name)
    executions = sorted(
        store.get_executions_by_context(run.id), key=lambda e: e.create_time_since_epoch
    )
    summary = RunSummary(run_id=run.name, components=[])
    for execution in executions:
        component_id = node_ids.get(execution.id, execution.type)
        summary.components.append(
            ComponentRun(
                component_id=component_id,
                state=metadata_store_pb2.Execution.State.Name(execution.last_known_state),
                seconds=(execution.last_update_time_since_epoch - execution.create_time_since_epoch)
                / 1000.0,
                execution_id=execution.id,
            )
        )
        _add_outputs(store, execution, component_id, summary)
        if component_id == "Evaluator":
            summary.accuracy_floor = _property(execution, "accuracy_floor")
            summary.max_accuracy_drop = _property(execution, "max_accuracy_drop")
        summary.model_dir = summary.model_dir or _push_base_directory(execution)
    if summary.transform_graph_uri:
        try:
            summary.class_names = read_class_names(summary.transform_graph_uri)
        except Exception as err:  # noqa: BLE001 - deleted or damaged artifact files
            summary.problems.append(_unreadable("class names", summary.transform_graph_uri, err))
    if summary.evaluation_uri and summary.class_names:
        try:
            summary.confusion = load_confusion_entries(summary.evaluation_uri)
            if summary.confusion:
                summary.per_class = per_class_from_confusion(summary.confusion, summary.class_names)
        except Exception as err:  # noqa: BLE001 - deleted or damaged artifact files
            summary.problems.append(_unreadable("per-class metrics", summary.evaluation_uri, err))
    return summary


def _push_base_directory(execution: Any) -> str | None:
    """The serving folder of a Pusher execution's ``push_destination`` exec property."""
    raw = _property(execution, "push_destination")
    if not raw:
        return None
    try:
        filesystem = json.loads(raw).get("filesystem", {})
    except (ValueError, AttributeError):
        return None
    return filesystem.get("base_directory") or filesystem.get("baseDirectory")


def _unreadable(what: str, uri: str, err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    reason = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return (
        f"{what} unreadable: {uri} is listed in ML Metadata but its files are missing or "
        f"damaged ({reason}); a cached run reuses it, so re-run with --enable-cache false"
    )


def _add_outputs(store, execution, component_id: str, summary: RunSummary) -> None:
    events = store.get_events_by_execution_ids([execution.id])
    by_id = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    for event in events:
        artifact = by_id[event.artifact_id]
        key = event.path.steps[0].key if event.path.steps else ""
        if key == "transform_graph" and event.type == metadata_store_pb2.Event.OUTPUT:
            summary.transform_graph_uri = artifact.uri
        if component_id == "Evaluator" and event.type == metadata_store_pb2.Event.INPUT:
            if key == "baseline_model":
                # ServedModelBaseline's output: version 0 means nothing was served yet.
                version = _property(artifact, "served_version")
                if version:
                    summary.baseline_version = int(version)
                    summary.baseline_model_uri = _property(artifact, "served_model_path")
            elif key == "model":
                summary.candidate_model_uri = artifact.uri
        if event.type != metadata_store_pb2.Event.OUTPUT:
            continue
        if key == "examples" and component_id == "ImageExampleGen":
            summary.examples_uri = artifact.uri
            summary.ingested_images = _property(artifact, "ingested_images")
            summary.skipped_bad_files = _property(artifact, "skipped_bad_files")
            summary.skipped_ignored_files = _property(artifact, "skipped_ignored_files")
            summary.duplicate_groups = _property(artifact, "duplicate_groups")
            summary.ingestion_report = _property(artifact, "ingestion_report")
        elif key == "model" and component_id == "ServedModelBaseline":
            version = _property(artifact, "served_version")
            summary.served_version = int(version) if version is not None else None
        elif key == "model" and component_id == "Trainer":
            summary.model_uri = artifact.uri
        elif key == "model_run" and component_id == "Trainer":
            summary.model_run_uri = artifact.uri
        if key == "blessing" and component_id == "InfraCheck":
            summary.infra_blessed = bool(_property(artifact, "blessed"))
            summary.infra_check_server = _property(artifact, "infra_check_server")
            summary.infra_check_message = _property(artifact, "infra_check_message")
            summary.infra_check_server_reason = _property(artifact, "infra_check_server_reason")
        elif key == "blessing":
            summary.blessed = bool(_property(artifact, "blessed"))
        elif key == "evaluation":
            summary.evaluation_uri = artifact.uri
            try:
                summary.metrics = load_overall_metrics(artifact.uri)
                summary.baseline_metrics = load_overall_metrics(artifact.uri, baseline=True)
            except Exception as err:  # noqa: BLE001 - deleted or damaged artifact files
                summary.problems.append(_unreadable("eval metrics", artifact.uri, err))
        elif key == "model_exports":
            try:
                summary.exports = load_export_report(artifact.uri)
            except Exception as err:  # noqa: BLE001 - deleted or damaged artifact files
                summary.problems.append(_unreadable("export report", artifact.uri, err))
        elif key == "tuner_results":
            try:
                summary.tuning_trials = load_tuner_results(artifact.uri)
            except Exception as err:  # noqa: BLE001 - deleted or damaged artifact files
                summary.problems.append(_unreadable("tuner results", artifact.uri, err))
        elif key == "pushed_model" and _property(artifact, "pushed"):
            summary.pushed_destination = _property(artifact, "pushed_destination")
            version = _property(artifact, "pushed_version")
            summary.pushed_version = int(version) if version else None
            summary.push_unchanged = bool(_property(artifact, "already_served"))
            summary.exports_destination = _property(artifact, "exports_destination") or None


# What TFX's Tuner executor names its search table in the TunerResults artifact.
TUNER_RESULTS_FILE = "tuner_results.json"


def load_tuner_results(tuner_results_uri: str) -> list[dict[str, Any]]:
    """The Tuner's completed trials, best first (as TFX's Tuner writes them)."""
    import tensorflow as tf

    path = os.path.join(tuner_results_uri, TUNER_RESULTS_FILE)
    with tf.io.gfile.GFile(path) as f:
        trials = json.load(f)
    return sorted(trials, key=lambda trial: -float(trial["score"]))


def tuning_columns(trials: list[dict[str, Any]]) -> list[str]:
    """The hyperparameter names of the search table, the columns after trial and score."""
    return sorted({k for trial in trials for k in trial} - {"trial_id", "score"})


def format_tuning(trials: list[dict[str, Any]]) -> list[str]:
    """The search table as lines: one trial per line, best first."""
    names = tuning_columns(trials)
    lines = [f"tuning: {len(trials)} trials, best first (score: eval accuracy of the trial)"]
    lines.append(f"{'trial':<8}{'score':>8}" + "".join(f"{n:>26}" for n in names))
    for trial in trials:
        values = "".join(f"{trial.get(n, float('nan')):>26.4g}" for n in names)
        lines.append(f"{trial['trial_id']:<8}{float(trial['score']):>8.4f}{values}")
    return lines


def load_export_report(exports_uri: str) -> dict[str, Any]:
    """The ModelExporter's ``export_report.json`` in its output artifact."""
    import tensorflow as tf

    from serving.layout import EXPORT_REPORT_FILE

    with tf.io.gfile.GFile(os.path.join(exports_uri, EXPORT_REPORT_FILE)) as f:
        return json.loads(f.read())


def format_exports(exports: dict[str, Any]) -> list[str]:
    """Lines of the summary about the exports: accuracy of each against the SavedModel."""
    if not exports:
        return []
    if exports.get("skipped"):
        return [f"exports: none made ({exports['skipped']})"]
    lines = [
        f"exports (eval accuracy on {exports['eval_examples']} images; SavedModel "
        f"{exports['saved_model_accuracy']:.4f}; max drop {exports['max_export_accuracy_drop']}):",
        f"  {'export':<14}{'MB':>8}{'accuracy':>10}{'agreement':>11}  gate",
    ]
    for e in exports["exports"]:
        lines.append(
            f"  {e['kind']:<14}{e['size_bytes'] / 1e6:>8.2f}{e['accuracy']:>10.4f}"
            f"{e['agreement']:>11.4f}  {export_verdict(e)}"
        )
    return lines


def export_verdict(export: dict[str, Any]) -> str:
    """The export gate's verdict on one entry of the export report."""
    return "passed" if export["pushed"] else f"REFUSED: {export['reason']}"


def read_class_names(transform_graph_uri: str) -> list[str]:
    """Class names in id order, from the tf.Transform vocabulary the model was trained with."""
    import tensorflow as tf

    from trainer_module.features import LABEL_VOCABULARY_NAME

    path = os.path.join(transform_graph_uri, "transform_fn", "assets", LABEL_VOCABULARY_NAME)
    with tf.io.gfile.GFile(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def gate_reason(summary: RunSummary) -> str:
    """Why the Evaluator blessed the candidate or not, in one line, from the run's figures."""
    metric = "accuracy"
    value = summary.metrics.get(ACCURACY_METRIC)
    if value is None:
        return "no evaluation recorded"
    parts = []
    floor, drop = summary.accuracy_floor, summary.max_accuracy_drop
    if floor is not None:
        parts.append(f"{metric} {value:.4f} {'>=' if value >= floor else '<'} floor {floor:g}")
    else:
        parts.append(f"{metric} {value:.4f}")
    baseline = summary.baseline_metrics.get(ACCURACY_METRIC)
    if summary.baseline_version and baseline is not None:
        change = value - baseline
        allowed = f", at most {drop:g} below allowed" if drop is not None else ""
        parts.append(
            f"{change:+.4f} against served version {summary.baseline_version} "
            f"({baseline:.4f}{allowed})"
        )
    else:
        parts.append("no served baseline")
    return "; ".join(parts)


def class_balance(per_class: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Macro-averaged F1 and the worst class's recall (and name): what class imbalance hurts.

    Over the classes the evaluation holds examples of (a class absent from it has no recall).
    """
    present = {name: m for name, m in per_class.items() if m["support"]} or per_class
    worst = min(present, key=lambda name: present[name]["recall"])
    return {
        "macro_f1": sum(m["f1"] for m in present.values()) / len(present),
        "worst_class": worst,
        "worst_class_recall": present[worst]["recall"],
    }


def format_summary(summary: RunSummary) -> str:
    """A one-screen human-readable report of the run."""
    lines = [f"Run {summary.run_id}", "", f"{'component':<32}{'state':<10}{'seconds':>9}"]
    for c in summary.components:
        lines.append(f"{c.component_id:<32}{c.state:<10}{c.seconds:>9.1f}")
    lines.append(f"{'total':<42}{sum(c.seconds for c in summary.components):>9.1f}")
    lines.append("")
    for name, value in sorted(summary.metrics.items()):
        lines.append(f"eval {name}: {value:.4f}")
    if summary.per_class:
        lines.append("")
        lines.append(f"{'class':<24}{'precision':>10}{'recall':>10}{'f1':>8}{'support':>9}")
        for name, m in summary.per_class.items():
            lines.append(
                f"{name:<24}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>8.3f}"
                f"{m['support']:>9.0f}"
            )
        balance = class_balance(summary.per_class)
        lines.append(
            f"macro F1 {balance['macro_f1']:.3f}; worst-class recall "
            f"{balance['worst_class_recall']:.3f} ({balance['worst_class']})"
        )
        lines.append("")
    if summary.tuning_trials:
        lines.extend(format_tuning(summary.tuning_trials))
        lines.append("")
    if summary.baseline_version:
        baseline = f"served version {summary.baseline_version} ({summary.baseline_model_uri})"
    else:
        baseline = "none (nothing served yet)"
    lines.append(f"baseline model: {baseline}")
    lines.append(f"blessed: {summary.blessed} ({gate_reason(summary)})")
    if summary.infra_blessed is not None:
        lines.append(
            f"infra check: {'passed' if summary.infra_blessed else 'FAILED'} "
            f"({summary.infra_check_server}): {summary.infra_check_message}"
        )
        if summary.infra_check_server_reason:
            lines.append(f"infra check server: {summary.infra_check_server_reason}")
    lines.extend(format_exports(summary.exports))
    unchanged = " (already the newest version, byte-identical: nothing published)"
    lines.append(
        f"pushed to: {summary.pushed_destination or 'not pushed'}"
        + (unchanged if summary.push_unchanged else "")
    )
    if summary.exports_destination:
        lines.append(f"exports at: {summary.exports_destination}")
    lines.extend(f"problem: {problem}" for problem in summary.problems)
    if summary.report_path:
        lines.append(f"report: {summary.report_path}")
    return "\n".join(lines)
