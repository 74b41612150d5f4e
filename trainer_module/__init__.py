"""Model code that runs inside TFX: preprocessing_fn (Transform), run_fn (Trainer) and exports.

Nothing here imports the ``pipeline`` package: everything arrives through TFX (fn_args,
custom_config), so this package can be baked into a container image on its own.
"""

from trainer_module import legacy_keras  # noqa: F401  (the Keras 2 switch, before TensorFlow)
