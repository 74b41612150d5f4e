"""ServedModelBaseline: the model TF Serving serves now, as the Evaluator's baseline."""

from components.served_baseline.component import ServedModelBaseline

__all__ = ["ServedModelBaseline"]
