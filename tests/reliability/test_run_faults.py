"""Local runs under real faults: a damaged or lost metadata store, concurrent runs, kills.

Each case starts from a real run of the pipeline (a one-class data root makes ImageExampleGen
fail after about 15 s, which leaves a real MLMD store and a real execution folder), then
breaks something the way a crash or a user would, and checks what ``run`` and ``inspect``
say: a clear one-line reason with the way out, never a traceback, and never a store that
``inspect`` created or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO_ROOT,
        env=dict(os.environ, TF_USE_LEGACY_KERAS="1"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory, sample_dir) -> Path:
    """An output dir holding one real (failed) run: a store and an execution folder."""
    root = tmp_path_factory.mktemp("failed_run")
    # Two class folders (validation passes) of files that are not images: ExampleGen runs,
    # skips every file and fails the run on max_bad_fraction.
    data = root / "not_images"
    for label in ("bag", "coat"):
        (data / label).mkdir(parents=True)
        (data / label / "0.png").write_text("not an image")
    out = root / "out"
    result = _cli("run", f"--data-root={data}", f"--output-dir={out}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert (out / "metadata.sqlite").is_file()
    assert list((out / "pipeline_root" / "ImageExampleGen").glob("*/[0-9]*"))
    (root / "console.txt").write_text(result.stderr)
    return out


def test_a_failed_run_ends_with_its_component_reason_log_and_report(failed_run):
    console = (failed_run.parent / "console.txt").read_text()
    last = console.strip().splitlines()[-1]
    assert "component ImageExampleGen failed" in last
    assert "ImageIngestionError: " in last
    [log] = (failed_run / "logs").glob("*.log")
    assert f"log: {log}" in last
    [report] = (failed_run / "reports").glob("*.html")
    assert last.endswith(f"report: {report}")
    # What the failed ImageExampleGen kept (its ingestion report) is in the run's report.
    assert "<h2>Data</h2>" in report.read_text() and "not_an_image" in report.read_text()


@pytest.fixture
def output_dir(failed_run, tmp_path) -> Path:
    """A private copy of the failed run's output dir, to break."""
    copy = tmp_path / "out"
    shutil.copytree(failed_run, copy)
    return copy


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def test_inspect_never_creates_or_changes_a_store(output_dir):
    store = output_dir / "metadata.sqlite"
    before = _digest(store)
    result = _cli("inspect", f"--output-dir={output_dir}", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _digest(store) == before
    assert sorted(p.name for p in output_dir.iterdir() if "metadata" in p.name) == [
        "metadata.sqlite",
        "metadata.sqlite.lock",
    ]
    store.unlink()
    result = _cli("inspect", f"--output-dir={output_dir}")
    assert result.returncode == 2 and "no ML Metadata store" in _one_line_error(result)
    assert not store.exists()


def test_a_truncated_store_is_reported_and_left_as_it_is(output_dir):
    store = output_dir / "metadata.sqlite"
    store.write_bytes(b"")
    result = _cli("inspect", f"--output-dir={output_dir}")
    line = _one_line_error(result)
    assert result.returncode == 1 and "is empty (0 bytes" in line and "restore" in line
    assert store.stat().st_size == 0  # Not re-initialised.
    result = _cli("run", f"--output-dir={output_dir}")
    line = _one_line_error(result)
    assert result.returncode == 1 and "not run:" in line and "is empty (0 bytes" in line
    assert store.stat().st_size == 0


def test_a_half_truncated_store_gives_the_way_out_not_a_traceback(output_dir):
    store = output_dir / "metadata.sqlite"
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 2])
    before = _digest(store)
    for command in ("inspect", "run"):
        result = _cli(command, f"--output-dir={output_dir}")
        line = _one_line_error(result)
        assert result.returncode == 1, result.stderr[-3000:]
        assert "is damaged" in line and "move it and the pipeline root aside" in line, line
    assert _digest(store) == before


def test_a_store_that_does_not_match_the_artifacts_is_reported_not_rebuilt(output_dir):
    """A fresh store beside old artifact folders: their execution ids would collide."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    store = output_dir / "metadata.sqlite"
    store.unlink()
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(store)
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    )
    metadata_store.MetadataStore(config)  # A new, empty MLMD store.
    before = _digest(store)
    result = _cli("inspect", f"--output-dir={output_dir}", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    mismatch = json.loads(result.stdout)["store_mismatch"]
    assert "does not match" in mismatch and "ImageExampleGen" in mismatch
    result = _cli("run", f"--output-dir={output_dir}")
    line = _one_line_error(result)
    assert result.returncode == 1 and "not run:" in line and "does not match" in line
    assert _digest(store) == before
    # Without any store at all, the old folders are noticed too.
    store.unlink()
    result = _cli("run", f"--output-dir={output_dir}")
    assert result.returncode == 1 and "does not match" in _one_line_error(result)
    assert not store.exists()


def test_a_second_run_on_one_output_root_is_refused(output_dir):
    from pipeline.config import load_config
    from pipeline.local import run_lock

    config = load_config(overrides={"output_dir": str(output_dir)}, validate=False)
    with run_lock(config, "2026-01-01T00:00:00"):
        started = time.monotonic()
        result = _cli("run", f"--output-dir={output_dir}")
        seconds = time.monotonic() - started
    line = _one_line_error(result)
    assert result.returncode == 1 and "concurrent runs on one output root are refused" in line
    assert f"pid {os.getpid()}, run 2026-01-01T00:00:00" in line
    assert seconds < 60, "refused only after TFX was loaded"


def test_a_killed_run_is_shown_abandoned_and_does_not_block_the_next(tmp_path, sample_dir):
    out = tmp_path / "out"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            f"--data-root={sample_dir}",
            f"--output-dir={out}",
        ],
        cwd=REPO_ROOT,
        env=dict(os.environ, TF_USE_LEGACY_KERAS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Kill it 10 s into Transform: by then Transform or the Trainer (minutes) is running.
        # (ImageExampleGen can finish on the sample within a short grace period, leaving
        # nothing running at the moment of the kill.)
        for line in run.stderr:
            if line.rstrip().endswith(" Transform ..."):  # The console's start line.
                time.sleep(10.0)
                run.send_signal(signal.SIGKILL)
                break
    finally:
        run.kill()
        run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL
    result = _cli("inspect", f"--output-dir={out}", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    [summary] = json.loads(result.stdout)["runs"]
    states = {c["component_id"]: c["state"] for c in summary["components"]}
    # Whichever component the kill caught is shown abandoned; none is left RUNNING.
    assert "ABANDONED" in states.values(), states
    assert "RUNNING" not in states.values(), states
    # The report of a run that stopped part-way shows what exists: the data it ingested.
    report = _cli("inspect", "report", f"--output-dir={out}")
    assert report.returncode == 0, report.stderr[-3000:]
    text = Path(report.stdout.strip().splitlines()[-1]).read_text()
    assert "<h2>Data</h2>" in text and "<h2>Lineage</h2>" in text
    assert "<h2>Evaluation</h2>" not in text
    # The kernel released the dead run's lock: the next run is not refused.
    from pipeline.config import load_config
    from pipeline.local import run_lock_holder

    assert run_lock_holder(load_config(overrides={"output_dir": str(out)}, validate=False)) is None
