"""Model code that runs inside TFX: preprocessing_fn (Transform), run_fn (Trainer) and exports.

Nothing here imports the ``pipeline`` package: everything arrives through TFX (fn_args,
custom_config), so this package can be baked into a container image on its own.
"""

import os

# TFX 1.16, tf.Transform and TFMA need Keras 2; must be set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
