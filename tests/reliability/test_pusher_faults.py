"""The Pusher under real faults: SIGKILL at random points of a push, a full disk, races.

A separate process pushes in a loop (publish, prune, models.config) and is killed with
SIGKILL at a random moment, again and again; a poller thread scans the serving directory
every ~2 ms as a model server would. Whatever the moment of the kill, every version the
poller sees must be whole, and ``models.config`` must parse with TF Serving's own proto.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.versioned_pusher import layout as pusher_layout
from serving import layout

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
MIN_KILLS = 30
KILL_BUDGET_SECONDS = 240

# Pushes the two exports alternately, forever; says "ready" once imported.
_PUSH_FOREVER = r"""
import sys
from components.versioned_pusher import layout
sources, model_dir = sys.argv[1:3], sys.argv[3]
print("ready", flush=True)
index = 0
while True:
    layout.push(sources[index % 2], model_dir, keep=3, base_path_in_server="/models")
    index += 1
"""


def _export(path: Path, seed: int, variables_mb: int = 8) -> Path:
    """A SavedModel-shaped tree whose copy takes long enough for kills to land inside it."""
    rng = random.Random(seed)
    (path / "variables").mkdir(parents=True)
    (path / "assets.extra").mkdir()
    (path / "saved_model.pb").write_bytes(rng.randbytes(200_000))
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(
        rng.randbytes(variables_mb * 1024 * 1024)
    )
    (path / "variables" / "variables.index").write_bytes(rng.randbytes(2_000))
    (path / "assets.extra" / layout.WARMUP_FILE).write_bytes(rng.randbytes(5_000))
    return path


def _tree_sizes(path: Path) -> dict[str, int]:
    return {f: os.path.getsize(path / f) for f in layout.walk_files(str(path))}


class _Poller(threading.Thread):
    """Scans like a model server every ~2 ms; records anything partial or unparsable."""

    def __init__(self, root: Path, model_dir: Path, whole_trees: list[dict[str, int]]):
        super().__init__(daemon=True)
        self.root, self.model_dir, self.whole_trees = root, model_dir, whole_trees
        self.scans = 0
        self.problems: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for version, path in layout.scan_versions(str(self.model_dir)).items():
                try:
                    sizes = _tree_sizes(Path(path))
                except FileNotFoundError:
                    continue  # Pruned (renamed away) between listing and reading: fine.
                if sizes not in self.whole_trees and Path(path).exists():
                    self.problems.append(f"version {version} is partial: {sorted(sizes)}")
            config = self.root / layout.MODELS_CONFIG_FILE
            try:
                text = config.read_text()
            except FileNotFoundError:
                text = None
            if text is not None:
                try:
                    text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
                except text_format.ParseError as err:
                    self.problems.append(f"models.config does not parse: {err}")
            self.scans += 1
            time.sleep(0.002)


def test_sigkill_at_random_points_of_a_push_never_shows_a_partial_version(tmp_path):
    sources = [_export(tmp_path / f"export{i}", seed=i) for i in range(2)]
    whole = [_tree_sizes(s) for s in sources]
    root = tmp_path / "serving"
    model_dir = root / "clf"
    poller = _Poller(root, model_dir, whole)
    poller.start()
    rng = random.Random(14)
    kills, leftovers_found, started = 0, 0, time.monotonic()
    try:
        while kills < MIN_KILLS + 10 and time.monotonic() - started < KILL_BUDGET_SECONDS:
            pusher = subprocess.Popen(
                [sys.executable, "-c", _PUSH_FOREVER, *map(str, sources), str(model_dir)],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert pusher.stdout.readline().strip() == "ready", pusher.stderr.read()
                time.sleep(rng.uniform(0.0, 0.4))
                pusher.send_signal(signal.SIGKILL)
            finally:
                pusher.kill()
                pusher.wait(timeout=30)
            assert pusher.returncode == -signal.SIGKILL, pusher.stderr.read()[-3000:]
            kills += 1
            # What the kill left: whole versions only; maybe a hidden staging or retired folder.
            names = [p.name for p in model_dir.iterdir()] if model_dir.exists() else []
            leftovers_found += any(n.startswith(".") for n in names)
            for path in layout.scan_versions(str(model_dir)).values():
                assert any(layout.same_tree(str(path), str(s)) for s in sources), path
    finally:
        poller.stop.set()
        poller.join(timeout=10)
    assert poller.problems == []
    assert kills >= MIN_KILLS, f"only {kills} kills in {KILL_BUDGET_SECONDS} s"
    # The next push sweeps every leftover and leaves versions, the lock and the config only.
    result = pusher_layout.push(str(sources[0]), str(model_dir), keep=3)
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.isdigit()) == []
    assert sorted(p.name for p in root.iterdir()) == [".publish.lock", "clf", "models.config"]
    assert layout.list_versions(str(model_dir))[-1] == result.version
    print(
        f"\n{kills} SIGKILLs, {leftovers_found} left hidden leftovers, {poller.scans} scans, "
        f"0 partial versions, models.config always parsed"
    )


@pytest.fixture
def tiny_volume(tmp_path):
    """A 24 MB tmpfs: a real full disk. Needs mount rights (root); skipped without them."""
    mount_point = tmp_path / "volume"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_the_push_and_gives_the_space_back(tmp_path, tiny_volume):
    small = _export(tmp_path / "small", seed=1, variables_mb=4)
    large = _export(tmp_path / "large", seed=2, variables_mb=21)
    model_dir = tiny_volume / "serving" / "clf"
    assert pusher_layout.push(str(small), str(model_dir), keep=5).version == 1
    free_before = os.statvfs(tiny_volume).f_bavail
    # 21 MB more does not fit beside 4 MB in 24 MB: the copy fails with ENOSPC.
    with pytest.raises(OSError) as failure:
        pusher_layout.push(str(large), str(model_dir), keep=5)
    assert failure.value.errno == 28  # ENOSPC
    assert sorted(p.name for p in model_dir.iterdir()) == ["1"]
    assert os.statvfs(tiny_volume).f_bavail == free_before
    # The volume is usable again: the next push of a model that fits succeeds.
    assert pusher_layout.push(str(_export(tmp_path / "s2", 3, 4)), str(model_dir), 5).version == 2
