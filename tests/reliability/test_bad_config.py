"""Configuration errors that used to get through validation (issue 14): each stops
``run --dry-run`` with exit 2 and a message naming the field, before anything runs."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.config import MAX_INPUT_BATCH_BYTES, ConfigError, load_config
from pipeline.local import shorten_keeping_paths
from tests.conftest import REPO_ROOT
from tests.unit.test_image_files import class_folders, write

SAMPLE = str(REPO_ROOT / "data" / "sample")


def _dry_run(capsys, tmp_path: Path, *flags: str) -> tuple[int, str, str]:
    code = cli.main(["run", "--dry-run", f"--output-dir={tmp_path / 'out'}", *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _config_error(capsys, tmp_path: Path, *flags: str) -> str:
    code, _, err = _dry_run(capsys, tmp_path, *flags)
    assert code == cli.EXIT_USAGE, err
    assert "configuration error: " in err and err.count("\n") == 1, err
    return err


def test_an_empty_data_root_is_a_config_error(capsys, tmp_path):
    err = _config_error(capsys, tmp_path, "--data-root=")
    assert "data_root: empty" in err
    config = tmp_path / "c.yaml"
    config.write_text("data_root:\n")
    assert "data_root: empty" in _config_error(capsys, tmp_path, f"--config={config}")


def test_a_manifest_outside_the_data_root_or_missing_is_a_config_error(capsys, tmp_path):
    write(tmp_path / "outside.csv", "path,label\n")
    err = _config_error(
        capsys, tmp_path, f"--data-root={SAMPLE}", f"--manifest={tmp_path / 'outside.csv'}"
    )
    assert "manifest: " in err and "is not inside the data root" in err
    err = _config_error(capsys, tmp_path, f"--data-root={SAMPLE}", "--manifest=nope.csv")
    assert "manifest: " in err and "nope.csv is not a file" in err


def test_a_manifest_without_the_columns_is_a_config_error(capsys, tmp_path):
    class_folders(tmp_path / "data", {"cat": 1, "dog": 1})
    write(tmp_path / "data" / "m.csv", "file,class\ncat/0.png,cat\n")
    err = _config_error(capsys, tmp_path, f"--data-root={tmp_path / 'data'}", "--manifest=m.csv")
    assert "no column 'path', 'label'" in err


def test_tfrecord_format_on_class_folders_is_a_config_error(capsys, tmp_path):
    err = _config_error(capsys, tmp_path, f"--data-root={SAMPLE}", "--data-format=tfrecord")
    assert "data_format: tfrecord, but no TFRecord files" in err
    assert "use data_format folders" in err


def test_a_single_class_data_root_is_a_config_error(capsys, tmp_path):
    class_folders(tmp_path / "data", {"cat": 3})
    err = _config_error(capsys, tmp_path, f"--data-root={tmp_path / 'data'}")
    assert "data_root: " in err and "one class folder (cat/)" in err
    class_folders(tmp_path / "split", {"train/cat": 2, "val/cat": 1})
    err = _config_error(capsys, tmp_path, f"--data-root={tmp_path / 'split'}")
    assert "one class folder (cat/)" in err


def test_a_manifest_with_an_explicit_other_format_is_a_config_error(capsys, tmp_path):
    class_folders(tmp_path / "data", {"cat": 1, "dog": 1})
    write(tmp_path / "data" / "m.csv", "path,label\ncat/0.png,cat\n")
    err = _config_error(
        capsys,
        tmp_path,
        f"--data-root={tmp_path / 'data'}",
        "--manifest=m.csv",
        "--data-format=folders",
    )
    assert "data_format: 'folders' with a manifest" in err


def test_flag_prefixes_are_not_taken_for_flags(capsys, tmp_path):
    code, _, err = _dry_run(capsys, tmp_path, "--epoch", "2")
    assert code == cli.EXIT_USAGE
    assert "unrecognized arguments: --epoch 2" in err


def test_every_argument_parser_refuses_prefixes():
    """allow_abbrev=False on every ArgumentParser and subparser in the project's code."""
    missing = []
    for folder in ("pipeline", "serving", "components", "trainer_module", "bench"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name not in ("ArgumentParser", "add_parser"):
                    continue
                keywords = {k.arg for k in node.keywords}
                if "allow_abbrev" not in keywords and "add_help" not in keywords:
                    missing.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert missing == []


def test_image_size_has_an_upper_bound_from_memory(capsys, tmp_path):
    err = _config_error(capsys, tmp_path, f"--data-root={SAMPLE}", "--image-size=100000")
    assert "image_size: 100000 needs" in err and "the largest image_size is 2364" in err
    # The bound follows the batch: one float32 batch of 2364^2 RGB images at 32 fits.
    assert 32 * 2364**2 * 12 <= MAX_INPUT_BATCH_BYTES < 32 * 2365**2 * 12
    load_config(overrides={"data_root": SAMPLE, "image_size": 2364})
    with pytest.raises(ConfigError, match="image_size"):
        load_config(overrides={"data_root": SAMPLE, "image_size": 1000, "batch_size": 256})


def test_an_unknown_yaml_key_suggests_the_closest_field(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data_root": SAMPLE, "epoch": 3, "zzz_nothing": 1}))
    with pytest.raises(ConfigError) as err:
        load_config(config)
    message = str(err.value)
    assert "unknown configuration field 'epoch'; did you mean 'epochs'" in message
    assert message.endswith(
        "unknown configuration field 'zzz_nothing' (`tfx-image-pipeline defaults` lists every "
        "field)"
    )
    assert "pipeline_name" not in message  # no dump of every field


def test_the_one_line_failure_never_cuts_a_path():
    report = "/very/long/output/dir/pipeline_root/ImageExampleGen/ingestion_report/7/report.json"
    message = "ImageIngestionError: " + "many words of explanation " * 20 + f"see {report}"
    short = shorten_keeping_paths(message)
    assert report in short.split()
    assert len(short) < len(message)
    assert shorten_keeping_paths("short") == "short"


def test_dry_run_shows_the_image_size_and_format_it_will_use(capsys, tmp_path):
    code, out, err = _dry_run(capsys, tmp_path, f"--data-root={SAMPLE}")
    assert code == 0, err
    document = yaml.safe_load(out)
    assert document["resolved"] == {"image_size": 224, "data_format": "folders"}
    assert document["config"]["image_size"] == 0  # the configuration itself, loadable as is


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders anyway")
def test_a_read_only_model_folder_is_a_config_error(capsys, tmp_path):
    model_dir = tmp_path / "out" / "serving" / "image_classifier"
    model_dir.mkdir(parents=True)
    model_dir.chmod(0o555)
    try:
        err = _config_error(capsys, tmp_path, f"--data-root={SAMPLE}")
    finally:
        model_dir.chmod(0o755)
    assert "serving_dir: " in err and "image_classifier is not writable" in err


def test_a_read_only_model_folder_is_probed_at_validation(monkeypatch, tmp_path):
    """Root ignores permission bits: check that the model folder itself is probed."""
    import tempfile

    model_dir = tmp_path / "out" / "serving" / "image_classifier"
    model_dir.mkdir(parents=True)
    real_mkdtemp = tempfile.mkdtemp

    def refuse_model_dir(prefix=None, dir=None):  # noqa: A002 - tempfile's signature
        if Path(dir) == model_dir:
            raise PermissionError(13, "Permission denied")
        return real_mkdtemp(prefix=prefix, dir=dir)

    monkeypatch.setattr(tempfile, "mkdtemp", refuse_model_dir)
    from pipeline.config import check_local_paths

    config = load_config(overrides={"data_root": SAMPLE, "output_dir": str(tmp_path / "out")})
    with pytest.raises(ConfigError, match="serving_dir: .*image_classifier is not writable"):
        check_local_paths(config)
