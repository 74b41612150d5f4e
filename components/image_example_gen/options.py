"""ImageExampleGen's options and how splits are assigned: pure Python, no Beam, no TensorFlow.

``IngestOptions`` travels from the component to the executor inside the ExampleGen's
``custom_config`` (a ``google.protobuf.Struct``), so it holds only JSON-compatible values.
``SplitPlan`` turns TFX's ``input_config``/``output_config`` into the output split names and
assigns each image to a split from a hash of its bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

# Pillow's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS): about 89.5 megapixels.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
# Split ratios are resolved to this many hash buckets (0.1% resolution).
HASH_BUCKETS = 1000

TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
TEST_SPLIT = "test"


@dataclass(frozen=True)
class IngestOptions:
    """How ImageExampleGen reads its input; every field has the pipeline config's meaning.

    The one list of these options and of their ranges: the pipeline passes each field from
    the same-named ``PipelineConfig`` field, and the configuration calls ``validate``.
    """

    eval_fraction: float = 0.2
    test_fraction: float = 0.0
    data_format: str = "auto"
    use_split_folders: bool = True
    manifest: str = ""
    manifest_path_column: str = "path"
    manifest_label_column: str = "label"
    tfrecord_image_feature: str = "image"
    tfrecord_label_feature: str = "label"
    labels_file: str = ""
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_bad_fraction: float = 0.1
    example_shard_mb: int = 128

    def validate(self) -> None:
        """Raises ValueError naming the first option out of range."""
        from components.image_example_gen.formats import get_format  # the formats import us

        if self.data_format != "auto":
            get_format(self.data_format)
        if self.data_format == "manifest" and not self.manifest:
            raise ValueError("data_format: 'manifest' needs the manifest option (a CSV/TSV file)")
        if self.manifest and self.data_format not in ("auto", "manifest"):
            raise ValueError(
                f"data_format: {self.data_format!r} with a manifest ({self.manifest}); set "
                "data_format to 'manifest' (or 'auto'), or unset the manifest"
            )
        if not 0.01 <= self.eval_fraction <= 0.5:
            raise ValueError(
                f"eval_fraction: must be between 0.01 and 0.5, got {self.eval_fraction}"
            )
        if not 0.0 <= self.test_fraction <= 0.5:
            raise ValueError(f"test_fraction: must be between 0 and 0.5, got {self.test_fraction}")
        if self.eval_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "eval_fraction + test_fraction: must leave images for training, got "
                f"{self.eval_fraction} + {self.test_fraction}"
            )
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels: must be positive, got {self.max_image_pixels}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(
                f"max_bad_fraction: must be between 0 and 1, got {self.max_bad_fraction}"
            )
        if self.example_shard_mb < 1:
            raise ValueError(f"example_shard_mb: must be at least 1, got {self.example_shard_mb}")
        for name in ("manifest_path_column", "manifest_label_column"):
            if self.manifest and not getattr(self, name):
                raise ValueError(f"{name}: must name a manifest column")
        for name in ("tfrecord_image_feature", "tfrecord_label_feature"):
            if not getattr(self, name):
                raise ValueError(f"{name}: must name a tf.train.Example feature")

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible values (for the component's custom_config)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IngestOptions:
        """Inverse of ``to_dict``; tolerates Struct's floats for int fields and unknown keys."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            value = values[f.name]
            if f.type in ("int", int):
                value = int(value)
            elif f.type in ("float", float):
                value = float(value)
            elif f.type in ("bool", bool):
                value = bool(value)
            kwargs[f.name] = value
        return cls(**kwargs)


def hash_split_buckets(eval_fraction: float, test_fraction: float) -> list[tuple[str, int]]:
    """(split name, hash buckets) for a hash split: train, eval and, if asked, test."""
    eval_buckets = max(1, round(HASH_BUCKETS * eval_fraction))
    test_buckets = round(HASH_BUCKETS * test_fraction)
    if test_fraction > 0:
        test_buckets = max(1, test_buckets)
    splits = [(TRAIN_SPLIT, HASH_BUCKETS - eval_buckets - test_buckets), (EVAL_SPLIT, eval_buckets)]
    if test_buckets:
        splits.append((TEST_SPLIT, test_buckets))
    return splits


def content_digest(data: bytes) -> bytes:
    """SHA-256 of an image file's original bytes: the split key and the duplicate key."""
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class SplitPlan:
    """Which input split is partitioned by hash, into which output splits; the rest are kept.

    TFX's own rule covers two cases: one input split partitioned by ``output_config``, or
    several input splits kept as they are. ImageExampleGen adds a third: several input splits
    *and* hash buckets, where only the ``train`` input split is partitioned (a dataset shipped
    as ``train/`` + ``test/`` gets an eval split carved from ``train/`` and keeps its test set).
    """

    input_splits: tuple[str, ...]
    hashed_input: str | None
    hash_splits: tuple[tuple[str, int], ...]

    @classmethod
    def create(
        cls, input_splits: list[str], hash_splits: list[tuple[str, int]] | None
    ) -> SplitPlan:
        """Plans the splits; raises ValueError if the names cannot be told apart."""
        if not input_splits:
            raise ValueError("input_config: no input splits")
        if len(set(input_splits)) != len(input_splits):
            raise ValueError(f"input_config: duplicated split names {input_splits}")
        hashed_input = None
        if hash_splits:
            if len(input_splits) == 1:
                hashed_input = input_splits[0]
            elif TRAIN_SPLIT in input_splits:
                hashed_input = TRAIN_SPLIT
            else:
                raise ValueError(
                    "output_config: hash splits with several input splits need one named "
                    f"'{TRAIN_SPLIT}', got {input_splits}"
                )
            if any(buckets <= 0 for _, buckets in hash_splits):
                raise ValueError(f"output_config: hash buckets must be positive: {hash_splits}")
        plan = cls(tuple(input_splits), hashed_input, tuple(hash_splits or ()))
        names = plan.output_names
        if len(set(names)) != len(names):
            raise ValueError(f"output split names collide: {names}")
        return plan

    @property
    def output_names(self) -> list[str]:
        """Output split names: the hash splits first, then the kept input splits."""
        kept = [s for s in self.input_splits if s != self.hashed_input]
        return [name for name, _ in self.hash_splits] + kept

    def assign(self, input_split: str, digest: bytes) -> str:
        """The output split of an image from ``input_split`` whose content digest is ``digest``.

        A function of the image's bytes only, so adding or removing other images never moves
        it, and byte-identical copies always land in the same split.
        """
        if input_split != self.hashed_input:
            return input_split
        total = sum(buckets for _, buckets in self.hash_splits)
        bucket = int.from_bytes(digest[:8], "big") % total
        for name, buckets in self.hash_splits:
            if bucket < buckets:
                return name
            bucket -= buckets
        raise AssertionError("unreachable: bucket beyond the split buckets")
