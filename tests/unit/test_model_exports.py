"""The export gate and the exports' input contract."""

from __future__ import annotations

import numpy as np

from trainer_module.model_exports import EXPORT_KINDS, as_export_input, gate


def test_gate_passes_a_drop_up_to_the_limit_and_names_a_larger_one():
    assert gate("tflite_int8", 0.79, 0.80, 0.01) == (True, "")
    assert gate("onnx", 0.85, 0.80, 0.01) == (True, "")
    passed, reason = gate("tflite_int8", 0.7, 0.8, 0.01)
    assert not passed
    assert reason == (
        "tflite_int8: eval accuracy 0.7000 is 0.1000 below the SavedModel's 0.8000, more than "
        "max_export_accuracy_drop 0.01"
    )


def test_int8_takes_rounded_uint8_and_the_float_exports_take_the_pixels_as_they_are():
    pixels = np.array([[[[0.4, 127.5, 254.6]]]], np.float32)
    for kind in EXPORT_KINDS:
        converted = as_export_input(pixels, kind)
        if kind == "tflite_int8":
            assert converted.dtype == np.uint8 and converted.ravel().tolist() == [0, 128, 255]
        else:
            assert converted.dtype == np.float32 and np.array_equal(converted, pixels)
