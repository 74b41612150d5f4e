"""Class folders: ``ROOT/<class>/**/<image>``, optionally inside split folders.

The folder name is the label (NFC, outer spaces stripped); images may sit in nested folders
of a class folder. The fallback of ``data_format: auto``.
"""

from __future__ import annotations

import os

from components.image_example_gen import image_files, report
from components.image_example_gen.formats.base import InputFormat
from components.image_example_gen.image_files import ImageFile, ImageFolderError, Layout, Listing
from components.image_example_gen.options import IngestOptions
from components.image_example_gen.report import Facts, Reason, SkippedInputError

NOT_IN_A_CLASS_FOLDER = "not_in_a_class_folder"


class FoldersFormat(InputFormat):
    """One subfolder per class."""

    name = "folders"
    skip_reasons = (
        Reason(NOT_IN_A_CLASS_FOLDER, False, "file beside the class folders, not inside one"),
    )

    def detect(self, root: str, folders: dict[str, str], options: IngestOptions) -> bool:
        return True  # the fallback: whatever else the root holds is reported per file

    def list_split(self, root: str, split: str, pattern: str, options: IngestOptions) -> Listing:
        listing = Listing()
        for match in image_files.matching_entries(root, pattern, listing.facts):
            if match.is_dir:
                listing.extend(_list_class_folder(root, match.path, split))
            else:
                listing.facts.skip(match.relative, NOT_IN_A_CLASS_FOLDER)
        return listing

    def preflight(self, root: str, layout: Layout, options: IngestOptions) -> None:
        """At least two class folders (one folder listing per input split)."""
        classes: set[str] = set()
        for _, pattern in layout.splits:
            for match in image_files.matching_entries(root, pattern, Facts()):
                if match.is_dir:
                    classes.add(match.name)
        if not classes:
            raise ImageFolderError(
                f"data_root: {root} holds no class folders; expected one subfolder of images "
                "per class (or set manifest, or data_format tfrecord)"
            )
        if len(classes) == 1:
            raise ImageFolderError(
                f"data_root: {root} holds one class folder ({report.printable(classes.pop())}/); "
                "a classifier needs at least two classes"
            )


def _list_class_folder(root: str, folder: str, split: str) -> Listing:
    listing = Listing()
    class_relative = image_files.relative_path(folder, root)
    try:
        label = image_files.normalize_label(os.path.basename(folder.rstrip("/")))
    except SkippedInputError as err:
        label_error: SkippedInputError | None = err
        label = ""
    else:
        label_error = None
    found = 0  # image files, listed or skipped for the folder's name
    for relative, name, size in image_files.walk_files(folder, root, listing.facts):
        if not image_files.has_image_extension(name):
            listing.facts.skip(relative, report.NOT_AN_IMAGE_FILE)
            continue
        found += 1
        if label_error is not None:
            listing.facts.skip(relative, label_error.reason, label_error.detail)
        else:
            listing.images.append(ImageFile(relative, label, split, size))
    if not found:
        listing.facts.notes.append(f"empty class folder {class_relative}/ (no image files)")
    return listing


FORMAT = FoldersFormat()
