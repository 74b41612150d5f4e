"""Shared test setup: Keras 2 for TensorFlow, and paths to the embedded data."""

from pathlib import Path

import pytest

import trainer_module.legacy_keras  # noqa: F401  (the Keras 2 switch, before any test imports TF)

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
HOLDOUT_DIR = REPO_ROOT / "data" / "holdout"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The embedded training sample: 10 Fashion-MNIST classes, 50 PNGs each."""
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def holdout_dir() -> Path:
    """10 PNGs per class from the Fashion-MNIST test set, never used for training."""
    return HOLDOUT_DIR
