"""Benchmarks: one script per claim, each writing its figures into BENCHMARKS.md."""

import os

import trainer_module.legacy_keras  # noqa: F401  (the Keras 2 switch, before TensorFlow)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ logs: warnings and up.
