"""Configuration loading: defaults, YAML, overrides and clear errors."""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing

import pytest

from components.image_example_gen.options import IngestOptions
from pipeline.config import (
    ConfigError,
    PipelineConfig,
    add_config_arguments,
    config_from_args,
    load_config,
)
from trainer_module.settings import TrainingSettings, TransformSettings, TuningSettings


@pytest.fixture()
def data_root(tmp_path):
    root = tmp_path / "images"
    for label in ("cat", "dog"):  # two classes: a single class folder is a config error
        (root / label).mkdir(parents=True)
        (root / label / "a.png").write_bytes(b"x")
    return root


def test_defaults_fill_derived_paths(data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(overrides={"data_root": str(data_root), "output_dir": "out"})
    assert config.output_dir == str(tmp_path / "out")
    assert config.pipeline_root == str(tmp_path / "out" / "pipeline_root")
    assert config.metadata_path == str(tmp_path / "out" / "metadata.sqlite")
    assert config.serving_dir == str(tmp_path / "out" / "serving")
    assert config.model_serving_dir == os.path.join(config.serving_dir, config.model_name)
    assert config.resolved_image_size == config.backbone_spec.default_image_size


def test_yaml_then_overrides(data_root, tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(
        f"data_root: {data_root}\nepochs: 3\nlearning_rate: 0.01\nimage_size: 32\n"
        "beam_pipeline_args: ['--direct_num_workers=2']\nenable_cache: true\n"
    )
    config = load_config(yaml_file, {"epochs": "5", "model_name": None})
    assert config.epochs == 5  # the override wins
    assert config.learning_rate == 0.01  # from YAML
    assert config.image_size == 32 and config.resolved_image_size == 32
    assert config.beam_pipeline_args == ["--direct_num_workers=2"]
    assert config.enable_cache is True
    assert config.model_name == PipelineConfig().model_name  # None means "not given"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"backbone": "vgg99"}, "backbone"),
        ({"image_size": 8}, "image_size"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": "three"}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"eval_fraction": 0.9}, "eval_fraction"),
        ({"accuracy_floor": 1.5}, "accuracy_floor"),
        ({"max_accuracy_drop": -0.1}, "max_accuracy_drop"),
        ({"enable_cache": "maybe"}, "enable_cache"),
        ({"model_name": "my model"}, "model_name"),
        ({"max_bad_fraction": 1.5}, "max_bad_fraction"),
        ({"test_fraction": 0.7}, "test_fraction"),
        ({"example_shard_mb": 0}, "example_shard_mb"),
        ({"fine_tune_fraction": 0}, "fine_tune_fraction"),
        ({"backbone_weights": "/nope/weights.h5"}, "backbone_weights"),
        ({"resize_mode": "crop"}, "resize_mode"),
        ({"class_weight": "weighted"}, "class_weight"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"augment_rotation": 200}, "augment_rotation"),
        ({"augment_mixup": -0.2}, "augment_mixup"),
        ({"min_class_recall": 1.2}, "min_class_recall"),
        ({"tuner_trials": -1}, "tuner_trials"),
        ({"tuner_epochs_per_trial": 0}, "tuner_epochs_per_trial"),
        ({"tuner_max_examples": 0}, "tuner_max_examples"),
    ],
)
def test_invalid_values_name_the_field(data_root, overrides, field):
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        load_config(overrides={"data_root": str(data_root), **overrides})


def test_missing_and_empty_data_root(tmp_path):
    with pytest.raises(ConfigError, match="data_root: .* is not a folder"):
        load_config(overrides={"data_root": str(tmp_path / "nope")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="data_root: .* is empty"):
        load_config(overrides={"data_root": str(tmp_path / "empty")})


def test_unknown_field_and_bad_yaml(data_root, tmp_path):
    with pytest.raises(ConfigError, match="unknown configuration field.*epoch\\b"):
        load_config(overrides={"data_root": str(data_root), "epoch": 3})
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_cli_flags_are_generated_from_fields(data_root, tmp_path):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(
        [
            f"--data-root={data_root}",
            "--epochs=2",
            "--beam-pipeline-args=--direct_running_mode=multi_processing",
            "--beam-pipeline-args=--direct_num_workers=2",
        ]
    )
    config = config_from_args(args)
    assert config.epochs == 2
    assert config.beam_pipeline_args == [
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    ]
    help_text = parser.format_help()
    for field in ("--data-root", "--backbone", "--accuracy-floor", "--serving-dir"):
        assert field in help_text


def test_readme_configuration_table_is_current():
    from pipeline.config import config_reference_markdown
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    assert config_reference_markdown() in readme, (
        "README's configuration table is stale: paste the output of "
        "`.venv/bin/python -m pipeline.config` into README.md"
    )


@pytest.mark.parametrize(
    "owner", [IngestOptions, TransformSettings, TrainingSettings, TuningSettings]
)
def test_every_component_setting_is_a_config_field_of_the_same_type_and_default(owner):
    """create_pipeline fills each component's settings from the same-named config fields."""
    config_types = typing.get_type_hints(PipelineConfig)
    config_fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    owner_types = typing.get_type_hints(owner)
    defaults = PipelineConfig()
    for f in dataclasses.fields(owner):
        assert f.name in config_fields, f"{owner.__name__}.{f.name} is not a PipelineConfig field"
        assert owner_types[f.name] == config_types[f.name], f.name
        assert f.default == getattr(defaults, f.name), f.name
    assert PipelineConfig().settings_for(owner) == owner()


def test_component_settings_are_range_checked_by_their_owner(data_root):
    # One range per setting: the configuration reports its owner's check, by field name.
    with pytest.raises(ValueError, match="^eval_fraction: must be between 0.01 and 0.5"):
        IngestOptions(eval_fraction=0.9).validate()
    with pytest.raises(ConfigError, match="^eval_fraction: must be between 0.01 and 0.5"):
        load_config(overrides={"data_root": str(data_root), "eval_fraction": 0.9})
    with pytest.raises(ValueError, match="^dropout:"):
        TrainingSettings(dropout=0.95).validate()
    with pytest.raises(ValueError, match="^image_size: 8 is below the minimum"):
        TransformSettings(image_size=8).validate()


def test_exports_default_to_every_kind_and_none_switches_them_off():
    from serving.layout import EXPORT_FILES

    assert load_config(validate=False).exports == list(EXPORT_FILES)
    assert load_config(overrides={"exports": "none"}, validate=False).exports == []
    assert load_config(overrides={"exports": ["onnx"]}, validate=False).exports == ["onnx"]


def test_unknown_export_is_a_config_error_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"exports: unknown tflite_int4.*tflite_int8"):
        load_config(overrides={"exports": "tflite_int4", "output_dir": str(tmp_path)})


def test_dry_run_without_exports_has_no_exporter(tmp_path):
    from pipeline.pipeline import MODEL_EXPORTER, create_pipeline

    config = load_config(overrides={"exports": "none", "output_dir": str(tmp_path)})
    assert MODEL_EXPORTER not in [c.id for c in create_pipeline(config).components]
