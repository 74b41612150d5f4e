"""Runs the pipeline locally: the same as ``tfx-image-pipeline run`` (see pipeline/cli.py).

python local_runner.py                      # embedded sample, defaults
python local_runner.py --config my.yaml --epochs 5
python local_runner.py --dry-run            # resolved config and component graph only
"""

from __future__ import annotations

import sys

from pipeline.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """Runs the pipeline with LocalDagRunner and prints the run summary; returns the exit code."""
    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
