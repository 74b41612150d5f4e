"""The reader interface every input format implements: detect, lay out, list, cut, read.

A format is one module in this package with one ``InputFormat`` subclass, and one entry in
``formats.FORMATS``. The driver side (listing, pure Python) and the worker side (reading,
may import TensorFlow inside the method) meet in JSON work units, so a unit travels to any
Beam worker as one line of text.

    detect(root, folders, options)   does `data_format: auto` pick this format?
    layout(root, options)            input splits and their patterns (+ hash splits)
    preflight(root, layout, options) cheap checks for config validation and --dry-run
    list_split(root, split, pattern, options) -> Listing   candidates and listing skips
    check_listing(listing, root)     fail early, before Beam, on an unusable root
    prepare(root, options, facts)    driver-side state every worker needs (e.g. labels)
    work_units(listing)              JSON-compatible units for the Beam workers
    read(unit, context)              (items, facts) chunks: original bytes + label + split
    skip_reasons                     the format's own skip reasons (report.Reason)
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from components.image_example_gen import image_files, report
from components.image_example_gen.image_files import Layout, Listing
from components.image_example_gen.options import IngestOptions
from components.image_example_gen.report import Facts, Reason


def clean_tf_error(err: Exception) -> str:
    """The first line of a TensorFlow error without its op and function decorations."""
    text = str(getattr(err, "message", "") or err).strip().splitlines()[0]
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:\w+\]", "", text).strip()


@dataclass(frozen=True)
class Item:
    """One input image as read: its id, label, input split and original bytes."""

    image_id: str
    label: str
    split: str
    data: bytes


@dataclass(frozen=True)
class ReadContext:
    """What a worker knows when it reads a unit: the root, the options, ``prepare``'s state."""

    root: str
    options: IngestOptions
    state: Any = None


class InputFormat:
    """One input format. Subclasses set ``name`` and implement ``list_split`` (and, for
    formats that are not plain image files, ``work_units`` and ``read``)."""

    name: ClassVar[str] = ""
    skip_reasons: ClassVar[tuple[Reason, ...]] = ()

    def detect(self, root: str, folders: dict[str, str], options: IngestOptions) -> bool:
        """Whether ``data_format: auto`` reads ``root`` with this format.

        ``folders`` maps split names to the split folders found directly under the root.
        """
        return False

    def layout(self, root: str, options: IngestOptions) -> Layout:
        """The input splits; by default the split-folder rules of docs/data.md."""
        return image_files.split_folder_layout(root, options, self.name)

    def list_split(self, root: str, split: str, pattern: str, options: IngestOptions) -> Listing:
        """The candidates of one input split, with the skips found while listing."""
        raise NotImplementedError

    def preflight(self, root: str, layout: Layout, options: IngestOptions) -> None:
        """Checks what a listing of the layout's top folders shows, before anything runs
        (configuration validation, ``--dry-run``); raises ImageFolderError. Must stay cheap:
        no recursive walk, no file read beyond a header."""

    def check_listing(self, listing: Listing, root: str) -> None:
        """Raises ImageFolderError when the listing cannot make a training set."""
        image_files.check_images(listing, root)

    def describe_source(self, pattern: str) -> str:
        """Where an input split's images come from, for the report."""
        folder = posixpath.dirname(pattern)
        if not folder:
            return "the data root"
        if folder == "*":
            return "all split folders, pooled"
        return f"folder {folder}/"

    def prepare(self, root: str, options: IngestOptions, facts: Facts) -> Any:
        """Driver-side state handed to every worker's ``read`` (picklable); notes go to facts."""
        return None

    def work_units(self, listing: Listing) -> list[Any]:
        """JSON-compatible work units; by default bounded groups of image files."""
        return [
            [[f.relative_path, f.label, f.split] for f in unit]
            for unit in image_files.work_units(listing.images)
        ]

    def read(self, unit: Any, context: ReadContext) -> Iterator[tuple[list[Item], Facts]]:
        """Reads one work unit: chunks of items with the facts (skips) of reading them.

        By default a unit is a list of (path, label, split) image files, read as one chunk.
        """
        facts, items = Facts(), []
        errors: tuple[type[Exception], ...] = (OSError,)
        if image_files.is_remote(context.root):
            import tensorflow as tf  # remote roots are read through tf.io.gfile

            errors = (OSError, tf.errors.OpError)
        for relative_path, label, split in unit:
            try:
                data = image_files.read_bytes(image_files.join_path(context.root, relative_path))
            except FileNotFoundError:
                facts.skip(relative_path, report.MISSING_FILE)
                continue
            except errors as err:
                facts.skip(relative_path, report.UNREADABLE, f"{type(err).__name__}: {err}")
                continue
            # The id is printable: a name's undecodable bytes cannot travel as UTF-8.
            items.append(Item(report.printable(relative_path), label, split, data))
        yield items, facts
