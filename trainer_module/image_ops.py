"""Image decoding and normalization, shared by Transform (training) and serving.

These ops run inside the tf.Transform graph, which is saved with the model, so a client
sends encoded bytes and never repeats any preprocessing.
"""

from __future__ import annotations

import tensorflow as tf

from trainer_module.backbone_specs import BackboneSpec
from trainer_module.settings import RESIZE_MODES


def decode_and_resize(
    encoded: tf.Tensor, image_size: int, resize_mode: str = "stretch"
) -> tf.Tensor:
    """Decodes one encoded image (PNG, JPEG, GIF, BMP) to float32 RGB [size, size, 3] in 0..255.

    Grayscale is repeated to three channels and alpha is dropped by decoding with
    ``channels=3``; animated GIFs keep their first frame. ``resize_mode`` "stretch" resizes
    to the square directly; "pad" keeps the aspect ratio and pads with black.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.cast(image, tf.float32)
    if resize_mode == "pad":
        image = tf.image.resize_with_pad(image, image_size, image_size)
    else:
        image = tf.image.resize(image, [image_size, image_size])
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape([image_size, image_size, 3])
    return image


def normalize(images: tf.Tensor, spec: BackboneSpec) -> tf.Tensor:
    """Maps RGB images in 0..255 to backbone ``spec``'s input range, per channel."""
    images = tf.cast(images, tf.float32)
    if spec.bgr:
        images = images[..., ::-1]
    mean = tf.constant(list(spec.input_mean), tf.float32)
    std = tf.constant(list(spec.input_std), tf.float32)
    return (images - mean) / std


def decode_batch(
    encoded: tf.Tensor, image_size: int, spec: BackboneSpec, resize_mode: str = "stretch"
) -> tf.Tensor:
    """Decodes a [batch] string tensor to float32 [batch, size, size, 3] normalized for ``spec``."""
    images = tf.map_fn(
        lambda x: decode_and_resize(x, image_size, resize_mode),
        encoded,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )
    return normalize(images, spec)
