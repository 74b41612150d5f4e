"""Custom TFX components of the image pipeline."""

import trainer_module.legacy_keras  # noqa: F401  (the Keras 2 switch, before TensorFlow)
