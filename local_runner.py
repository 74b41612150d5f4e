"""Runs the pipeline locally with TFX's LocalDagRunner and a SQLite ML Metadata store.

python local_runner.py                      # embedded sample, defaults
python local_runner.py --config my.yaml --epochs 5
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Before TensorFlow is imported anywhere.

from pipeline.config import ConfigError, add_config_arguments, config_from_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parses flags, runs the pipeline and prints the run summary; returns the exit code."""
    parser = argparse.ArgumentParser(description="Run the image pipeline locally.")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 2

    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline
    from pipeline.run_summary import format_summary, open_store, summarize_run

    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    try:
        tfx.orchestration.LocalDagRunner().run(create_pipeline(config, metadata))
    except Exception as err:  # noqa: BLE001 - report which run failed, then exit non-zero
        print(
            f"pipeline failed: {type(err).__name__}: {err}\n"
            f"component logs are above; artifacts under {config.pipeline_root}",
            file=sys.stderr,
        )
        return 1
    print(format_summary(summarize_run(open_store(config.metadata_path), config.pipeline_name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
