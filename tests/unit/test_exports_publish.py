"""Exports published beside versions: whole or not at all, pruned with their versions, and
never taken for a version by the scanners TF Serving's layout rules stand for."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from components.versioned_pusher import layout as pusher_layout
from serving import layout


def _saved_model(path: Path, content: bytes) -> Path:
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(content)
    (path / "variables" / "variables.index").write_bytes(b"index")
    return path


def _exporter_output(path: Path, refused: tuple[str, ...] = ()) -> Path:
    """A ModelExporter output: passed exports at the top, refused ones in refused/."""
    (path / "refused").mkdir(parents=True)
    for kind, name in layout.EXPORT_FILES.items():
        folder = path / "refused" if kind in refused else path
        (folder / name).write_bytes(f"{kind} bytes".encode())
    (path / layout.EXPORT_LABELS_FILE).write_text("a\nb\n")
    (path / layout.EXPORT_REPORT_FILE).write_text(json.dumps({"exports": []}))
    return path


def test_push_publishes_passed_exports_beside_the_version(tmp_path):
    model_dir = tmp_path / "serving" / "m"
    exports = _exporter_output(tmp_path / "exports", refused=("tflite_int8",))
    result = pusher_layout.push(
        str(_saved_model(tmp_path / "sm", b"one")), str(model_dir), keep=2, exports_dir=str(exports)
    )
    published = model_dir / layout.EXPORTS_DIR / "1"
    assert result.exports_destination == str(published)
    assert sorted(p.name for p in published.iterdir()) == sorted(
        ["model_fp32.tflite", "model_fp16.tflite", "model.onnx", "labels.txt", "export_report.json"]
    )
    # exports/ is not a version for the scanners, and models.config lists the model once.
    assert layout.list_versions(str(model_dir)) == [1]
    assert (tmp_path / "serving" / "models.config").read_text().count("name:") == 1
    assert not [p for p in (model_dir / layout.EXPORTS_DIR).iterdir() if p.name.startswith(".")]


def test_no_passed_export_publishes_no_exports_folder(tmp_path):
    model_dir = tmp_path / "m"
    exports = _exporter_output(tmp_path / "exports", refused=tuple(layout.EXPORT_FILES))
    result = pusher_layout.push(
        str(_saved_model(tmp_path / "sm", b"one")), str(model_dir), keep=2, exports_dir=str(exports)
    )
    assert result.exports_destination == ""
    assert not (model_dir / layout.EXPORTS_DIR / "1").exists()


def test_exports_of_pruned_versions_are_pruned(tmp_path):
    model_dir = tmp_path / "m"
    exports = _exporter_output(tmp_path / "exports")
    for i in range(3):
        pusher_layout.push(
            str(_saved_model(tmp_path / f"sm{i}", f"model {i}".encode())),
            str(model_dir),
            keep=2,
            exports_dir=str(exports),
        )
    assert layout.list_versions(str(model_dir)) == [2, 3]
    assert sorted(p.name for p in (model_dir / layout.EXPORTS_DIR).iterdir()) == ["2", "3"]


def test_a_failed_exports_copy_publishes_neither_version_nor_exports(tmp_path, monkeypatch):
    model_dir = tmp_path / "m"
    exports = _exporter_output(tmp_path / "exports")
    real_copy = shutil.copyfile
    calls = []

    def copy_until_full(source, target, *args, **kwargs):
        calls.append(source)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(source, target, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_until_full)
    with pytest.raises(OSError, match="nothing was published"):
        pusher_layout.push(
            str(_saved_model(tmp_path / "sm", b"one")),
            str(model_dir),
            keep=2,
            exports_dir=str(exports),
        )
    assert layout.list_versions(str(model_dir)) == []
    assert list((model_dir / layout.EXPORTS_DIR).iterdir()) == []


def test_an_unchanged_model_gets_its_missing_exports_and_keeps_existing_ones(tmp_path):
    model_dir = tmp_path / "m"
    saved_model = str(_saved_model(tmp_path / "sm", b"one"))
    pusher_layout.push(saved_model, str(model_dir), keep=2)  # exports switched off
    exports = _exporter_output(tmp_path / "exports")
    result = pusher_layout.push(saved_model, str(model_dir), keep=2, exports_dir=str(exports))
    assert not result.published
    assert result.exports_published  # the version had none: published now
    again = pusher_layout.push(saved_model, str(model_dir), keep=2, exports_dir=str(exports))
    assert again.exports_destination == result.exports_destination
    assert again.exports_published == []


def test_leftover_exports_staging_is_swept(tmp_path):
    model_dir = tmp_path / "m"
    leftover = model_dir / layout.EXPORTS_DIR / f"{pusher_layout.STAGING_PREFIX}dead"
    leftover.mkdir(parents=True)
    result = pusher_layout.push(str(_saved_model(tmp_path / "sm", b"one")), str(model_dir), keep=2)
    assert str(leftover) in result.swept
    assert not leftover.exists()
