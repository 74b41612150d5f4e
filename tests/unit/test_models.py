"""Backbone registry, head, phase-2 unfreezing and training-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer_module.backbone_specs import BACKBONES
from trainer_module.image_ops import normalize
from trainer_module.models import (
    BACKBONE_LAYER_NAME,
    BackboneWeightsError,
    build_backbone,
    build_classifier,
    set_backbone_trainable,
)
from trainer_module.settings import TrainingSettings
from trainer_module.train import (
    Phase,
    augment_batch,
    fit_phase,
    phase_learning_rate,
    training_phases,
)


def test_every_backbone_builds_without_weights_and_classifies():
    # Random weights: nothing is downloaded. Sizes at each backbone's minimum keep it quick.
    for name, spec in BACKBONES.items():
        size = max(spec.min_image_size, 32)
        backbone = build_backbone(spec, size, weights="none")
        model = build_classifier(backbone, size, num_classes=3, pretrained=False)
        probabilities = model(tf.zeros([2, size, size, 3])).numpy()
        assert probabilities.shape == (2, 3), name
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_pretrained_means_imagenet_weights_exist_and_are_asked_for():
    lite0, small_cnn = BACKBONES["efficientnet_lite0"], BACKBONES["small_cnn"]
    assert lite0.starts_pretrained("imagenet")
    assert lite0.starts_pretrained("/weights/lite0.h5")
    assert not lite0.starts_pretrained("none")
    assert not small_cnn.starts_pretrained("imagenet")


def test_keras_imagenet_weights_offline_give_a_clear_error(monkeypatch):
    def refuse(*args, **kwargs):
        raise Exception("URL fetch failure: no network")  # what Keras raises offline

    monkeypatch.setattr(tf.keras.applications, "MobileNetV2", refuse)
    with pytest.raises(BackboneWeightsError, match="backbone_weights.*efficientnet_lite0"):
        build_backbone(BACKBONES["mobilenet_v2"], 96, weights="imagenet")


@pytest.mark.parametrize("name", ["resnet50_v2", "vgg16"])
def test_keras_backbone_loads_a_local_weights_file(name, tmp_path):
    """Offline, ImageNet weights come from a file (Keras' 'notop' .h5); none exist here, so a
    file saved from the same network stands in for it: every weight must come back."""
    spec = BACKBONES[name]
    tf.keras.utils.set_random_seed(11)
    saved = build_backbone(spec, 32, weights="none")
    path = str(tmp_path / f"{name}_notop.h5")
    saved.save_weights(path)
    assert spec.starts_pretrained(path)
    tf.keras.utils.set_random_seed(12)  # Another random start, which the file must replace.
    loaded = build_backbone(spec, 32, weights=path)
    for want, got in zip(saved.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.name)


def test_resnet50_v2_normalizes_to_minus_one_one():
    out = normalize(tf.constant([[[[0.0, 127.5, 255.0]]]]), BACKBONES["resnet50_v2"]).numpy()
    np.testing.assert_allclose(out[0, 0, 0], [-1.0, 0.0, 1.0])


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        build_backbone(BACKBONES["mobilenet_v2"], 96, weights=str(tmp_path / "nope.h5"))


def test_phase_two_unfreezes_the_top_fraction_but_never_batchnorm():
    backbone = build_backbone(BACKBONES["efficientnet_lite0"], 64, weights="none")
    model = build_classifier(backbone, 64, num_classes=4, pretrained=True)
    layers = [layer for layer in model.get_layer(BACKBONE_LAYER_NAME).layers if layer.weights]

    assert set_backbone_trainable(model, 0.0) == 0
    assert not model.get_layer(BACKBONE_LAYER_NAME).trainable
    head_weights = model.get_layer("head_dense").trainable_weights
    assert model.trainable_weights == head_weights

    count = set_backbone_trainable(model, 0.3)
    top = layers[len(layers) - round(len(layers) * 0.3) :]
    expected = [layer for layer in top if not isinstance(layer, tf.keras.layers.BatchNormalization)]
    assert count == len(expected) > 0
    assert all(layer.trainable for layer in expected)
    assert not any(
        layer.trainable for layer in layers if isinstance(layer, tf.keras.layers.BatchNormalization)
    )
    assert not any(layer.trainable for layer in layers[: len(layers) - len(top)])
    assert layers[-1].name.startswith("top_")  # order runs stem -> head


def test_pretrained_backbone_batchnorm_stays_in_inference_mode_while_training():
    backbone = build_backbone(BACKBONES["efficientnet_lite0"], 32, weights="none")
    model = build_classifier(backbone, 32, num_classes=2, pretrained=True)
    set_backbone_trainable(model, 1.0)
    bn = next(
        layer
        for layer in model.get_layer(BACKBONE_LAYER_NAME).layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    )
    before = bn.moving_mean.numpy().copy()
    model(tf.random.uniform([4, 32, 32, 3]) * 5, training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)


def test_augmentation_keeps_shape_and_changes_pixels():
    tf.keras.utils.set_random_seed(1)
    images = tf.random.uniform([8, 24, 24, 3], -1, 1)
    flipped = augment_batch(images, flip=True, zoom=0.0, color=0.0, pixel_range=2.0)
    assert flipped.shape == images.shape
    for original, out in zip(images.numpy(), flipped.numpy()):
        assert np.allclose(out, original) or np.allclose(out, original[:, ::-1])
    zoomed = augment_batch(images, flip=False, zoom=0.3, color=0.2, pixel_range=2.0)
    assert zoomed.shape == images.shape
    assert not np.allclose(zoomed.numpy(), images.numpy())
    unchanged = augment_batch(images, flip=False, zoom=0.0, color=0.0, pixel_range=2.0)
    np.testing.assert_array_equal(unchanged.numpy(), images.numpy())


def test_caffe_style_normalization_reorders_to_bgr_and_subtracts_means():
    spec = BACKBONES["resnet50"]
    rgb = tf.constant([[[[10.0, 20.0, 30.0]]]])
    out = normalize(rgb, spec).numpy()
    np.testing.assert_allclose(out[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-5)


def test_training_phases_of_pretrained_and_from_scratch_backbones():
    settings = TrainingSettings(epochs=2, fine_tune_epochs=3, fine_tune_fraction=0.4)
    assert training_phases(settings, pretrained=True) == [
        Phase("phase1", settings.learning_rate, 2, 0.0),
        Phase("phase2", settings.fine_tune_learning_rate, 3, 0.4),
    ]
    no_phase_two = TrainingSettings(epochs=2, fine_tune_epochs=0)
    assert training_phases(no_phase_two, pretrained=True) == [
        Phase("phase1", no_phase_two.learning_rate, 2, 0.0)
    ]
    assert training_phases(settings, pretrained=False) == [
        Phase("phase1", settings.learning_rate, 2, None)
    ]


def test_phase_one_trains_the_head_and_leaves_the_frozen_backbone_alone():
    tf.keras.utils.set_random_seed(3)
    # small_cnn stands in for a pretrained backbone here: it is small, and freezing is the same.
    backbone = build_backbone(BACKBONES["small_cnn"], 16, weights="none")
    model = build_classifier(backbone, 16, num_classes=2, pretrained=True)
    before = [w.numpy().copy() for w in model.get_layer(BACKBONE_LAYER_NAME).weights]
    head_before = model.get_layer("head_dense").bias.numpy().copy()
    images = tf.data.Dataset.from_tensor_slices(
        (tf.random.uniform([8, 16, 16, 3]), tf.one_hot(tf.zeros([8], tf.int64), 2))
    ).batch(4)
    (phase1,) = training_phases(TrainingSettings(epochs=1, fine_tune_epochs=0), True)
    history = fit_phase(model, phase1, TrainingSettings(), images, steps_per_epoch=2)
    assert len(history.history["accuracy"]) == 1
    after = [w.numpy() for w in model.get_layer(BACKBONE_LAYER_NAME).weights]
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    assert not np.allclose(model.get_layer("head_dense").bias.numpy(), head_before)


def test_constant_schedule_holds_the_phase_learning_rate():
    assert phase_learning_rate("constant", 1e-3, epochs=3, steps_per_epoch=10) == 1e-3


def test_cosine_schedule_decays_from_the_phase_rate_to_zero_over_its_epochs():
    schedule = phase_learning_rate("cosine", 1e-3, epochs=4, steps_per_epoch=25)
    values = [float(schedule(step)) for step in (0, 50, 100, 150)]
    np.testing.assert_allclose(values[:3], [1e-3, 5e-4, 0.0], atol=1e-9)
    assert values[3] == 0.0  # Steps past the budget stay at zero.
    with pytest.raises(ValueError, match="learning_rate_schedule"):
        phase_learning_rate("step", 1e-3, epochs=1, steps_per_epoch=1)


def test_a_resumed_phase_continues_the_decay_where_the_killed_one_stopped(tmp_path):
    """BackupAndRestore saves the optimizer's step counter, which the schedule runs on."""

    class KilledError(Exception):
        pass

    class KillAfterSecondEpoch(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KilledError

    class StepAtStart(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.step = int(self.model.optimizer.iterations.numpy())

    def compiled_model() -> tf.keras.Model:
        model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
        schedule = phase_learning_rate("cosine", 1e-2, epochs=4, steps_per_epoch=5)
        model.compile(tf.keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
        return model

    x = np.random.default_rng(0).random((20, 3), dtype=np.float32)
    y = np.arange(20) % 2
    backup = str(tmp_path / "backup")
    with pytest.raises(KilledError):
        compiled_model().fit(
            x,
            y,
            batch_size=4,
            epochs=4,
            callbacks=[tf.keras.callbacks.BackupAndRestore(backup), KillAfterSecondEpoch()],
            verbose=0,
        )
    resumed, probe = compiled_model(), StepAtStart()
    resumed.fit(
        x,
        y,
        batch_size=4,
        epochs=4,
        callbacks=[tf.keras.callbacks.BackupAndRestore(backup), probe],
        verbose=0,
    )
    assert probe.step == 10  # Two of four epochs of five steps were done before the kill.
    assert int(resumed.optimizer.iterations.numpy()) == 20
    # The last update ran at step 19 of 20: under 1% of the starting rate.
    assert float(resumed.optimizer.learning_rate) < 1e-2 * 0.01
