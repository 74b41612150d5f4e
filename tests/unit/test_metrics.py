"""Expected calibration error against a hand computation."""

import numpy as np

from trainer_module.metrics import ExpectedCalibrationError


def test_ece_matches_hand_computation():
    probabilities = np.array(
        [[0.95, 0.05], [0.95, 0.05], [0.65, 0.35], [0.35, 0.65]], dtype=np.float32
    )
    labels = np.array([0, 1, 0, 0])
    metric = ExpectedCalibrationError(num_bins=10)
    metric.update_state(labels[:2], probabilities[:2])  # batches accumulate
    metric.update_state(labels[2:], probabilities[2:])
    # Bin 0.9-1.0: 2 examples, accuracy 0.5, confidence 0.95 -> gap 0.45, weight 1/2.
    # Bin 0.6-0.7: 2 examples, accuracy 0.5 (first right, second wrong), confidence 0.65.
    expected = 0.5 * 0.45 + 0.5 * 0.15
    np.testing.assert_allclose(metric.result().numpy(), expected, rtol=1e-5)
    metric.reset_state()
    metric.update_state(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    np.testing.assert_allclose(metric.result().numpy(), 0.0, atol=1e-6)
