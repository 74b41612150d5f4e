"""What running the compiled Kubeflow spec in containers costs, against LocalDagRunner.

One run of this script, on one machine:

1. builds the project image (``make image``; warm when nothing changed);
2. compiles ``--target kubeflow`` and runs the DAG twice in containers with the conformance
   harness (tests/containers/kfp_harness.py), with the budgets of the container test: run 1
   pushes, run 2 is crippled by runtime parameters and pushes nothing;
3. runs the same pipeline (same settings, run-1 budget) under LocalDagRunner.

It prints a per-task time table for each and writes them into BENCHMARKS.md. It needs a
container engine (``make test-containers`` starts one; see the README).

    python -m bench.kubeflow_containers [--image TAG]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import write_section

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTION = "Kubeflow spec in containers vs LocalDagRunner"
FIRST_RUN = {"epochs": 2, "fine_tune_epochs": 1}
SECOND_RUN = {"epochs": 1, "fine_tune_epochs": 0, "learning_rate": 1e-9}
COMMON_FLAGS = ["--image-size=96", "--infra-check-server=local", "--model-name=bench_model"]


def _build_image() -> tuple[str, float]:
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "deploy/build_image.sh"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"deploy/build_image.sh failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1], seconds  # It prints the image tag.


def _table(rows: list[tuple[str, float]], header: str) -> str:
    lines = [f"| {header} | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in rows]
    lines.append(f"| **total** | **{sum(s for _, s in rows):.1f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="Use this image tag instead of building one.")
    args = parser.parse_args(argv)
    from pipeline.cli import main as cli_main
    from pipeline.run_summary import open_store, summarize_run
    from tests.conftest import SAMPLE_DIR
    from tests.containers.kfp_harness import ContainerDagRunner, load_spec

    if args.image:
        image, build_seconds = args.image, None
    else:
        image, build_seconds = _build_image()
    work = Path(tempfile.mkdtemp(prefix="bench-kfp-"))
    pipeline_root, serving_dir = work / "pipeline_root", work / "serving"
    serving_dir.mkdir()
    spec_path = work / "pipeline.yaml"
    flags = [
        f"--data-root={SAMPLE_DIR}",
        f"--pipeline-root={pipeline_root}",
        f"--serving-dir={serving_dir}",
        "--pipeline-name=bench-kfp",
        *COMMON_FLAGS,
    ]
    code = cli_main(
        ["compile", "--target=kubeflow", f"--output={spec_path}", f"--container-image={image}"]
        + flags
    )
    if code != 0:
        return code
    runner = ContainerDagRunner(load_spec(spec_path), pipeline_root, [SAMPLE_DIR, serving_dir])
    runs = {}
    for label, parameters in (("run 1", FIRST_RUN), ("run 2", SECOND_RUN)):
        started = time.monotonic()
        tasks = runner.run(parameters)
        runs[label] = (time.monotonic() - started, [(n, t.seconds) for n, t in tasks.items()])
        print(f"{label}: {runs[label][0]:.1f} s in containers", flush=True)

    local_dir = work / "local"
    started = time.monotonic()
    local = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "local_runner.py"),
            f"--output-dir={local_dir}",
            f"--data-root={SAMPLE_DIR}",
            "--pipeline-name=bench-local",
            f"--epochs={FIRST_RUN['epochs']}",
            f"--fine-tune-epochs={FIRST_RUN['fine_tune_epochs']}",
            *COMMON_FLAGS,
        ],
        cwd=REPO_ROOT,
        env=dict(os.environ, TF_USE_LEGACY_KERAS="1"),
        capture_output=True,
        text=True,
    )
    local_seconds = time.monotonic() - started
    if local.returncode != 0:
        sys.exit(f"LocalDagRunner run failed:\n{local.stdout[-3000:]}{local.stderr[-3000:]}")
    summary = summarize_run(open_store(str(local_dir / "metadata.sqlite")), "bench-local")
    local_rows = [(c.component_id, c.seconds) for c in summary.components]

    first_seconds = runs["run 1"][0]
    build = (
        f"`deploy/build_image.sh` (`make image`): {build_seconds:.0f} s (warm when the image "
        "was already built from the same inputs)"
        if build_seconds is not None
        else f"image given: `{image}` (not built by this run)"
    )
    body = "\n\n".join(
        [
            "The compiled `--target kubeflow` spec executed task by task in containers of the "
            "project image by the conformance harness, against LocalDagRunner on the same "
            "settings (embedded sample, efficientnet_lite0 at 96 px, infra check on the local "
            "server). Run 1: "
            f"{FIRST_RUN}; run 2: {SECOND_RUN} as runtime parameters (not blessed, pushes "
            "nothing). Container tasks include the container start and the TensorFlow import "
            "that each pod pays.",
            f"- {build}",
            f"- run 1 in containers: {first_seconds:.0f} s; run 2: {runs['run 2'][0]:.0f} s",
            f"- LocalDagRunner, run-1 budget, wall (process start included): "
            f"{local_seconds:.0f} s; containers / local = {first_seconds / local_seconds:.2f}",
            "### Run 1 in containers\n\n" + _table(runs["run 1"][1], "task"),
            "### Run 2 in containers\n\n" + _table(runs["run 2"][1], "task"),
            "### LocalDagRunner (run-1 budget)\n\n" + _table(local_rows, "component"),
        ]
    )
    print(body)
    write_section(SECTION, body, command="python -m bench.kubeflow_containers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
