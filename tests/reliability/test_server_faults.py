"""The local server restarted on a serving dir whose newest version is corrupt."""

from __future__ import annotations

import logging
import shutil

import pytest

pytestmark = pytest.mark.slow


def test_a_corrupt_newest_version_serves_nothing_and_the_log_says_why(tmp_path, caplog):
    from serving.model_manager import ModelManager
    from serving.protocol import ServingError
    from tests.tiny_model import save_tiny_model

    model_dir = tmp_path / "clf"
    save_tiny_model(model_dir / "1", 3, favourite=1)
    shutil.copytree(model_dir / "1", model_dir / "2")
    (model_dir / "2" / "saved_model.pb").write_bytes(b"\x00 not a SavedModel")

    manager = ModelManager("clf", model_dir)  # A restart: nothing loaded yet.
    with caplog.at_level(logging.ERROR, logger="serving.model_manager"):
        manager.poll()
        manager.poll()
    assert manager.available_versions() == []
    with pytest.raises(ServingError, match="Servable not found"):
        manager.servable("clf")
    explained = [r.getMessage() for r in caplog.records if "Serving nothing" in r.getMessage()]
    assert len(explained) == 1, explained  # Once, not on every poll.
    assert "version 2 failed to load" in explained[0] and "(1 on disk)" in explained[0]
    assert "does not fall back" in explained[0]

    # A good version pushed later is picked up.
    shutil.copytree(model_dir / "1", model_dir / "3")
    manager.poll()
    assert manager.available_versions() == [3]
