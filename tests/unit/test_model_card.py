"""The model card: its content, and that it is published with the version, whole."""

from __future__ import annotations

import datetime

from components.versioned_pusher import layout
from components.versioned_pusher.model_card import CARD_PATH, build_model_card
from trainer_module.training_record import prediction_summary

TRAINING = {
    "class_names": ["cat", "dog"],
    "settings": {"backbone": "small_cnn", "optimizer": "adam", "batch_size": 32},
    "pretrained": False,
    "image_size": 64,
    "train_examples": 80,
    "eval_examples": 20,
    "data_fingerprints": {"train": "80:1:2", "eval": "20:3:4"},
    "phases": [
        {
            "name": "phase1",
            "learning_rate": 0.001,
            "epochs_planned": 3,
            "epochs": [{}, {}, {}],
            "best_epoch": 2,
            "best_eval_accuracy": 0.85,
            "restores_best": True,
        }
    ],
}
EVALUATION = {
    "blessed": True,
    "accuracy_floor": 0.5,
    "max_accuracy_drop": 0.02,
    "baseline_version": 3,
    "metrics": {"sparse_categorical_accuracy": 0.85, "example_count": 20.0},
    "baseline_metrics": {"sparse_categorical_accuracy": 0.8},
    "per_class": {
        "cat": {"precision": 0.9, "recall": 0.8, "f1": 0.847, "support": 10.0},
        "dog": {"precision": 0.8, "recall": 0.9, "f1": 0.847, "support": 10.0},
    },
}


def test_card_holds_use_data_training_metrics_baseline_and_versions():
    when = datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)
    card = build_model_card("pets", 4, TRAINING, EVALUATION, now=when)
    assert card.startswith("# Model card: pets, version 4\n")
    for heading in ("Intended use", "Limits", "Data", "Training", "Quantitative analysis"):
        assert f"## {heading}" in card
    assert "exactly these classes: cat, dog" in card
    assert "Training examples: 80; eval examples: 20" in card
    assert "| sparse_categorical_accuracy | 0.8500 |" in card
    assert "| cat | 0.9000 | 0.8000 | 0.8470 | 10 |" in card
    assert "served version 3, accuracy 0.8000; this model 0.8500" in card
    assert "- Decision: blessed." in card
    assert "phase1: 3 of 3 epochs at learning rate 0.001; best eval accuracy 0.8500" in card
    assert "2026-01-02 03:04 UTC" in card and "tensorflow " in card
    assert "on 20 eval images, accuracy has a standard error of about 8.0 points" in card


def test_card_of_a_model_without_records_says_what_is_unknown():
    card = build_model_card("pets", 1, None, None)
    assert "No evaluation recorded." in card
    assert "Baseline: none" in card


def _model(path, content: bytes):
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(content)
    return str(path)


def test_card_is_in_the_version_and_a_repush_of_the_same_model_stays_unchanged(tmp_path):
    model = _model(tmp_path / "model", b"graph")
    model_dir = str(tmp_path / "serving" / "pets")

    def card(version: int) -> dict[str, str]:
        return {CARD_PATH: f"card of version {version}"}

    first = layout.push(model, model_dir, keep=3, extra_files=card, extra_file_names=(CARD_PATH,))
    assert first.published and first.version == 1
    assert (tmp_path / "serving/pets/1" / CARD_PATH).read_text() == "card of version 1"
    # The card differs (its date) from run to run; the model does not: nothing is published.
    again = layout.push(model, model_dir, keep=3, extra_files=card, extra_file_names=(CARD_PATH,))
    assert not again.published and again.version == 1
    other = layout.push(
        _model(tmp_path / "other", b"new graph"),
        model_dir,
        keep=3,
        extra_files=card,
        extra_file_names=(CARD_PATH,),
    )
    assert other.published and other.version == 2
    assert (tmp_path / "serving/pets/2" / CARD_PATH).read_text() == "card of version 2"


def test_prediction_summary_bins_confidence_and_keeps_the_mistakes():
    probabilities = [[0.95, 0.05], [0.3, 0.7], [0.55, 0.45], [0.1, 0.9]]
    labels = [0, 0, 0, 1]
    from trainer_module.training_record import misclassified_indices

    assert misclassified_indices(probabilities, labels) == [1]
    summary = prediction_summary(probabilities, labels, {1: b"b"})
    assert summary["misclassified_total"] == 1
    [mistake] = summary["misclassified"]
    assert (mistake["label"], mistake["predicted"], mistake["confidence"]) == (0, 1, 0.7)
    bins = {b["lower"]: b for b in summary["reliability"] if b["count"]}
    assert set(bins) == {0.5, 0.7, 0.9}
    assert bins[0.9]["count"] == 2 and bins[0.9]["accuracy"] == 1.0
    assert bins[0.7]["accuracy"] == 0.0
