"""The ImageExampleGen component: TFX's FileBasedExampleGen with an image executor.

Building the component reads the top of the data root (one folder listing) to choose the
input format and the splits; the result is an ordinary ExampleGen ``input_config`` (one
pattern per split folder), ``output_config`` (hash buckets) and ``custom_config`` (the
options), visible in ML Metadata and in a compiled Kubeflow spec. So the data root must be
readable where the pipeline is built.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.image_example_gen import executor
from components.image_example_gen.formats import detect_layout
from components.image_example_gen.image_files import Layout
from components.image_example_gen.options import IngestOptions


def input_config_for(layout: Layout) -> example_gen_pb2.Input:
    """One ExampleGen input split per (name, pattern) of the layout."""
    return example_gen_pb2.Input(
        splits=[
            example_gen_pb2.Input.Split(name=name, pattern=pattern)
            for name, pattern in layout.splits
        ]
    )


def output_config_for(layout: Layout) -> example_gen_pb2.Output:
    """Hash buckets of the layout's hash split, or no split config when splits are given.

    No ``partition_feature_name``: the executor partitions by a hash of each image's bytes,
    which is stable when other images come and go and keeps identical copies together.
    """
    if not layout.hash_splits:
        return example_gen_pb2.Output()
    return example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=buckets)
                for name, buckets in layout.hash_splits
            ]
        )
    )


class ImageExampleGen(FileBasedExampleGen):
    """Reads images into tf.Examples (see trainer_module/features.py) with a report.

    Inputs (``input_base`` is the data root):

    - class folders ``ROOT/<class>/...``, or split folders ``ROOT/train/<class>/...`` with
      ``val/``, ``validation/`` or ``eval/`` (the "eval" split) and ``test/``;
    - ``options.manifest``: a CSV/TSV file in the root with a path and a label column;
    - TFRecord files of tf.train.Examples (``options.data_format='tfrecord'``, or found by
      ``'auto'``), converted to our feature layout.

    Output: the ``examples`` artifact, with ``ingestion_report.json`` at its root.
    """

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, input_base: str, options: IngestOptions | None = None, **option_values: Any):
        """Args:
        input_base: the data root.
        options: how to read it; defaults to IngestOptions().
        **option_values: IngestOptions fields that override ``options``
          (e.g. ``eval_fraction=0.1``).

        Raises ValueError (bad option) or ImageFolderError (unusable root) at build time.
        """
        try:
            options = dataclasses.replace(options or IngestOptions(), **option_values)
        except TypeError as err:
            raise ValueError(f"ImageExampleGen: {err}") from None
        options.validate()
        layout = detect_layout(input_base, options)
        for note in layout.notes:
            logging.getLogger(__name__).warning("ImageExampleGen: %s", note)
        super().__init__(
            input_base=input_base,
            input_config=input_config_for(layout),
            output_config=output_config_for(layout),
            custom_config=executor.custom_config_struct(options, layout.data_format, layout.notes),
        )
