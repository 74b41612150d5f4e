"""``tfx-image-pipeline``: the project's one command-line front door.

    tfx-image-pipeline run [--config FILE] [--FIELD VALUE ...] [--dry-run] [--verbose]
    tfx-image-pipeline compile --container-image IMAGE [--output spec.yaml|job.json] [--dry-run]
    tfx-image-pipeline inspect [--output-dir DIR] [--last N] [--json]
    tfx-image-pipeline inspect report [RUN_ID] [--output-dir DIR]   # the run's HTML report
    tfx-image-pipeline defaults > my-config.yaml   # every field, documented, at its default
    tfx-image-pipeline export-data --out DIR [--split train|test|all] [--per-class N]
    tfx-image-pipeline serve ... / predict ...     (the serving package's own options)
    tfx-image-pipeline infer --model SERVING_DIR/MODEL --input DIR --output p.jsonl

``python -m pipeline`` is the same command. Configuration is validated before TensorFlow
is imported, so a bad value fails in about a second with a message naming the field.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

# pipeline/__init__.py has set the Keras 2 switch (trainer_module.legacy_keras) by now.
from pipeline.config import (
    ConfigError,
    PipelineConfig,
    add_config_arguments,
    check_local_paths,
    config_from_args,
)

PROG = "tfx-image-pipeline"

# Deprecation notices of Google client libraries (Python 3.10 support, grpcio, storage) that TFX
# imports; they say nothing about this pipeline and bury its own messages on stderr.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")

EXIT_OK = 0
EXIT_FAILED = 1  # The pipeline, the compilation or a delegated command failed.
EXIT_USAGE = 2  # Bad flags or configuration (argparse uses 2 as well).
EXIT_INTERRUPTED = 130

# The state inspect shows for executions left RUNNING by a run no process holds any more.
ABANDONED = "ABANDONED"

_EPILOG = f"""\
examples:
  {PROG} run --dry-run                          # resolved config + component graph
  {PROG} run --epochs 5 --beam-preset multi-process --beam-num-workers 2
  {PROG} run --config configs/local.yaml --output-dir /tmp/run1
  {PROG} inspect --output-dir /tmp/run1
  {PROG} inspect report --output-dir /tmp/run1  # HTML report of the latest run
  {PROG} compile --config configs/kubeflow.yaml --container-image IMAGE --output pipeline.yaml
  {PROG} compile --config configs/kubeflow.yaml --container-image IMAGE --output vertex.json
  {PROG} export-data --out /tmp/fmnist --split all
  {PROG} defaults > my-config.yaml              # every field, documented, at its default

Each subcommand has its own --help. Every configuration field is a YAML key of --config and
a flag (--field-name); flags override the file, the file overrides the defaults.

exit codes: 0 success; 1 the pipeline, the compilation or the command failed (one line on
stderr names the failed component and where its log and artifacts are); 2 bad flags or
configuration (the message names the field and what is allowed); 130 interrupted.
"""


class _UsageError(Exception):
    """A usage error outside the configuration fields (e.g. a bad --output extension)."""


class _CommandFailedError(Exception):
    """The command could not do its work (exit code 1); the message is one line."""


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _build(build: Callable[[PipelineConfig], Any], config: PipelineConfig) -> Any:
    """Builds the TFX pipeline; a failure (e.g. an unreadable data root) becomes one line."""
    try:
        return build(config)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - components validate their inputs at build time
        raise _CommandFailedError(f"building the pipeline failed: {_one_line(err)}") from err


def _error(command: str, message: str) -> None:
    print(f"{PROG} {command}: {message}", file=sys.stderr)


# --- run ---------------------------------------------------------------------------------


def _graph(tfx_pipeline: Any) -> list[dict[str, Any]]:
    """Component ids in pipeline order with the ids of their upstream components."""
    return [
        {"id": c.id, "upstream": sorted(n.id for n in c.upstream_nodes)}
        for c in tfx_pipeline.components
    ]


def _print_yaml(document: dict[str, Any], comment: str) -> None:
    print(f"# {comment}")
    print(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), end="")


def _resolved(config: PipelineConfig) -> dict[str, Any]:
    """The values a run will use where the configuration leaves the choice to it: the image
    size (0 means the backbone's default) and the input format ('auto' is detected from the
    data root). Shown beside the configuration, which stays loadable as it is."""
    values: dict[str, Any] = {"image_size": config.resolved_image_size}
    data_format = config.data_format
    if data_format == "auto" and "://" not in config.data_root:
        from components.image_example_gen.formats import detect_layout
        from components.image_example_gen.options import IngestOptions

        options = config.settings_for(IngestOptions)
        data_format = detect_layout(config.data_root, options).data_format
    values["data_format"] = data_format
    return values


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    check_local_paths(config)
    if args.dry_run:
        from pipeline.pipeline import create_pipeline

        _print_yaml(
            {
                "config": config.to_dict(),
                "resolved": _resolved(config),
                "components": _graph(_build(create_pipeline, config)),
            },
            "dry run of `run`: resolved configuration and component graph; nothing was run",
        )
        return EXIT_OK

    from pipeline.local import PipelineRunError, run_locally
    from pipeline.run_summary import format_summary

    try:
        summary = run_locally(config, verbose=args.verbose)
    except PipelineRunError as err:
        _error("run", f"pipeline failed: {err}")
        return EXIT_FAILED
    print(format_summary(summary))
    return EXIT_OK


# --- compile -----------------------------------------------------------------------------


def _compile(args: argparse.Namespace) -> int:
    from pipeline import kubeflow

    config = config_from_args(args)
    kubeflow.check_compile_config(config)
    output = args.output or kubeflow.default_output_path(config, args.target)
    try:
        target = kubeflow.target_for(output, args.target)
    except ValueError as err:
        raise _UsageError(str(err)) from None
    description = dict(kubeflow.SPEC_FORMATS.values())[kubeflow.TARGETS[target]]
    if args.dry_run:
        tfx_pipeline = _build(kubeflow.build_kubeflow_pipeline, config)
        _print_yaml(
            {
                "config": config.to_dict(),
                "resolved": _resolved(config),
                "components": _graph(tfx_pipeline),
                "kubeflow": {
                    "output": str(Path(output).resolve()),
                    "target": target,
                    "format": description,
                    "image": config.container_image,
                    "trainer_resources": kubeflow.trainer_resources(config),
                    "beam_pipeline_args": list(config.beam_pipeline_args),
                },
            },
            "dry run of `compile`: resolved configuration and component graph; nothing written",
        )
        return EXIT_OK
    try:
        path = kubeflow.compile_pipeline(config, output, target)
    except (ConfigError, _UsageError):
        raise
    except Exception as err:  # noqa: BLE001 - the TFX compiler raises many types
        raise _CommandFailedError(f"compilation failed: {_one_line(err)}") from err
    print(f"wrote {description} to {path}")
    for note in kubeflow.local_path_notes(config):
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


# --- inspect -----------------------------------------------------------------------------


@dataclasses.dataclass
class _ServedVersion:
    version: str
    path: str
    modified_utc: str
    pushed_by_run: str | None


def _served_versions(model_folder: str, pushed: dict[str, str]) -> list[_ServedVersion]:
    from serving import layout

    if layout.is_remote(model_folder):
        return []
    result = []
    for _, version_dir in sorted(layout.scan_versions(model_folder).items()):
        path = Path(version_dir)
        stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
        result.append(
            _ServedVersion(
                version=path.name,
                path=str(path),
                modified_utc=stamp.strftime("%Y-%m-%d %H:%M:%S"),
                pushed_by_run=pushed.get(os.path.normpath(str(path))),
            )
        )
    return result


def _inspected_model_dir(args: argparse.Namespace, config: PipelineConfig, summaries: list) -> str:
    """SERVING_DIR/MODEL_NAME to list: as given, else the one the latest run pushed to
    (read from its Pusher in MLMD, so a run's non-default --model-name is found)."""
    given = any(getattr(args, name, None) is not None for name in ("model_name", "serving_dir"))
    if not given and args.config is None:
        for summary in reversed(summaries):
            if summary.model_dir:
                return summary.model_dir
    return config.model_serving_dir


def _inspect(args: argparse.Namespace) -> int:
    config = config_from_args(args, validate=False)
    if "://" in config.metadata_path or not os.path.isfile(config.metadata_path):
        raise ConfigError(
            f"metadata_path: no ML Metadata store at {config.metadata_path}; run the pipeline "
            "first, or point --output-dir (or --metadata-path) at a finished run"
        )
    from pipeline.local import run_lock_holder
    from pipeline.run_summary import (
        StoreError,
        describe_mismatch,
        format_summary,
        list_run_ids,
        open_store,
        summarize_run,
        unrecorded_executions,
    )

    try:  # Read-only: inspect never creates, initialises or changes a store.
        store = open_store(config.metadata_path, read_only=True)
    except StoreError as err:
        raise _CommandFailedError(str(err)) from None
    unknown = unrecorded_executions(store, config.pipeline_root)
    mismatch = None
    if unknown:
        mismatch = describe_mismatch(config.metadata_path, config.pipeline_root, unknown)
    run_ids = list_run_ids(store)
    if args.view == "report":
        return _inspect_report(config, run_ids, args.report_run_id or args.run_id)
    if args.run_id:
        if args.run_id not in run_ids:
            raise _UsageError(f"--run-id: no run {args.run_id!r}; runs: {', '.join(run_ids)}")
        run_ids = [args.run_id]
    elif args.last:
        run_ids = run_ids[-args.last :]
    summaries = [summarize_run(store, config.pipeline_name, run_id) for run_id in run_ids]
    holder = run_lock_holder(config)
    for summary in summaries:
        if holder is None or f"run {summary.run_id}" not in holder:
            for component in summary.components:  # No live process runs them any more.
                if component.state in ("NEW", "RUNNING"):
                    component.state = ABANDONED
    pushed = {
        os.path.normpath(s.pushed_destination): s.run_id for s in summaries if s.pushed_destination
    }
    model_dir = _inspected_model_dir(args, config, summaries)
    versions = _served_versions(model_dir, pushed)
    if args.json:
        document = {
            "metadata_path": config.metadata_path,
            "pipeline_name": config.pipeline_name,
            "runs": [dataclasses.asdict(s) for s in summaries],
            "serving_dir": model_dir,
            "served_versions": [dataclasses.asdict(v) for v in versions],
            "store_mismatch": mismatch,
        }
        print(json.dumps(document, indent=2))
        return EXIT_OK
    print(f"ML Metadata: {config.metadata_path} (pipeline {config.pipeline_name})")
    if mismatch:
        print(f"WARNING: {mismatch}")
    print(f"{len(summaries)} run(s) shown, oldest first\n")
    for summary in summaries:
        print(format_summary(summary))
        print()
    print(f"Serving directory {model_dir}:")
    if not versions:
        print("  no pushed versions")
    for v in versions:
        origin = (
            f"pushed by run {v.pushed_by_run}" if v.pushed_by_run else "pushed by an earlier run"
        )
        latest = "  <- served (latest)" if v is versions[-1] else ""
        print(f"  version {v.version}  {v.modified_utc} UTC  {origin}{latest}")
    return EXIT_OK


def _inspect_report(config: PipelineConfig, run_ids: list[str], run_id: str | None) -> int:
    """Writes the HTML report of ``run_id`` (default: the latest run) and prints its path."""
    from pipeline.report import write_report

    if not run_ids:
        raise _CommandFailedError(f"the store {config.metadata_path} holds no runs")
    run_id = run_id or run_ids[-1]
    if run_id not in run_ids:
        raise _UsageError(f"report: no run {run_id!r}; runs: {', '.join(run_ids)}")
    from pipeline.local import log_dir, stderr_to

    # TensorFlow's and TFMA's noise while the run's artifacts are read goes to a log file.
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    log_path = log_dir(config) / f"inspect-report-{stamp}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with stderr_to(log_path):
        path = write_report(config, run_id)
    if path is None:
        raise _CommandFailedError(
            f"the report of run {run_id} could not be written; the reason is in {log_path}"
        )
    print(path)
    return EXIT_OK


# --- defaults ----------------------------------------------------------------------------


def defaults_yaml() -> str:
    """Every configuration field at its default, each under its help text, as a YAML file."""
    lines = [
        "# Every field of pipeline/config.py at its default (`tfx-image-pipeline defaults`).",
        "#   tfx-image-pipeline run --config THIS_FILE [--field-name VALUE ...]",
        "# Relative paths are resolved against the current directory; empty pipeline_root,",
        "# metadata_path and serving_dir are derived from output_dir.",
        "",
    ]
    defaults = PipelineConfig()
    for f in dataclasses.fields(PipelineConfig):
        lines.extend("# " + line for line in textwrap.wrap(f.metadata["help"], 94))
        if "choices" in f.metadata:
            lines.append("# One of: " + ", ".join(f.metadata["choices"]))
        value = {f.name: getattr(defaults, f.name)}
        lines.append(yaml.safe_dump(value, default_flow_style=False, width=200).strip())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _defaults(args: argparse.Namespace) -> int:
    print(defaults_yaml(), end="")
    return EXIT_OK


# --- delegated subcommands ---------------------------------------------------------------


@contextlib.contextmanager
def _prog_name(name: str) -> Iterator[None]:
    """Makes a delegated argparse parser print ``name`` in its usage line."""
    saved = sys.argv[0] if sys.argv else ""
    if sys.argv:
        sys.argv[0] = name
    else:
        sys.argv.append(name)
    try:
        yield
    finally:
        sys.argv[0] = saved


def _export_data(argv: list[str]) -> int:
    from pipeline import data_export

    with _prog_name(f"{PROG} export-data"):
        return data_export.main(argv)


def _serving_command(
    command: str, module_name: str, add_arguments: str, run: str, argv: list[str]
) -> int:
    """Builds the parser from the serving package (imported only now) and runs it."""
    import importlib

    try:
        module = importlib.import_module(module_name)
        add: Callable[[argparse.ArgumentParser], None] = getattr(module, add_arguments)
        handler: Callable[[argparse.Namespace], int | None] = getattr(module, run)
    except (ImportError, AttributeError) as err:
        _error(
            command,
            f"needs {module_name}.{add_arguments}/{run} from the serving package, which is not "
            f"available here ({type(err).__name__}: {err})",
        )
        return EXIT_FAILED
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog=f"{PROG} {command}", description=_HELP[command]
    )
    add(parser)
    return int(handler(parser.parse_args(argv)) or 0)


_HELP = {
    "run": "Run the whole pipeline on this machine (LocalDagRunner, SQLite ML Metadata).",
    "compile": (
        "Compile the pipeline for Kubeflow Pipelines (.yaml: PipelineSpec) or Vertex AI "
        "Pipelines (.json: PipelineJob). Only compiles: nothing runs and nothing is uploaded."
    ),
    "inspect": (
        "Show past local runs from ML Metadata (component states and times, eval metrics, "
        "blessing, pushed version) and the versions in the serving directory."
    ),
    "defaults": (
        "Print every configuration field with its help text and default value as a YAML file "
        "to start a --config from (configs/local.yaml is this output)."
    ),
    "export-data": (
        "Export Fashion-MNIST (Debian package dataset-fashion-mnist) as class folders of PNGs."
    ),
    "serve": "Serve the pushed model (options come from serving.server; see serve --help).",
    "predict": "Send images to a running server (options come from serving.client).",
    "infer": (
        "Batch predictions of a pushed model over a folder, manifest or TFRecords, on Beam "
        "(the pipeline's runner presets): one JSONL/CSV row per image, skipped files listed."
    ),
}

_DELEGATED: dict[str, Callable[[list[str]], int]] = {
    "export-data": _export_data,
    "serve": lambda argv: _serving_command(
        "serve", "serving.server", "add_pipeline_serve_arguments", "run_serve", argv
    ),
    "predict": lambda argv: _serving_command(
        "predict", "serving.client", "add_predict_arguments", "run_predict", argv
    ),
    "infer": lambda argv: _serving_command(
        "infer", "pipeline.batch_infer", "add_infer_arguments", "run_infer", argv
    ),
}


# --- parser and entry point --------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with the run, compile and inspect subcommands."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG,
        description="Image-classification TFX pipeline: run locally, compile for Kubeflow "
        "Pipelines / Vertex AI, inspect runs, export data, serve and predict.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run", help=_HELP["run"], description=_HELP["run"], allow_abbrev=False
    )
    add_config_arguments(run)
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="Validate the configuration, print it (YAML) and the component graph, and stop.",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        help="Print every log record, TensorFlow's, absl's and Beam's included, on the console "
        "(by default they go only to the run's log file).",
    )
    run.set_defaults(handler=_run)

    compile_ = commands.add_parser(
        "compile", help=_HELP["compile"], description=_HELP["compile"], allow_abbrev=False
    )
    compile_.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="Local file to write: .yaml/.yml (Kubeflow Pipelines PipelineSpec) or .json "
        "(Vertex AI PipelineJob). Default: OUTPUT_DIR/kubeflow/PIPELINE_NAME.yaml, or .json "
        "for --target vertex.",
    )
    compile_.add_argument(
        "--target",
        choices=("kubeflow", "vertex"),
        help="kubeflow: open-source Kubeflow Pipelines (PipelineSpec YAML); vertex: Vertex AI "
        "Pipelines (PipelineJob JSON). Both schema 2.1 with no resolver tasks. Default: from "
        "the --output extension (kubeflow without one).",
    )
    compile_.add_argument(
        "--dry-run",
        action="store_true",
        help="Validate, print the configuration, component graph and Kubeflow settings, and "
        "stop without writing the spec.",
    )
    add_config_arguments(compile_)
    compile_.set_defaults(handler=_compile)

    inspect = commands.add_parser(
        "inspect", help=_HELP["inspect"], description=_HELP["inspect"], allow_abbrev=False
    )
    inspect.add_argument(
        "view",
        nargs="?",
        choices=("report",),
        help="report: write the run's HTML report (also of a run that failed part-way) and "
        "print its path.",
    )
    inspect.add_argument(
        "report_run_id", nargs="?", metavar="RUN_ID", help="The run to report on (default: latest)."
    )
    inspect.add_argument("--run-id", help="Show only this run (default: every run).")
    inspect.add_argument("--last", type=int, metavar="N", help="Show only the last N runs.")
    inspect.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    add_config_arguments(inspect)
    inspect.set_defaults(handler=_inspect)

    defaults = commands.add_parser(
        "defaults", help=_HELP["defaults"], description=_HELP["defaults"], allow_abbrev=False
    )
    defaults.set_defaults(handler=_defaults)

    for name in _DELEGATED:
        # Parsed by the delegate itself (see main); listed here for the top-level --help.
        commands.add_parser(name, help=_HELP[name], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; returns the process exit code (see ``--help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    try:
        if command in _DELEGATED:
            return _DELEGATED[command](argv[1:])
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help (0) or a usage error (2), already printed
            return int(exit_.code or 0)
        return args.handler(args)
    except ConfigError as err:
        _error(command, f"configuration error: {err}")
        return EXIT_USAGE
    except _UsageError as err:
        _error(command, str(err))
        return EXIT_USAGE
    except _CommandFailedError as err:
        _error(command, str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error(command, "interrupted")
        return EXIT_INTERRUPTED
    except SystemExit as exit_:  # A delegate's argparse: --help (0) or a usage error (2).
        if exit_.code is None or isinstance(exit_.code, int):
            return int(exit_.code or 0)
        _error(command, str(exit_.code))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
