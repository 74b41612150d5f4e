"""Runs the pipeline's data components alone: ImageExampleGen and StatisticsGen.

    python -m tests.containers.data_components --config configs/portable.yaml [--FIELD VALUE ...]

The two components are taken from ``create_pipeline(config)`` itself, so they run with the
configuration's Beam arguments exactly as in a whole run, and LocalDagRunner runs them with a
SQLite ML Metadata store. test_portable_runner.py runs this in a subprocess, so a runner that
hangs can be stopped by its timeout.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from pipeline.config import add_config_arguments, config_from_args  # noqa: E402
from pipeline.pipeline import EXAMPLE_GEN, STATISTICS_GEN, create_pipeline  # noqa: E402

DATA_COMPONENTS = (EXAMPLE_GEN, STATISTICS_GEN)


def main(argv: list[str] | None = None) -> int:
    """Parses the configuration flags, runs the data components, returns the exit code."""
    from tfx import v1 as tfx

    parser = argparse.ArgumentParser(prog="python -m tests.containers.data_components")
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(argv))
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    whole = create_pipeline(config, metadata)
    kept = [c for c in whole.components if c.id in DATA_COMPONENTS]
    for component in kept:  # The compiler refuses edges to components left out.
        for downstream in list(component.downstream_nodes):
            if downstream.id not in DATA_COMPONENTS:
                component.remove_downstream_node(downstream)
    tfx.orchestration.LocalDagRunner().run(
        tfx.dsl.Pipeline(
            pipeline_name=whole.pipeline_info.pipeline_name,
            pipeline_root=whole.pipeline_info.pipeline_root,
            components=kept,
            metadata_connection_config=metadata,
            beam_pipeline_args=whole.beam_pipeline_args,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
