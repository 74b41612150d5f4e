"""The Beam side of ImageExampleGen: reading, checking and writing, run by the workers.

Kept free of TFX imports: Beam's worker processes import this module to run the DoFns, and
TFX would add seconds to every worker's start-up. The executor (executor.py) plans a run on
the driver and calls ``build_ingestion``.
"""

from __future__ import annotations

import collections
import io
import json
import os
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import tensorflow as tf
from PIL import Image

from components.image_example_gen import report
from components.image_example_gen.example_codec import serialize_example
from components.image_example_gen.formats import Item, ReadContext, get_format
from components.image_example_gen.formats.base import clean_tf_error
from components.image_example_gen.image_check import check_image
from components.image_example_gen.image_files import Listing
from components.image_example_gen.options import IngestOptions, SplitPlan, content_digest
from components.image_example_gen.report import Facts, ReportContext, SkippedInputError

# TFX ExampleGen's own file name for split records (tfx write_split.DEFAULT_FILE_NAME).
RECORD_FILE_PREFIX = "data_tfrecord"
_COPY_CHUNK_BYTES = 16 * 2**20

_METRICS_NAMESPACE = "ImageExampleGen"
_FACTS_TAG = "facts"
_DIGESTS_TAG = "digests"
_DIGEST_BUCKETS = 16


def _split_tag(split: str) -> str:
    return f"split:{split}"


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    return buffer.getvalue()


_PAD_PNG = _tiny_png()


class DecodeChecker:
    """Runs ``tf.io.decode_image(channels=3, expand_animations=False)`` over batches.

    Images are decoded CHUNK at a time by one graph of CHUNK independent decode ops, which
    TensorFlow runs in parallel with little per-op overhead (about 1.5x ``tf.map_fn``'s
    throughput, 5x eager calls). A chunk that fails is bisected to name the images
    TensorFlow rejects, with TensorFlow's message.
    """

    CHUNK = 64

    def __init__(self) -> None:
        self._decode_chunk: Any = None

    def _chunk_fn(self) -> Any:
        if self._decode_chunk is None:

            def decode_chunk(chunk: tf.Tensor) -> tf.Tensor:
                # The op behind tf.io.decode_image(channels=3, expand_animations=False) for
                # uint8; raw ops keep tracing at a fraction of a second per process.
                return tf.stack(
                    [
                        tf.raw_ops.Shape(
                            input=tf.raw_ops.DecodeImage(
                                contents=image, channels=3, expand_animations=False
                            )
                        )
                        for image in tf.unstack(chunk, num=self.CHUNK)
                    ]
                )

            self._decode_chunk = tf.function(
                decode_chunk,
                input_signature=[tf.TensorSpec([self.CHUNK], tf.string)],
                autograph=False,
            )
        return self._decode_chunk

    def rejected(self, encoded: list[bytes]) -> dict[int, str]:
        """Index -> TensorFlow's error for each image it cannot decode."""
        failures: dict[int, str] = {}
        for start in range(0, len(encoded), self.CHUNK):
            indices = list(range(start, min(start + self.CHUNK, len(encoded))))
            self._check(encoded, indices, failures)
        return failures

    def _check(self, encoded: list[bytes], indices: list[int], failures: dict[int, str]) -> None:
        if not indices:
            return
        if len(indices) == 1:
            try:
                tf.io.decode_image(encoded[indices[0]], channels=3, expand_animations=False)
            except (tf.errors.OpError, ValueError) as err:
                failures[indices[0]] = clean_tf_error(err)
            return
        # The graph has a fixed size: pad with a 1x1 PNG, which costs nothing to decode.
        chunk = [encoded[i] for i in indices] + [_PAD_PNG] * (self.CHUNK - len(indices))
        try:
            self._chunk_fn()(tf.constant(chunk))
        except (tf.errors.OpError, ValueError):
            middle = len(indices) // 2
            self._check(encoded, indices[:middle], failures)
            self._check(encoded, indices[middle:], failures)


class _IngestFn(beam.DoFn):
    """Reads, checks and converts one work unit; emits serialized Examples per split.

    Side outputs: ``facts`` (counts and skips of the unit) and ``digests`` (content hashes,
    by bucket, for finding duplicates across the whole dataset).
    """

    def __init__(
        self,
        root: str,
        options: IngestOptions,
        plan: SplitPlan,
        state: Any,
        shards: dict[str, int],
        tmp_dir: str,
    ):
        self._shards = shards
        self._tmp_dir = tmp_dir
        self._options = options
        self._plan = plan
        self._format = get_format(options.data_format)
        self._context = ReadContext(root, options, state)
        self._checker: DecodeChecker | None = None
        self._ingested = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, "ingested")
        self._skipped = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, "skipped")

    def setup(self) -> None:
        self._checker = DecodeChecker()

    def process(self, encoded_unit: str) -> Iterator[Any]:
        unit_index, unit = json.loads(encoded_unit)
        for chunk_index, (items, facts) in enumerate(self._format.read(unit, self._context)):
            # Chunks of one big input file rotate over the shards.
            yield from self._ingest(items, facts, unit_index + chunk_index)

    def _ingest(self, items: list[Item], facts: Facts, unit_index: int) -> Iterator[Any]:
        checked = []
        for item in items:
            try:
                checked.append((item, check_image(item.data, self._options.max_image_pixels)))
            except SkippedInputError as err:
                facts.skip(item.image_id, err.reason, err.detail)
        assert self._checker is not None
        rejected = self._checker.rejected([image.data for _, image in checked])
        digests: dict[int, list[tuple[bytes, str, str, str]]] = collections.defaultdict(list)
        records: dict[str, list[bytes]] = collections.defaultdict(list)
        for index, (item, image) in enumerate(checked):
            if index in rejected:
                facts.skip(item.image_id, report.CORRUPT_IMAGE, rejected[index])
                continue
            digest = content_digest(item.data)
            split = self._plan.assign(item.split, digest)
            example = serialize_example(
                image.data,
                image.format,
                image.height,
                image.width,
                image.channels,
                item.label,
                item.image_id,
            )
            facts.ingested[(split, item.label)] += 1
            facts.formats[
                f"{image.source_format}->{image.format}" if image.converted else image.format
            ] += 1
            digests[digest[0] % _DIGEST_BUCKETS].append(
                (digest[:16], item.image_id, item.label, split)
            )
            records[split].append(example)
        for split, split_records in records.items():
            # Each unit's records are compressed here, in parallel, into a gzip part file;
            # Beam carries only (shard, part path), and the shard writer concatenates parts.
            part = os.path.join(self._tmp_dir, "parts", split, f"{uuid.uuid4().hex}.gz")
            tf.io.gfile.makedirs(os.path.dirname(part))
            with tf.io.TFRecordWriter(part, options="GZIP") as writer:
                for record in split_records:
                    writer.write(record)
            shard = unit_index % self._shards[split]  # round robin: balanced shards
            yield beam.pvalue.TaggedOutput(_split_tag(split), (shard, part))
        self._ingested.inc(sum(facts.ingested.values()))
        self._skipped.inc(len(facts.skipped))
        yield beam.pvalue.TaggedOutput(_FACTS_TAG, facts)
        for bucket, entries in digests.items():
            yield beam.pvalue.TaggedOutput(_DIGESTS_TAG, (bucket, entries))


class WriteShardFn(beam.DoFn):
    """Writes one output shard, ``data_tfrecord-SSSSS-of-NNNNN.gz``, from its part files.

    A gzip file may hold several gzip members one after the other (RFC 1952), and both
    TensorFlow's and Beam's TFRecord readers read them through, so a shard is the byte
    concatenation of its non-empty parts, in a fixed order: no record is decompressed or
    compressed again. The shard is written under a temporary name and renamed, so a retried
    bundle replaces it whole.
    """

    def __init__(self, split_uri: str, num_shards: int, tmp_dir: str):
        self._split_uri = split_uri
        self._num_shards = num_shards
        self._tmp_dir = tmp_dir

    def process(self, shard_parts: tuple[int, Iterable[str]]) -> Iterator[str]:
        shard, parts = shard_parts
        name = f"{RECORD_FILE_PREFIX}-{shard:05d}-of-{self._num_shards:05d}.gz"
        tmp_path = os.path.join(self._tmp_dir, f"{uuid.uuid4().hex}-{name}")
        with tf.io.gfile.GFile(tmp_path, "wb") as out:
            for part in sorted(parts):
                with tf.io.gfile.GFile(part, "rb") as f:
                    while chunk := f.read(_COPY_CHUNK_BYTES):
                        out.write(chunk)
        final_path = os.path.join(self._split_uri, name)
        tf.io.gfile.makedirs(self._split_uri)
        tf.io.gfile.rename(tmp_path, final_path, overwrite=True)
        yield final_path


def read_part_records(shard_part: tuple[int, str]) -> Iterator[bytes]:
    """The serialized Examples of one part file."""
    _, part = shard_part
    yield from tf.data.TFRecordDataset(part, compression_type="GZIP").as_numpy_iterator()


def _duplicate_facts(bucket_entries: tuple[int, Iterable[list[tuple]]]) -> Facts:
    _, lists = bucket_entries
    entries = [entry for entry_list in lists for entry in entry_list]
    return Facts(duplicate_groups=report.find_duplicate_groups(entries))


class _MergeFactsFn(beam.CombineFn):
    def create_accumulator(self) -> Facts:
        return Facts()

    def add_input(self, accumulator: Facts, facts: Facts) -> Facts:
        return accumulator.merge(facts)

    def merge_accumulators(self, accumulators: Iterable[Facts]) -> Facts:
        merged = Facts()
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: Facts) -> Facts:
        return accumulator


def write_report(report_doc: dict[str, Any], path: str) -> None:
    """Writes the report as UTF-8 JSON (creating the folder)."""
    tf.io.gfile.makedirs(posixpath.dirname(path) if "://" in path else os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(report_doc, indent=1, ensure_ascii=False))


def write_report_from_facts(facts: Facts, context: ReportContext) -> None:
    write_report(report.build_report(facts, context), context.report_path)


def read_report(path: str) -> dict[str, Any]:
    """The report JSON at ``path``."""
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


@dataclass(frozen=True)
class IngestRun:
    """What the driver side settled before the Beam job."""

    root: str
    options: IngestOptions
    plan: SplitPlan
    listing: Listing
    state: Any  # the format's prepare(): what every worker needs (e.g. TFRecord labels)
    split_sources: dict[str, str]
    shards: dict[str, int]


def build_ingestion(
    pipeline: beam.Pipeline, run: IngestRun, tmp_dir: str
) -> tuple[dict[str, beam.pvalue.PCollection], beam.pvalue.PCollection]:
    """The Beam graph: work units -> checked Examples per split, and the merged Facts.

    Each split's PCollection holds (shard, gzip part file of serialized Examples) pairs.
    """
    units = get_format(run.options.data_format).work_units(run.listing)
    units = [[index, unit] for index, unit in enumerate(units)]
    # One JSON line per unit in a file: a Create of the units would pickle and compress
    # them into the pipeline, and infer a type from every value (seconds for 70k images).
    tf.io.gfile.makedirs(tmp_dir)
    units_path = os.path.join(tmp_dir, "work_units.jsonl")
    with tf.io.gfile.GFile(units_path, "w") as f:
        f.write("".join(json.dumps(unit) + "\n" for unit in units))
    names = run.plan.output_names
    results = (
        pipeline
        | "ListInputs" >> beam.io.ReadFromText(units_path)
        | "Distribute" >> beam.Reshuffle()
        | "ReadAndCheck"
        >> beam.ParDo(
            _IngestFn(run.root, run.options, run.plan, run.state, run.shards, tmp_dir)
        ).with_outputs(_FACTS_TAG, _DIGESTS_TAG, *[_split_tag(n) for n in names])
    )
    duplicates = (
        results[_DIGESTS_TAG]
        | "GroupDigests" >> beam.GroupByKey()
        | "FindDuplicates" >> beam.Map(_duplicate_facts)
    )
    listing_facts = pipeline | "ListingFacts" >> beam.Create([run.listing.facts])
    facts = (
        (results[_FACTS_TAG], duplicates, listing_facts)
        | "AllFacts" >> beam.Flatten()
        | "MergeFacts" >> beam.CombineGlobally(_MergeFactsFn())
    )
    return {name: results[_split_tag(name)] for name in names}, facts
