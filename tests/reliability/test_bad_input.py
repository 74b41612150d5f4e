"""Single inputs that used to kill or corrupt a whole ingestion (issue 14), one test each.

Listing and report cases run in-process (fast); the ones that need Beam's coders run the
real ExampleGen executor and are marked slow.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.image_example_gen import report
from components.image_example_gen.formats import get_format
from components.image_example_gen.formats.manifest import BAD_MANIFEST_ROW, read_manifest
from components.image_example_gen.options import IngestOptions
from components.image_example_gen.report import Facts, ReportContext
from tests.unit.test_image_files import _listing, class_folders, image_bytes, write


def _context(max_bad_fraction: float = 0.1) -> ReportContext:
    return ReportContext(
        data_root="/data",
        data_format="manifest",
        split_sources={"train": "80% by hash", "eval": "20% by hash"},
        max_bad_fraction=max_bad_fraction,
        report_path="/out/ingestion_report.json",
    )


def _report_of(facts: Facts, max_bad_fraction: float = 0.1) -> dict:
    """The report of listing facts, as if every listed image had been ingested into train."""
    return report.build_report(facts, _context(max_bad_fraction))


def _manifest_root(tmp_path: Path, rows: int) -> Path:
    for i in range(rows):
        write(tmp_path / "img" / f"{i}.png", image_bytes(seed=i))
    return tmp_path


def _bad_rows(facts: Facts) -> dict[str, str]:
    return {p: d for p, r, d in facts.skipped if r == BAD_MANIFEST_ROW}


# --- Manifests -------------------------------------------------------------------------


def test_an_unclosed_quote_counts_every_row_it_swallowed_as_bad(tmp_path):
    root = _manifest_root(tmp_path, 150)
    rows = [f"img/{i}.png,{'cat' if i % 2 else 'dog'}" for i in range(150)]
    rows[1] = 'img/1.png,"cat'  # line 3: the quote is never closed
    write(root / "m.csv", "path,label\n" + "\n".join(rows) + "\n")
    listing = read_manifest(str(root), "m.csv", "path", "label")
    assert [f.relative_path for f in listing.images] == ["img/0.png"]
    bad = _bad_rows(listing.facts)
    assert sorted(bad) == sorted(f"m.csv:{line}" for line in range(3, 152))  # 149 lines
    assert "m.csv line 3: a quoted field opened on line 3 runs to line 151" in bad["m.csv:3"]
    assert "inside the row that starts on line 3" in bad["m.csv:100"]
    # The gate sees 149 bad rows, not one, and stops the run naming the report.
    facts = Facts()
    facts.merge(listing.facts)
    facts.ingested[("train", "dog")] = 1
    doc = _report_of(facts)
    assert doc["totals"]["skipped_bad"] == 149
    assert any("149 of 150 input files" in e for e in doc["result"]["errors"])


def test_a_quoted_field_with_a_line_break_in_another_column_is_kept(tmp_path):
    root = _manifest_root(tmp_path, 2)
    write(root / "m.csv", 'path,label,note\nimg/0.png,cat,"two\nlines"\nimg/1.png,dog,x\n')
    listing = read_manifest(str(root), "m.csv", "path", "label")
    assert [(f.relative_path, f.label) for f in listing.images] == [
        ("img/0.png", "cat"),
        ("img/1.png", "dog"),
    ]
    assert listing.facts.skipped == []


def test_a_nul_byte_is_a_bad_row_named_by_its_line(tmp_path):
    root = _manifest_root(tmp_path, 4)
    write(root / "m.csv", "path,label\nimg/0.png,cat\nimg/1\x00.png,dog\nimg/2.png,dog\n")
    listing = read_manifest(str(root), "m.csv", "path", "label")
    assert [f.relative_path for f in listing.images] == ["img/0.png", "img/2.png"]
    bad = _bad_rows(listing.facts)
    assert list(bad) == ["m.csv:3"]
    assert bad["m.csv:3"].startswith("m.csv line 3: ")
    assert "NUL" in bad["m.csv:3"]


def test_a_field_over_the_csv_limit_is_a_bad_row_named_by_its_line(tmp_path):
    root = _manifest_root(tmp_path, 3)
    huge = "x" * 140_000  # over the csv module's 131,072-character field limit
    write(root / "m.csv", f"path,label\nimg/0.png,cat\nimg/1.png,{huge}\nimg/2.png,dog\n")
    listing = read_manifest(str(root), "m.csv", "path", "label")
    assert [f.relative_path for f in listing.images] == ["img/0.png", "img/2.png"]
    bad = _bad_rows(listing.facts)
    assert list(bad) == ["m.csv:3"]
    assert "field larger than field limit" in bad["m.csv:3"]


def test_a_nul_byte_in_the_header_is_a_clear_error(tmp_path):
    write(tmp_path / "m.csv", "pa\x00th,label\nimg/0.png,cat\n")
    from components.image_example_gen.image_files import ImageFolderError

    with pytest.raises(ImageFolderError, match="header row \\(line 1\\).*NUL"):
        read_manifest(str(tmp_path), "m.csv", "path", "label")


# --- Folder names ----------------------------------------------------------------------


def test_a_folder_name_with_a_newline_is_one_line_and_not_called_empty(tmp_path):
    class_folders(tmp_path, {"cat": 2, "dog": 2, "sea\nlion": 1})
    _, [listing] = _listing(tmp_path)
    assert {f.label for f in listing.images} == {"cat", "dog"}
    skipped = {p: r for p, r, _ in listing.facts.skipped}
    assert skipped == {"sea\\nlion/0.png": report.BAD_LABEL}
    doc = report.build_report(listing.facts, _context())
    assert not any("empty class folder" in n for n in doc["notes"])
    summary = report.format_summary(doc)
    assert "sea\\nlion/0.png" in summary
    assert all(line.startswith(("ImageExampleGen:", "  ")) for line in summary.splitlines())


# --- Classes too small for a split ---------------------------------------------------


def test_a_class_missing_from_a_split_is_warned_with_its_counts():
    facts = Facts()
    facts.ingested.update(
        {("train", "cat"): 8, ("eval", "cat"): 2, ("train", "dog"): 8, ("eval", "dog"): 2}
    )
    facts.ingested[("eval", "rare")] = 1
    facts.ingested[("train", "lonely")] = 1
    doc = report.build_report(facts, _context())
    assert doc["warnings"] == [
        "class 'lonely' has 1 image(s) (train 1, eval 0): none in eval; add images of it, "
        "or it is not evaluated",
        "class 'rare' has 1 image(s) (train 0, eval 1): none in train; add images of it, "
        "or it is never trained on",
    ]
    assert doc["result"]["errors"] == []  # a warning, not a failure
    assert "  WARNING: class 'rare' has 1 image(s)" in report.format_summary(doc)


# --- Through the real executor (Beam's coders) ---------------------------------------


@pytest.mark.slow
def test_file_names_that_are_not_utf8_are_ingested_under_an_escaped_id(tmp_path):
    from tests.component.test_image_example_gen import run_example_gen

    root = tmp_path / "data"
    class_folders(root, {"cat": 10, "dog": 10})
    with open(os.fsencode(root / "cat") + b"/caf\xe9.png", "wb") as f:  # Latin-1 "café"
        f.write(image_bytes(seed=77))
    os.makedirs(os.fsencode(root) + b"/\xff")
    with open(os.fsencode(root) + b"/\xff/0.png", "wb") as f:  # a class name that is no text
        f.write(image_bytes(seed=78))
    run = run_example_gen(root, tmp_path / "out", IngestOptions(max_bad_fraction=0.5))
    ids = {r.image_id: r.label for records in run.splits.values() for r in records}
    assert ids["cat/caf\\xe9.png"] == "cat"
    assert len(ids) == 21
    assert run.skipped() == {"\\xff/0.png": report.BAD_LABEL}


@pytest.mark.slow
def test_a_single_image_class_is_warned_in_the_report(tmp_path, caplog):
    from tests.component.test_image_example_gen import run_example_gen

    root = tmp_path / "data"
    class_folders(root, {"cat": 6, "dog": 6, "rare": 1})
    with caplog.at_level("WARNING"):
        run = run_example_gen(root, tmp_path / "out")
    [warning] = run.report["warnings"]
    assert warning.startswith("class 'rare' has 1 image(s) (train ")
    assert "WARNING: class 'rare'" in caplog.text


def test_every_format_lists_a_hostile_root_without_raising(tmp_path):
    """Hidden, non-UTF-8, newline and symlink-loop names under each folder-based format."""
    class_folders(tmp_path, {"cat": 2, "dog": 2})
    write(tmp_path / "cat" / "tab\there.png", image_bytes(seed=5))
    with open(os.fsencode(tmp_path / "dog") + b"/\xfe\xfe.png", "wb") as f:
        f.write(image_bytes(seed=6))
    (tmp_path / "dog" / "loop").symlink_to(tmp_path / "dog")
    for name in ("folders", "tfrecord"):
        options = IngestOptions(data_format=name)
        layout, listings = _listing(tmp_path, options)
        facts = Facts()
        for listing in listings:
            facts.merge(listing.facts)
        doc = report.build_report(facts, _context(1.0))
        assert all(p["path"].isprintable() for p in doc["skipped"]), name
        get_format(name)  # the table holds it


# --- Found by the fuzz tests (test_fuzz.py) ---------------------------------------------


def test_a_manifest_row_naming_a_folder_is_a_bad_row(tmp_path):
    root = _manifest_root(tmp_path, 1)
    write(root / "m.csv", "path,label\n.,cat\nimg,dog\nimg/0.png,cat\n")
    listing = read_manifest(str(root), "m.csv", "path", "label")
    assert [f.relative_path for f in listing.images] == ["img/0.png"]
    bad = _bad_rows(listing.facts)
    assert bad == {
        "m.csv:2": "m.csv line 2: . is not a file",
        "m.csv:3": "m.csv line 3: img is not a file",
    }


def test_a_jpeg_frame_with_zero_components_is_not_taken_for_an_image():
    import io

    from PIL import Image

    from components.image_example_gen.image_check import check_image, jpeg_header

    buffer = io.BytesIO()
    Image.new("RGB", (4, 1)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 9] = 0  # the frame header's component count
    assert jpeg_header(bytes(data)) is None
    with pytest.raises(report.SkippedInputError) as err:
        check_image(bytes(data), 1_000_000)
    assert err.value.reason in (report.CORRUPT_IMAGE, report.NOT_AN_IMAGE)


def test_a_label_with_a_line_separator_is_a_bad_label():
    from components.image_example_gen.image_files import normalize_label

    for separator in ("\u2028", "\u2029"):  # str.splitlines() splits the vocabulary file there
        with pytest.raises(report.SkippedInputError) as err:
            normalize_label(f"sea{separator}lion")
        assert err.value.reason == report.BAD_LABEL
