"""Image decoding and normalization, shared by Transform (training) and serving.

These ops run inside the tf.Transform graph, which is saved with the model, so a client
sends encoded bytes and never repeats any preprocessing.
"""

from __future__ import annotations

import tensorflow as tf


def decode_and_resize(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes one encoded image (PNG, JPEG, GIF, BMP) to float32 RGB [size, size, 3] in 0..255.

    Grayscale is repeated to three channels and alpha is dropped by decoding with
    ``channels=3``; animated GIFs keep their first frame.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape([image_size, image_size, 3])
    return image


def decode_batch(
    encoded: tf.Tensor, image_size: int, input_offset: float, input_scale: float
) -> tf.Tensor:
    """Decodes a [batch] string tensor to normalized float32 [batch, size, size, 3].

    Normalization is ``(x - input_offset) / input_scale``, the backbone's own input range.
    """
    images = tf.map_fn(
        lambda x: decode_and_resize(x, image_size),
        encoded,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )
    return (images - input_offset) / input_scale
