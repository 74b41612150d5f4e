"""Times a whole local pipeline run (``make run`` defaults) and each component in it.

    .venv/bin/python -m bench.pipeline_run [--runs 1] [-- extra local_runner flags]

Each run goes to a fresh temporary output folder; the figures come from ML Metadata
(each execution's create and last-update times) and from the wall clock of the process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import write_section

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_once(extra_args: list[str]) -> tuple[float, dict[str, float], dict[str, float]]:
    """Runs the pipeline once; returns (wall seconds, seconds per component, eval metrics)."""
    from pipeline.run_summary import open_store, summarize_run

    with tempfile.TemporaryDirectory() as output_dir:
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "local_runner.py", f"--output-dir={output_dir}", *extra_args],
            cwd=REPO_ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - start
        store = open_store(os.path.join(output_dir, "metadata.sqlite"))
        summary = summarize_run(store, "image-classifier")
        return wall, {c.component_id: c.seconds for c in summary.components}, summary.metrics


def main() -> None:
    """Runs the benchmark and writes its BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="flags passed to local_runner.py")
    args = parser.parse_args()

    from pipeline.pipeline import ACCURACY_METRIC

    walls, per_component, accuracies = [], {}, []
    for _ in range(args.runs):
        wall, components, metrics = run_once(args.extra)
        walls.append(wall)
        accuracies.append(metrics.get(ACCURACY_METRIC, float("nan")))
        for name, seconds in components.items():
            per_component.setdefault(name, []).append(seconds)
        print(f"run: {wall:.1f} s wall, eval accuracy {accuracies[-1]:.3f}")

    rows = ["| component | min s | median s |", "|---|---:|---:|"]
    for name, values in per_component.items():
        rows.append(f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} |")
    rows.append(
        f"| **whole run (process wall time)** | {min(walls):.1f} | {statistics.median(walls):.1f} |"
    )
    from pipeline.config import PipelineConfig

    defaults = PipelineConfig()
    setup = (
        f"{defaults.backbone} (weights: {defaults.backbone_weights}) at "
        f"{defaults.resolved_image_size}x{defaults.resolved_image_size}, up to "
        f"{defaults.epochs} + {defaults.fine_tune_epochs} fine-tuning epochs"
    )
    if args.extra:
        setup += f", with flags {' '.join(args.extra)}"
    body = (
        f"{args.runs} run(s) of the pipeline on the embedded sample (500 images; {setup}), "
        f"as `make run` does. Target: under 600 s.\n\n"
        + "\n".join(rows)
        + f"\n\nEval accuracy (93 eval images): {', '.join(f'{a:.3f}' for a in accuracies)}\n"
    )
    print(body)
    extra = (" " + " ".join(args.extra)) if args.extra else ""
    write_section(
        "Pipeline run on the embedded sample",
        body,
        command=f".venv/bin/python -m bench.pipeline_run --runs {args.runs}{extra}",
    )


if __name__ == "__main__":
    main()
