"""ServedModelBaseline, the Evaluator's gate parameters and the Trainer's runtime settings.

The baseline component runs for real on a serving folder laid out as the Pusher writes it;
the Evaluator and Trainer changes are checked at the boundary where they rewrite TFX's own
inputs, since the whole components run in the end-to-end tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tensorflow_model_analysis as tfma
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.evaluator import executor as evaluator_executor
from components.served_baseline import executor as baseline_executor
from components.trainer import executor as trainer_executor
from tests.tiny_model import save_tiny_model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "saved_model", 3, favourite=0)


def _run_baseline(tmp_path: Path, model_dir: Path) -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "ServedModelBaseline" / "model" / "7")
    baseline_executor.Executor().Do({}, {"model": [model]}, {"model_dir": str(model_dir)})
    return model


def test_nothing_served_gives_an_empty_baseline(tmp_path):
    model = _run_baseline(tmp_path, tmp_path / "serving" / "m")
    assert model.get_int_custom_property("served_version") == 0
    assert not evaluator_executor.holds_model(model)


def test_newest_whole_version_is_the_baseline(tmp_path, saved_model):
    model_dir = tmp_path / "serving" / "m"
    for version in ("1", "2"):
        shutil.copytree(saved_model, model_dir / version)
    (model_dir / "3").mkdir()  # Half-written or corrupt: no saved_model.pb, not served.
    (model_dir / ".incoming-abc").mkdir()
    model = _run_baseline(tmp_path, model_dir)
    assert model.get_int_custom_property("served_version") == 2
    assert model.get_string_custom_property("served_model_path") == str(model_dir / "2")
    copied = Path(path_utils.serving_model_path(model.uri))
    assert (copied / "saved_model.pb").read_bytes() == (
        model_dir / "2" / "saved_model.pb"
    ).read_bytes()
    assert evaluator_executor.holds_model(model)
    # A copy: pruning the served version afterwards does not touch what TFMA reads.
    shutil.rmtree(model_dir / "2")
    assert evaluator_executor.holds_model(model)


def _eval_config() -> tfma.EvalConfig:
    return tfma.EvalConfig(
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(class_name=evaluator_executor.GATED_METRIC_CLASS),
                ]
            )
        ]
    )


def test_gate_thresholds_come_from_the_parameters():
    updated = evaluator_executor.set_accuracy_thresholds(_eval_config(), 0.8, 0.05)
    metric = updated.metrics_specs[0].metrics[1]
    assert len(metric.per_slice_thresholds) == 1
    threshold = metric.per_slice_thresholds[0].threshold
    assert threshold.value_threshold.lower_bound.value == pytest.approx(0.8)
    assert threshold.change_threshold.absolute.value == pytest.approx(-0.05)
    assert not updated.metrics_specs[0].metrics[0].per_slice_thresholds
    # Applying it twice replaces, never stacks, thresholds.
    again = evaluator_executor.set_accuracy_thresholds(updated, 0.6, 0.01)
    assert len(again.metrics_specs[0].metrics[1].per_slice_thresholds) == 1
    with pytest.raises(ValueError, match="no SparseCategoricalAccuracy"):
        evaluator_executor.set_accuracy_thresholds(tfma.EvalConfig(), 0.5, 0.1)


def test_runtime_settings_are_merged_into_custom_config():
    merged = trainer_executor.merge_runtime_settings(
        {
            "custom_config": json.dumps({"batch_size": 8, "epochs": 99}),
            "epochs": 2,  # From a runtime parameter: wins over any copy in custom_config.
            "learning_rate": "0.01",
            "fine_tune_epochs": None,
            "run_fn": "x.y",
        }
    )
    assert json.loads(merged["custom_config"]) == {
        "batch_size": 8,
        "epochs": 2,
        "learning_rate": 0.01,
    }
    assert "epochs" not in merged and "fine_tune_epochs" not in merged
    assert merged["run_fn"] == "x.y"
