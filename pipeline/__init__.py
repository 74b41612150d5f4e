"""Pipeline configuration, the pipeline factory and the command-line front door."""

import trainer_module.legacy_keras  # noqa: F401  (the Keras 2 switch, before TensorFlow)
