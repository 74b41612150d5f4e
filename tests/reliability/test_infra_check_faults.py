"""A SIGKILL during the infra check leaves no ``infra-check-*`` folder behind for good."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]

_CHECK = r"""
import sys
from components.infra_check.executor import run_infra_check
print(run_infra_check(sys.argv[1], "clf", 120))
"""


def test_a_killed_check_leaves_a_work_folder_the_next_check_removes(tmp_path, holdout_dir):
    from components.infra_check.executor import (
        WORK_DIR_PREFIX,
        WORK_LOCK_FILE,
        sweep_stale_work_dirs,
    )
    from tests.tiny_model import save_tiny_model
    from trainer_module.export import write_warmup_requests

    model = save_tiny_model(tmp_path / "model", 3, favourite=1)
    write_warmup_requests(str(model), [next((holdout_dir / "bag").glob("*.png")).read_bytes()])
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    empty_bin = tmp_path / "bin"  # No tensorflow_model_server, no docker: the local server.
    empty_bin.mkdir()
    check = subprocess.Popen(
        [sys.executable, "-c", _CHECK, str(model)],
        cwd=REPO_ROOT,
        env=dict(os.environ, TMPDIR=str(temp_root), PATH=str(empty_bin), TF_USE_LEGACY_KERAS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # Its model server joins its process group: killed with it.
    )
    try:
        deadline = time.monotonic() + 300
        while not list(temp_root.glob(f"{WORK_DIR_PREFIX}*/models")):
            assert check.poll() is None, check.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the check never staged its model"
            time.sleep(0.05)
        time.sleep(0.5)  # Inside staging or the server's start.
        os.killpg(check.pid, signal.SIGKILL)
    finally:
        if check.poll() is None:
            os.killpg(check.pid, signal.SIGKILL)
        check.wait(timeout=60)
    [left] = temp_root.glob(f"{WORK_DIR_PREFIX}*")
    # A live check's folder, whose lock this test holds, must survive the sweep.
    live = temp_root / f"{WORK_DIR_PREFIX}live"
    live.mkdir()
    with open(live / WORK_LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert sweep_stale_work_dirs(str(temp_root)) == [str(left)]
    assert sorted(p.name for p in temp_root.iterdir()) == [live.name]
