"""Finding the inputs under a data root: the layout, the files, the manifest rows.

Pure Python, no Beam: the rules (which files count, which are skipped and why) are
unit-testable and shared by every input shape. Local paths use ``os``; remote roots
(``gs://``, ``s3://``...) go through ``tf.io.gfile``, imported only when one is used.

Three input shapes:

- ``folders``: ``ROOT/<class>/**/<image>``, or ``ROOT/<split>/<class>/**/<image>`` with split
  folders ``train/``, ``val/``/``valid/``/``validation/``/``eval/`` and ``test/``;
- ``manifest``: a CSV/TSV file with a path column and a label column, paths relative to it;
- ``tfrecord``: files of tf.train.Example records, in ``ROOT`` or in split folders.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import os
import posixpath
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from components.image_example_gen import report
from components.image_example_gen.options import (
    EVAL_SPLIT,
    TEST_SPLIT,
    TRAIN_SPLIT,
    IngestOptions,
    hash_split_buckets,
)
from components.image_example_gen.report import Facts, SkippedInputError

# Extensions looked at in class folders; other files are skipped as not_an_image_file.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".bmp", ".dib", ".webp", ".tif", ".tiff"}
)
# Folder names (case-insensitive) that hold a split, and the split they become.
SPLIT_FOLDER_NAMES = {
    "train": TRAIN_SPLIT,
    "training": TRAIN_SPLIT,
    "val": EVAL_SPLIT,
    "valid": EVAL_SPLIT,
    "validation": EVAL_SPLIT,
    "eval": EVAL_SPLIT,
    "test": TEST_SPLIT,
}
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
DEFAULT_LABELS_FILE = "labels.txt"
# The single input split of a root that is not laid out in split folders.
ALL_SPLIT = "all"
# Files of one work unit: bounded in count and bytes, so a worker's batch fits in memory.
UNIT_MAX_FILES = 256
UNIT_MAX_BYTES = 64 * 2**20


class ImageFolderError(ValueError):
    """The data root cannot produce a training set; the message says what to fix."""


class ImageFile(NamedTuple):
    """One candidate image: path relative to the data root, class name, input split, bytes.

    A NamedTuple: listings hold one per image, and they are made fast.
    """

    relative_path: str
    label: str
    split: str
    size: int = -1  # -1: unknown (remote file systems are not stat'ed)


class RecordFile(NamedTuple):
    """One TFRecord file: path relative to the data root, input split, bytes."""

    relative_path: str
    split: str
    size: int = -1


@dataclass(frozen=True)
class Layout:
    """How a data root is read: its format and the input splits with their patterns.

    ``hash_splits`` is empty when the root's own split folders give train and eval;
    otherwise the ``train`` (or only) input split is partitioned by hash into them.
    """

    data_format: str
    splits: tuple[tuple[str, str], ...]  # (input split name, pattern relative to the root)
    hash_splits: tuple[tuple[str, int], ...]
    notes: tuple[str, ...] = ()


@dataclass
class Listing:
    """What the listing found for one or more input splits."""

    images: list[ImageFile] = field(default_factory=list)
    records: list[RecordFile] = field(default_factory=list)
    facts: Facts = field(default_factory=Facts)

    def extend(self, other: Listing) -> Listing:
        """Adds ``other`` into this listing; returns self."""
        self.images.extend(other.images)
        self.records.extend(other.records)
        self.facts.merge(other.facts)
        return self


# --- File systems -----------------------------------------------------------------------


def is_remote(path: str) -> bool:
    """True for URIs such as gs://bucket/x, read through tf.io.gfile."""
    return "://" in path


class _Entry(NamedTuple):
    name: str
    path: str  # full path
    is_dir: bool
    is_symlink: bool
    size: int


def _scan(folder: str) -> list[_Entry]:
    """Entries of ``folder`` sorted by name, symlinks not followed."""
    if is_remote(folder):
        import tensorflow as tf  # only for remote roots

        entries = []
        for name in tf.io.gfile.listdir(folder):
            is_dir = name.endswith("/")
            name = name.rstrip("/")
            path = posixpath.join(folder, name)
            is_dir = is_dir or tf.io.gfile.isdir(path)
            entries.append(_Entry(name, path, is_dir, False, -1))
        return sorted(entries, key=lambda e: e.name)
    entries = []
    with os.scandir(folder) as it:
        for e in it:
            is_symlink = e.is_symlink()
            is_dir = not is_symlink and e.is_dir(follow_symlinks=False)
            size = -1
            if not is_dir and not is_symlink:
                try:
                    size = e.stat(follow_symlinks=False).st_size
                except OSError:
                    size = -1
            entries.append(_Entry(e.name, e.path, is_dir, is_symlink, size))
    entries.sort(key=lambda e: e.name)
    return entries


def _is_dir(path: str) -> bool:
    if is_remote(path):
        import tensorflow as tf  # only for remote roots

        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)


def _exists(path: str) -> bool:
    if is_remote(path):
        import tensorflow as tf  # only for remote roots

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def _join(root: str, relative: str) -> str:
    return posixpath.join(root, relative) if is_remote(root) else os.path.join(root, relative)


def read_bytes(path: str) -> bytes:
    """The bytes of a local or remote file."""
    if is_remote(path):
        import tensorflow as tf  # only for remote roots

        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def _inside(path: str, real_root: str) -> bool:
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _relative(path: str, root: str) -> str:
    """``path`` relative to ``root``, with ``/`` separators (paths come from scanning root)."""
    separator = "/" if is_remote(root) else os.sep
    prefix = root.rstrip("/" + separator) + separator
    relative = path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root)
    return relative if separator == "/" else relative.replace(separator, "/")


# --- Labels -----------------------------------------------------------------------------


def normalize_label(raw: str) -> str:
    """A class name as stored: Unicode NFC (macOS writes folder names in NFD), no outer spaces.

    Spaces inside and non-ASCII letters are kept. Raises SkippedInputError for an empty label or
    one with control characters, which would break the label vocabulary file.
    """
    label = unicodedata.normalize("NFC", raw).strip()
    if not label:
        raise SkippedInputError(report.EMPTY_LABEL)
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in label):
        raise SkippedInputError(report.BAD_LABEL, f"label {label!r} holds control characters")
    return label


def read_labels_file(root: str, labels_file: str) -> list[str] | None:
    """Class names for integer labels: line i names label i.

    ``labels_file`` is relative to the root; empty means ``labels.txt`` in the root if it
    exists, else None (integer labels are then kept as their decimal strings).
    """
    path = _join(root, labels_file or DEFAULT_LABELS_FILE)
    if not labels_file and not _exists(path):
        return None
    try:
        text = read_bytes(path).decode("utf-8-sig")
    except Exception as err:  # OSError, UnicodeDecodeError, tf.errors.NotFoundError
        raise ImageFolderError(f"labels_file: cannot read {path}: {err}") from None
    names = text.splitlines()
    while names and not names[-1].strip():
        names.pop()
    labels = []
    for i, name in enumerate(names):
        try:
            labels.append(normalize_label(name))
        except SkippedInputError as err:
            raise ImageFolderError(f"labels_file {path}: line {i + 1}: {err}") from None
    if len(set(labels)) != len(labels):
        raise ImageFolderError(f"labels_file {path}: class names repeat")
    return labels


# --- Layout -----------------------------------------------------------------------------


def is_tfrecord_name(name: str) -> bool:
    """Whether a file name looks like a TFRecord file (optionally gzipped)."""
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
        if "tfrecord" in lower:
            return True
    return lower.endswith(TFRECORD_SUFFIXES)


def split_folders(root: str) -> dict[str, str]:
    """Split name -> folder name of the split folders directly under ``root``.

    Raises ImageFolderError if two folders name the same split (e.g. val/ and validation/).
    """
    found: dict[str, str] = {}
    for entry in _scan(root):
        split = SPLIT_FOLDER_NAMES.get(entry.name.lower())
        if split is None or not (entry.is_dir or (entry.is_symlink and _is_dir(entry.path))):
            continue
        if split in found:
            raise ImageFolderError(
                f"{root} holds both {found[split]}/ and {entry.name}/, which both mean the "
                f"'{split}' split; merge or rename one"
            )
        found[split] = entry.name
    return found


def detect_layout(root: str, options: IngestOptions) -> Layout:
    """Reads the top of ``root`` and decides the format and the input splits.

    Split folders are used when ``root`` holds a ``train/`` folder (and
    ``options.use_split_folders``). Without an eval folder, ``train/`` is partitioned by a
    hash of each image's bytes into train and eval (and test with ``test_fraction``, unless
    a ``test/`` folder exists).
    """
    if not _is_dir(root):
        raise ImageFolderError(f"data root {root} is not a folder")
    if options.manifest or options.data_format == "manifest":
        manifest = manifest_relative_path(root, options.manifest)
        return Layout(
            "manifest",
            ((ALL_SPLIT, manifest),),
            tuple(hash_split_buckets(options.eval_fraction, options.test_fraction)),
        )
    folders = split_folders(root)
    notes: list[str] = []
    data_format = options.data_format
    if data_format == "auto":
        probe = _join(root, folders[TRAIN_SPLIT]) if TRAIN_SPLIT in folders else root
        has_records = any(not e.is_dir and is_tfrecord_name(e.name) for e in _scan(probe))
        data_format = "tfrecord" if has_records else "folders"
    if TRAIN_SPLIT not in folders:
        return Layout(
            data_format,
            ((ALL_SPLIT, "*"),),
            tuple(hash_split_buckets(options.eval_fraction, options.test_fraction)),
        )
    if not options.use_split_folders:
        notes.append(
            f"split folders {', '.join(sorted(folders.values()))} pooled and split by hash "
            "(use_split_folders is off)"
        )
        return Layout(
            data_format,
            ((ALL_SPLIT, "*/*"),),
            tuple(hash_split_buckets(options.eval_fraction, options.test_fraction)),
            tuple(notes),
        )
    splits = tuple((split, f"{folders[split]}/*") for split in sorted(folders, key=_split_order))
    others = sorted(
        e.name + "/"
        for e in _scan(root)
        if e.is_dir and not e.name.startswith(".") and e.name not in folders.values()
    )
    if others:
        notes.append(f"folders beside the split folders are not read: {', '.join(others)}")
    hash_splits: tuple[tuple[str, int], ...] = ()
    if EVAL_SPLIT not in folders:
        test_fraction = options.test_fraction
        if TEST_SPLIT in folders and test_fraction:
            notes.append(
                f"test_fraction ignored: the {folders[TEST_SPLIT]}/ folder is the test split"
            )
            test_fraction = 0.0
        hash_splits = tuple(hash_split_buckets(options.eval_fraction, test_fraction))
    elif options.test_fraction:
        notes.append("test_fraction ignored: the root's split folders are kept as they are")
    return Layout(data_format, splits, hash_splits, tuple(notes))


def _split_order(split: str) -> int:
    return (TRAIN_SPLIT, EVAL_SPLIT, TEST_SPLIT).index(split)


def manifest_relative_path(root: str, manifest: str) -> str:
    """The manifest's path relative to ``root``; it must be a file inside the root."""
    if not manifest:
        raise ImageFolderError("manifest: no manifest file given for data_format 'manifest'")
    if is_remote(root) or not os.path.isabs(manifest):
        relative = posixpath.normpath(manifest.replace("\\", "/"))
    else:
        relative = os.path.relpath(manifest, root).replace(os.sep, "/")
    if relative.startswith("../") or relative == ".." or posixpath.isabs(relative):
        raise ImageFolderError(f"manifest: {manifest} is not inside the data root {root}")
    return relative


# --- Listing ----------------------------------------------------------------------------


def list_split(root: str, split: str, pattern: str, data_format: str, options: IngestOptions):
    """Lists the inputs of one input split; returns a Listing with skips recorded."""
    if data_format == "manifest":
        return read_manifest(
            root, pattern, options.manifest_path_column, options.manifest_label_column, split
        )
    parent_pattern, leaf = posixpath.split(pattern)
    listing = Listing()
    real_root = os.path.realpath(root) if not is_remote(root) else root
    for parent in _expand_folders(root, parent_pattern, listing.facts, real_root):
        for entry in _scan(parent):
            relative = _relative(entry.path, root)
            if entry.name.startswith("."):
                listing.facts.skip(relative + ("/" if entry.is_dir else ""), report.HIDDEN_FILE)
                continue
            if not fnmatch.fnmatchcase(entry.name, leaf):
                continue
            entry = _resolve_symlink(entry, relative, real_root, listing.facts)
            if entry is None:
                continue
            if data_format == "tfrecord":
                if entry.is_dir:
                    listing.facts.skip(relative + "/", report.NOT_A_TFRECORD_FILE, "a folder")
                elif is_tfrecord_name(entry.name):
                    listing.records.append(RecordFile(relative, split, entry.size))
                else:
                    listing.facts.skip(relative, report.NOT_A_TFRECORD_FILE)
            elif entry.is_dir:
                listing.extend(_list_class_folder(root, entry.path, split, real_root))
            else:
                listing.facts.skip(relative, report.NOT_IN_A_CLASS_FOLDER)
    return listing


def _expand_folders(root: str, parent_pattern: str, facts: Facts, real_root: str) -> list[str]:
    """The folders a pattern's directory part matches ('' is the root, '*' every folder)."""
    if not parent_pattern:
        return [root]
    if not any(ch in parent_pattern for ch in "*?["):
        folder = _join(root, parent_pattern)
        if not _is_dir(folder):
            raise ImageFolderError(f"input folder {folder} does not exist")
        return [folder]
    folders = []
    for parent in _expand_folders(root, posixpath.dirname(parent_pattern), facts, real_root):
        for entry in _scan(parent):
            if entry.name.startswith(".") or not fnmatch.fnmatchcase(
                entry.name, posixpath.basename(parent_pattern)
            ):
                continue
            resolved = _resolve_symlink(entry, _relative(entry.path, root), real_root, facts)
            if resolved is not None and resolved.is_dir:
                folders.append(entry.path)
    return folders


def _resolve_symlink(entry: _Entry, relative: str, real_root: str, facts: Facts) -> _Entry | None:
    """A symlink's target as an entry if it stays inside the root; None (skip recorded) if not.

    Links to folders are not followed (they could loop or repeat images).
    """
    if not entry.is_symlink:
        return entry
    if not _inside(entry.path, real_root):
        facts.skip(relative, report.OUTSIDE_ROOT, f"symlink to {os.path.realpath(entry.path)}")
        return None
    if os.path.isdir(entry.path):
        facts.skip(relative + "/", report.SYMLINKED_FOLDER)
        return None
    try:
        size = os.stat(entry.path).st_size
    except OSError:
        facts.skip(relative, report.MISSING_FILE, "broken symbolic link")
        return None
    return _Entry(entry.name, entry.path, False, False, size)


def _list_class_folder(root: str, folder: str, split: str, real_root: str) -> Listing:
    listing = Listing()
    class_relative = _relative(folder, root)
    try:
        label = normalize_label(os.path.basename(folder.rstrip("/")))
    except SkippedInputError as err:
        label_error: SkippedInputError | None = err
        label = ""
    else:
        label_error = None
    found = 0
    for relative, name, size in _walk(folder, class_relative, real_root, listing.facts):
        _, dot, extension = name.rpartition(".")
        if not dot or f".{extension.lower()}" not in IMAGE_EXTENSIONS:
            listing.facts.skip(relative, report.NOT_AN_IMAGE_FILE)
        elif label_error is not None:
            listing.facts.skip(relative, label_error.reason, label_error.detail)
        else:
            listing.images.append(ImageFile(relative, label, split, size))
            found += 1
    if not found:
        listing.facts.notes.append(f"empty class folder {class_relative}/ (no image files)")
    return listing


def _walk(
    folder: str, relative_folder: str, real_root: str, facts: Facts
) -> Iterator[tuple[str, str, int]]:
    """(relative path, name, size) of the files under ``folder``, recursively and sorted,
    with hidden entries and symlinks handled."""
    for entry in _scan(folder):
        relative = f"{relative_folder}/{entry.name}"
        if entry.name.startswith("."):
            facts.skip(relative + ("/" if entry.is_dir else ""), report.HIDDEN_FILE)
            continue
        if entry.is_symlink:
            resolved = _resolve_symlink(entry, relative, real_root, facts)
            if resolved is not None:
                yield relative, resolved.name, resolved.size
        elif entry.is_dir:
            yield from _walk(entry.path, relative, real_root, facts)
        else:
            yield relative, entry.name, entry.size


def read_manifest(
    root: str, manifest: str, path_column: str, label_column: str, split: str = ALL_SPLIT
) -> Listing:
    """Reads a CSV (or TSV: ``.tsv``/``.tab``) manifest with a header row.

    Paths are relative to the manifest's folder (``\\`` is read as ``/``) and must stay
    inside the root; absolute paths, ``..`` escapes, symlinks out of the root, missing files,
    empty labels and repeated paths are skipped with their reason.
    """
    manifest_path = _join(root, manifest)
    try:
        text = read_bytes(manifest_path).decode("utf-8-sig")
    except Exception as err:  # OSError, UnicodeDecodeError, tf.errors.NotFoundError
        raise ImageFolderError(f"manifest: cannot read {manifest_path}: {err}") from None
    delimiter = "\t" if manifest.lower().endswith((".tsv", ".tab")) else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in (path_column, label_column) if c not in header]
    if missing:
        raise ImageFolderError(
            f"manifest {manifest_path}: no column {', '.join(repr(c) for c in missing)}; its "
            f"header has {', '.join(repr(h) for h in header) or 'nothing'}. Set "
            "manifest_path_column / manifest_label_column"
        )
    path_index, label_index = header.index(path_column), header.index(label_column)
    base = posixpath.dirname(manifest)
    remote = is_remote(root)
    real_root = root if remote else os.path.realpath(root)
    listing = Listing()
    seen: dict[str, str] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        raw_path = row[path_index].strip() if path_index < len(row) else ""
        raw_label = row[label_index] if label_index < len(row) else ""
        where = f"{manifest} line {line}"
        if not raw_path:
            listing.facts.skip(f"{manifest}:{line}", report.BAD_MANIFEST_ROW, f"{where}: no path")
            continue
        path = raw_path.replace("\\", "/")
        if posixpath.isabs(path) or is_remote(path) or (len(path) > 1 and path[1] == ":"):
            listing.facts.skip(raw_path, report.OUTSIDE_ROOT, f"{where}: absolute path")
            continue
        relative = posixpath.normpath(posixpath.join(base, path))
        if relative == ".." or relative.startswith("../"):
            listing.facts.skip(raw_path, report.OUTSIDE_ROOT, f"{where}: leaves the data root")
            continue
        try:
            label = normalize_label(raw_label)
        except SkippedInputError as err:
            listing.facts.skip(relative, err.reason, f"{where}: {err.detail}".rstrip(": "))
            continue
        if relative in seen:
            same = "same label" if seen[relative] == label else f"first label {seen[relative]!r}"
            listing.facts.skip(
                relative, report.DUPLICATE_MANIFEST_ROW, f"{where}: listed before ({same})"
            )
            continue
        seen[relative] = label
        size = -1
        if not remote:
            full = os.path.join(root, relative)
            if not _inside(full, real_root):
                listing.facts.skip(
                    relative, report.OUTSIDE_ROOT, f"{where}: symlink to {os.path.realpath(full)}"
                )
                continue
            try:
                size = os.stat(full).st_size
            except OSError:
                listing.facts.skip(relative, report.MISSING_FILE, where)
                continue
        listing.images.append(ImageFile(relative, label, split, size))
    return listing


def check_listing(listing: Listing, root: str, data_format: str) -> None:
    """Fails early, before any Beam work, when the inputs cannot make a training set."""
    if data_format == "tfrecord":
        if not listing.records:
            raise ImageFolderError(
                f"no TFRecord files found under {root}; expected files named *.tfrecord, "
                "*.tfrecords, *.tfrec (optionally .gz) in the root or in split folders"
            )
        return
    if not listing.images:
        raise ImageFolderError(
            f"no image files found under {root}; expected one subfolder per class holding "
            f"image files ({', '.join(sorted(IMAGE_EXTENSIONS))}), or a manifest"
        )
    classes = sorted({f.label for f in listing.images})
    if len(classes) < 2:
        raise ImageFolderError(
            f"only one class ({classes[0]!r}) found under {root}; a classifier needs at "
            "least two classes"
        )


def work_units(
    images: list[ImageFile],
    max_files: int = UNIT_MAX_FILES,
    max_bytes: int = UNIT_MAX_BYTES,
    min_units: int = 16,
) -> list[list[ImageFile]]:
    """Groups images into work units for the Beam workers.

    Units hold at most ``max_files`` files and ``max_bytes`` bytes, and small datasets are
    cut into at least ``min_units`` units so every worker gets some. The order is a hash of
    the path, so units (and the records written) mix the classes instead of following them.
    """
    ordered = sorted(images, key=lambda f: (_path_hash(f.relative_path), f.relative_path))
    per_unit = max(1, min(max_files, -(-len(ordered) // min_units)))
    units: list[list[ImageFile]] = []
    current: list[ImageFile] = []
    current_bytes = 0
    for image in ordered:
        size = max(image.size, 0)
        if current and (len(current) >= per_unit or current_bytes + size > max_bytes):
            units.append(current)
            current, current_bytes = [], 0
        current.append(image)
        current_bytes += size
    if current:
        units.append(current)
    return units


def _path_hash(path: str) -> int:
    return zlib.crc32(path.encode("utf-8", "surrogateescape"))
