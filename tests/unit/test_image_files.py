"""Which files the image ExampleGen takes, and the errors for unusable folders."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from components.image_example_gen.image_files import (
    ImageFolderError,
    inspect_image,
    list_image_files,
)


def _png(mode: str = "RGB", size=(5, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_lists_class_folders_and_skips_hidden_and_non_images(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label / "nested").mkdir(parents=True)
        (tmp_path / label / "1.png").write_bytes(_png())
        (tmp_path / label / "nested" / "2.PNG").write_bytes(_png())
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "cat" / "notes.txt").write_text("hi")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "3.png").write_bytes(_png())
    (tmp_path / "README.md").write_text("not a class")
    files = list_image_files(str(tmp_path))
    assert [(f.relative_path, f.label) for f in files] == [
        ("cat/1.png", "cat"),
        ("cat/nested/2.PNG", "cat"),
        ("dog/1.png", "dog"),
        ("dog/nested/2.PNG", "dog"),
    ]


def test_no_images_or_one_class_is_a_clear_error(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(ImageFolderError, match="no image files found under"):
        list_image_files(str(tmp_path))
    (tmp_path / "cat" / "1.png").write_bytes(_png())
    with pytest.raises(ImageFolderError, match="only one class \\('cat'\\)"):
        list_image_files(str(tmp_path))


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3), ("RGBA", 4), ("P", 3)])
def test_inspect_reads_format_size_and_channels(mode, channels):
    info = inspect_image(_png(mode, size=(7, 3)))
    assert (info.format, info.width, info.height, info.channels) == ("png", 7, 3, channels)


def test_inspect_rejects_bad_bytes_with_a_reason():
    with pytest.raises(ValueError, match="empty file"):
        inspect_image(b"")
    with pytest.raises(ValueError, match="not a readable image"):
        inspect_image(b"this is text, not a jpeg")
    with pytest.raises(ValueError, match="not a readable image"):
        inspect_image(_png()[:30])  # truncated
