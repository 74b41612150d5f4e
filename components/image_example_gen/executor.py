"""Beam executor: image files -> tf.train.Example records, split by TFX's hash partitioning."""

from __future__ import annotations

import logging
import os
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.types import standard_component_specs

from components.image_example_gen.image_files import ImageFile, inspect_image, list_image_files
from trainer_module import features

_METRICS_NAMESPACE = "ImageExampleGen"


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


class _ReadImageFn(beam.DoFn):
    """Reads one file and emits its tf.Example; unusable files are counted and logged."""

    def __init__(self, root: str):
        self._root = root
        self._ingested = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, "ingested")
        self._skipped = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, "skipped")

    def process(self, image_file: ImageFile):
        path = os.path.join(self._root, image_file.relative_path)
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                data = f.read()
            info = inspect_image(data)
        except (OSError, ValueError, tf.errors.OpError) as err:
            self._skipped.inc()
            logging.warning("ImageExampleGen: skipping %s: %s", path, err)
            return
        self._ingested.inc()
        yield tf.train.Example(
            features=tf.train.Features(
                feature={
                    features.IMAGE_KEY: _bytes_feature(data),
                    features.IMAGE_FORMAT_KEY: _bytes_feature(info.format.encode()),
                    features.IMAGE_HEIGHT_KEY: _int_feature(info.height),
                    features.IMAGE_WIDTH_KEY: _int_feature(info.width),
                    features.IMAGE_CHANNELS_KEY: _int_feature(info.channels),
                    features.LABEL_KEY: _bytes_feature(image_file.label.encode("utf-8")),
                    features.IMAGE_ID_KEY: _bytes_feature(image_file.relative_path.encode("utf-8")),
                }
            )
        )


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _ImageFolderToExample(  # noqa: N802 - Beam's PTransform naming
    pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str
) -> beam.pvalue.PCollection:
    root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    # Listing happens here, before the Beam job starts, so an unusable folder fails with
    # one clear message instead of an error from inside a worker.
    image_files = list_image_files(root)
    logging.info(
        "ImageExampleGen: %d image files in %d classes under %s",
        len(image_files),
        len({f.label for f in image_files}),
        root,
    )
    return (
        pipeline
        | "ListImageFiles" >> beam.Create(image_files, reshuffle=True)
        | "ReadAndCheckImages" >> beam.ParDo(_ReadImageFn(root))
    )


class Executor(BaseExampleGenExecutor):
    """ExampleGen executor for a folder with one subfolder of images per class."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 - TFX API
        return _ImageFolderToExample
