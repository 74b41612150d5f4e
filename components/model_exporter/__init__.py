"""ModelExporter: TFLite and ONNX copies of the trained model, evaluated and gated."""

from components.model_exporter.component import ModelExporter, ModelExports

__all__ = ["ModelExporter", "ModelExports"]
