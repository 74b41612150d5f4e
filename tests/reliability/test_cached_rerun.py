"""A cached re-run with nothing changed must not push a byte-identical new version.

Two real local runs with caching on (small_cnn at 32 px, one epoch, so a run takes minutes):
the second reuses the Trainer's model, the Evaluator now compares it with itself as its
baseline and blesses it, and the Pusher, which runs again for the new blessing, finds the
model already served as the newest version and publishes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving import layout

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
_FLAGS = (
    "--backbone=small_cnn",
    "--image-size=32",
    "--epochs=1",
    "--fine-tune-epochs=0",
    "--accuracy-floor=0",
    "--enable-cache=true",
    "--beam-preset=in-process",
    "--exports=none",  # conversions are tested on the e2e run; caching is what this tests
)


def _run(output_dir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", f"--output-dir={output_dir}", *_FLAGS],
        cwd=REPO_ROOT,
        env=dict(os.environ, TF_USE_LEGACY_KERAS="1"),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return result.stdout


def test_a_cached_rerun_with_nothing_changed_publishes_nothing(tmp_path):
    model_dir = tmp_path / "serving" / "image_classifier"
    first = _run(tmp_path)
    assert f"pushed to: {model_dir / '1'}" in first
    before = {
        f: (model_dir / "1" / f).stat().st_mtime_ns for f in layout.walk_files(model_dir / "1")
    }
    second = _run(tmp_path)
    assert "Trainer" in second and "CACHED" in second
    assert f"pushed to: {model_dir / '1'} (already the newest version, byte-identical" in second
    assert layout.list_versions(str(model_dir)) == [1]
    after = {
        f: (model_dir / "1" / f).stat().st_mtime_ns for f in layout.walk_files(model_dir / "1")
    }
    assert after == before
