"""Beam's DirectRunner in one process vs N worker processes, on ImageExampleGen and Transform.

    .venv/bin/python -m bench.beam_runners [--data DIR] [--per-class N] [--repeats R]

Runs the data part of ``create_pipeline`` (ImageExampleGen -> StatisticsGen -> SchemaGen ->
Transform, the components Transform needs) with ``--beam-preset in-process`` and with
``--beam-preset multi-process --beam-num-workers N``, alternating the two so that drift of a
shared machine hits both alike. Each run is a fresh process with a fresh output folder and
ML Metadata store (no caching); component times come from MLMD (each execution's create and
last-update times) via ``pipeline.run_summary``, the wall time from the parent process.

The data default is the full Fashion-MNIST training set exported by
``make export-fashion-mnist`` (outputs/fashion_mnist/train, 60,000 PNGs). ``--per-class N``
runs on the first N images of each class (hard-linked into a temporary folder) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT / "outputs" / "fashion_mnist" / "train"
PIPELINE_NAME = "beam-bench"
SECTION = "Beam: in-process vs multi-process"


def run_child(data_root: str, output_dir: str, preset: str, workers: int) -> dict:
    """Runs the data components once (in this process); returns seconds per component."""
    from tfx import v1 as tfx

    from pipeline import pipeline as pipeline_module
    from pipeline.config import load_config
    from pipeline.run_summary import open_store, summarize_run

    config = load_config(
        overrides={
            "pipeline_name": PIPELINE_NAME,
            "data_root": data_root,
            "output_dir": output_dir,
            "beam_preset": preset,
            "beam_num_workers": workers,
        }
    )
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    full = pipeline_module.create_pipeline(config, metadata)
    wanted = {
        pipeline_module.EXAMPLE_GEN,
        pipeline_module.STATISTICS_GEN,
        pipeline_module.SCHEMA_GEN,
        pipeline_module.TRANSFORM,
    }
    kept = [c for c in full.components if c.id in wanted]
    for component in kept:  # Detach the Trainer, Evaluator... so the compiler accepts the cut.
        for downstream in list(component.downstream_nodes):
            if downstream.id not in wanted:
                component.remove_downstream_node(downstream)
    data_part = tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=kept,
        enable_cache=False,
        metadata_connection_config=metadata,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
    tfx.orchestration.LocalDagRunner().run(data_part)
    summary = summarize_run(open_store(config.metadata_path), config.pipeline_name)
    failed = [c.component_id for c in summary.components if c.state != "COMPLETE"]
    if failed:
        raise RuntimeError(f"components did not complete: {failed}")
    return {
        "seconds": {c.component_id: c.seconds for c in summary.components},
        "beam_pipeline_args": list(config.beam_pipeline_args),
    }


def run_once(data_root: Path, preset: str, workers: int) -> dict:
    """One run in a fresh Python process; adds its wall time."""
    with tempfile.TemporaryDirectory(prefix="beam-bench-") as output_dir:
        result_file = Path(output_dir) / "result.json"
        command = [
            sys.executable,
            "-m",
            "bench.beam_runners",
            "--child",
            json.dumps([str(data_root), output_dir, preset, workers, str(result_file)]),
        ]
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
        start = time.perf_counter()
        completed = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - start
        if completed.returncode != 0:
            raise RuntimeError(f"{preset} run failed:\n{completed.stderr[-4000:]}")
        result = json.loads(result_file.read_text())
    result["wall"] = wall
    return result


def subset(data: Path, per_class: int, into: Path) -> Path:
    """Links (or copies) the first ``per_class`` files of each class folder into ``into``.

    Hard links, not symlinks: ImageExampleGen does not follow symlinks.
    """
    for class_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        target = into / class_dir.name
        target.mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            try:
                os.link(image, target / image.name)
            except OSError:  # Another file system: copy instead.
                shutil.copy2(image, target / image.name)
    return into


def count_images(data: Path) -> tuple[int, int]:
    """(images, classes) under ``data``."""
    classes = [p for p in data.iterdir() if p.is_dir()]
    return sum(len(list(c.iterdir())) for c in classes), len(classes)


def _cell(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f}"


def report(results: dict[str, list[dict]], workers: int, images: int, classes: int) -> str:
    """The BENCHMARKS.md section body."""
    modes = list(results)
    components = list(results[modes[0]][0]["seconds"])
    header = "| component | " + " | ".join(f"{m} min / median s" for m in modes)
    header += " | multi / in (median) |"
    rows = [header, "|---|" + "---:|" * (len(modes) + 1)]

    def add_row(name: str, per_mode: dict[str, list[float]]) -> None:
        ratio = statistics.median(per_mode["multi-process"]) / statistics.median(
            per_mode["in-process"]
        )
        cells = " | ".join(_cell(per_mode[m]) for m in modes)
        rows.append(f"| {name} | {cells} | {ratio:.2f} |")

    for component in components:
        add_row(component, {m: [r["seconds"][component] for r in results[m]] for m in modes})
    add_row(
        "**4 components (MLMD)**",
        {m: [sum(r["seconds"].values()) for r in results[m]] for m in modes},
    )
    add_row("**process wall time**", {m: [r["wall"] for r in results[m]] for m in modes})
    repeats = len(results[modes[0]])
    args = {m: " ".join(results[m][0]["beam_pipeline_args"]) for m in modes}
    return (
        f"ImageExampleGen -> StatisticsGen -> SchemaGen -> Transform (analyse only: the label "
        f"vocabulary) on {images:,} PNGs in {classes} classes (Fashion-MNIST, 28x28), "
        f"{repeats} run(s) per mode, alternating, each in a fresh process without cache.\n\n"
        f"- in-process: `{args['in-process']}`\n"
        f"- multi-process: `{args['multi-process']}` ({workers} worker processes per Beam "
        f"stage)\n\n" + "\n".join(rows) + "\n\nA ratio below 1 means multi-process was faster.\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and writes its BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="image folder")
    parser.add_argument(
        "--per-class", type=int, help="use only the first N images of each class (a subset)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode")
    parser.add_argument("--workers", type=int, default=2, help="multi-process worker count")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        data_root, output_dir, preset, workers, result_file = json.loads(args.child)
        result = run_child(data_root, output_dir, preset, workers)
        Path(result_file).write_text(json.dumps(result))
        return 0

    if not args.data.is_dir():
        print(
            f"error: {args.data} is not a folder; create it with `make export-fashion-mnist` "
            "(or pass --data)",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="beam-bench-data-") as tmp:
        data = subset(args.data, args.per_class, Path(tmp)) if args.per_class else args.data
        images, classes = count_images(data)
        results: dict[str, list[dict]] = {"in-process": [], "multi-process": []}
        for repeat in range(args.repeats):
            order = list(results) if repeat % 2 == 0 else list(reversed(results))
            for preset in order:
                result = run_once(data.resolve(), preset, args.workers)
                results[preset].append(result)
                seconds = ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items())
                print(f"{preset}: wall {result['wall']:.1f} s ({seconds})", flush=True)
    body = report(results, args.workers, images, classes)
    print(body)
    if not args.no_write:
        from bench.report import write_section

        command = ".venv/bin/python -m bench.beam_runners"
        if args.data != DEFAULT_DATA:
            command += f" --data {args.data}"
        if args.per_class:
            command += f" --per-class {args.per_class}"
        command += f" --repeats {args.repeats} --workers {args.workers}"
        write_section(SECTION, body, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
