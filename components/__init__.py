"""Custom TFX components of the image pipeline."""

from typing import Any

import trainer_module.legacy_keras  # noqa: F401  (the Keras 2 switch, before TensorFlow)

# Custom artifact types by name. A Kubeflow v2 task recovers an artifact's Python class by
# importing its schema title, "<namespace>.<Name>" (one dot, by KFP's title rule): the types'
# TYPE_NAMEs are "components.<Name>", so they must be attributes of this package. They are
# imported on first use only: importing `components` stays free of TFX.
_ARTIFACT_TYPES = {"ModelExports": "components.model_exporter.component"}


def __getattr__(name: str) -> Any:
    if name in _ARTIFACT_TYPES:
        import importlib

        return getattr(importlib.import_module(_ARTIFACT_TYPES[name]), name)
    raise AttributeError(f"module 'components' has no attribute {name!r}")
