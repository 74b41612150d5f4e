"""Beam executor: image files, manifest rows or TFRecords -> tf.train.Examples in our layout.

The driver side lists the inputs (``image_files``) and fails early on an unusable root. The
Beam job then reads and checks files in parallel work units: ``image_check`` decides per
format, TensorFlow's own ``decode_image`` (the op Transform and serving use) confirms every
stored image decodes, and each image goes to a split chosen from a hash of its bytes. Skips
and counts flow into ``ingestion_report.json`` inside the examples artifact; the run fails,
naming the report, when too many inputs are bad or too few remain.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import apache_beam as beam
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.image_example_gen import report
from components.image_example_gen.formats import get_format
from components.image_example_gen.image_files import ImageFolderError, Listing
from components.image_example_gen.ingest import (
    IngestRun,
    WriteShardFn,
    build_ingestion,
    read_part_records,
    read_report,
    write_report,
    write_report_from_facts,
)
from components.image_example_gen.options import IngestOptions, SplitPlan
from components.image_example_gen.report import ReportContext

_LOG = logging.getLogger(__name__)
_NOTES_KEY = "layout_notes"
# Bytes per image assumed for shard sizing when a file system gives no sizes.
_ASSUMED_IMAGE_BYTES = 100_000

# The folder beside the examples artifact that keeps the report of a failed run (the
# orchestrator deletes a failed run's output artifacts).
FAILED_REPORTS_FOLDER = "ingestion_report"


class ImageIngestionError(RuntimeError):
    """The inputs cannot make a training set; the message names the report and the fix."""


def failed_report_path(examples_uri: str) -> str:
    """Where a failed run's report is kept: beside the examples artifact, which is deleted."""
    parent = os.path.dirname(os.path.dirname(examples_uri.rstrip("/")))
    return os.path.join(
        parent,
        FAILED_REPORTS_FOLDER,
        os.path.basename(examples_uri.rstrip("/")),
        report.REPORT_FILE_NAME,
    )


def custom_config_struct(
    options: IngestOptions, data_format: str, notes: tuple[str, ...] = ()
) -> example_gen_pb2.CustomConfig:
    """The component's custom_config: the options with the format resolved at build time,
    and the layout's notes (for the report)."""
    struct = struct_pb2.Struct()
    struct.update({**options.to_dict(), "data_format": data_format, _NOTES_KEY: list(notes)})
    config = example_gen_pb2.CustomConfig()
    config.custom_config.Pack(struct)
    return config


def options_from_exec_properties(exec_properties: dict[str, Any]) -> IngestOptions:
    """The options of ``custom_config_struct`` from the executor's exec properties."""
    return IngestOptions.from_dict(_custom_config_values(exec_properties))


def layout_notes_from_exec_properties(exec_properties: dict[str, Any]) -> list[str]:
    """The layout notes of ``custom_config_struct`` from the executor's exec properties."""
    return [str(n) for n in _custom_config_values(exec_properties).get(_NOTES_KEY, [])]


def _custom_config_values(exec_properties: dict[str, Any]) -> dict[str, Any]:
    raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    values: dict[str, Any] = {}
    if raw:
        config = example_gen_pb2.CustomConfig()
        proto_utils.json_to_proto(raw, config)
        struct = struct_pb2.Struct()
        if config.custom_config.Unpack(struct):
            values = json_format.MessageToDict(struct)
    return values


class Executor(BaseExampleGenExecutor):
    """ExampleGen executor for image folders, CSV/TSV manifests and TFRecords of images."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 - TFX API
        raise NotImplementedError(
            "ImageExampleGen builds all splits at once in GenerateExamplesByBeam (images are "
            "split by a hash of their bytes, and duplicates are found across splits)"
        )

    def GenerateExamplesByBeam(  # noqa: N802 - TFX API
        self, pipeline: beam.Pipeline, exec_properties: dict[str, Any]
    ) -> dict[str, beam.pvalue.PCollection]:
        """Split name -> PCollection of serialized tf.train.Examples (report not written)."""
        run = self._plan_run(exec_properties)
        splits, _ = build_ingestion(pipeline, run, self._get_tmp_dir())
        return {
            name: parts | f"Records[{name}]" >> beam.FlatMap(read_part_records)
            for name, parts in splits.items()
        }

    def _plan_run(self, exec_properties: dict[str, Any]) -> IngestRun:
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config
        )
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config
        )
        options = options_from_exec_properties(exec_properties)
        root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        plan = SplitPlan.create(
            [s.name for s in input_config.splits],
            [(s.name, s.hash_buckets) for s in output_config.split_config.splits],
        )
        input_format = get_format(options.data_format)
        listing = Listing()
        listing.facts.notes.extend(layout_notes_from_exec_properties(exec_properties))
        input_bytes: dict[str, float] = {}
        for split in input_config.splits:
            found = input_format.list_split(root, split.name, split.pattern, options)
            listing.extend(found)
            sizes = [f.size for f in found.images] + [r.size for r in found.records]
            input_bytes[split.name] = sum(s if s >= 0 else _ASSUMED_IMAGE_BYTES for s in sizes)
        state = input_format.prepare(root, options, listing.facts)
        sources = {s.name: input_format.describe_source(s.pattern) for s in input_config.splits}
        split_sources: dict[str, str] = {}
        shards: dict[str, int] = {}
        total_buckets = sum(b for _, b in plan.hash_splits)
        shard_bytes = options.example_shard_mb * 2**20
        for name, buckets in plan.hash_splits:
            share = buckets / total_buckets
            split_sources[name] = f"{share:.1%} of {sources[plan.hashed_input]} by content hash"
            shards[name] = max(1, math.ceil(input_bytes[plan.hashed_input] * share / shard_bytes))
        for name in plan.input_splits:
            if name != plan.hashed_input:
                split_sources[name] = sources[name]
                shards[name] = max(1, math.ceil(input_bytes[name] / shard_bytes))
        return IngestRun(root, options, plan, listing, state, split_sources, shards)

    def Do(  # noqa: N802 - TFX API
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        """Writes the split Examples and ingestion_report.json; raises ImageIngestionError."""
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY]
        )
        run = self._plan_run(exec_properties)
        examples.split_names = artifact_utils.encode_split_names(run.plan.output_names)
        report_path = os.path.join(examples.uri, report.REPORT_FILE_NAME)
        context = ReportContext(
            data_root=run.root,
            data_format=run.options.data_format,
            split_sources=run.split_sources,
            max_bad_fraction=run.options.max_bad_fraction,
            report_path=report_path,
        )
        try:
            get_format(run.options.data_format).check_listing(run.listing, run.root)
        except ImageFolderError as err:
            path = failed_report_path(examples.uri)
            write_report(report.build_report(run.listing.facts, context), path)
            raise ImageIngestionError(f"{err}. Skipped files and reasons: {path}") from None

        _LOG.info(
            "ImageExampleGen: %d images, %d TFRecord files, %d skipped while listing %s; "
            "shards per split: %s",
            len(run.listing.images),
            len(run.listing.records),
            len(run.listing.facts.skipped),
            run.root,
            run.shards,
        )
        tmp_dir = os.path.join(examples.uri, ".tmp")
        with self._make_beam_pipeline() as pipeline:
            splits, facts = build_ingestion(pipeline, run, tmp_dir)
            for name, batches in splits.items():
                split_uri = artifact_utils.get_split_uri(
                    output_dict[standard_component_specs.EXAMPLES_KEY], name
                )
                _ = (
                    batches
                    | f"GroupShards[{name}]" >> beam.GroupByKey()
                    | f"WriteShards[{name}]"
                    >> beam.ParDo(WriteShardFn(split_uri, run.shards[name], tmp_dir))
                )
            _ = facts | "WriteReport" >> beam.Map(write_report_from_facts, context)

        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
        report_doc = read_report(report_path)
        totals = report_doc["totals"]
        examples.set_string_custom_property("ingestion_report", report_path)
        examples.set_int_custom_property("ingested_images", totals["ingested"])
        examples.set_int_custom_property("skipped_bad_files", totals["skipped_bad"])
        examples.set_int_custom_property("skipped_ignored_files", totals["skipped_ignored"])
        examples.set_int_custom_property("duplicate_groups", report_doc["duplicates"]["groups"])
        if report_doc["result"]["errors"]:
            path = failed_report_path(examples.uri)
            report_doc["report_path"] = path
            report_doc["result"]["errors"] = report.check_report(report_doc)
            write_report(report_doc, path)
            _LOG.error("%s", report.format_summary(report_doc))
            raise ImageIngestionError(
                "ImageExampleGen: " + "; ".join(report_doc["result"]["errors"])
            )
        # Warnings reach the console of a local run; a clean ingestion stays in the log file.
        needs_attention = (
            totals["skipped_bad"]
            or report_doc["duplicates"]["label_conflicts"]
            or report_doc["duplicates"]["across_splits"]
            or report_doc.get("warnings")
        )
        _LOG.log(
            logging.WARNING if needs_attention else logging.INFO,
            "%s",
            report.format_summary(report_doc),
        )
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(
            examples, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP)
        )
