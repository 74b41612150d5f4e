"""Listing the inputs under a data root: the rules every input format shares.

Pure Python, no Beam: file systems, labels, split folders, symlinks, hidden files, work
units and the early checks, unit-testable and used by the format modules in ``formats/``
(one per input shape: class folders, a CSV/TSV manifest, TFRecords). Local paths use
``os``; remote roots (``gs://``, ``s3://``...) go through ``tf.io.gfile``, imported only
when one is used.

Split folders: ``ROOT/<split>/...`` with ``train/``, ``val/``/``valid/``/``validation/``/
``eval/`` and ``test/``.
"""

from __future__ import annotations

import fnmatch
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
    """One file that holds many images (a TFRecord file): path relative to the root, input
    split, bytes."""

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


def is_dir(path: str) -> bool:
    """Whether a local or remote path is a folder."""
    if is_remote(path):
        import tensorflow as tf  # only for remote roots

        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)


def exists(path: str) -> bool:
    """Whether a local or remote path exists."""
    if is_remote(path):
        import tensorflow as tf  # only for remote roots

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def join_path(root: str, relative: str) -> str:
    """``relative`` under ``root``, for local and remote roots."""
    return posixpath.join(root, relative) if is_remote(root) else os.path.join(root, relative)


def read_bytes(path: str) -> bytes:
    """The bytes of a local or remote file."""
    if is_remote(path):
        import tensorflow as tf  # only for remote roots

        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def inside_root(path: str, real_root: str) -> bool:
    """Whether ``path``, symlinks resolved, is ``real_root`` or inside it."""
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def relative_path(path: str, root: str) -> str:
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
    # Cc: control characters; Cs: undecodable bytes of a file name; Zl/Zp: line and paragraph
    # separators, which split the vocabulary file's lines for Python readers.
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in label):
        raise SkippedInputError(report.BAD_LABEL, f"label {label!r} holds control characters")
    return label


# --- Layout -----------------------------------------------------------------------------


def split_folders(root: str) -> dict[str, str]:
    """Split name -> folder name of the split folders directly under ``root``.

    Raises ImageFolderError if two folders name the same split (e.g. val/ and validation/).
    """
    found: dict[str, str] = {}
    for entry in _scan(root):
        split = SPLIT_FOLDER_NAMES.get(entry.name.lower())
        if split is None or not (entry.is_dir or (entry.is_symlink and is_dir(entry.path))):
            continue
        if split in found:
            raise ImageFolderError(
                f"{root} holds both {found[split]}/ and {entry.name}/, which both mean the "
                f"'{split}' split; merge or rename one"
            )
        found[split] = entry.name
    return found


def split_folder_layout(root: str, options: IngestOptions, data_format: str) -> Layout:
    """The input splits of a root read folder by folder (class folders, TFRecord files).

    Split folders are used when ``root`` holds a ``train/`` folder (and
    ``options.use_split_folders``). Without an eval folder, ``train/`` is partitioned by a
    hash of each image's bytes into train and eval (and test with ``test_fraction``, unless
    a ``test/`` folder exists).
    """
    folders = split_folders(root)
    notes: list[str] = []
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


def scan_files(folder: str) -> list[tuple[str, int]]:
    """(name, size) of the plain files directly in ``folder`` (for format detection)."""
    return [(e.name, e.size) for e in _scan(folder) if not e.is_dir]


# --- Listing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """One entry matched by an input split's pattern, after hidden files and symlinks."""

    path: str  # full path
    relative: str  # relative to the root, '/' separators
    name: str
    is_dir: bool
    size: int


def matching_entries(root: str, pattern: str, facts: Facts) -> Iterator[Match]:
    """The entries an input split's pattern (``*``, ``train/*``, ``*/*``) matches.

    Hidden entries are skipped as hidden_file, symlinks that leave the root as outside_root,
    symlinks to folders as symlinked_folder (all recorded in ``facts``).
    """
    parent_pattern, leaf = posixpath.split(pattern)
    real_root = os.path.realpath(root) if not is_remote(root) else root
    for parent in _expand_folders(root, parent_pattern, facts, real_root):
        for entry in _scan(parent):
            relative = relative_path(entry.path, root)
            if entry.name.startswith("."):
                facts.skip(relative + ("/" if entry.is_dir else ""), report.HIDDEN_FILE)
                continue
            if not fnmatch.fnmatchcase(entry.name, leaf):
                continue
            resolved = _resolve_symlink(entry, relative, real_root, facts)
            if resolved is not None:
                yield Match(entry.path, relative, entry.name, resolved.is_dir, resolved.size)


def _expand_folders(root: str, parent_pattern: str, facts: Facts, real_root: str) -> list[str]:
    """The folders a pattern's directory part matches ('' is the root, '*' every folder)."""
    if not parent_pattern:
        return [root]
    if not any(ch in parent_pattern for ch in "*?["):
        folder = join_path(root, parent_pattern)
        if not is_dir(folder):
            raise ImageFolderError(f"input folder {folder} does not exist")
        return [folder]
    folders = []
    for parent in _expand_folders(root, posixpath.dirname(parent_pattern), facts, real_root):
        for entry in _scan(parent):
            if entry.name.startswith(".") or not fnmatch.fnmatchcase(
                entry.name, posixpath.basename(parent_pattern)
            ):
                continue
            resolved = _resolve_symlink(entry, relative_path(entry.path, root), real_root, facts)
            if resolved is not None and resolved.is_dir:
                folders.append(entry.path)
    return folders


def _resolve_symlink(entry: _Entry, relative: str, real_root: str, facts: Facts) -> _Entry | None:
    """A symlink's target as an entry if it stays inside the root; None (skip recorded) if not.

    Links to folders are not followed (they could loop or repeat images).
    """
    if not entry.is_symlink:
        return entry
    if not inside_root(entry.path, real_root):
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


def walk_files(folder: str, root: str, facts: Facts) -> Iterator[tuple[str, str, int]]:
    """(path relative to the root, name, size) of the files under ``folder``, recursively and
    sorted, with hidden entries and symlinks handled (skips recorded in ``facts``)."""
    real_root = os.path.realpath(root) if not is_remote(root) else root
    yield from _walk(folder, relative_path(folder, root), real_root, facts)


def _walk(
    folder: str, relative_folder: str, real_root: str, facts: Facts
) -> Iterator[tuple[str, str, int]]:
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


def has_image_extension(name: str) -> bool:
    """Whether a file name ends in one of IMAGE_EXTENSIONS (any case)."""
    _, dot, extension = name.rpartition(".")
    return bool(dot) and f".{extension.lower()}" in IMAGE_EXTENSIONS


def check_images(listing: Listing, root: str) -> None:
    """Fails early, before any Beam work, when the image files cannot make a training set."""
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
