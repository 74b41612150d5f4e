"""A CSV/TSV manifest: a header row, a path column and a label column.

Paths are relative to the manifest's folder and must stay inside the data root. The whole
manifest is one input split, partitioned by hash.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import stat
from collections.abc import Iterator
from typing import Any

from components.image_example_gen import image_files, report
from components.image_example_gen.formats.base import InputFormat
from components.image_example_gen.image_files import (
    ALL_SPLIT,
    ImageFile,
    ImageFolderError,
    Layout,
    Listing,
)
from components.image_example_gen.options import IngestOptions, hash_split_buckets
from components.image_example_gen.report import Facts, Reason, SkippedInputError

BAD_MANIFEST_ROW = "bad_manifest_row"
DUPLICATE_MANIFEST_ROW = "duplicate_manifest_row"


class ManifestFormat(InputFormat):
    """Rows of a CSV/TSV file (``options.manifest``)."""

    name = "manifest"
    skip_reasons = (
        Reason(
            BAD_MANIFEST_ROW,
            True,
            "manifest row without a path, unreadable as a row (NUL byte, field over 128 kB, "
            "swallowed by an unclosed quote), or whose path is not a file name",
        ),
        Reason(DUPLICATE_MANIFEST_ROW, True, "the manifest lists this path again (first kept)"),
    )

    def detect(self, root: str, folders: dict[str, str], options: IngestOptions) -> bool:
        return bool(options.manifest)

    def layout(self, root: str, options: IngestOptions) -> Layout:
        return Layout(
            self.name,
            ((ALL_SPLIT, manifest_relative_path(root, options.manifest)),),
            tuple(hash_split_buckets(options.eval_fraction, options.test_fraction)),
        )

    def list_split(self, root: str, split: str, pattern: str, options: IngestOptions) -> Listing:
        return read_manifest(
            root, pattern, options.manifest_path_column, options.manifest_label_column, split
        )

    def describe_source(self, pattern: str) -> str:
        return f"manifest {pattern}"

    def preflight(self, root: str, layout: Layout, options: IngestOptions) -> None:
        """The manifest exists (local roots) and its header names both columns."""
        [(_, manifest)] = layout.splits
        path = image_files.join_path(root, manifest)
        if image_files.is_remote(root):
            return
        if not os.path.isfile(path):
            raise ImageFolderError(f"manifest: {path} is not a file")
        with open(path, "rb") as f:
            first_line = f.readline(1 << 20)
        _check_header(
            _read_header(_reader(first_line.decode("utf-8-sig", "replace"), manifest), path),
            options.manifest_path_column,
            options.manifest_label_column,
            path,
        )


def manifest_relative_path(root: str, manifest: str) -> str:
    """The manifest's path relative to ``root``; it must be a file inside the root."""
    if not manifest:
        raise ImageFolderError("manifest: no manifest file given for data_format 'manifest'")
    if image_files.is_remote(root) or not os.path.isabs(manifest):
        relative = posixpath.normpath(manifest.replace("\\", "/"))
    else:
        relative = os.path.relpath(manifest, root).replace(os.sep, "/")
    if relative.startswith("../") or relative == ".." or posixpath.isabs(relative):
        raise ImageFolderError(f"manifest: {manifest} is not inside the data root {root}")
    return relative


def read_manifest(
    root: str, manifest: str, path_column: str, label_column: str, split: str = ALL_SPLIT
) -> Listing:
    """Reads a CSV (or TSV: ``.tsv``/``.tab``) manifest with a header row.

    Paths are relative to the manifest's folder (``\\`` is read as ``/``) and must stay
    inside the root; absolute paths, ``..`` escapes, symlinks out of the root, missing files,
    empty labels and repeated paths are skipped with their reason.
    """
    manifest_path = image_files.join_path(root, manifest)
    try:
        text = image_files.read_bytes(manifest_path).decode("utf-8-sig")
    except Exception as err:  # OSError, UnicodeDecodeError, tf.errors.NotFoundError
        raise ImageFolderError(f"manifest: cannot read {manifest_path}: {err}") from None
    reader = _reader(text, manifest)
    header = _read_header(reader, manifest_path)
    _check_header(header, path_column, label_column, manifest_path)
    path_index, label_index = header.index(path_column), header.index(label_column)
    base = posixpath.dirname(manifest)
    remote = image_files.is_remote(root)
    real_root = root if remote else os.path.realpath(root)
    listing = Listing()
    seen: dict[str, str] = {}
    for first, line, row in _rows(reader, manifest, listing.facts):
        if not any(cell.strip() for cell in row):
            continue
        raw_path = row[path_index].strip() if path_index < len(row) else ""
        raw_label = row[label_index] if label_index < len(row) else ""
        if line > first and any("\n" in c or "\r" in c for c in (raw_path, raw_label)):
            # A quote opened on line FIRST and closed (or not) on line LINE: the rows between
            # are inside one field. Count every line it swallowed as a bad row.
            _skip_lines(
                listing.facts,
                manifest,
                first,
                line,
                f"a quoted field opened on line {first} runs to line {line} (an unclosed "
                "quote?); the lines it swallowed are bad rows",
            )
            continue
        where = f"{manifest} line {line}"
        if not raw_path:
            listing.facts.skip(f"{manifest}:{line}", BAD_MANIFEST_ROW, f"{where}: no path")
            continue
        if not raw_path.isprintable():
            listing.facts.skip(
                f"{manifest}:{line}",
                BAD_MANIFEST_ROW,
                f"{where}: the path holds a NUL byte or another control character",
            )
            continue
        path = raw_path.replace("\\", "/")
        if (
            posixpath.isabs(path)
            or image_files.is_remote(path)
            or (len(path) > 1 and path[1] == ":")
        ):
            listing.facts.skip(raw_path, report.OUTSIDE_ROOT, f"{where}: absolute path")
            continue
        relative = posixpath.normpath(posixpath.join(base, path))
        if relative == ".." or relative.startswith("../"):
            listing.facts.skip(raw_path, report.OUTSIDE_ROOT, f"{where}: leaves the data root")
            continue
        try:
            label = image_files.normalize_label(raw_label)
        except SkippedInputError as err:
            listing.facts.skip(relative, err.reason, f"{where}: {err.detail}".rstrip(": "))
            continue
        if relative in seen:
            same = "same label" if seen[relative] == label else f"first label {seen[relative]!r}"
            listing.facts.skip(relative, DUPLICATE_MANIFEST_ROW, f"{where}: listed before ({same})")
            continue
        seen[relative] = label
        size = -1
        if not remote:
            full = os.path.join(root, relative)
            if not image_files.inside_root(full, real_root):
                listing.facts.skip(
                    relative, report.OUTSIDE_ROOT, f"{where}: symlink to {os.path.realpath(full)}"
                )
                continue
            try:
                status = os.stat(full)
            except OSError:
                listing.facts.skip(relative, report.MISSING_FILE, where)
                continue
            if not stat.S_ISREG(status.st_mode):  # '.', 'img/', a device...
                listing.facts.skip(
                    f"{manifest}:{line}", BAD_MANIFEST_ROW, f"{where}: {raw_path} is not a file"
                )
                continue
            size = status.st_size
        listing.images.append(ImageFile(relative, label, split, size))
    return listing


def _reader(text: str, manifest: str) -> Any:
    delimiter = "\t" if manifest.lower().endswith((".tsv", ".tab")) else ","
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)


def _read_header(reader: Any, manifest_path: str) -> list[str]:
    try:
        return [h.strip() for h in next(reader, [])]
    except csv.Error as err:
        raise ImageFolderError(
            f"manifest {manifest_path}: the header row (line 1) cannot be read: {err}"
        ) from None


def _check_header(header: list[str], path_column: str, label_column: str, path: str) -> None:
    missing = [c for c in (path_column, label_column) if c not in header]
    if missing:
        raise ImageFolderError(
            f"manifest {path}: no column {', '.join(repr(c) for c in missing)}; its "
            f"header has {', '.join(repr(h) for h in header) or 'nothing'}. Set "
            "manifest_path_column / manifest_label_column"
        )


def _rows(reader: Any, manifest: str, facts: Facts) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, cells) of each row; a row the csv module rejects (a NUL byte,
    a field over its 128 kB limit) is recorded as bad rows, one per line, and reading goes on
    with the next line."""
    last = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            first, last = last + 1, reader.line_num
            _skip_lines(facts, manifest, first, last, str(err))
            continue
        first, last = last + 1, reader.line_num
        yield first, last, row


def _skip_lines(facts: Facts, manifest: str, first: int, last: int, why: str) -> None:
    """Records lines FIRST..LAST of the manifest as bad rows."""
    for line in range(first, max(first, last) + 1):
        where = f"{manifest} line {line}"
        detail = why if line == first else f"inside the row that starts on line {first}: {why}"
        facts.skip(f"{manifest}:{line}", BAD_MANIFEST_ROW, f"{where}: {detail}")


FORMAT = ManifestFormat()
