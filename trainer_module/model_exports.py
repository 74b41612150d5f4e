"""TFLite (float32, float16, int8) and ONNX copies of the trained model, and their runtimes.

Every export has one caller contract, the same for each runtime:

- input ``image``: RGB pixels in 0..255 [batch, SIZE, SIZE, 3], already decoded and resized to
  the model's square size the way the Transform graph does it (``image_ops.decode_and_resize``:
  bilinear ``stretch`` or aspect-keeping ``pad``, as trained; ``pixels_from_encoded``). float32
  for tflite_fp32, tflite_fp16 and onnx, which then give the SavedModel's answers; uint8
  (rounded) for tflite_int8, as TFLite Model Maker's quantized models take. Rounding alone
  moves a model's top-1 on some images (5 in 100 on the 96 px e2e model, whose 28 px inputs
  are upsampled into sub-integer detail), which is why the float exports take floats;
- output ``probabilities``: float32 [batch, num_classes]; class id i is line i of
  ``labels.txt`` (the tf.Transform vocabulary the model was trained with).

The backbone's normalization runs inside the export; decoding and resizing do not (TFLite
has no image decoder among its builtin ops, and the resize would tie the file to one input
size). The int8 model is fully integer inside (``TFLITE_BUILTINS_INT8``) with uint8 input
and float output, as TFLite Model Maker's quantized image classifiers; its calibration
(representative) set is training images through the Transform graph.

Exports are built from the Trainer's SavedModel (the restored Keras model inside it), so they
are the served model's own weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from serving.layout import EXPORT_FILES, EXPORT_LABELS_FILE, EXPORT_REPORT_FILE
from trainer_module import features
from trainer_module.backbone_specs import BackboneSpec
from trainer_module.image_ops import decode_and_resize, normalize

EXPORT_KINDS = tuple(EXPORT_FILES)
EXPORT_INPUT = "image"
EXPORT_OUTPUT = features.PROBABILITIES_OUTPUT
ONNX_OPSET = 17
DEFAULT_REPRESENTATIVE_IMAGES = 300
_RECORD_BATCH = 64

# Each export's input dtype (module docstring).
EXPORT_INPUT_DTYPES = {kind: np.float32 for kind in EXPORT_KINDS} | {"tflite_int8": np.uint8}
# A representative dataset: a callable that yields [uint8 batch-of-one pixels] lists.
Representative = Callable[[], Iterable[list[np.ndarray]]]


def pixels_from_normalized(images: tf.Tensor, spec: BackboneSpec) -> tf.Tensor:
    """Inverts ``image_ops.normalize``: the Transform graph's output back to float32 RGB pixels
    in 0..255 (not rounded)."""
    mean = tf.constant(list(spec.input_mean), tf.float32)
    std = tf.constant(list(spec.input_std), tf.float32)
    pixels = images * std + mean
    if spec.bgr:
        pixels = pixels[..., ::-1]
    return tf.clip_by_value(pixels, 0.0, 255.0)


def as_export_input(pixels: np.ndarray, kind: str) -> np.ndarray:
    """float32 pixels in 0..255 as export ``kind`` takes them (rounded to uint8 for int8)."""
    if EXPORT_INPUT_DTYPES[kind] == np.uint8:
        return np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    return pixels.astype(np.float32, copy=False)


def pixels_from_encoded(
    encoded: list[bytes], image_size: int, resize_mode: str = "stretch"
) -> np.ndarray:
    """The exports' input for encoded images: what a caller does before calling an export.

    Decodes and resizes each image as the Transform graph does (``decode_and_resize``):
    float32 RGB in 0..255 [batch, size, size, 3]; ``as_export_input`` rounds them for int8.
    """
    return np.stack([decode_and_resize(data, image_size, resize_mode).numpy() for data in encoded])


class PixelModel(tf.Module):
    """The Trainer's model behind the export contract: pixels -> probabilities.

    ``classify_pixels`` takes float32 pixels, ``classify_uint8`` uint8 ones (for int8).
    """

    def __init__(self, saved_model_dir: str, spec: BackboneSpec, image_size: int):
        super().__init__()
        self.serving = tf.saved_model.load(saved_model_dir)
        self.classifier = self.serving.model  # The Keras model the serving module holds.
        self.image_size = image_size
        self._spec = spec
        shape = [None, image_size, image_size, 3]
        self.classify_pixels = tf.function(
            self._classify, input_signature=[tf.TensorSpec(shape, tf.float32, name=EXPORT_INPUT)]
        )
        self.classify_uint8 = tf.function(
            self._classify, input_signature=[tf.TensorSpec(shape, tf.uint8, name=EXPORT_INPUT)]
        )

    def function_for(self, kind: str) -> tf.types.experimental.GenericFunction:
        """The function export ``kind`` is converted from (its input dtype)."""
        return (
            self.classify_uint8 if EXPORT_INPUT_DTYPES[kind] == np.uint8 else self.classify_pixels
        )

    def _classify(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        # Constants made inside the graph: captured eager tensors would become ONNX inputs.
        normalized = normalize(image, self._spec)
        return {EXPORT_OUTPUT: self.classifier(normalized, training=False)}


def convert(kind: str, model: PixelModel, representative: Representative | None = None) -> bytes:
    """The bytes of one export of ``model``; ``representative`` is needed for tflite_int8."""
    if kind == "onnx":
        import tf2onnx  # Heavy, and only needed here.

        function = model.function_for(kind)
        proto, _ = tf2onnx.convert.from_function(
            function,
            input_signature=function.input_signature,
            opset=ONNX_OPSET,
        )
        return proto.SerializeToString()
    if kind not in EXPORT_KINDS:
        raise ValueError(f"exports: unknown export {kind!r}; choose from {', '.join(EXPORT_KINDS)}")
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.function_for(kind).get_concrete_function()], model
    )
    if kind == "tflite_fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "tflite_int8":
        if representative is None:
            raise ValueError("tflite_int8 needs a representative dataset")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    return converter.convert()


def with_metadata(tflite_model: bytes, class_names: list[str]) -> bytes:
    """``tflite_model`` with TFLite image-classifier metadata: input, output and labels.

    ``labels.txt`` is packed into the model (the TFLite Task Library's ImageClassifier reads
    it from there). The input's normalization options are mean 0, std 1: the model takes raw
    pixels and normalizes them itself.
    """
    import tempfile

    # The metadata writers only: tflite_support's package __init__ imports the Task Library,
    # whose pybind types clash with TensorFlow's in one process.
    from tensorflow_lite_support.metadata.python.metadata_writers import image_classifier

    with tempfile.TemporaryDirectory() as folder:  # the writer reads a local file by name
        labels_path = os.path.join(folder, EXPORT_LABELS_FILE)
        with open(labels_path, "w") as f:
            f.write("".join(f"{name}\n" for name in class_names))
        writer = image_classifier.MetadataWriter.create_for_inference(
            tflite_model, [0.0], [1.0], [labels_path]
        )
        return writer.populate()


def packed_labels(tflite_path: str) -> list[str]:
    """The class names packed into a .tflite file's metadata."""
    from tensorflow_lite_support.metadata.python import metadata

    displayer = metadata.MetadataDisplayer.with_model_buffer(_read(tflite_path))
    [name] = displayer.get_packed_associated_file_list()
    return displayer.get_associated_file_buffer(name).decode().splitlines()


def _read(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


class ExportRuntime:
    """One export loaded in its own runtime: ``predict(pixels) -> probabilities``."""

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities [batch, classes] for pixels [batch, size, size, 3] of the export's
        input dtype (``as_export_input``)."""
        raise NotImplementedError


class TFLiteRuntime(ExportRuntime):
    """A .tflite file in ``tf.lite.Interpreter``, one image per invoke (as on a device)."""

    def __init__(self, path: str, num_threads: int | None = None):
        # Read through tf.io.gfile: the exporter's output may be on gs:// (Kubeflow, Vertex).
        self._interpreter = tf.lite.Interpreter(model_content=_read(path), num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        rows = []
        for image in pixels:
            self._interpreter.set_tensor(self._input, image[None])
            self._interpreter.invoke()
            rows.append(self._interpreter.get_tensor(self._output)[0].copy())
        return np.stack(rows)


class OnnxRuntime(ExportRuntime):
    """A .onnx file in onnxruntime's CPU execution provider, whole batches per run."""

    def __init__(self, path: str):
        import onnxruntime  # Only where ONNX is used.

        self._session = onnxruntime.InferenceSession(
            _read(path), providers=["CPUExecutionProvider"]
        )

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self._session.run([EXPORT_OUTPUT], {EXPORT_INPUT: pixels})[0]


def load_runtime(kind: str, path: str) -> ExportRuntime:
    """The runtime of export ``kind`` with the file at ``path`` loaded."""
    return OnnxRuntime(path) if kind == "onnx" else TFLiteRuntime(path)


def _record_batches(file_patterns: list[str], limit: int | None = None) -> Iterator[tf.Tensor]:
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no example files match {file_patterns}")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if limit is not None:
        dataset = dataset.take(limit)
    yield from dataset.batch(_RECORD_BATCH)


class TransformedImages:
    """Raw tf.Example batches -> float32 pixels through the Transform graph, and label ids."""

    def __init__(self, tft_output: tft.TFTransformOutput, spec: BackboneSpec):
        raw_spec = tft_output.raw_feature_spec()
        self._feature_spec = {k: raw_spec[k] for k in (features.IMAGE_KEY, features.LABEL_KEY)}
        self._layer = tft_output.transform_features_layer()
        self._spec = spec

    def __call__(self, records: tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
        transformed = self._layer(tf.io.parse_example(records, self._feature_spec))
        pixels = pixels_from_normalized(transformed[features.TRANSFORMED_IMAGE_KEY], self._spec)
        return pixels.numpy(), transformed[features.TRANSFORMED_LABEL_KEY].numpy()


def representative_dataset(
    train_patterns: list[str], images: TransformedImages, count: int
) -> Representative:
    """The int8 calibration set: the first ``count`` training images through the Transform graph."""
    pixels = [
        as_export_input(p, "tflite_int8")
        for batch in _record_batches(train_patterns, count)
        for p in images(batch)[0]
    ]

    def generate() -> Iterator[list[np.ndarray]]:
        for image in pixels:
            yield [image[None]]

    return generate


@dataclasses.dataclass
class ExportResult:
    """One export, evaluated and gated."""

    kind: str
    file: str
    size_bytes: int
    accuracy: float
    agreement: float  # fraction of eval images where its top-1 equals the SavedModel's
    pushed: bool  # passed the gate (published by the Pusher when the model is pushed)
    reason: str  # why it was refused; empty when it passed


def gate(
    kind: str, accuracy: float, saved_model_accuracy: float, max_drop: float
) -> tuple[bool, str]:
    """Whether an export's accuracy is within ``max_drop`` of the SavedModel's, and if not, why."""
    drop = saved_model_accuracy - accuracy
    if drop > max_drop + 1e-9:
        return False, (
            f"{kind}: eval accuracy {accuracy:.4f} is {drop:.4f} below the SavedModel's "
            f"{saved_model_accuracy:.4f}, more than max_export_accuracy_drop {max_drop}"
        )
    return True, ""


def evaluate_on_examples(
    saved_model_dir: str,
    runtimes: dict[str, ExportRuntime],
    eval_patterns: list[str],
    images: TransformedImages,
) -> tuple[float, dict[str, tuple[float, float]], int]:
    """Accuracy of the SavedModel (its ``serving_examples`` signature on the raw records) and
    of each runtime (on the Transform graph's pixels of the same records).

    Returns (SavedModel accuracy, {kind: (accuracy, agreement with the SavedModel)}, count).
    """
    serve = tf.saved_model.load(saved_model_dir).signatures[features.EXAMPLES_SIGNATURE]
    saved_correct, count = 0, 0
    correct = dict.fromkeys(runtimes, 0)
    agree = dict.fromkeys(runtimes, 0)
    for records in _record_batches(eval_patterns):
        pixels, labels = images(records)
        saved = serve(**{features.EXAMPLES_INPUT_KEY: records})[features.CLASS_ID_OUTPUT].numpy()
        saved_correct += int(np.sum(saved == labels))
        count += len(labels)
        for kind, runtime in runtimes.items():
            predicted = np.argmax(runtime.predict(as_export_input(pixels, kind)), axis=-1)
            correct[kind] += int(np.sum(predicted == labels))
            agree[kind] += int(np.sum(predicted == saved))
    if not count:
        raise ValueError(f"no eval examples in {eval_patterns}")
    return (
        saved_correct / count,
        {kind: (correct[kind] / count, agree[kind] / count) for kind in runtimes},
        count,
    )


def export_and_gate(
    saved_model_dir: str,
    transform_output: str,
    train_patterns: list[str],
    eval_patterns: list[str],
    output_dir: str,
    kinds: list[str],
    spec: BackboneSpec,
    max_accuracy_drop: float,
    representative_images: int = DEFAULT_REPRESENTATIVE_IMAGES,
    representative: Representative | None = None,
) -> dict[str, Any]:
    """Converts, evaluates and gates every export in ``kinds``; returns the report.

    Exports that pass the gate are written to ``output_dir/<file>`` beside ``labels.txt``;
    refused ones to ``output_dir/refused/<file>``, for inspection, never published. The
    report (also written as ``export_report.json``) holds the SavedModel's accuracy and each
    export's size, accuracy, agreement and the gate's reason. ``representative`` replaces the
    calibration set of training images (tests force a bad one with it).
    """
    tft_output = tft.TFTransformOutput(transform_output)
    size = int(tft_output.transformed_feature_spec()[features.TRANSFORMED_IMAGE_KEY].shape[0])
    model = PixelModel(saved_model_dir, spec, size)
    images = TransformedImages(tft_output, spec)
    if "tflite_int8" in kinds and representative is None:
        representative = representative_dataset(train_patterns, images, representative_images)
    refused_dir = os.path.join(output_dir, "refused")
    tf.io.gfile.makedirs(refused_dir)
    class_names = [
        name.decode() if isinstance(name, bytes) else name
        for name in tft_output.vocabulary_by_name(features.LABEL_VOCABULARY_NAME)
    ]
    with tf.io.gfile.GFile(os.path.join(output_dir, EXPORT_LABELS_FILE), "w") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    paths: dict[str, str] = {}
    for kind in kinds:
        path = os.path.join(refused_dir, EXPORT_FILES[kind])
        exported = convert(kind, model, representative)
        if kind != "onnx":
            exported = with_metadata(exported, class_names)
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(exported)
        paths[kind] = path
    runtimes = {kind: load_runtime(kind, path) for kind, path in paths.items()}
    saved_accuracy, results, count = evaluate_on_examples(
        saved_model_dir, runtimes, eval_patterns, images
    )
    exports = []
    for kind in kinds:
        accuracy, agreement = results[kind]
        passed, reason = gate(kind, accuracy, saved_accuracy, max_accuracy_drop)
        path = paths[kind]
        if passed:
            path = os.path.join(output_dir, EXPORT_FILES[kind])
            tf.io.gfile.rename(paths[kind], path, overwrite=True)
        size_bytes = int(tf.io.gfile.stat(path).length)
        exports.append(
            ExportResult(kind, EXPORT_FILES[kind], size_bytes, accuracy, agreement, passed, reason)
        )
    report = {
        "saved_model_accuracy": saved_accuracy,
        "eval_examples": count,
        "max_export_accuracy_drop": max_accuracy_drop,
        "image_size": size,
        "input": f"{EXPORT_INPUT}: RGB 0..255 [batch, {size}, {size}, 3], decoded and resized "
        "(float32; uint8 for tflite_int8)",
        "output": f"{EXPORT_OUTPUT}: float32 [batch, {len(class_names)}]",
        "exports": [dataclasses.asdict(e) for e in exports],
    }
    write_report(output_dir, report)
    return report


def write_report(output_dir: str, report: dict[str, Any]) -> None:
    """Writes ``export_report.json`` into ``output_dir``."""
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, EXPORT_REPORT_FILE), "w") as f:
        f.write(json.dumps(report, indent=2, sort_keys=True))


def read_report(exports_dir: str) -> dict[str, Any]:
    """The ``export_report.json`` of an exporter output or a published exports folder."""
    with tf.io.gfile.GFile(os.path.join(exports_dir, EXPORT_REPORT_FILE)) as f:
        return json.loads(f.read())
