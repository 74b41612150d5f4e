"""Class weights, label smoothing, warmup, rotation and mixup: each changes what training does."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import tensorflow as tf

from components.image_example_gen.example_codec import serialize_example
from components.image_example_gen.report import Facts, ReportContext, build_report
from trainer_module import features
from trainer_module.class_weights import balanced_class_weights, count_labels, report_class_counts
from trainer_module.models import build_classifier
from trainer_module.settings import TUNED_SETTINGS, TrainingSettings, with_tuned_values
from trainer_module.train import (
    Phase,
    augment_batch,
    fit_phase,
    mixup_batch,
    phase_learning_rate,
    rotate_images,
)


def test_balanced_weights_are_inverse_frequency_with_mean_one_per_image():
    weights = balanced_class_weights({"a": 90, "b": 10, "c": 0}, ["a", "b", "c"])
    np.testing.assert_allclose(weights, [100 / (2 * 90), 100 / (2 * 10), 1.0])
    # Each present class then weighs the same in total, and the mean weight per image is 1.
    assert 90 * weights[0] == pytest.approx(10 * weights[1]) == pytest.approx(50)
    with pytest.raises(ValueError, match="no labelled images"):
        balanced_class_weights({}, ["a", "b"])


def _write_examples_artifact(root, counts: dict[tuple[str, str], int]) -> list[str]:
    """An Examples artifact folder as ImageExampleGen leaves it: splits and its report."""
    facts = Facts(ingested=collections.Counter(counts))
    splits = sorted({split for split, _ in counts})
    context = ReportContext(str(root), "folders", {s: "test" for s in splits}, 0.1, "r.json")
    (root / features.INGESTION_REPORT_FILE).write_text(json.dumps(build_report(facts, context)))
    for split in splits:
        (root / f"Split-{split}").mkdir()
    return [str(root / "Split-train" / "*")]


def test_training_counts_come_from_the_ingestion_report(tmp_path):
    patterns = _write_examples_artifact(
        tmp_path, {("train", "bag"): 40, ("train", "coat"): 4, ("eval", "bag"): 9}
    )
    assert report_class_counts(patterns) == {"bag": 40, "coat": 4}
    # Examples without a report (another ExampleGen): the caller counts the labels instead.
    assert report_class_counts([str(tmp_path / "elsewhere" / "*")]) is None


def test_labels_are_counted_from_records_without_a_report():
    records = [
        serialize_example(b"x", "png", 1, 1, 1, label, f"{i}.png")
        for i, label in enumerate(["bag"] * 3 + ["coat"])
    ]
    assert count_labels(tf.data.Dataset.from_tensor_slices(records)) == {"bag": 3, "coat": 1}


def _two_class_model(seed: int, repeats: int = 1) -> tuple[tf.keras.Model, tf.data.Dataset]:
    """A classifier on a one-convolution backbone, and ``repeats`` batches of two classes."""
    tf.keras.utils.set_random_seed(seed)
    backbone = tf.keras.Sequential([tf.keras.Input([4, 4, 3]), tf.keras.layers.Conv2D(4, 1)])
    model = build_classifier(backbone, 4, num_classes=2, dropout=0.0, pretrained=False)
    images = tf.concat([tf.fill([8, 4, 4, 3], -1.0), tf.fill([8, 4, 4, 3], 1.0)], axis=0)
    labels = tf.one_hot(tf.repeat(tf.constant([0, 1]), 8), 2)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    return model, data.repeat(repeats)


def test_label_smoothing_keeps_predictions_off_certainty():
    confidence = {}
    for smoothing in (0.0, 0.4):
        model, data = _two_class_model(seed=5, repeats=150)
        settings = TrainingSettings(label_smoothing=smoothing)
        fit_phase(model, Phase("phase1", 5e-2, 1, None), settings, data, steps_per_epoch=150)
        probabilities = model(next(iter(data))[0], training=False)
        confidence[smoothing] = float(tf.reduce_min(tf.reduce_max(probabilities, axis=1)))
    # Unsmoothed targets push towards 1; smoothed ones towards 1 - 0.4 + 0.4 / 2 = 0.8.
    assert confidence[0.0] > 0.95
    assert confidence[0.4] < 0.9


def test_warmup_rises_linearly_then_holds_or_decays():
    constant = phase_learning_rate("constant", 1e-2, 3, 10, warmup_epochs=1)
    np.testing.assert_allclose(
        [float(constant(s)) for s in (0, 5, 10, 29)], [0.0, 5e-3, 1e-2, 1e-2], atol=1e-9
    )
    cosine = phase_learning_rate("cosine", 1e-2, 3, 10, warmup_epochs=1)
    values = [float(cosine(s)) for s in (0, 5, 10, 20, 30)]
    np.testing.assert_allclose(values, [0.0, 5e-3, 1e-2, 5e-3, 0.0], atol=1e-9)
    # Longer than the phase: clipped, the rate peaks at the phase's end.
    clipped = phase_learning_rate("constant", 1e-2, 1, 10, warmup_epochs=5)
    assert float(clipped(5)) == pytest.approx(5e-3)
    assert phase_learning_rate("constant", 1e-2, 1, 10) == 1e-2


def test_warmup_makes_the_first_update_zero():
    changed = {}
    for warmup in (0.0, 1.0):
        model, data = _two_class_model(seed=2)
        before = model.get_layer("head_dense").kernel.numpy().copy()
        settings = TrainingSettings(warmup_epochs=warmup)
        # One epoch of one step: with warmup, step 0 runs at rate 0.
        phase = Phase("phase1", 1e-2, 1, None)
        fit_phase(model, phase, settings, data, steps_per_epoch=1)
        changed[warmup] = not np.allclose(model.get_layer("head_dense").kernel.numpy(), before)
    assert changed == {0.0: True, 1.0: False}


def test_rotation_by_a_quarter_turn_is_rot90():
    image = np.arange(5 * 5, dtype=np.float32).reshape(1, 5, 5, 1)
    rotated = rotate_images(tf.constant(image), tf.constant([90.0])).numpy()
    np.testing.assert_allclose(rotated[0, :, :, 0], np.rot90(image[0, :, :, 0]), atol=1e-4)
    unchanged = rotate_images(tf.constant(image), tf.constant([0.0])).numpy()
    np.testing.assert_allclose(unchanged, image, atol=1e-5)


def test_rotation_augmentation_changes_pixels_and_keeps_shape():
    tf.keras.utils.set_random_seed(4)
    images = tf.random.uniform([6, 24, 24, 3], -1, 1)
    off = augment_batch(images, flip=False, zoom=0.0, color=0.0, pixel_range=2.0, rotation=0.0)
    np.testing.assert_array_equal(off.numpy(), images.numpy())
    rotated = augment_batch(images, flip=False, zoom=0.0, color=0.0, pixel_range=2.0, rotation=30)
    assert rotated.shape == images.shape
    differs = np.abs(rotated.numpy() - images.numpy()).reshape(6, -1).max(axis=1) > 1e-3
    assert differs.all()


def test_mixup_blends_images_labels_and_weights_alike():
    tf.keras.utils.set_random_seed(8)
    classes = 6
    images = tf.reshape(tf.range(classes, dtype=tf.float32), [classes, 1, 1, 1]) * tf.ones(
        [1, 4, 4, 3]
    )
    labels = tf.one_hot(tf.range(classes), classes)
    weights = tf.constant([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    mixed_images, mixed_labels, mixed_weights = mixup_batch(images, labels, weights, alpha=0.4)
    mixed_labels = mixed_labels.numpy()
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, rtol=1e-5)
    assert (mixed_labels.max(axis=1) < 0.999).any()  # Some examples really are mixed.
    # Image i is class-value i, so the mixed image's value is the label's expectation.
    np.testing.assert_allclose(
        mixed_images.numpy()[:, 0, 0, 0], mixed_labels @ np.arange(classes), rtol=1e-5
    )
    np.testing.assert_allclose(mixed_weights.numpy(), mixed_labels @ weights.numpy(), rtol=1e-5)


def test_search_space_covers_phase_two_only_where_it_runs():
    from trainer_module.tuning import search_space

    settings = TrainingSettings(learning_rate=0.5, fine_tune_fraction=0.3)
    pretrained = search_space(settings, pretrained=True)
    assert set(pretrained.values) == set(TUNED_SETTINGS)
    assert pretrained.values["learning_rate"] == 1e-2  # The configured value, clipped.
    assert pretrained.values["fine_tune_fraction"] == 0.3
    assert set(search_space(settings, pretrained=False).values) == {"learning_rate", "dropout"}
    no_phase_two = TrainingSettings(fine_tune_epochs=0)
    assert set(search_space(no_phase_two, pretrained=True).values) == {"learning_rate", "dropout"}


def test_tuned_values_replace_only_the_tuned_settings():
    tuned = with_tuned_values(
        TrainingSettings(epochs=7), {"dropout": 0.35, "learning_rate": 0.002, "other": 1}
    )
    assert (tuned.dropout, tuned.learning_rate, tuned.epochs) == (0.35, 0.002, 7)


def test_the_tuner_joins_the_pipeline_only_with_a_trial_budget():
    from pipeline.config import load_config
    from pipeline.pipeline import TRAINER, TUNER, create_pipeline

    def components(**overrides):
        config = load_config(None, overrides, validate=False)
        return {c.id: c for c in create_pipeline(config).components}

    assert TUNER not in components()
    tuned = components(tuner_trials=3, tuner_epochs_per_trial=2)
    tuner, trainer = tuned[TUNER], tuned[TRAINER]
    assert trainer.inputs["hyperparameters"].producer_component_id == TUNER
    custom_config = json.loads(tuner.exec_properties["custom_config"])
    assert (custom_config["tuner_trials"], custom_config["tuner_epochs_per_trial"]) == (3, 2)
    assert custom_config["learning_rate"] == TrainingSettings().learning_rate
