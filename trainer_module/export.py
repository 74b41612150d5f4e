"""SavedModel signatures: raw image bytes and raw tf.Examples in, class names out."""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_transform as tft

from serving.layout import WARMUP_DIR, WARMUP_FILE
from trainer_module import features


class _ServingModule(tf.Module):
    """Holds the trained model, the transform graph and the class names for export."""

    def __init__(self, model: tf.keras.Model, tft_output: tft.TFTransformOutput):
        super().__init__()
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()
        self.class_names = tf.constant(
            [
                name.decode() if isinstance(name, bytes) else name
                for name in tft_output.vocabulary_by_name(features.LABEL_VOCABULARY_NAME)
            ]
        )
        raw_spec = tft_output.raw_feature_spec()
        self._image_spec = {features.IMAGE_KEY: raw_spec[features.IMAGE_KEY]}
        self._label_spec = {
            features.IMAGE_KEY: raw_spec[features.IMAGE_KEY],
            features.LABEL_KEY: raw_spec[features.LABEL_KEY],
        }

    def _predict(self, encoded_images: tf.Tensor) -> dict[str, tf.Tensor]:
        transformed = self.tft_layer({features.IMAGE_KEY: tf.reshape(encoded_images, [-1, 1])})
        probabilities = self.model(transformed[features.TRANSFORMED_IMAGE_KEY], training=False)
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            features.PROBABILITIES_OUTPUT: probabilities,
            features.CLASS_ID_OUTPUT: class_id,
            features.CLASS_NAME_OUTPUT: tf.gather(self.class_names, class_id),
        }

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=features.SERVING_INPUT_KEY)]
    )
    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict(images)

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES_INPUT_KEY)]
    )
    def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, self._image_spec)
        return self._predict(parsed[features.IMAGE_KEY])

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=features.CLASSIFY_INPUT_KEY)]
    )
    def classify_examples(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(inputs, self._image_spec)
        probabilities = self._predict(parsed[features.IMAGE_KEY])[features.PROBABILITIES_OUTPUT]
        classes = tf.tile(self.class_names[None], [tf.shape(probabilities)[0], 1])
        return {
            features.CLASSIFY_CLASSES_OUTPUT: classes,
            features.CLASSIFY_SCORES_OUTPUT: probabilities,
        }

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES_INPUT_KEY)]
    )
    def transform_labels(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, self._label_spec)
        transformed = self.tft_layer(parsed)
        return {features.TRANSFORMED_LABEL_KEY: transformed[features.TRANSFORMED_LABEL_KEY]}


def set_signature_method_names(export_dir: str, method_names: dict[str, str]) -> None:
    """Sets the ``method_name`` of signatures in ``export_dir``'s saved_model.pb.

    ``tf.saved_model.save`` marks every signature ``tensorflow/serving/predict``; TF Serving's
    Classify and Regress APIs only run signatures marked ``tensorflow/serving/classify`` or
    ``.../regress``. Written to a temporary file and renamed, so the file is never half-written.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        for name, method_name in method_names.items():
            if name not in meta_graph.signature_def:
                raise KeyError(f"{path} has no signature {name!r}")
            meta_graph.signature_def[name].method_name = method_name
    temporary = f"{path}.tmp"
    with tf.io.gfile.GFile(temporary, "wb") as f:
        f.write(saved_model.SerializeToString())
    tf.io.gfile.rename(temporary, path, overwrite=True)


def write_warmup_requests(export_dir: str, encoded_images: list[bytes]) -> str:
    """Writes TF Serving warmup requests for ``serving_default`` built from real images.

    TF Serving replays ``assets.extra/tf_serving_warmup_requests`` when it loads a version,
    so the first real request does not pay for graph tracing. One predict request per image,
    one with the whole batch, and one Classify request (``classification`` signature) with
    the whole batch as tf.Examples. Returns the file's path.
    """
    from tensorflow_serving.apis import (
        classification_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
    )

    def request(images: list[bytes]) -> prediction_log_pb2.PredictionLog:
        predict = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(signature_name=features.SERVING_SIGNATURE)
        )
        predict.inputs[features.SERVING_INPUT_KEY].CopyFrom(
            tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)])
        )
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=predict)
        )

    assets_extra = os.path.join(export_dir, WARMUP_DIR)
    tf.io.gfile.makedirs(assets_extra)
    path = os.path.join(assets_extra, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for image in encoded_images:
            writer.write(request([image]).SerializeToString())
        writer.write(request(list(encoded_images)).SerializeToString())
        classify = classification_pb2.ClassificationRequest(
            model_spec=model_pb2.ModelSpec(signature_name=features.CLASSIFY_SIGNATURE)
        )
        for image in encoded_images:
            example = classify.input.example_list.examples.add()
            example.features.feature[features.IMAGE_KEY].bytes_list.value.append(image)
        log = prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=classify)
        )
        writer.write(log.SerializeToString())
    return path


def export_serving_model(
    model: tf.keras.Model,
    tft_output: tft.TFTransformOutput,
    export_dir: str,
    warmup_images: list[bytes] | None = None,
) -> None:
    """Saves ``model`` with the transform graph and four signatures to ``export_dir``.

    - ``serving_default``: encoded image bytes [batch] -> probabilities, class_id, class_name
    - ``serving_examples``: serialized raw tf.Examples -> the same outputs
    - ``classification``: serialized raw tf.Examples (``inputs``) -> ``classes`` (every class
      name) and ``scores`` (their probabilities), a ``tensorflow/serving/classify`` signature
      for TF Serving's Classify API
    - ``transform_features``: serialized raw tf.Examples -> label_id (used by TFMA)

    With ``warmup_images`` (encoded bytes of real images), TF Serving warmup requests are
    written to ``assets.extra/``.
    """
    module = _ServingModule(model, tft_output)
    signatures = {
        features.SERVING_SIGNATURE: module.serve_images.get_concrete_function(),
        features.EXAMPLES_SIGNATURE: module.serve_examples.get_concrete_function(),
        features.CLASSIFY_SIGNATURE: module.classify_examples.get_concrete_function(),
        features.TRANSFORM_SIGNATURE: module.transform_labels.get_concrete_function(),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    set_signature_method_names(
        export_dir, {features.CLASSIFY_SIGNATURE: features.CLASSIFY_METHOD_NAME}
    )
    if warmup_images:
        write_warmup_requests(export_dir, warmup_images)
