"""The serving directory layout: atomic integer versions, pruning, models.config."""

from __future__ import annotations

import threading

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.versioned_pusher import layout


def _saved_model(path, payload: bytes = b"graph"):
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(payload)
    (path / "variables" / "variables.index").write_bytes(b"index")
    return path


def test_versions_count_up_from_one_and_copy_everything(tmp_path):
    source = _saved_model(tmp_path / "export")
    model_dir = tmp_path / "serving" / "clf"
    assert layout.publish_version(str(source), str(model_dir)) == 1
    assert layout.publish_version(str(source), str(model_dir)) == 2
    assert layout.list_versions(str(model_dir)) == [1, 2]
    assert (model_dir / "2" / "variables" / "variables.index").read_bytes() == b"index"
    # Nothing but whole versions is left behind.
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]


def test_a_folder_without_saved_model_is_not_a_version(tmp_path):
    model_dir = tmp_path / "clf"
    (model_dir / "7").mkdir(parents=True)  # e.g. a copy someone started by hand
    (model_dir / "notes").mkdir()
    assert layout.list_versions(str(model_dir)) == []


def test_publishing_an_export_without_saved_model_fails_and_leaves_nothing(tmp_path):
    (tmp_path / "export").mkdir()
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        layout.publish_version(str(tmp_path / "export"), str(tmp_path / "clf"))
    assert not (tmp_path / "clf").exists() or not any((tmp_path / "clf").iterdir())


def test_concurrent_pushes_get_distinct_versions(tmp_path):
    source = _saved_model(tmp_path / "export")
    model_dir = tmp_path / "clf"
    versions: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: versions.append(layout.publish_version(str(source), str(model_dir)))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(versions) == [1, 2, 3, 4]
    assert layout.list_versions(str(model_dir)) == [1, 2, 3, 4]


def test_prune_keeps_the_newest(tmp_path):
    source = _saved_model(tmp_path / "export")
    model_dir = tmp_path / "clf"
    for _ in range(4):
        layout.publish_version(str(source), str(model_dir))
    assert layout.prune_versions(str(model_dir), keep=2) == [1, 2]
    assert layout.list_versions(str(model_dir)) == [3, 4]
    with pytest.raises(ValueError):
        layout.prune_versions(str(model_dir), keep=0)


def test_models_config_lists_every_model_with_versions(tmp_path):
    source = _saved_model(tmp_path / "export")
    root = tmp_path / "serving"
    layout.publish_version(str(source), str(root / "flowers"))
    layout.publish_version(str(source), str(root / "pets"))
    (root / "empty_model").mkdir()
    path = layout.write_models_config(str(root), base_path_in_server="/models")
    config = text_format.Parse(
        (root / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    assert path == str(root / "models.config")
    assert [(m.name, m.base_path, m.model_platform) for m in config.model_config_list.config] == [
        ("flowers", "/models/flowers", "tensorflow"),
        ("pets", "/models/pets", "tensorflow"),
    ]
    layout.write_models_config(str(root))
    config = text_format.Parse(
        (root / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    assert config.model_config_list.config[0].base_path == str(root / "flowers")
    assert not list(root.glob("*.tmp"))


# --- One definition of the layout (serving.layout), used by every reader ----------------------


def test_serving_layout_loads_no_tensorflow_and_serving_no_pipeline():
    """The layout is light, and the serving package no longer reaches into pipeline.config."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import serving.layout, components.versioned_pusher.layout\n"
        "assert 'tensorflow' not in sys.modules, 'the layout imported TensorFlow'\n"
        "import serving.client, serving.model_manager, serving.server\n"
        "print(sorted(m for m in sys.modules if m == 'pipeline' or m.startswith('pipeline.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_reader_agrees_on_what_a_version_is(tmp_path):
    from components.infra_check import checks
    from serving import layout as serving_layout
    from serving.model_manager import scan_versions

    model_dir = tmp_path / "clf"
    _saved_model(model_dir / "1")
    (model_dir / "2").mkdir(parents=True)
    (model_dir / "2" / "saved_model.pbtxt").write_text("")  # TF Serving loads text too
    (model_dir / "3").mkdir()  # an integer folder still being copied by hand
    _saved_model(model_dir / ".incoming-0123")  # a push in progress
    _saved_model(model_dir / "\u00b2")  # a Unicode digit is no version number
    _saved_model(model_dir / str(2**63))  # beyond int64, TF Serving's version type
    (model_dir / "4").write_bytes(b"a file, not a folder")
    assert serving_layout.list_versions(str(model_dir)) == [1, 2]
    assert layout.list_versions(str(model_dir)) == [1, 2]
    assert sorted(scan_versions(model_dir)) == [1, 2]
    assert sorted(serving_layout.integer_folders(str(model_dir))) == [1, 2, 3]
    checks.check_saved_model(str(model_dir / "2"))
    with pytest.raises(checks.InfraCheckError, match="no SavedModel"):
        checks.check_saved_model(str(model_dir / "3"))


def test_copy_tree_copies_contents_not_permissions(tmp_path):
    from serving import layout as serving_layout

    source = _saved_model(tmp_path / "export")
    (source / "variables" / "variables.index").chmod(0o400)
    serving_layout.copy_tree(str(source), str(tmp_path / "copy"))
    copied = tmp_path / "copy" / "variables" / "variables.index"
    assert copied.read_bytes() == b"index" and copied.stat().st_mode & 0o200
    assert serving_layout.same_tree(str(source), str(tmp_path / "copy"))
    copied.write_bytes(b"indey")
    assert not serving_layout.same_tree(str(source), str(tmp_path / "copy"))


# --- Faults: staging, pruning, blocked numbers, identical re-pushes, concurrency ---------------


def test_a_failed_copy_leaves_no_staging_folder(tmp_path):
    """A copy that fails half-way (here: a FIFO, which cannot be copied) cleans up after itself."""
    import os

    source = _saved_model(tmp_path / "export")
    (source / "zz").mkdir()
    os.mkfifo(source / "zz" / "pipe")
    model_dir = tmp_path / "clf"
    with pytest.raises(OSError):
        layout.publish_version(str(source), str(model_dir))
    assert list(model_dir.iterdir()) == []


def test_a_push_sweeps_leftovers_of_killed_pushes_and_says_so(tmp_path):
    source = _saved_model(tmp_path / "export")
    root = tmp_path / "serving"
    model_dir = root / "clf"
    _saved_model(model_dir / ".incoming-deadbeef")
    _saved_model(model_dir / ".retired-3-cafe")
    (root / ".models.config.0123.tmp").write_text("half a conf")
    result = layout.push(str(source), str(model_dir), keep=5)
    assert sorted(result.swept) == sorted(
        [
            str(model_dir / ".incoming-deadbeef"),
            str(model_dir / ".retired-3-cafe"),
            str(root / ".models.config.0123.tmp"),
        ]
    )
    assert sorted(p.name for p in model_dir.iterdir()) == ["1"]
    assert sorted(p.name for p in root.iterdir()) == [".publish.lock", "clf", "models.config"]


def test_prune_renames_a_version_out_of_sight_before_deleting_it(tmp_path, monkeypatch):
    from serving import layout as serving_layout

    source = _saved_model(tmp_path / "export")
    model_dir = tmp_path / "clf"
    for _ in range(3):
        layout.publish_version(str(source), str(model_dir))
    deleted = []
    real_remove = serving_layout.remove_tree

    def remove_and_record(path):
        # What a server scanning right now would see while the files go.
        deleted.append((path, serving_layout.list_versions(str(model_dir))))
        real_remove(path)

    monkeypatch.setattr(serving_layout, "remove_tree", remove_and_record)
    assert layout.prune_versions(str(model_dir), keep=1) == [1, 2]
    assert [path.split("/")[-1].split("-")[0] for path, _ in deleted] == [".retired"] * 2
    assert [visible for _, visible in deleted] == [[2, 3], [3]]
    assert sorted(p.name for p in model_dir.iterdir()) == ["3"]


def test_an_integer_folder_without_saved_model_does_not_block_pushes(tmp_path):
    source = _saved_model(tmp_path / "export")
    model_dir = tmp_path / "serving" / "clf"
    layout.push(str(source), str(model_dir), keep=5)
    (model_dir / "2").mkdir()  # left by hand, above the newest version
    (model_dir / "2" / "variables").mkdir()
    changed = _saved_model(tmp_path / "export2", payload=b"graph 2")
    result = layout.push(str(changed), str(model_dir), keep=5)
    assert (result.version, result.published) == (3, True)
    assert result.not_versions == [str(model_dir / "2")]
    assert layout.list_versions(str(model_dir)) == [1, 3]


def test_pushing_the_newest_version_again_publishes_nothing(tmp_path):
    root = tmp_path / "serving"
    model_dir = root / "clf"
    first = _saved_model(tmp_path / "export")
    assert layout.push(str(first), str(model_dir), keep=2).published
    # A re-run with nothing changed: a new export folder with the same bytes.
    again = _saved_model(tmp_path / "export_again")
    result = layout.push(str(again), str(model_dir), keep=2)
    assert (result.version, result.published, result.removed_versions) == (1, False, [])
    assert result.destination == str(model_dir / "1")
    assert layout.list_versions(str(model_dir)) == [1]
    changed = _saved_model(tmp_path / "export_changed", payload=b"graph 2")
    assert layout.push(str(changed), str(model_dir), keep=2).version == 2
    # An older version's bytes are a rollback: published as a new version.
    assert layout.push(str(first), str(model_dir), keep=2).version == 3


_PUSH_LOOP = r"""
import sys
from components.versioned_pusher import layout
source, model_dir, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for index in range(count):
    print(layout.push(f"{source}{index % 2}", model_dir, keep=1000).version, flush=True)
"""


def test_concurrent_processes_all_publish(tmp_path):
    """Three processes pushing into one serving root: every push succeeds, none collide."""
    import subprocess
    import sys

    for index in range(2):
        _saved_model(tmp_path / f"export{index}", payload=f"graph {index}".encode())
    model_dir = tmp_path / "serving" / "clf"
    pushers = [
        subprocess.Popen(
            [sys.executable, "-c", _PUSH_LOOP, str(tmp_path / "export"), str(model_dir), "20"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in pushers]
    assert [p.returncode for p in pushers] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    versions = [int(line) for out, _ in outputs for line in out.split()]
    assert len(versions) == 60
    published = layout.list_versions(str(model_dir))
    # Each push either published a version or found its bytes already newest.
    assert set(versions) == set(published)
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.isdigit()) == []
