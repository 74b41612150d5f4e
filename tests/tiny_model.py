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


REGRESS_SIGNATURE = "regress_x_to_y"
CLASSIFY_SIGNATURE = "classify_x_to_y"
SCALE_SIGNATURE = "half_x"


def save_half_plus_two(path: Path) -> Path:
    """TF Serving's "half plus two" test model, with two inputs: y = 0.5 * x + 2 + offset.

    Built as a TF1 graph (as TF Serving's own test model is), so that its regress and
    classify signatures share one tf.Example input, which MultiInference needs:

    - ``serving_default`` (predict): float ``x`` and ``offset`` [batch, 1] -> ``y``;
    - ``half_x`` (predict): float ``x`` [batch, 1] -> ``y`` = 0.5 * x + 2; elementwise, so the
      graph accepts any shape although the signature says [batch, 1];
    - ``regress_x_to_y`` (tensorflow/serving/regress): serialized tf.Examples with float
      features ``x`` and ``offset`` (default 0) -> ``outputs`` [batch, 1];
    - ``classify_x_to_y`` (tensorflow/serving/classify): the same input -> ``scores`` [batch, 1].
    """
    signature_utils = tf.compat.v1.saved_model.signature_def_utils
    build_info = tf.compat.v1.saved_model.utils.build_tensor_info
    graph = tf.Graph()
    with graph.as_default():
        examples = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf.io.parse_example(
            examples,
            {
                "x": tf.io.FixedLenFeature([1], tf.float32),
                "offset": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            },
        )
        a = tf.compat.v1.Variable(0.5, name="a")
        b = tf.compat.v1.Variable(2.0, name="b")
        from_examples = tf.identity(a * parsed["x"] + b + parsed["offset"], name="y_examples")
        x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
        offset = tf.compat.v1.placeholder(tf.float32, [None, 1], name="offset")
        y = tf.identity(a * x + b + offset, name="y")
        half = tf.identity(a * x + b, name="y_half")
        signatures = {
            features.SERVING_SIGNATURE: signature_utils.predict_signature_def(
                {"x": x, "offset": offset}, {"y": y}
            ),
            SCALE_SIGNATURE: signature_utils.predict_signature_def({"x": x}, {"y": half}),
            REGRESS_SIGNATURE: signature_utils.regression_signature_def(examples, from_examples),
            CLASSIFY_SIGNATURE: signature_utils.classification_signature_def(
                examples, None, from_examples
            ),
        }
        assert build_info(examples).name == "tf_example:0"
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()
    return path
