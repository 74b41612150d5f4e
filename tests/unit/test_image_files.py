"""The pure rules of ImageExampleGen: listing, layouts, manifests, formats, splits, report.

Every bad input is a real file made here, a few bytes to a few hundred. The helpers that make
them (``image_bytes``, ``write``) are shared with tests/component/test_image_example_gen.py.
"""

from __future__ import annotations

import io
import re
import struct
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.image_example_gen import report
from components.image_example_gen.example_codec import serialize_example
from components.image_example_gen.formats import detect_layout, get_format
from components.image_example_gen.formats.folders import NOT_IN_A_CLASS_FOLDER
from components.image_example_gen.formats.manifest import (
    BAD_MANIFEST_ROW,
    DUPLICATE_MANIFEST_ROW,
    read_manifest,
)
from components.image_example_gen.formats.tfrecord import NOT_A_TFRECORD_FILE, read_labels_file
from components.image_example_gen.image_check import check_image, jpeg_header, png_header
from components.image_example_gen.image_files import (
    ALL_SPLIT,
    ImageFile,
    ImageFolderError,
    normalize_label,
    work_units,
)
from components.image_example_gen.options import (
    HASH_BUCKETS,
    IngestOptions,
    SplitPlan,
    content_digest,
    hash_split_buckets,
)
from components.image_example_gen.report import Facts, ReportContext, SkippedInputError

MAX_PIXELS = 1_000_000


# --- Helpers shared with the component tests ----------------------------------------------


def image_bytes(fmt: str = "PNG", mode: str = "RGB", size=(6, 5), seed: int = 0, **save) -> bytes:
    """A small image with random pixels, encoded by Pillow."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((size[1], size[0]), dtype=np.float32))
    else:
        image = rgb.convert(mode)
        if mode in ("RGBA", "LA"):  # a real alpha channel, or encoders may drop it
            image.putalpha(Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def animated_gif(frames: int = 3, size=(6, 5)) -> bytes:
    images = [Image.new("P", size, color=i * 40) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but holds one row: a decompression bomb
    stand-in that must be rejected from the header alone."""
    data = bytearray(image_bytes("PNG", "L", (1, 1)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def bad_files() -> dict[str, bytes]:
    """File name -> bytes for every bad-input case, named by the reason they must get."""
    jpeg = image_bytes("JPEG", size=(16, 16))
    png = image_bytes("PNG", size=(16, 16))
    return {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "no_iend.png": png[:-12],
        "zero.jpg": b"",
        "text.jpg": b"this is a text file named like a jpeg\n",
        "huge.png": png_with_size(5000, 5000),
        "float.tif": image_bytes("TIFF", "F"),
        "icon.png": image_bytes("ICO", size=(16, 16)),
    }


BAD_REASONS = {
    "truncated.jpg": report.CORRUPT_IMAGE,
    "truncated.png": report.CORRUPT_IMAGE,
    "no_iend.png": report.CORRUPT_IMAGE,
    "zero.jpg": report.EMPTY_FILE,
    "text.jpg": report.NOT_AN_IMAGE,
    "huge.png": report.TOO_MANY_PIXELS,
    "float.tif": report.UNSUPPORTED_FORMAT,
    "icon.png": report.UNSUPPORTED_FORMAT,
}

# Inputs accepted: name -> (bytes, stored format, channels, kept byte for byte).
GOOD_VARIANTS = {
    "rgb.png": (lambda: image_bytes("PNG", "RGB"), "png", 3, True),
    "gray.png": (lambda: image_bytes("PNG", "L"), "png", 1, True),
    "gray_alpha.png": (lambda: image_bytes("PNG", "LA"), "png", 2, True),
    "rgba.png": (lambda: image_bytes("PNG", "RGBA"), "png", 4, True),
    "palette.png": (lambda: image_bytes("PNG", "P"), "png", 3, True),
    "sixteen_bit.png": (lambda: image_bytes("PNG", "I;16"), "png", 1, True),
    "rgb.jpg": (lambda: image_bytes("JPEG", "RGB"), "jpeg", 3, True),
    "gray.jpg": (lambda: image_bytes("JPEG", "L"), "jpeg", 1, True),
    "cmyk.jpg": (lambda: image_bytes("JPEG", "CMYK"), "jpeg", 4, True),
    "progressive.jpg": (lambda: image_bytes("JPEG", progressive=True), "jpeg", 3, True),
    "still.gif": (lambda: image_bytes("GIF", "P"), "gif", 3, True),
    "animated.gif": (animated_gif, "gif", 3, True),
    "rgb.bmp": (lambda: image_bytes("BMP", "RGB"), "png", 3, False),
    "palette.bmp": (lambda: image_bytes("BMP", "P"), "png", 3, False),
    "one_bit.bmp": (lambda: image_bytes("BMP", "1"), "png", 1, False),
    "photo.webp": (lambda: image_bytes("WEBP", "RGB", lossless=True), "png", 3, False),
    "alpha.webp": (lambda: image_bytes("WEBP", "RGBA", lossless=True), "png", 4, False),
    "scan.tiff": (lambda: image_bytes("TIFF", "RGB"), "png", 3, False),
    "cmyk.tiff": (lambda: image_bytes("TIFF", "CMYK"), "png", 3, False),
    "sixteen_bit.tiff": (lambda: image_bytes("TIFF", "I;16"), "png", 1, False),
}


def write(path: Path, data: bytes | str = b"") -> Path:
    """Writes ``data`` to ``path``, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def class_folders(root: Path, classes: dict[str, int], seed: int = 0) -> None:
    """``root/<class>/<i>.png`` with distinct random pixels."""
    for c, (name, count) in enumerate(classes.items()):
        for i in range(count):
            write(root / name / f"{i}.png", image_bytes(seed=1 + seed * 1000 + c * 100 + i))


def _listing(root: Path, options: IngestOptions | None = None):
    options = options or IngestOptions()
    layout = detect_layout(str(root), options)
    input_format = get_format(layout.data_format)
    found = [input_format.list_split(str(root), n, p, options) for n, p in layout.splits]
    return layout, found


def _skips(facts: Facts) -> dict[str, str]:
    return {path: reason for path, reason, _ in facts.skipped}


# --- Listing class folders ---------------------------------------------------------------


def test_lists_class_folders_and_skips_hidden_and_non_images(tmp_path):
    for label in ("cat", "dog"):
        write(tmp_path / label / "1.png", image_bytes())
        write(tmp_path / label / "nested" / "2.PNG", image_bytes())
    write(tmp_path / "cat" / ".DS_Store", b"junk")
    write(tmp_path / "cat" / "notes.txt", "hi")
    write(tmp_path / ".hidden" / "3.png", image_bytes())
    write(tmp_path / "README.md", "not a class")
    layout, [listing] = _listing(tmp_path)
    assert layout.data_format == "folders"
    assert layout.splits == ((ALL_SPLIT, "*"),)
    assert [(f.relative_path, f.label) for f in sorted(listing.images, key=str)] == [
        ("cat/1.png", "cat"),
        ("cat/nested/2.PNG", "cat"),
        ("dog/1.png", "dog"),
        ("dog/nested/2.PNG", "dog"),
    ]
    assert _skips(listing.facts) == {
        ".hidden/": report.HIDDEN_FILE,
        "README.md": NOT_IN_A_CLASS_FOLDER,
        "cat/.DS_Store": report.HIDDEN_FILE,
        "cat/notes.txt": report.NOT_AN_IMAGE_FILE,
    }
    assert all(f.size > 0 for f in listing.images)


def test_symlinks_that_leave_the_root_are_skipped(tmp_path):
    root = tmp_path / "root"
    outside = write(tmp_path / "outside.png", image_bytes())
    write(root / "cat" / "1.png", image_bytes())
    write(root / "dog" / "1.png", image_bytes(seed=1))
    (root / "cat" / "escape.png").symlink_to(outside)
    (root / "cat" / "inside.png").symlink_to(root / "dog" / "1.png")
    (root / "cat" / "folder_link").symlink_to(root / "dog", target_is_directory=True)
    (root / "cat" / "broken.png").symlink_to(root / "nowhere.png")
    (root / "outside_class").symlink_to(tmp_path, target_is_directory=True)
    _, [listing] = _listing(root)
    assert sorted(f.relative_path for f in listing.images) == [
        "cat/1.png",
        "cat/inside.png",
        "dog/1.png",
    ]
    assert _skips(listing.facts) == {
        "cat/escape.png": report.OUTSIDE_ROOT,
        "cat/folder_link/": report.SYMLINKED_FOLDER,
        "cat/broken.png": report.MISSING_FILE,
        "outside_class": report.OUTSIDE_ROOT,
    }


def test_labels_keep_spaces_and_non_ascii_and_are_nfc(tmp_path):
    decomposed = unicodedata.normalize("NFD", "café crème")  # as macOS names folders
    write(tmp_path / decomposed / "1.png", image_bytes())
    write(tmp_path / "sea lion" / "1.png", image_bytes(seed=1))
    write(tmp_path / "猫" / "1.png", image_bytes(seed=2))
    _, [listing] = _listing(tmp_path)
    assert sorted(f.label for f in listing.images) == ["café crème", "sea lion", "猫"]
    assert unicodedata.is_normalized(
        "NFC", next(f.label for f in listing.images if "caf" in f.label)
    )


def test_normalize_label_rejects_empty_and_control_characters():
    assert normalize_label("  tabby cat \n") == "tabby cat"
    with pytest.raises(SkippedInputError) as err:
        normalize_label("   ")
    assert err.value.reason == report.EMPTY_LABEL
    with pytest.raises(SkippedInputError) as err:
        normalize_label("two\nlines")
    assert err.value.reason == report.BAD_LABEL


def test_empty_class_folder_is_a_note_not_a_class(tmp_path):
    class_folders(tmp_path, {"cat": 1, "dog": 1})
    (tmp_path / "empty").mkdir()
    write(tmp_path / "only_junk" / ".DS_Store", b"x")
    _, [listing] = _listing(tmp_path)
    assert {f.label for f in listing.images} == {"cat", "dog"}
    assert sorted(listing.facts.notes) == [
        "empty class folder empty/ (no image files)",
        "empty class folder only_junk/ (no image files)",
    ]


def test_no_images_or_one_class_is_a_clear_error(tmp_path):
    (tmp_path / "cat").mkdir()
    _, [listing] = _listing(tmp_path)
    with pytest.raises(ImageFolderError, match="no image files found under"):
        get_format("folders").check_listing(listing, str(tmp_path))
    write(tmp_path / "cat" / "1.png", image_bytes())
    _, [listing] = _listing(tmp_path)
    with pytest.raises(ImageFolderError, match="only one class \\('cat'\\)"):
        get_format("folders").check_listing(listing, str(tmp_path))


def test_a_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(ImageFolderError, match="is not a folder"):
        detect_layout(str(tmp_path / "nope"), IngestOptions())


# --- Layouts -----------------------------------------------------------------------------


def test_train_val_test_folders_are_kept_as_splits(tmp_path):
    for split in ("train", "val", "test"):
        class_folders(tmp_path / split, {"cat": 1, "dog": 1})
    layout, listings = _listing(tmp_path, IngestOptions(test_fraction=0.1))
    assert layout.splits == (("train", "train/*"), ("eval", "val/*"), ("test", "test/*"))
    assert layout.hash_splits == ()
    assert layout.notes == ("test_fraction ignored: the root's split folders are kept as they are",)
    assert {(f.split, f.relative_path) for listing in listings for f in listing.images} >= {
        ("train", "train/cat/0.png"),
        ("eval", "val/dog/0.png"),
        ("test", "test/cat/0.png"),
    }
    assert {f.label for listing in listings for f in listing.images} == {"cat", "dog"}


@pytest.mark.parametrize("eval_folder", ["validation", "eval", "Valid"])
def test_eval_folder_names(tmp_path, eval_folder):
    class_folders(tmp_path / "train", {"a": 1, "b": 1})
    class_folders(tmp_path / eval_folder, {"a": 1, "b": 1})
    layout = detect_layout(str(tmp_path), IngestOptions())
    assert layout.splits == (("train", "train/*"), ("eval", f"{eval_folder}/*"))


def test_train_and_test_folders_carve_eval_from_train(tmp_path):
    class_folders(tmp_path / "train", {"a": 1, "b": 1})
    class_folders(tmp_path / "test", {"a": 1, "b": 1})
    layout = detect_layout(str(tmp_path), IngestOptions(eval_fraction=0.25, test_fraction=0.1))
    assert layout.splits == (("train", "train/*"), ("test", "test/*"))
    assert layout.hash_splits == (("train", 750), ("eval", 250))
    assert "test_fraction ignored" in layout.notes[0]


def test_two_folders_for_one_split_is_an_error(tmp_path):
    class_folders(tmp_path / "train", {"a": 1, "b": 1})
    (tmp_path / "val").mkdir()
    (tmp_path / "validation").mkdir()
    with pytest.raises(ImageFolderError, match="both mean the 'eval' split"):
        detect_layout(str(tmp_path), IngestOptions())


def test_split_folders_can_be_pooled(tmp_path):
    class_folders(tmp_path / "train", {"a": 1, "b": 1})
    class_folders(tmp_path / "val", {"a": 1, "b": 1}, seed=1)
    layout, [listing] = _listing(tmp_path, IngestOptions(use_split_folders=False))
    assert layout.splits == ((ALL_SPLIT, "*/*"),)
    assert layout.hash_splits == (("train", 800), ("eval", 200))
    assert len(listing.images) == 4
    assert {f.label for f in listing.images} == {"a", "b"}


def test_tfrecord_files_are_detected(tmp_path):
    write(tmp_path / "train" / "part-0.tfrecord", b"")
    write(tmp_path / "train" / "part-1.tfrecord.gz", b"")
    write(tmp_path / "train" / "README", "x")
    write(tmp_path / "test" / "data_tfrecord-00000-of-00001.gz", b"")
    layout, listings = _listing(tmp_path)
    assert layout.data_format == "tfrecord"
    records = sorted((r.split, r.relative_path) for listing in listings for r in listing.records)
    assert records == [
        ("test", "test/data_tfrecord-00000-of-00001.gz"),
        ("train", "train/part-0.tfrecord"),
        ("train", "train/part-1.tfrecord.gz"),
    ]
    assert _skips(listings[0].facts) == {"train/README": NOT_A_TFRECORD_FILE}


def test_labels_file(tmp_path):
    assert read_labels_file(str(tmp_path), "") is None
    write(tmp_path / "labels.txt", "airplane\nautomobile\nsea lion\n\n")
    assert read_labels_file(str(tmp_path), "") == ["airplane", "automobile", "sea lion"]
    write(tmp_path / "names.txt", "a\n\nb\n")
    with pytest.raises(ImageFolderError, match="line 2"):
        read_labels_file(str(tmp_path), "names.txt")
    with pytest.raises(ImageFolderError, match="cannot read"):
        read_labels_file(str(tmp_path), "missing.txt")


# --- Manifests ---------------------------------------------------------------------------


def test_manifest_rows_are_checked(tmp_path):
    root = tmp_path / "root"
    write(root / "images" / "a.png", image_bytes())
    write(root / "images" / "b.png", image_bytes(seed=1))
    write(root / "images" / "c d.png", image_bytes(seed=2))
    write(root / "images" / "e.png", image_bytes(seed=3))
    write(tmp_path / "secret.png", image_bytes(seed=4))
    (root / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    write(
        root / "train.csv",
        "path,label,extra\n"
        "images/a.png,cat,1\n"
        "images/b.png, sea lion ,2\n"
        '"images/c d.png","café, au lait",3\n'
        "images\\e.png,dog,4\n"
        "../secret.png,cat,5\n"
        "images/../../secret.png,cat,6\n"
        f"{tmp_path / 'secret.png'},cat,7\n"
        "images/link.png,cat,8\n"
        "images/missing.png,cat,9\n"
        "images/a.png,dog,10\n"
        "images/b.png,,11\n"
        ",cat,12\n"
        "\n",
    )
    listing = read_manifest(str(root), "train.csv", "path", "label")
    assert [(f.relative_path, f.label) for f in listing.images] == [
        ("images/a.png", "cat"),
        ("images/b.png", "sea lion"),
        ("images/c d.png", "café, au lait"),
        ("images/e.png", "dog"),
    ]
    skipped = [(p, r) for p, r, _ in listing.facts.skipped]
    assert skipped == [
        ("../secret.png", report.OUTSIDE_ROOT),
        ("images/../../secret.png", report.OUTSIDE_ROOT),
        (str(tmp_path / "secret.png"), report.OUTSIDE_ROOT),
        ("images/link.png", report.OUTSIDE_ROOT),
        ("images/missing.png", report.MISSING_FILE),
        ("images/a.png", DUPLICATE_MANIFEST_ROW),
        ("images/b.png", report.EMPTY_LABEL),
        ("train.csv:13", BAD_MANIFEST_ROW),
    ]
    assert "line 11: listed before (first label 'cat')" in listing.facts.skipped[5][2]


def test_tsv_manifest_in_a_subfolder_with_custom_columns(tmp_path):
    write(tmp_path / "data" / "img" / "x.jpg", image_bytes("JPEG"))
    write(tmp_path / "data" / "img" / "y.jpg", image_bytes("JPEG", seed=1))
    write(tmp_path / "data" / "labels.tsv", "file\tclass\nimg/x.jpg\tcat\nimg/y.jpg\tdog\n")
    options = IngestOptions(
        manifest="data/labels.tsv", manifest_path_column="file", manifest_label_column="class"
    )
    layout, [listing] = _listing(tmp_path, options)
    assert layout.data_format == "manifest"
    assert layout.splits == ((ALL_SPLIT, "data/labels.tsv"),)
    assert [(f.relative_path, f.label) for f in listing.images] == [
        ("data/img/x.jpg", "cat"),
        ("data/img/y.jpg", "dog"),
    ]


def test_manifest_errors_name_the_fix(tmp_path):
    write(tmp_path / "m.csv", "filename,class\na.png,cat\n")
    with pytest.raises(ImageFolderError, match="no column 'path', 'label'.*'filename', 'class'"):
        read_manifest(str(tmp_path), "m.csv", "path", "label")
    with pytest.raises(ImageFolderError, match="cannot read"):
        read_manifest(str(tmp_path), "missing.csv", "path", "label")
    with pytest.raises(ImageFolderError, match="not inside the data root"):
        detect_layout(str(tmp_path), IngestOptions(manifest="../m.csv"))


# --- Formats -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOOD_VARIANTS))
def test_accepted_formats_are_kept_or_converted(name):
    make, stored_format, channels, kept = GOOD_VARIANTS[name]
    data = make()
    checked = check_image(data, MAX_PIXELS)
    assert (checked.format, checked.channels) == (stored_format, channels)
    assert (checked.data == data) is kept
    assert checked.converted is not kept
    with Image.open(io.BytesIO(checked.data)) as image:
        assert image.size == (checked.width, checked.height)
        assert image.format.lower() == stored_format
        if not kept:  # converted losslessly: same pixels as Pillow decodes the input
            with Image.open(io.BytesIO(data)) as original:
                expected = original.convert(image.mode)
                assert np.array_equal(np.asarray(image), np.asarray(expected))


@pytest.mark.parametrize("name", sorted(BAD_REASONS))
def test_bad_inputs_are_skipped_with_their_reason_or_left_to_the_decoder(name):
    data = bad_files()[name]
    if BAD_REASONS[name] == report.CORRUPT_IMAGE:
        # Headers are intact: TensorFlow's decoder rejects these in the executor.
        assert check_image(data, MAX_PIXELS).data == data
        return
    with pytest.raises(SkippedInputError) as err:
        check_image(data, MAX_PIXELS)
    assert err.value.reason == BAD_REASONS[name]


def test_pixel_limit_is_checked_from_the_header():
    data = png_with_size(2000, 2000)
    assert png_header(data)[:2] == (2000, 2000)
    with pytest.raises(SkippedInputError, match="2000x2000 = 4000000 pixels > max_image_pixels"):
        check_image(data, 3_999_999)
    assert check_image(data, 4_000_000).width == 2000
    bmp = image_bytes("BMP", size=(300, 200))
    with pytest.raises(SkippedInputError) as err:
        check_image(bmp, 300 * 200 - 1)
    assert err.value.reason == report.TOO_MANY_PIXELS


def test_jpeg_header_reads_the_frame():
    assert jpeg_header(image_bytes("JPEG", "L", size=(7, 3))) == (7, 3, 8, 1)
    assert jpeg_header(image_bytes("JPEG", "CMYK", size=(7, 3))) == (7, 3, 8, 4)
    assert jpeg_header(image_bytes("PNG")) is None
    assert jpeg_header(b"\xff\xd8\xff") is None


# --- Splits ------------------------------------------------------------------------------


def test_hash_split_buckets():
    assert hash_split_buckets(0.2, 0.0) == [("train", 800), ("eval", 200)]
    assert hash_split_buckets(0.1, 0.05) == [("train", 850), ("eval", 100), ("test", 50)]
    assert hash_split_buckets(0.0001, 0.0001) == [("train", 998), ("eval", 1), ("test", 1)]
    assert sum(b for _, b in hash_split_buckets(0.33, 0.33)) == HASH_BUCKETS


def test_split_assignment_is_stable_and_follows_the_ratios():
    plan = SplitPlan.create([ALL_SPLIT], hash_split_buckets(0.2, 0.1))
    digests = [content_digest(str(i).encode()) for i in range(20_000)]
    splits = [plan.assign(ALL_SPLIT, d) for d in digests]
    counts = {s: splits.count(s) / len(splits) for s in plan.output_names}
    assert counts == pytest.approx({"train": 0.7, "eval": 0.2, "test": 0.1}, abs=0.015)
    # A function of the bytes alone: other images coming or going move nothing.
    assert [plan.assign(ALL_SPLIT, d) for d in reversed(digests)] == splits[::-1]
    assert plan.assign(ALL_SPLIT, digests[7]) == splits[7]


def test_split_plan_for_given_and_mixed_splits():
    given = SplitPlan.create(["train", "eval", "test"], None)
    assert given.output_names == ["train", "eval", "test"]
    assert given.assign("eval", b"\x00" * 32) == "eval"
    mixed = SplitPlan.create(["train", "test"], [("train", 800), ("eval", 200)])
    assert mixed.output_names == ["train", "eval", "test"]
    assert mixed.assign("test", b"\xff" * 32) == "test"
    assert mixed.assign("train", b"\xff" * 32) in ("train", "eval")
    with pytest.raises(ValueError, match="collide"):
        SplitPlan.create(["train", "test"], [("train", 8), ("eval", 1), ("test", 1)])
    with pytest.raises(ValueError, match="need one named 'train'"):
        SplitPlan.create(["a", "b"], [("train", 8), ("eval", 2)])


def test_options_validation_names_the_option():
    IngestOptions().validate()
    with pytest.raises(ValueError, match="eval_fraction"):
        IngestOptions(eval_fraction=0).validate()
    with pytest.raises(ValueError, match="eval_fraction \\+ test_fraction"):
        IngestOptions(eval_fraction=0.5, test_fraction=0.45).validate()
    with pytest.raises(ValueError, match="max_bad_fraction"):
        IngestOptions(max_bad_fraction=1.5).validate()
    with pytest.raises(ValueError, match="data_format"):
        IngestOptions(data_format="parquet").validate()
    options = IngestOptions(max_image_pixels=7, use_split_folders=False, manifest="m.csv")
    assert IngestOptions.from_dict({**options.to_dict(), "max_image_pixels": 7.0}) == options


def test_work_units_mix_classes_and_bound_size():
    images = [ImageFile(f"{c}/{i}.png", c, ALL_SPLIT, 1000) for c in "ab" for i in range(500)]
    units = work_units(images, max_files=64, max_bytes=20_000)
    assert sorted(f.relative_path for unit in units for f in unit) == sorted(
        f.relative_path for f in images
    )
    assert max(len(unit) for unit in units) == 20
    assert all({f.label for f in unit} == {"a", "b"} for unit in units)
    assert len(work_units(images[:10])) == 10  # small sets: one file per unit, all workers busy


# --- Report ------------------------------------------------------------------------------


def _context(max_bad_fraction: float = 0.1) -> ReportContext:
    return ReportContext(
        data_root="/data",
        data_format="folders",
        split_sources={"train": "80% by hash", "eval": "20% by hash"},
        max_bad_fraction=max_bad_fraction,
        report_path="/out/ingestion_report.json",
    )


def _facts(train: dict[str, int], eval_: dict[str, int], bad: int = 0, ignored: int = 0) -> Facts:
    facts = Facts()
    for split, counts in (("train", train), ("eval", eval_)):
        for label, n in counts.items():
            facts.ingested[(split, label)] += n
    for i in range(bad):
        facts.skip(f"cat/bad{i}.jpg", report.CORRUPT_IMAGE, "Invalid JPEG data")
    for i in range(ignored):
        facts.skip(f"cat/.junk{i}", report.HIDDEN_FILE)
    return facts


def test_report_counts_and_passes():
    doc = report.build_report(_facts({"cat": 8, "dog": 8}, {"cat": 2, "dog": 2}, 1, 3), _context())
    assert doc["totals"] == {
        "ingested": 20,
        "skipped_bad": 1,
        "skipped_ignored": 3,
        "bad_fraction": pytest.approx(1 / 21, abs=1e-6),
        "max_bad_fraction": 0.1,
        "classes": 2,
    }
    assert doc["splits"]["eval"] == {
        "source": "20% by hash",
        "images": 4,
        "classes": {"cat": 2, "dog": 2},
    }
    assert doc["skipped_by_reason"]["corrupt_image"]["count"] == 1
    assert doc["result"]["errors"] == []
    summary = report.format_summary(doc)
    assert len(summary.splitlines()) <= 24
    assert "cat/bad0.jpg" in summary and "/out/ingestion_report.json" in summary


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (_facts({}, {}, bad=3), "no valid images under /data"),
        (_facts({"cat": 5}, {"cat": 1}), "only 1 class \\(cat\\) has valid images"),
        (_facts({"cat": 5, "dog": 5}, {"cat": 1}, bad=2), "2 of 13 input files .* above max_bad"),
        (_facts({"cat": 5, "dog": 5}, {}), "split 'eval' .* has no valid images"),
    ],
)
def test_report_failures_name_the_report(facts, message):
    errors = report.build_report(facts, _context(max_bad_fraction=0.1))["result"]["errors"]
    assert any(re.search(message, e) for e in errors), errors
    assert all("/out/ingestion_report.json" in e or "split" in e for e in errors)


def test_duplicate_groups_and_conflicts():
    a, b = content_digest(b"a")[:16], content_digest(b"b")[:16]
    groups = report.find_duplicate_groups(
        [
            (a, "x/1.png", "cat", "train"),
            (b, "y.png", "dog", "eval"),
            (a, "z/1.png", "dog", "train"),
        ]
    )
    assert groups == [[("x/1.png", "cat", "train"), ("z/1.png", "dog", "train")]]
    facts = _facts({"cat": 5, "dog": 5}, {"cat": 1, "dog": 1})
    facts.duplicate_groups = groups
    dup = report.build_report(facts, _context())["duplicates"]
    assert (dup["groups"], dup["images"], dup["label_conflicts"], dup["across_splits"]) == (
        1,
        2,
        1,
        0,
    )


def test_serialized_examples_parse_back():
    tf = pytest.importorskip("tensorflow")
    from trainer_module import features

    for image in (b"", b"\x89PNG" + bytes(range(256)) * 300):
        for height in (1, 127, 128, 300, 2**40):
            data = serialize_example(image, "png", height, 5, 3, "café au lait", "a/ü b.png")
            feature = tf.train.Example.FromString(data).features.feature
            assert set(feature) == {
                features.IMAGE_KEY,
                features.IMAGE_FORMAT_KEY,
                features.IMAGE_HEIGHT_KEY,
                features.IMAGE_WIDTH_KEY,
                features.IMAGE_CHANNELS_KEY,
                features.LABEL_KEY,
                features.IMAGE_ID_KEY,
            }
            assert feature[features.IMAGE_KEY].bytes_list.value == [image]
            assert feature[features.IMAGE_HEIGHT_KEY].int64_list.value == [height]
            assert feature[features.IMAGE_WIDTH_KEY].int64_list.value == [5]
            assert feature[features.LABEL_KEY].bytes_list.value[0].decode() == "café au lait"
            assert feature[features.IMAGE_ID_KEY].bytes_list.value[0].decode() == "a/ü b.png"
