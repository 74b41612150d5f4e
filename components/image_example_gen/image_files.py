"""Finding and checking image files: pure Python, no Beam, no TensorFlow.

Kept apart from the Beam executor so the rules (which files count, what makes one bad)
are unit-testable and shared by every input shape.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

# Formats tf.io.decode_image reads, so Transform and the serving graph can decode them.
ACCEPTED_FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "BMP": "bmp"}
# Extensions looked at; anything else in a class folder is ignored (README, .DS_Store...).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
_CHANNELS_BY_MODE = {
    "1": 1,
    "L": 1,
    "I;16": 1,
    "I": 1,
    "F": 1,
    "P": 3,
    "RGB": 3,
    "YCbCr": 3,
    "LA": 2,
    "PA": 2,
    "RGBA": 4,
    "CMYK": 4,
}


class ImageFolderError(ValueError):
    """The data folder cannot produce a training set; the message says what to fix."""


@dataclass(frozen=True)
class ImageFile:
    """One candidate image: its path relative to the data root and its class name."""

    relative_path: str
    label: str


@dataclass(frozen=True)
class ImageInfo:
    """What a readable image file is, read from its header without re-encoding it."""

    format: str  # lower-case, as the ``image_format`` feature holds it
    height: int
    width: int
    channels: int


def list_image_files(root: str) -> list[ImageFile]:
    """Lists ``root/<class>/**/<image>`` files, sorted by path, skipping hidden entries.

    Raises ImageFolderError if ``root`` holds no image files or fewer than two classes.
    """
    if not os.path.isdir(root):
        raise ImageFolderError(f"data root {root} is not a folder")
    files: list[ImageFile] = []
    for class_name in sorted(os.listdir(root)):
        class_dir = os.path.join(root, class_name)
        if class_name.startswith(".") or not os.path.isdir(class_dir):
            continue
        for path in _walk_files(class_dir):
            if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
                files.append(
                    ImageFile(os.path.relpath(path, root).replace(os.sep, "/"), class_name)
                )
    if not files:
        raise ImageFolderError(
            f"no image files found under {root}; expected one subfolder per class holding "
            f"image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    classes = sorted({f.label for f in files})
    if len(classes) < 2:
        raise ImageFolderError(
            f"only one class ({classes[0]!r}) found under {root}; a classifier needs at "
            "least two class subfolders"
        )
    return sorted(files, key=lambda f: f.relative_path)


def _walk_files(folder: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield os.path.join(dirpath, name)


def inspect_image(data: bytes) -> ImageInfo:
    """Reads format and size from encoded bytes; raises ValueError with the reason if unusable."""
    if not data:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or ""
            width, height = image.size
            mode = image.mode
            image.verify()  # Checks structure and checksums without decoding all pixels.
    except Exception as err:  # PIL raises many types for corrupt data.
        raise ValueError(f"not a readable image ({type(err).__name__}: {err})") from None
    if image_format not in ACCEPTED_FORMATS:
        raise ValueError(
            f"unsupported format {image_format or 'unknown'}; accepted: "
            f"{', '.join(sorted(ACCEPTED_FORMATS))}"
        )
    return ImageInfo(ACCEPTED_FORMATS[image_format], height, width, _CHANNELS_BY_MODE.get(mode, 3))
