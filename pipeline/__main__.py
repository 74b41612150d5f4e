"""``python -m pipeline``: the same command as ``tfx-image-pipeline`` (see pipeline/cli.py)."""

import sys

from pipeline.cli import main

sys.exit(main())
