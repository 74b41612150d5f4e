"""A tiny SavedModel with the exported model's serving contract, for serving tests.

It decodes each PNG (so bad bytes fail as they do in the real model) and returns fixed
probabilities that favour one class: fast to build, and its answers are known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from trainer_module import features


class TinyClassifier(tf.Module):
    """serving_default: encoded PNGs -> probabilities, class_id, class_name."""

    def __init__(self, num_classes: int, favourite: int):
        super().__init__()
        probabilities = np.full(num_classes, 0.1 / (num_classes - 1), np.float32)
        probabilities[favourite] = 0.9
        self.probabilities = tf.Variable(probabilities)
        self.class_names = tf.constant([f"class_{i}" for i in range(num_classes)])

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=features.SERVING_INPUT_KEY)]
    )
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        brightness = tf.map_fn(
            lambda png: tf.reduce_mean(tf.cast(tf.io.decode_png(png, channels=1), tf.float32)),
            images,
            fn_output_signature=tf.float32,
        )
        batch = tf.shape(images)[0]
        probabilities = tf.tile(self.probabilities[None], [batch, 1]) + 0.0 * brightness[:, None]
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            features.PROBABILITIES_OUTPUT: probabilities,
            features.CLASS_ID_OUTPUT: class_id,
            features.CLASS_NAME_OUTPUT: tf.gather(self.class_names, class_id),
        }


def save_tiny_model(path: Path, num_classes: int, favourite: int) -> Path:
    """Saves a TinyClassifier with its serving_default signature to ``path``."""
    module = TinyClassifier(num_classes, favourite)
    tf.saved_model.save(
        module,
        str(path),
        signatures={features.SERVING_SIGNATURE: module.serve.get_concrete_function()},
    )
    return path
