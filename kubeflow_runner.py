"""Compiles the pipeline for Kubeflow Pipelines or Vertex AI: ``tfx-image-pipeline compile``.

    python kubeflow_runner.py --config configs/kubeflow.yaml \\
        --container-image REGISTRY/tfx-image-pipeline:0.1.0 --output pipeline.yaml
    python kubeflow_runner.py --config configs/kubeflow.yaml \\
        --container-image REGISTRY/tfx-image-pipeline:0.1.0 --output vertex-job.json

Only compiles (see pipeline/kubeflow.py and docs/kubeflow.md for uploading and running).
"""

from __future__ import annotations

import sys

from pipeline.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """Writes the PipelineSpec (.yaml) or PipelineJob (.json); returns the exit code."""
    return cli_main(["compile", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
