"""``tfx-image-pipeline infer``: batch predictions of a pushed model over stored images, on Beam.

    tfx-image-pipeline infer --model SERVING_DIR/MODEL[/VERSION] --input FOLDER|MANIFEST|TFRECORDS
                             --output predictions.jsonl|.csv [--top-k 3] [--beam-preset ...]

Input is read by ImageExampleGen's own readers (``components.image_example_gen.formats``) and
checked by its own checks (``image_check.check_image``, then TensorFlow's decoder in the
model's own graph, with ``ingest.DecodeChecker`` naming the images of a batch it rejects),
so a file is predicted exactly when the pipeline would ingest it, and every other file is
listed with the same reasons as in an ingestion report:

- FOLDER: every image file below it, at any depth (class folders or none; the folder names
  are not used); a folder of TFRecord files is read as TFRECORDS;
- MANIFEST: a .csv/.tsv file with a header row; paths relative to it (``--path-column``);
  a ``--label-column`` that the header holds is copied into the rows;
- TFRECORDS: a TFRecord file or a folder of them, tf.train.Examples with the image and the
  label feature (``--image-feature``, ``--label-feature``), as the pipeline reads them.

The model is the served SavedModel's own graph (``serving_default``: encoded bytes in,
probabilities out; the class names from its ``classification`` signature), loaded once per
Beam worker. Rows: ``path``, ``label``
(when the input has one), ``model_version``, ``classes`` and ``probabilities`` (top-k, best
first). Unreadable files go to ``OUTPUT.skipped.jsonl`` (path, reason, detail). Both files are
written whole or not at all (temporary file, then rename), sorted by path.

It runs on Beam with the pipeline's runner presets (``--beam-preset in-process`` or
``multi-process``, or any Beam flags through ``--beam-pipeline-args``, e.g. Dataflow's).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from components.image_example_gen import image_files, report
from components.image_example_gen.formats import FORMATS, ReadContext
from components.image_example_gen.formats.manifest import (
    _read_header,
    _reader,
    manifest_relative_path,
)
from components.image_example_gen.formats.tfrecord import is_tfrecord_name
from components.image_example_gen.image_check import check_image
from components.image_example_gen.image_files import ImageFile, ImageFolderError, Listing
from components.image_example_gen.options import DEFAULT_MAX_IMAGE_PIXELS, IngestOptions
from components.image_example_gen.report import Facts, SkippedInputError
from pipeline.config import BEAM_PRESETS, ConfigError, resolve_beam_args
from serving import layout

INFER_SPLIT = "infer"  # the input split name the readers get: every file is one split
OUTPUT_FORMATS = (".jsonl", ".csv")
SKIPPED_SUFFIX = ".skipped.jsonl"
DEFAULT_BATCH_SIZE = 32


class InferError(ValueError):
    """Bad arguments or input to ``infer``; the message names the flag or file."""


@dataclass(frozen=True)
class InferInput:
    """What to read: the root, its format, the ExampleGen options and the work units."""

    root: str
    data_format: str
    options: IngestOptions
    units: list[Any]
    state: Any
    listing_skips: list[tuple[str, str, str]]
    has_labels: bool


def resolve_model(model: str) -> tuple[str, int]:
    """(SavedModel folder, version) of SERVING_DIR/MODEL (its newest version) or .../VERSION."""
    model = model.rstrip("/")
    number = layout.version_number(os.path.basename(model))
    if number is not None and layout.has_saved_model(model):
        return model, number
    versions = layout.scan_versions(model)
    if versions:
        newest = max(versions)
        return versions[newest], newest
    if layout.has_saved_model(model):
        raise InferError(
            f"--model: {model} is a SavedModel but not a version folder (its name is not a "
            "number); give SERVING_DIR/MODEL or SERVING_DIR/MODEL/VERSION"
        )
    raise InferError(
        f"--model: {model} holds no pushed version (no integer folder with saved_model.pb); "
        "give SERVING_DIR/MODEL or SERVING_DIR/MODEL/VERSION"
    )


def _folder_listing(root: str) -> Listing:
    listing = Listing()
    for walked, name, size in image_files.walk_files(root, root, listing.facts):
        relative = walked.removeprefix("./")  # walking the root itself: "./a/b.png"
        if image_files.has_image_extension(name):
            listing.images.append(ImageFile(relative, "", INFER_SPLIT, size))
        else:
            listing.facts.skip(relative, report.NOT_AN_IMAGE_FILE)
    return listing


def plan_input(
    path: str,
    path_column: str = "path",
    label_column: str = "label",
    image_feature: str = "image",
    label_feature: str = "label",
    labels_file: str = "",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> InferInput:
    """Lists ``path`` (folder, manifest or TFRecords) with ImageExampleGen's readers."""
    path = os.path.abspath(path) if not image_files.is_remote(path) else path
    options = IngestOptions(
        manifest_path_column=path_column,
        manifest_label_column=label_column,
        tfrecord_image_feature=image_feature,
        tfrecord_label_feature=label_feature,
        labels_file=labels_file,
        max_image_pixels=max_image_pixels,
    )
    if not image_files.exists(path):
        raise InferError(f"--input: {path} does not exist")
    has_labels = False
    if image_files.is_dir(path):
        root = path
        if any(is_tfrecord_name(n) for n, _ in image_files.scan_files(root)):
            data_format, pattern = "tfrecord", "*"
        else:
            data_format, pattern = "folders", ""
    else:
        root, name = os.path.split(path)
        if is_tfrecord_name(name):
            data_format, pattern = "tfrecord", name
        elif name.lower().endswith((".csv", ".tsv", ".tab")):
            data_format, pattern = "manifest", manifest_relative_path(root, path)
        else:
            raise InferError(
                f"--input: {path} is neither a folder, a CSV/TSV manifest nor a TFRecord file"
            )
    options = dataclasses.replace(options, data_format=data_format)
    fmt = FORMATS[data_format]
    facts = Facts()
    if data_format == "folders":
        listing = _folder_listing(root)
    elif data_format == "manifest":
        with open(path, encoding="utf-8-sig") as f:
            header = _read_header(_reader(f.readline(1 << 20), pattern), path)
        if path_column not in header:
            raise InferError(f"--input: {path} has no column {path_column!r} (--path-column)")
        has_labels = label_column in header
        # Without a label column the reader gets the path column as the label: never empty.
        listing = fmt.list_split(
            root,
            INFER_SPLIT,
            pattern,
            dataclasses.replace(
                options, manifest_label_column=label_column if has_labels else path_column
            ),
        )
    else:
        has_labels = True
        listing = fmt.list_split(root, INFER_SPLIT, pattern, options)
    if not listing.images and not listing.records:
        raise InferError(f"--input: no image files or TFRecord files found in {path}")
    state = fmt.prepare(root, options, facts)
    listing.facts.merge(facts)
    return InferInput(
        root,
        data_format,
        options,
        fmt.work_units(listing),
        state,
        list(listing.facts.skipped),
        has_labels,
    )


SKIPPED = "skipped"  # the tag of (path, reason, detail) outputs


class _ReadAndCheckFn(beam.DoFn):
    """One work unit -> checked items (path, label, bytes) and skips (path, reason, detail).

    ``check_image`` runs here; TensorFlow's decoder runs in ``_PredictFn``, which decodes
    every image anyway (ExampleGen's DecodeChecker names the culprits of a batch that fails).
    """

    def __init__(self, plan: InferInput):
        # Workers need the root, format, options and state, not the listing.
        self._plan = dataclasses.replace(plan, units=[], listing_skips=[])

    def process(self, unit: str) -> Iterator[Any]:
        plan = self._plan
        context = ReadContext(plan.root, plan.options, plan.state)
        fmt = FORMATS[plan.data_format]
        for items, facts in fmt.read(json.loads(unit), context):
            for item in items:
                try:
                    image = check_image(item.data, plan.options.max_image_pixels)
                except SkippedInputError as err:
                    facts.skip(item.image_id, err.reason, err.detail)
                    continue
                yield (item.image_id, item.label if plan.has_labels else "", image.data)
            for skipped in facts.skipped:
                yield beam.pvalue.TaggedOutput(SKIPPED, tuple(skipped))


class _PredictFn(beam.DoFn):
    """Batches of (path, label, bytes) -> JSON rows from the SavedModel's own signatures.

    ``serving_default`` (encoded bytes in) gives the probabilities; the class names are read
    once per worker from the ``classification`` signature, which lists every class.
    """

    def __init__(self, saved_model_dir: str, version: int, top_k: int):
        self._saved_model_dir = saved_model_dir
        self._version = version
        self._top_k = top_k
        self._serve = None
        self._class_names: list[str] = []
        self._checker = None

    def setup(self) -> None:
        import tensorflow as tf

        from trainer_module import features

        signatures = tf.saved_model.load(self._saved_model_dir).signatures
        self._serve = signatures[features.SERVING_SIGNATURE]
        probe = tf.train.Example()
        probe.features.feature[features.IMAGE_KEY].bytes_list.value.append(
            tf.io.encode_png(tf.zeros([1, 1, 3], tf.uint8)).numpy()
        )
        classes = signatures[features.CLASSIFY_SIGNATURE](
            **{features.CLASSIFY_INPUT_KEY: tf.constant([probe.SerializeToString()])}
        )[features.CLASSIFY_CLASSES_OUTPUT]
        self._class_names = [name.decode() for name in classes.numpy()[0]]
        from components.image_example_gen.ingest import DecodeChecker

        self._checker = DecodeChecker()

    def process(self, batch: list[tuple[str, str, bytes]]) -> Iterator[str]:
        import numpy as np
        import tensorflow as tf

        from trainer_module import features

        def predict(images: list[bytes]) -> np.ndarray:
            return self._serve(
                **{features.SERVING_INPUT_KEY: tf.constant(images, dtype=tf.string)}
            )[features.PROBABILITIES_OUTPUT].numpy()

        try:
            scores = predict([data for _, _, data in batch])
        except tf.errors.InvalidArgumentError:
            # An image TensorFlow cannot decode: ExampleGen's checker names it and its error.
            rejected = self._checker.rejected([data for _, _, data in batch])
            if not rejected:
                raise
            for index in sorted(rejected):
                path = batch[index][0]
                yield beam.pvalue.TaggedOutput(
                    SKIPPED, (path, report.CORRUPT_IMAGE, rejected[index])
                )
            batch = [item for index, item in enumerate(batch) if index not in rejected]
            if not batch:
                return
            scores = predict([data for _, _, data in batch])
        top = np.argsort(-scores, axis=1, kind="stable")[:, : self._top_k]
        for (path, label, _), row_scores, order in zip(batch, scores, top, strict=True):
            row: dict[str, Any] = {"path": path}
            if label:
                row["label"] = label
            row["model_version"] = self._version
            row["classes"] = [self._class_names[i] for i in order]
            row["probabilities"] = [round(float(row_scores[i]), 6) for i in order]
            yield json.dumps(row)


@dataclass(frozen=True)
class InferResult:
    """What one ``infer`` run wrote."""

    output: str
    skipped_output: str
    predicted: int
    skipped: int
    model_version: int


def _read_shards(prefix: str) -> list[str]:
    import glob

    lines = []
    for shard in sorted(glob.glob(f"{prefix}*")):
        with open(shard) as f:
            lines.extend(line.rstrip("\n") for line in f if line.strip())
    return lines


def _write_atomically(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "w", newline="") as f:
            f.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def rows_as_csv(rows: list[dict[str, Any]], top_k: int, has_labels: bool) -> str:
    """CSV text: path, [label,] model_version, then class_i, probability_i for i in 1..k."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["path", *(["label"] if has_labels else []), "model_version"]
    for i in range(1, top_k + 1):
        header += [f"class_{i}", f"probability_{i}"]
    writer.writerow(header)
    for row in rows:
        cells = [row["path"], *([row.get("label", "")] if has_labels else []), row["model_version"]]
        for name, probability in zip(row["classes"], row["probabilities"], strict=True):
            cells += [name, probability]
        writer.writerow(cells)
    return buffer.getvalue()


def run_inference(
    model: str,
    input_path: str,
    output: str,
    top_k: int = 3,
    beam_args: list[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    **input_options: Any,
) -> InferResult:
    """Predicts every readable image of ``input_path`` with ``model``; writes ``output``.

    ``beam_args`` are Beam pipeline flags (a resolved preset or a runner's own).
    ``input_options`` go to ``plan_input``. Raises InferError for bad arguments or input.
    """
    if not output.endswith(OUTPUT_FORMATS):
        raise InferError(f"--output: {output} must end in {' or '.join(OUTPUT_FORMATS)}")
    if top_k < 1:
        raise InferError(f"--top-k: must be at least 1, got {top_k}")
    output_folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(output_folder):
        raise InferError(f"--output: folder {output_folder} does not exist")
    saved_model_dir, version = resolve_model(model)
    plan = plan_input(input_path, **input_options)
    units = [json.dumps(unit) for unit in plan.units]
    with tempfile.TemporaryDirectory(prefix=".infer-", dir=output_folder) as work:
        rows_prefix = os.path.join(work, "rows")
        skipped_prefix = os.path.join(work, "skipped")
        with beam.Pipeline(options=PipelineOptions(beam_args or [])) as pipeline:
            read = (
                pipeline
                | "Units" >> beam.Create(units, reshuffle=True)
                | "ReadAndCheck"
                >> beam.ParDo(_ReadAndCheckFn(plan)).with_outputs(SKIPPED, main="images")
            )
            predicted = (
                read.images
                | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)
                | "Predict"
                >> beam.ParDo(_PredictFn(saved_model_dir, version, top_k)).with_outputs(
                    SKIPPED, main="rows"
                )
            )
            predicted.rows | "WriteRows" >> beam.io.WriteToText(rows_prefix)
            (
                (read[SKIPPED], predicted[SKIPPED])
                | "AllSkips" >> beam.Flatten()
                | "SkipsAsJson"
                >> beam.Map(lambda s: json.dumps({"path": s[0], "reason": s[1], "detail": s[2]}))
                | "WriteSkips" >> beam.io.WriteToText(skipped_prefix)
            )
        rows = sorted((json.loads(r) for r in _read_shards(rows_prefix)), key=lambda r: r["path"])
        skipped = [{"path": p, "reason": r, "detail": d} for p, r, d in plan.listing_skips]
        skipped += [json.loads(s) for s in _read_shards(skipped_prefix)]
        skipped.sort(key=lambda s: s["path"])
    if output.endswith(".csv"):
        text = rows_as_csv(rows, top_k, plan.has_labels)
    else:
        text = "".join(json.dumps(row) + "\n" for row in rows)
    skipped_output = _skipped_path(output)
    _write_atomically(skipped_output, "".join(json.dumps(s) + "\n" for s in skipped))
    _write_atomically(output, text)
    return InferResult(output, skipped_output, len(rows), len(skipped), version)


def _skipped_path(output: str) -> str:
    stem = output.rsplit(".", 1)[0]
    return stem + SKIPPED_SUFFIX


def add_infer_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``infer`` flags."""
    parser.add_argument(
        "--model", required=True, help="SERVING_DIR/MODEL (its newest version) or .../VERSION."
    )
    parser.add_argument(
        "--input",
        required=True,
        help="A folder of images (any depth), a CSV/TSV manifest, or a TFRecord file or folder.",
    )
    parser.add_argument(
        "--output", required=True, help="predictions.jsonl or predictions.csv (written whole)."
    )
    parser.add_argument("--top-k", type=int, default=3, help="Classes per row (default 3).")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="Images per model call."
    )
    parser.add_argument(
        "--beam-preset",
        choices=BEAM_PRESETS,
        default="in-process",
        help="DirectRunner preset, as the pipeline's (default in-process); 'none' uses "
        "--beam-pipeline-args as given (e.g. --runner=DataflowRunner ...).",
    )
    parser.add_argument(
        "--beam-num-workers", type=int, default=2, help="Worker processes of multi-process."
    )
    parser.add_argument(
        "--beam-pipeline-args",
        action="append",
        default=[],
        metavar="ARG",
        help="Beam flag (repeat; values starting with -- need the = form).",
    )
    parser.add_argument("--path-column", default="path", help="Manifest column of image paths.")
    parser.add_argument(
        "--label-column", default="label", help="Manifest column of labels, copied if present."
    )
    parser.add_argument("--image-feature", default="image", help="TFRecord image feature.")
    parser.add_argument("--label-feature", default="label", help="TFRecord label feature.")
    parser.add_argument(
        "--labels-file", default="", help="Names of integer TFRecord labels, one per line."
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="Images declaring more pixels are skipped (decompression-bomb guard).",
    )


def run_infer(args: argparse.Namespace) -> int:
    """Runs ``infer`` from parsed flags; prints what it wrote. Exit code 0, or 2 on bad input."""
    try:
        beam_args = resolve_beam_args(
            args.beam_pipeline_args, args.beam_preset, args.beam_num_workers
        )
        result = run_inference(
            args.model,
            args.input,
            args.output,
            top_k=args.top_k,
            beam_args=beam_args,
            batch_size=args.batch_size,
            path_column=args.path_column,
            label_column=args.label_column,
            image_feature=args.image_feature,
            label_feature=args.label_feature,
            labels_file=args.labels_file,
            max_image_pixels=args.max_image_pixels,
        )
    except (InferError, ConfigError, ImageFolderError) as err:
        print(f"infer: {err}", file=sys.stderr)
        return 2
    print(f"{result.predicted} images predicted by version {result.model_version}: {result.output}")
    print(f"{result.skipped} files skipped (path, reason, detail): {result.skipped_output}")
    return 0
