"""The input formats of ImageExampleGen: one module each, one table.

``FORMATS`` is the one table the component, the executor and the Beam workers dispatch
through; its order is the order in which ``data_format: auto`` tries the formats (the last
one, folders, always matches). Adding a format is one module with an ``InputFormat``
subclass (see ``base.py``) and one entry here.

Pure Python at import (no Beam, no TensorFlow): the pipeline configuration imports it.
"""

from __future__ import annotations

from components.image_example_gen import report
from components.image_example_gen.formats import folders, manifest, tfrecord
from components.image_example_gen.formats.base import InputFormat, Item, ReadContext
from components.image_example_gen.image_files import ImageFolderError, Layout, is_dir, split_folders
from components.image_example_gen.options import IngestOptions

FORMATS: dict[str, InputFormat] = {
    f.name: f for f in (manifest.FORMAT, tfrecord.FORMAT, folders.FORMAT)
}
AUTO = "auto"
DATA_FORMATS = (AUTO, *sorted(FORMATS))

for _format in FORMATS.values():
    report.register_reasons(_format.skip_reasons)

__all__ = [
    "DATA_FORMATS",
    "FORMATS",
    "InputFormat",
    "Item",
    "ReadContext",
    "detect_layout",
    "get_format",
    "preflight",
]


def get_format(name: str) -> InputFormat:
    """The format called ``name``; ValueError naming data_format if there is none."""
    if name not in FORMATS:
        raise ValueError(f"data_format: {name!r} is not one of {', '.join(DATA_FORMATS)}")
    return FORMATS[name]


def resolve_format(root: str, options: IngestOptions) -> InputFormat:
    """The format ``options.data_format`` names, or the first one that detects ``root``."""
    if options.data_format != AUTO:
        return get_format(options.data_format)
    found = split_folders(root)
    return next(f for f in FORMATS.values() if f.detect(root, found, options))


def detect_layout(root: str, options: IngestOptions) -> Layout:
    """Reads the top of ``root``: the format and the input splits with their patterns."""
    if not root:
        raise ImageFolderError("data root: empty; give the folder that holds the images")
    if not is_dir(root):
        raise ImageFolderError(f"data root {root} is not a folder")
    return resolve_format(root, options).layout(root, options)


def preflight(root: str, options: IngestOptions) -> Layout:
    """The layout, after the checks one listing of the root's top can make (for config
    validation and ``--dry-run``); raises ImageFolderError naming what to fix."""
    layout = detect_layout(root, options)
    get_format(layout.data_format).preflight(root, layout, options)
    return layout
