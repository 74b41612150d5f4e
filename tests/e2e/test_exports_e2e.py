"""The exports of the e2e run: published beside version 1, each agreeing with the SavedModel
in its own runtime, reported in the run summary, and an int8 export that loses accuracy
refused by the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving import layout
from tests.e2e.conftest import E2E_IMAGE_SIZE

pytestmark = pytest.mark.slow

# Float exports must give the SavedModel's answer on 95% of the holdout images (they give it
# on all: same weights, same float input). int8 quantizes every activation to 256 levels: on
# this 96 px model of upsampled 28 px images it agreed on 92 of 100 (97 of 104 eval images)
# while its accuracy was one point higher than the SavedModel's; in a later run its holdout
# accuracy was 6 points lower (0.75 against 0.81) while the gate, on the eval split, passed
# it: on 100 images one image is a point, so accuracy is the gate's business (on the eval
# split, tested below and in the unit tests), and here int8 must agree on 90%.
MIN_AGREEMENT = 0.95
MIN_INT8_AGREEMENT = 0.90


def _first_artifact(output_dir: Path, component: str, name: str) -> Path:
    """The first run's artifact folder (execution ids grow run after run)."""
    root = output_dir / "pipeline_root" / component / name
    return root / min((p.name for p in root.iterdir() if p.name.isdigit()), key=int)


def test_exports_are_published_beside_version_1(pipeline_runs, pushed_model):
    exports = Path(layout.exports_path(str(pipeline_runs.model_dir), 1))
    from trainer_module.model_exports import read_report

    report = read_report(str(exports))
    passed = {e["file"] for e in report["exports"] if e["pushed"]}
    assert {e["kind"] for e in report["exports"]} == set(layout.EXPORT_FILES)
    assert sorted(p.name for p in exports.iterdir()) == sorted(
        passed | {layout.EXPORT_LABELS_FILE, layout.EXPORT_REPORT_FILE}
    )
    for export in report["exports"]:
        if not export["pushed"]:
            assert "max_export_accuracy_drop" in export["reason"]
    labels = (exports / layout.EXPORT_LABELS_FILE).read_text().splitlines()
    assert len(labels) == 10 and "ankle_boot" in labels
    from trainer_module.model_exports import packed_labels

    for name in passed - {layout.EXPORT_FILES["onnx"]}:
        assert packed_labels(str(exports / name)) == labels, name  # TFLite metadata
    # TF Serving's rule (a version is an integer folder) leaves exports/ alone.
    assert layout.list_versions(str(pipeline_runs.model_dir)) == [1]


def test_run_summary_reports_each_export_against_the_saved_model(pipeline_runs):
    log = pipeline_runs.first_run_log
    assert "exports (eval accuracy on " in log
    for kind in layout.EXPORT_FILES:
        assert f"\n  {kind} " in log
    assert f"exports at: {layout.exports_path(str(pipeline_runs.model_dir), 1)}" in log
    assert "exports: none made (the Evaluator did not bless" in pipeline_runs.second_run_log


def test_each_export_agrees_with_the_saved_model_on_holdout_images(
    pipeline_runs, pushed_model, holdout_dir
):
    import tensorflow as tf

    from trainer_module import features
    from trainer_module.model_exports import as_export_input, load_runtime, pixels_from_encoded

    paths = sorted(holdout_dir.glob("*/*.png"))
    encoded = [p.read_bytes() for p in paths]
    serve = tf.saved_model.load(str(pushed_model.version_dir)).signatures[
        features.SERVING_SIGNATURE
    ]
    saved = serve(**{features.SERVING_INPUT_KEY: tf.constant(encoded)})[
        features.CLASS_ID_OUTPUT
    ].numpy()
    pixels = pixels_from_encoded(encoded, E2E_IMAGE_SIZE)
    # Every export the exporter made, refused ones included (they lie in refused/).
    made = _first_artifact(pipeline_runs.output_dir, "ModelExporter", "model_exports")
    names = (made / layout.EXPORT_LABELS_FILE).read_text().splitlines()
    truth = np.array([names.index(p.parent.name) for p in paths])
    agreement, accuracy = {}, {"SavedModel": float(np.mean(saved == truth))}
    for kind, name in layout.EXPORT_FILES.items():
        path = made / name if (made / name).exists() else made / "refused" / name
        runtime = load_runtime(kind, str(path))
        predicted = np.argmax(runtime.predict(as_export_input(pixels, kind)), axis=-1)
        agreement[kind] = float(np.mean(predicted == saved))
        accuracy[kind] = float(np.mean(predicted == truth))
    for kind, value in agreement.items():
        floor = MIN_INT8_AGREEMENT if kind == "tflite_int8" else MIN_AGREEMENT
        assert value >= floor, (kind, agreement, accuracy)


def test_int8_from_a_nonsense_representative_set_is_refused_with_its_reason(
    pipeline_runs, pushed_model, tmp_path
):
    from trainer_module.backbone_specs import get_backbone_spec
    from trainer_module.model_exports import export_and_gate, read_report

    examples = _first_artifact(pipeline_runs.output_dir, "ImageExampleGen", "examples")

    def black_images():  # calibrates every activation range to a constant input
        for _ in range(8):
            yield [np.zeros((1, E2E_IMAGE_SIZE, E2E_IMAGE_SIZE, 3), np.uint8)]

    report = export_and_gate(
        saved_model_dir=str(pushed_model.version_dir),
        transform_output=str(
            _first_artifact(pipeline_runs.output_dir, "Transform", "transform_graph")
        ),
        train_patterns=[str(examples / "Split-train" / "*")],
        eval_patterns=[str(examples / "Split-eval" / "*")],
        output_dir=str(tmp_path),
        kinds=["tflite_int8"],
        spec=get_backbone_spec("efficientnet_lite0"),
        max_accuracy_drop=0.01,
        representative=black_images,
    )
    [int8] = report["exports"]
    assert not int8["pushed"]
    assert int8["accuracy"] < report["saved_model_accuracy"] - 0.01
    assert "below the SavedModel's" in int8["reason"]
    assert "max_export_accuracy_drop 0.01" in int8["reason"]
    assert not (tmp_path / "model_int8.tflite").exists()
    assert (tmp_path / "refused" / "model_int8.tflite").exists()
    assert read_report(str(tmp_path)) == report
