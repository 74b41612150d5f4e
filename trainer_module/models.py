"""Classifier networks: a backbone chosen by name plus a classification head."""

from __future__ import annotations

import tensorflow as tf

from trainer_module import features


def _small_cnn(image_size: int) -> tf.keras.Model:
    """AlexNet-style stack of conv/pool blocks, trained from scratch.

    BatchNorm momentum is 0.9 (not 0.99) so the moving statistics settle within the few
    hundred steps a small dataset gives.
    """
    inputs = tf.keras.Input([image_size, image_size, 3])
    x = inputs
    for block, filters in enumerate((16, 32, 64)):
        x = tf.keras.layers.Conv2D(filters, 3, padding="same", name=f"block{block}_conv1")(x)
        x = tf.keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn1")(x)
        x = tf.keras.layers.ReLU()(x)
        x = tf.keras.layers.Conv2D(filters, 3, padding="same", name=f"block{block}_conv2")(x)
        x = tf.keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn2")(x)
        x = tf.keras.layers.ReLU()(x)
        x = tf.keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return tf.keras.Model(inputs, x, name="small_cnn")


_BUILDERS = {"small_cnn": _small_cnn}


def build_classifier(
    backbone: str, image_size: int, num_classes: int, dropout: float = 0.3
) -> tf.keras.Model:
    """Backbone feature extractor + global pooling, dropout and a softmax dense layer.

    The model takes normalized float images keyed by ``image_xf`` and returns class
    probabilities.
    """
    if backbone not in _BUILDERS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of: {', '.join(_BUILDERS)}")
    feature_extractor = _BUILDERS[backbone](image_size)
    inputs = tf.keras.Input([image_size, image_size, 3], name=features.TRANSFORMED_IMAGE_KEY)
    x = feature_extractor(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = tf.keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = tf.keras.layers.Dense(num_classes, activation="softmax", name="head_dense")(x)
    return tf.keras.Model(inputs, outputs, name=f"{backbone}_classifier")
