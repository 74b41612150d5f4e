"""A tiny SavedModel with the exported model's serving contract, for serving tests.

It decodes each PNG (so bad bytes fail as they do in the real model) and returns fixed
probabilities that favour one class: fast to build, and its answers are known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from trainer_module import features
from trainer_module.export import set_signature_method_names


class TinyClassifier(tf.Module):
    """serving_default: encoded PNGs -> probabilities, class_id, class_name."""

    def __init__(self, num_classes: int, favourite: int):
        super().__init__()
        probabilities = np.full(num_classes, 0.1 / (num_classes - 1), np.float32)
        probabilities[favourite] = 0.9
        self.probabilities = tf.Variable(probabilities)
        self.class_names = tf.constant([f"class_{i}" for i in range(num_classes)])

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=features.CLASSIFY_INPUT_KEY)]
    )
    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(
            inputs, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
        )
        probabilities = self.serve(parsed[features.IMAGE_KEY])[features.PROBABILITIES_OUTPUT]
        return {
            features.CLASSIFY_CLASSES_OUTPUT: tf.tile(
                self.class_names[None], [tf.shape(probabilities)[0], 1]
            ),
            features.CLASSIFY_SCORES_OUTPUT: probabilities,
        }

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
    """Saves a TinyClassifier to ``path`` with the exported model's serving_default and
    classification (tensorflow/serving/classify) signatures."""
    module = TinyClassifier(num_classes, favourite)
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            features.SERVING_SIGNATURE: module.serve.get_concrete_function(),
            features.CLASSIFY_SIGNATURE: module.classify.get_concrete_function(),
        },
    )
    set_signature_method_names(
        str(path), {features.CLASSIFY_SIGNATURE: features.CLASSIFY_METHOD_NAME}
    )
    return path


class HalfPlusTwo(tf.Module):
    """TF Serving's "half plus two" test model with two inputs: y = 0.5 * x + 2 + offset.

    - ``regress_x_to_y`` (tensorflow/serving/regress): serialized tf.Examples with float
      features ``x`` and ``offset`` -> ``outputs`` [batch, 1];
    - ``serving_default`` (predict): ``x`` and ``offset`` float tensors of any shape -> ``y``;
      elementwise, so the graph accepts every shape where x and offset broadcast.
    """

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(
            inputs,
            {
                "x": tf.io.FixedLenFeature([1], tf.float32),
                "offset": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            },
        )
        return {"outputs": 0.5 * parsed["x"] + 2.0 + parsed["offset"]}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 1], tf.float32, name="x"),
            tf.TensorSpec([None, 1], tf.float32, name="offset"),
        ]
    )
    def predict(self, x: tf.Tensor, offset: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 0.5 * x + 2.0 + offset}


REGRESS_SIGNATURE = "regress_x_to_y"


def save_half_plus_two(path: Path) -> Path:
    """Saves HalfPlusTwo to ``path`` (see its docstring for the signatures)."""
    module = HalfPlusTwo()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            features.SERVING_SIGNATURE: module.predict.get_concrete_function(),
            REGRESS_SIGNATURE: module.regress.get_concrete_function(),
        },
    )
    set_signature_method_names(str(path), {REGRESS_SIGNATURE: "tensorflow/serving/regress"})
    return path
