"""Per-class metrics derived from a confusion matrix."""

import pytest

from pipeline.run_summary import per_class_from_confusion


def test_precision_recall_f1_per_class():
    # actual a -> predicted a: 3, a -> b: 1, b -> b: 2, c never predicted nor present.
    entries = [(0, 0, 3.0), (0, 1, 1.0), (1, 1, 2.0)]
    result = per_class_from_confusion(entries, ["a", "b", "c"])
    assert result["a"] == {
        "precision": 1.0,
        "recall": 0.75,
        "f1": pytest.approx(6 / 7),
        "support": 4.0,
    }
    assert result["b"]["precision"] == pytest.approx(2 / 3)
    assert result["b"]["recall"] == 1.0
    assert result["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
