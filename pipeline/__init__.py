"""Pipeline configuration, the pipeline factory and the command-line front door."""

import os

# TFX 1.16, tf.Transform and TFMA need Keras 2; must be set before TensorFlow is imported.
# Child processes (Beam workers) inherit it.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
