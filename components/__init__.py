"""Custom TFX components of the image pipeline."""

import os

# TFX 1.16, tf.Transform and TFMA need Keras 2; must be set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
