"""ServedBaselineEvaluator: TFX's Evaluator gated against the served model."""

from components.evaluator.component import ServedBaselineEvaluator

__all__ = ["ServedBaselineEvaluator"]
