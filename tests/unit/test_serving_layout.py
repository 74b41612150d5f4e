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
