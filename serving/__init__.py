"""Serving the pushed SavedModels: a local TensorFlow Serving stand-in and a predict client.

- ``serving.server``: a development server that speaks TensorFlow Serving's REST and gRPC APIs
  over ``SERVING_DIR/MODEL_NAME/<version>/`` or a ``models.config``, under
  ``tensorflow_model_server``'s flags (``python -m serving.server --help``).
- ``serving.client``: sends image files to any TF Serving endpoint and prints the top classes
  (``python -m serving.client --help``).

Production uses the real ``tensorflow_model_server``; both speak the same protocol.
"""

import trainer_module.legacy_keras  # noqa: F401  (the Keras 2 switch, before TensorFlow)
