"""TFRecord files of tf.train.Example: converted record by record to our layout.

Files sit in the root or in split folders (the class-folder split rules). Records hold the
encoded image in ``tfrecord_image_feature`` and the label in ``tfrecord_label_feature``: a
class name, or an integer index into the labels file. One work unit per file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from components.image_example_gen import image_files, report
from components.image_example_gen.formats.base import (
    InputFormat,
    Item,
    ReadContext,
    clean_tf_error,
)
from components.image_example_gen.image_files import (
    TRAIN_SPLIT,
    ImageFolderError,
    Layout,
    Listing,
    RecordFile,
)
from components.image_example_gen.options import IngestOptions
from components.image_example_gen.report import Facts, Reason, SkippedInputError

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
DEFAULT_LABELS_FILE = "labels.txt"
# Records per chunk of a file: chunks of one big file rotate over the output shards.
RECORDS_PER_CHUNK = 256

NOT_A_TFRECORD_FILE = "not_a_tfrecord_file"
CORRUPT_RECORD_FILE = "corrupt_record_file"
BAD_RECORD = "bad_record"
MISSING_FEATURE = "missing_feature"
UNKNOWN_LABEL_ID = "unknown_label_id"


class TFRecordFormat(InputFormat):
    """Files of serialized tf.train.Examples, plain or GZIP."""

    name = "tfrecord"
    skip_reasons = (
        Reason(NOT_A_TFRECORD_FILE, False, "file name is not a TFRecord name"),
        Reason(CORRUPT_RECORD_FILE, True, "TFRecord file is corrupt from this record on"),
        Reason(BAD_RECORD, True, "TFRecord record is not a tf.train.Example"),
        Reason(MISSING_FEATURE, True, "TFRecord record lacks the image or label feature"),
        Reason(UNKNOWN_LABEL_ID, True, "integer label has no name in the labels file"),
    )

    def detect(self, root: str, folders: dict[str, str], options: IngestOptions) -> bool:
        probe = (
            image_files.join_path(root, folders[TRAIN_SPLIT]) if TRAIN_SPLIT in folders else root
        )
        return any(is_tfrecord_name(name) for name, _ in image_files.scan_files(probe))

    def list_split(self, root: str, split: str, pattern: str, options: IngestOptions) -> Listing:
        listing = Listing()
        for match in image_files.matching_entries(root, pattern, listing.facts):
            if match.is_dir:
                listing.facts.skip(match.relative + "/", NOT_A_TFRECORD_FILE, "a folder")
            elif is_tfrecord_name(match.name):
                listing.records.append(RecordFile(match.relative, split, match.size))
            else:
                listing.facts.skip(match.relative, NOT_A_TFRECORD_FILE)
        return listing

    def check_listing(self, listing: Listing, root: str) -> None:
        if not listing.records:
            raise ImageFolderError(
                f"no TFRecord files found under {root}; expected files named *.tfrecord, "
                "*.tfrecords, *.tfrec (optionally .gz) in the root or in split folders"
            )

    def preflight(self, root: str, layout: Layout, options: IngestOptions) -> None:
        """TFRecord files where the layout looks (one folder listing per input split)."""
        listing = Listing()
        for split, pattern in layout.splits:
            listing.extend(self.list_split(root, split, pattern, options))
        if not listing.records:
            folders = (
                "; it holds folders: use data_format folders"
                if any(
                    reason == NOT_A_TFRECORD_FILE and path.endswith("/")
                    for path, reason, _ in listing.facts.skipped
                )
                else ""
            )
            raise ImageFolderError(
                f"data_format: tfrecord, but no TFRecord files (*.tfrecord, *.tfrecords, "
                f"*.tfrec, optionally .gz) are under {root}{folders}"
            )
        if options.labels_file:
            read_labels_file(root, options.labels_file)

    def prepare(self, root: str, options: IngestOptions, facts: Facts) -> list[str] | None:
        labels = read_labels_file(root, options.labels_file)
        if labels is None:
            facts.notes.append("no labels file: integer labels are stored as their decimal strings")
        return labels

    def work_units(self, listing: Listing) -> list[Any]:
        return [[r.relative_path, r.split] for r in listing.records]

    def read(self, unit: Any, context: ReadContext) -> Iterator[tuple[list[Item], Facts]]:
        """Chunks of a TFRecord file's records converted to items, with their facts."""
        import tensorflow as tf  # workers only

        relative_path, split = unit
        path = image_files.join_path(context.root, relative_path)
        facts, items, index = Facts(), [], 0
        shown = report.printable(relative_path)
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                compression = "GZIP" if f.read(2) == b"\x1f\x8b" else ""
            dataset = tf.data.TFRecordDataset(path, compression_type=compression)
            for serialized in dataset.as_numpy_iterator():
                image_id = f"{shown}#{index}"
                index += 1
                try:
                    items.append(_record_item(serialized, image_id, split, context))
                except SkippedInputError as err:
                    facts.skip(image_id, err.reason, err.detail)
                if len(items) >= RECORDS_PER_CHUNK:
                    yield items, facts
                    facts, items = Facts(), []
        except tf.errors.OpError as err:
            facts.skip(f"{shown}#{index}", CORRUPT_RECORD_FILE, clean_tf_error(err))
        yield items, facts


def is_tfrecord_name(name: str) -> bool:
    """Whether a file name looks like a TFRecord file (optionally gzipped)."""
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
        if "tfrecord" in lower:
            return True
    return lower.endswith(TFRECORD_SUFFIXES)


def read_labels_file(root: str, labels_file: str) -> list[str] | None:
    """Class names for integer labels: line i names label i.

    ``labels_file`` is relative to the root; empty means ``labels.txt`` in the root if it
    exists, else None (integer labels are then kept as their decimal strings).
    """
    path = image_files.join_path(root, labels_file or DEFAULT_LABELS_FILE)
    if not labels_file and not image_files.exists(path):
        return None
    try:
        text = image_files.read_bytes(path).decode("utf-8-sig")
    except Exception as err:  # OSError, UnicodeDecodeError, tf.errors.NotFoundError
        raise ImageFolderError(f"labels_file: cannot read {path}: {err}") from None
    names = text.splitlines()
    while names and not names[-1].strip():
        names.pop()
    labels = []
    for i, name in enumerate(names):
        try:
            labels.append(image_files.normalize_label(name))
        except SkippedInputError as err:
            raise ImageFolderError(f"labels_file {path}: line {i + 1}: {err}") from None
    if len(set(labels)) != len(labels):
        raise ImageFolderError(f"labels_file {path}: class names repeat")
    return labels


def _record_item(serialized: bytes, image_id: str, split: str, context: ReadContext) -> Item:
    import tensorflow as tf  # workers only

    try:
        example = tf.train.Example.FromString(serialized)
    except Exception as err:  # google.protobuf.message.DecodeError
        raise SkippedInputError(BAD_RECORD, f"{type(err).__name__}: {err}") from None
    feature_map = example.features.feature
    image_key = context.options.tfrecord_image_feature
    label_key = context.options.tfrecord_label_feature
    labels: list[str] | None = context.state
    if image_key not in feature_map or not feature_map[image_key].bytes_list.value:
        raise SkippedInputError(MISSING_FEATURE, f"no bytes feature {image_key!r}")
    if label_key not in feature_map:
        raise SkippedInputError(MISSING_FEATURE, f"no label feature {label_key!r}")
    label_feature = feature_map[label_key]
    if label_feature.int64_list.value:
        label_id = label_feature.int64_list.value[0]
        if labels is None:
            label = str(label_id)
        elif 0 <= label_id < len(labels):
            label = labels[label_id]
        else:
            raise SkippedInputError(
                UNKNOWN_LABEL_ID, f"label {label_id} not in the labels file ({len(labels)} names)"
            )
    elif label_feature.bytes_list.value:
        try:
            raw = label_feature.bytes_list.value[0].decode("utf-8")
        except UnicodeDecodeError:
            raise SkippedInputError(report.BAD_LABEL, "label is not UTF-8") from None
        label = image_files.normalize_label(raw)
    else:
        raise SkippedInputError(MISSING_FEATURE, f"label feature {label_key!r} is empty")
    return Item(image_id, label, split, feature_map[image_key].bytes_list.value[0])


FORMAT = TFRecordFormat()
