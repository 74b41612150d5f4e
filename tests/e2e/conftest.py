"""Runs the whole pipeline on the embedded sample once per test session.

Two runs share one output folder. The first trains normally (defaults, at 96 px) and
pushes. The second trains a deliberately crippled model (one epoch at a learning rate
that cannot learn): it must be gated against the served version 1 as its baseline and must
not be blessed or pushed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PIPELINE_NAME = "e2e-test"
MODEL_NAME = "fashion"
E2E_IMAGE_SIZE = 96


@dataclasses.dataclass(frozen=True)
class PipelineRuns:
    """Where the two e2e runs wrote, and what the serving folder held after each."""

    output_dir: Path
    serving_dir: Path
    model_name: str
    metadata_path: Path
    first_run_log: str
    second_run_log: str
    serving_digest_after_first: str
    serving_digest_after_second: str

    @property
    def model_dir(self) -> Path:
        """SERVING_DIR/MODEL_NAME, the folder of integer version directories."""
        return self.serving_dir / self.model_name

    @property
    def version_dirs(self) -> list[Path]:
        """Pushed version directories, oldest first."""
        return sorted(
            (p for p in self.model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )


@dataclasses.dataclass(frozen=True)
class PushedModel:
    """The model the first run pushed."""

    serving_dir: Path
    model_name: str
    version_dir: Path


def tree_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_local_pipeline(output_dir: Path, *extra_args: str) -> str:
    """Runs ``local_runner.py`` in a fresh process; returns its output, fails the test on error."""
    command = [
        sys.executable,
        str(REPO_ROOT / "local_runner.py"),
        f"--output-dir={output_dir}",
        f"--pipeline-name={PIPELINE_NAME}",
        f"--model-name={MODEL_NAME}",
        *extra_args,
    ]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"pipeline run failed ({result.returncode}):\n{output[-6000:]}")
    return output


@pytest.fixture(scope="session")
def pipeline_runs(tmp_path_factory: pytest.TempPathFactory) -> PipelineRuns:
    """Both pipeline runs (about 6 minutes on 2 cores)."""
    output_dir = tmp_path_factory.mktemp("e2e")
    serving_dir = output_dir / "serving"
    # The default backbone (pretrained EfficientNet-Lite0) at 96 px: the sample's images
    # are 28x28, and 96 px keeps the test to a few minutes on 2 cores.
    first_log = run_local_pipeline(output_dir, f"--image-size={E2E_IMAGE_SIZE}")
    first_digest = tree_digest(serving_dir)
    second_log = run_local_pipeline(
        output_dir,
        f"--image-size={E2E_IMAGE_SIZE}",
        "--epochs=1",
        "--fine-tune-epochs=0",
        "--learning-rate=1e-9",
    )
    return PipelineRuns(
        output_dir=output_dir,
        serving_dir=serving_dir,
        model_name=MODEL_NAME,
        metadata_path=output_dir / "metadata.sqlite",
        first_run_log=first_log,
        second_run_log=second_log,
        serving_digest_after_first=first_digest,
        serving_digest_after_second=tree_digest(serving_dir),
    )


@pytest.fixture(scope="session")
def pushed_model(pipeline_runs: PipelineRuns) -> PushedModel:
    """The version directory the first run pushed."""
    versions = pipeline_runs.version_dirs
    assert len(versions) == 1, f"expected one pushed version, found {versions}"
    return PushedModel(pipeline_runs.serving_dir, pipeline_runs.model_name, versions[0])


CHROMIUM_INSTALL_TIMEOUT_SECONDS = 600


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless-capable ``chromium``, installed with apt-get where it is missing
    (about 30 s); fails, never skips, where it cannot be had."""
    import shutil

    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail("chromium is missing and cannot be installed here (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    for command in (install, ["apt-get", "update", "-qq"], install):
        result = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHROMIUM_INSTALL_TIMEOUT_SECONDS,
        )
        if command is install and result.returncode == 0:
            break
    found = shutil.which("chromium")
    if not found:
        pytest.fail(f"apt-get install chromium failed:\n{result.stderr[-3000:]}")
    return found
