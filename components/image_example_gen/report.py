"""The ingestion report: why each file was skipped, counts, duplicates and the pass/fail checks.

Pure Python (no Beam, no TensorFlow): the Beam executor gathers ``Facts`` from the listing and
from its workers, merges them, and ``build_report`` turns them into the JSON document written
as ``ingestion_report.json`` inside the examples artifact.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from components.image_example_gen.options import TRAIN_SPLIT
from trainer_module import features

REPORT_FILE_NAME = features.INGESTION_REPORT_FILE
# Lists in the report are cut to this many entries (counts are always complete).
MAX_LISTED = 10_000
MAX_LISTED_DUPLICATE_GROUPS = 1_000


@dataclass(frozen=True)
class Reason:
    """Why a file was skipped. ``bad`` reasons count against ``max_bad_fraction``."""

    code: str
    bad: bool
    description: str


# The reasons every format shares; each format module adds its own (formats/*.py
# ``skip_reasons``), registered by the formats package.
_REASON_LIST = (
    # Not images at all: skipped, never counted as bad.
    Reason("hidden_file", False, "hidden file or folder (name starts with '.')"),
    Reason("not_an_image_file", False, "extension is not an image extension"),
    Reason("symlinked_folder", False, "symbolic link to a folder (not followed)"),
    # Bad inputs: counted.
    Reason("outside_root", True, "path leaves the data root (symlink, '..' or absolute path)"),
    Reason("missing_file", True, "file does not exist (manifest row or broken symlink)"),
    Reason("empty_label", True, "the manifest row has no label"),
    Reason("bad_label", True, "label holds control characters (newline, tab...)"),
    Reason("unreadable", True, "the file could not be read"),
    Reason("empty_file", True, "zero-byte file"),
    Reason("not_an_image", True, "content is not a recognised image (e.g. text named .jpg)"),
    Reason("corrupt_image", True, "truncated or corrupt: TensorFlow's decoder rejects it"),
    Reason("unsupported_format", True, "an image format or pixel type that is not accepted"),
    Reason("too_many_pixels", True, "width x height above max_image_pixels"),
)
REASONS = {r.code: r for r in _REASON_LIST}


def register_reasons(reasons: tuple[Reason, ...]) -> None:
    """Adds a format's own skip reasons to REASONS; a code may not change its meaning."""
    for reason in reasons:
        if REASONS.get(reason.code, reason) != reason:
            raise ValueError(f"skip reason {reason.code!r} is registered twice, differently")
        REASONS[reason.code] = reason


# Shared reason codes, importable so no module repeats the strings.
HIDDEN_FILE = "hidden_file"
NOT_AN_IMAGE_FILE = "not_an_image_file"
SYMLINKED_FOLDER = "symlinked_folder"
OUTSIDE_ROOT = "outside_root"
MISSING_FILE = "missing_file"
EMPTY_LABEL = "empty_label"
BAD_LABEL = "bad_label"
UNREADABLE = "unreadable"
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
CORRUPT_IMAGE = "corrupt_image"
UNSUPPORTED_FORMAT = "unsupported_format"
TOO_MANY_PIXELS = "too_many_pixels"


def printable(text: str) -> str:
    """``text`` safe for a report, a log line and Beam's UTF-8 coder.

    File names are bytes: Python shows undecodable bytes as lone surrogates, which cannot be
    encoded as UTF-8. They become ``\\xNN`` (the byte), and control characters (a newline in
    a folder name) their escape (``\\n``), so one name is one line. Printable text is kept.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # os.fsdecode's surrogateescape of byte 0x80-0xFF
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


class SkippedInputError(ValueError):
    """One input is skipped: ``reason`` is a code of ``REASONS``, ``detail`` says more."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise KeyError(f"unknown skip reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Facts:
    """Mergeable counts and lists; one per worker batch, merged into one for the report."""

    # (split, label) -> images ingested.
    ingested: collections.Counter = field(default_factory=collections.Counter)
    # "png", "jpeg", ... or "bmp->png" for converted files -> images.
    formats: collections.Counter = field(default_factory=collections.Counter)
    # (path, reason, detail) of every skipped file.
    skipped: list = field(default_factory=list)
    # Groups of byte-identical images: lists of (image_id, label, split).
    duplicate_groups: list = field(default_factory=list)
    # Remarks that concern no single file (empty class folders, ignored options).
    notes: list = field(default_factory=list)

    def skip(self, path: str, reason: str, detail: str = "") -> None:
        """Records one skipped file."""
        if reason not in REASONS:
            raise KeyError(f"unknown skip reason {reason!r}")
        self.skipped.append((printable(path), reason, printable(detail)))

    def merge(self, other: Facts) -> Facts:
        """Adds ``other`` into this one; returns self."""
        self.ingested.update(other.ingested)
        self.formats.update(other.formats)
        self.skipped.extend(other.skipped)
        self.duplicate_groups.extend(other.duplicate_groups)
        self.notes.extend(other.notes)
        return self


def find_duplicate_groups(entries: list[tuple[bytes, str, str, str]]) -> list[list[tuple]]:
    """Groups (digest, image_id, label, split) entries by digest; returns groups of 2 or more.

    Each group is sorted by image id, and groups are sorted by their first id.
    """
    by_digest: dict[bytes, list[tuple[str, str, str]]] = collections.defaultdict(list)
    for digest, image_id, label, split in entries:
        by_digest[digest].append((image_id, label, split))
    groups = [sorted(g) for g in by_digest.values() if len(g) > 1]
    return sorted(groups)


@dataclass(frozen=True)
class ReportContext:
    """What the report says about the run besides the facts."""

    data_root: str
    data_format: str
    split_sources: dict[str, str]  # output split -> where its images came from
    max_bad_fraction: float
    report_path: str


def build_report(facts: Facts, context: ReportContext) -> dict[str, Any]:
    """The report document; ``report["result"]["errors"]`` is empty when the run may go on."""
    skipped_by_reason = collections.Counter(reason for _, reason, _ in facts.skipped)
    bad = sum(n for reason, n in skipped_by_reason.items() if REASONS[reason].bad)
    ignored = sum(skipped_by_reason.values()) - bad
    ingested = sum(facts.ingested.values())
    bad_fraction = bad / (bad + ingested) if bad + ingested else 0.0

    per_split: dict[str, dict[str, Any]] = {}
    for split in context.split_sources:
        classes = {label: n for (s, label), n in sorted(facts.ingested.items()) if s == split and n}
        per_split[split] = {
            "source": context.split_sources[split],
            "images": sum(classes.values()),
            "classes": classes,
        }
    classes = sorted({label for (_, label), n in facts.ingested.items() if n})

    groups = sorted(facts.duplicate_groups)
    conflicts = [g for g in groups if len({label for _, label, _ in g}) > 1]
    cross_split = [g for g in groups if len({split for _, _, split in g}) > 1]

    def listed(group_list: list) -> list:
        return [
            [{"image_id": i, "label": label, "split": s} for i, label, s in g]
            for g in group_list[:MAX_LISTED_DUPLICATE_GROUPS]
        ]

    skipped = sorted(facts.skipped)
    report: dict[str, Any] = {
        "component": "ImageExampleGen",
        "report_path": context.report_path,
        "data_root": context.data_root,
        "data_format": context.data_format,
        "totals": {
            "ingested": ingested,
            "skipped_bad": bad,
            "skipped_ignored": ignored,
            "bad_fraction": round(bad_fraction, 6),
            "max_bad_fraction": context.max_bad_fraction,
            "classes": len(classes),
        },
        "splits": per_split,
        "class_names": classes,
        "formats": dict(sorted(facts.formats.items())),
        "skipped_by_reason": {
            code: {
                "count": skipped_by_reason[code],
                "counts_as_bad": REASONS[code].bad,
                "meaning": REASONS[code].description,
            }
            for code in sorted(skipped_by_reason)
        },
        "skipped": [{"path": p, "reason": r, "detail": d} for p, r, d in skipped[:MAX_LISTED]],
        "skipped_listed": min(len(skipped), MAX_LISTED),
        "duplicates": {
            "groups": len(groups),
            "images": sum(len(g) for g in groups),
            "label_conflicts": len(conflicts),
            "across_splits": len(cross_split),
            "conflict_groups": listed(conflicts),
            "cross_split_groups": listed(cross_split),
            "groups_listed": listed(groups),
        },
        "notes": sorted({printable(note) for note in facts.notes}),
        "warnings": split_warnings(facts.ingested, list(context.split_sources)),
    }
    report["result"] = {"errors": check_report(report)}
    return report


def split_warnings(ingested: collections.Counter, splits: list[str]) -> list[str]:
    """One warning per class that some output split has no image of, with its counts.

    A class with one image lands in one split only: the Trainer never sees it, or the
    Evaluator cannot measure it. The run goes on; the warning says what to add.
    """
    per_class: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (split, label), n in ingested.items():
        if n:
            per_class[label][split] = per_class[label].get(split, 0) + n
    # An empty split is an error of its own (check_report): no per-class warnings for it.
    filled = {split for (split, _), n in ingested.items() if n}
    warnings = []
    for label in sorted(per_class):
        counts = per_class[label]
        missing = [s for s in splits if s in filled and not counts.get(s)]
        if missing and sum(counts.values()):
            spread = ", ".join(f"{s} {counts.get(s, 0)}" for s in splits)
            warnings.append(
                f"class {printable(label)!r} has {sum(counts.values())} image(s) ({spread}): "
                f"none in {', '.join(missing)}; add images of it, or it is "
                + ("never trained on" if TRAIN_SPLIT in missing else "not evaluated")
            )
    return warnings


def check_report(report: dict[str, Any]) -> list[str]:
    """The reasons the run must fail, each naming the report and the way out; [] if none."""
    totals = report["totals"]
    path = report["report_path"]
    errors = []
    seen = totals["ingested"] + totals["skipped_bad"]
    if totals["ingested"] == 0:
        errors.append(
            f"no valid images under {report['data_root']} ({totals['skipped_bad']} bad and "
            f"{totals['skipped_ignored']} ignored files); the reason for each file is in {path}"
        )
    elif totals["classes"] < 2:
        errors.append(
            f"only {totals['classes']} class ({', '.join(report['class_names'])}) has valid "
            f"images under {report['data_root']}; a classifier needs at least two. See {path}"
        )
    if seen and totals["bad_fraction"] > totals["max_bad_fraction"]:
        errors.append(
            f"{totals['skipped_bad']} of {seen} input files ({totals['bad_fraction']:.1%}) are "
            f"bad, above max_bad_fraction={totals['max_bad_fraction']}; the paths and reasons "
            f"are in {path}. Fix or remove those files, or raise max_bad_fraction"
        )
    if totals["ingested"]:
        for split, info in report["splits"].items():
            if info["images"] == 0:
                errors.append(
                    f"split '{split}' ({info['source']}) has no valid images; add images, "
                    "or change eval_fraction/test_fraction for a hash split"
                )
    return errors


def format_summary(report: dict[str, Any], examples_per_reason: int = 3) -> str:
    """A one-screen, human-readable summary of the report for the log."""
    totals = report["totals"]
    lines = [
        f"ImageExampleGen: {report['data_format']} input under {report['data_root']}",
        f"  ingested {totals['ingested']} images in {totals['classes']} classes; skipped "
        f"{totals['skipped_bad']} bad ({totals['bad_fraction']:.2%}, max "
        f"{totals['max_bad_fraction']:.0%}) and {totals['skipped_ignored']} ignored files",
    ]
    for split, info in report["splits"].items():
        counts = sorted(info["classes"].values())
        spread = f", {counts[0]}..{counts[-1]} per class" if counts else ""
        lines.append(
            f"  split {split:<6} {info['images']:>8} images, {len(counts)} classes{spread}"
            f"  ({info['source']})"
        )
    if report["formats"]:
        formats = ", ".join(f"{k} {v}" for k, v in report["formats"].items())
        lines.append(f"  formats: {formats}")
    by_path: dict[str, list[str]] = collections.defaultdict(list)
    for entry in report["skipped"]:
        by_path[entry["reason"]].append(entry["path"])
    for code, info in report["skipped_by_reason"].items():
        shown = ", ".join(by_path[code][:examples_per_reason])
        more = info["count"] - min(info["count"], examples_per_reason)
        lines.append(
            f"  {'bad' if info['counts_as_bad'] else 'ignored'} {code}: {info['count']}"
            f" (e.g. {shown}{f' and {more} more' if more > 0 else ''})"
        )
    dup = report["duplicates"]
    if dup["groups"]:
        lines.append(
            f"  duplicates: {dup['groups']} groups of byte-identical images ({dup['images']} "
            f"images), {dup['label_conflicts']} with different labels, "
            f"{dup['across_splits']} across given splits"
        )
    for note in report["notes"][:5]:
        lines.append(f"  note: {note}")
    if len(report["notes"]) > 5:
        lines.append(f"  ... and {len(report['notes']) - 5} more notes")
    for warning in report.get("warnings", []):
        lines.append(f"  WARNING: {warning}")
    for error in report["result"]["errors"]:
        lines.append(f"  ERROR: {error}")
    lines.append(f"  report: {report['report_path']}")
    return "\n".join(lines)
