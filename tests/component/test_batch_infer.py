"""``infer`` on Beam: one row per readable image, the rest listed with ExampleGen's reasons."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import tensorflow as tf

from components.image_example_gen import report
from pipeline import batch_infer, cli
from pipeline.config import resolve_beam_args
from tests.tiny_model import save_tiny_model
from trainer_module import features

NUM_CLASSES = 4
FAVOURITE = 2


@pytest.fixture(scope="module")
def served_model(tmp_path_factory) -> Path:
    """SERVING_DIR/MODEL with version 7 of a tiny classifier that favours class_2."""
    model_dir = tmp_path_factory.mktemp("serving") / "tiny"
    save_tiny_model(model_dir / "7", NUM_CLASSES, FAVOURITE)
    return model_dir


class _BrightnessClassifier(tf.Module):
    """serving_default and classification: class probabilities that depend on each image's
    brightness, so rows matched to the wrong image would show."""

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=features.CLASSIFY_INPUT_KEY)]
    )
    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        images = tf.io.parse_example(
            inputs, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
        )[features.IMAGE_KEY]
        scores = self.serve(images)[features.PROBABILITIES_OUTPUT]
        names = tf.constant([f"class_{i}" for i in range(NUM_CLASSES)])
        return {
            features.CLASSIFY_CLASSES_OUTPUT: tf.tile(names[None], [tf.shape(scores)[0], 1]),
            features.CLASSIFY_SCORES_OUTPUT: scores,
        }

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=features.SERVING_INPUT_KEY)]
    )
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        brightness = tf.map_fn(
            lambda png: tf.reduce_mean(tf.cast(tf.io.decode_png(png, channels=1), tf.float32)),
            images,
            fn_output_signature=tf.float32,
        )
        logits = brightness[:, None] / 20.0 * tf.constant([[1.0, -1.0, 0.5, -0.5]])
        return {features.PROBABILITIES_OUTPUT: tf.nn.softmax(logits)}


@pytest.fixture(scope="module")
def brightness_model(tmp_path_factory) -> Path:
    """SERVING_DIR/MODEL with version 1 of a classifier whose answers differ per image."""
    model_dir = tmp_path_factory.mktemp("serving") / "brightness"
    module = _BrightnessClassifier()
    tf.saved_model.save(
        module,
        str(model_dir / "1"),
        signatures={
            features.SERVING_SIGNATURE: module.serve.get_concrete_function(),
            features.CLASSIFY_SIGNATURE: module.classify.get_concrete_function(),
        },
    )
    return model_dir


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, holdout_dir) -> Path:
    """Holdout PNGs at two depths, plus a corrupt PNG, an empty file and a text file."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "nested" / "deeper").mkdir(parents=True)
    for png in sorted((holdout_dir / "bag").glob("*.png"))[:4]:
        shutil.copy(png, folder / png.name)
    for png in sorted((holdout_dir / "coat").glob("*.png"))[:3]:
        shutil.copy(png, folder / "nested" / "deeper" / png.name)
    good = sorted(folder.rglob("*.png"))
    (folder / "truncated.png").write_bytes(good[0].read_bytes()[:60])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_with_broken_files_gives_one_row_per_good_image(
    served_model, image_folder, tmp_path
):
    output = tmp_path / "predictions.jsonl"
    result = batch_infer.run_inference(
        str(served_model),
        str(image_folder),
        str(output),
        top_k=2,
        beam_args=resolve_beam_args([], "in-process", 1),
    )
    rows = _rows(output)
    good = sorted(
        str(p.relative_to(image_folder))
        for p in image_folder.rglob("*.png")
        if p.stat().st_size > 60
    )
    assert [r["path"] for r in rows] == good
    assert all(r["model_version"] == 7 for r in rows)
    assert all(r["classes"][0] == f"class_{FAVOURITE}" for r in rows)
    assert all(
        len(r["probabilities"]) == 2 and r["probabilities"][0] == pytest.approx(0.9) for r in rows
    )
    skipped = {s["path"]: s["reason"] for s in _rows(Path(result.skipped_output))}
    assert skipped == {
        "truncated.png": report.CORRUPT_IMAGE,
        "empty.jpg": report.EMPTY_FILE,
        "notes.txt": report.NOT_AN_IMAGE_FILE,
    }
    assert (result.predicted, result.skipped) == (len(good), 3)
    # Nothing but the two outputs is left beside them (the Beam shards lived in a temp dir).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["predictions.jsonl", "predictions.skipped.jsonl"]
    )


def test_manifest_input_copies_labels_and_writes_csv(served_model, image_folder, tmp_path):
    manifest = image_folder / "list.csv"
    manifest.write_text(
        "path,label\nnested/deeper/"
        + next(p.name for p in (image_folder / "nested" / "deeper").iterdir())
        + ",coat\nmissing.png,bag\n"
    )
    output = tmp_path / "p.csv"
    try:
        exit_code = cli.main(
            [
                "infer",
                "--model",
                str(served_model / "7"),
                "--input",
                str(manifest),
                "--output",
                str(output),
                "--top-k",
                "3",
            ]
        )
    finally:
        manifest.unlink()
    assert exit_code == 0
    table = list(csv.DictReader(output.open()))
    assert len(table) == 1
    assert table[0]["label"] == "coat" and table[0]["class_1"] == f"class_{FAVOURITE}"
    assert table[0]["model_version"] == "7"
    skipped = _rows(tmp_path / "p.skipped.jsonl")
    assert [(s["path"], s["reason"]) for s in skipped] == [("missing.png", report.MISSING_FILE)]


def test_bad_arguments_are_usage_errors_naming_the_flag(
    served_model, image_folder, tmp_path, capsys
):
    assert (
        cli.main(
            [
                "infer",
                "--model",
                str(tmp_path),
                "--input",
                str(image_folder),
                "--output",
                str(tmp_path / "p.jsonl"),
            ]
        )
        == 2
    )
    assert "--model" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "infer",
                "--model",
                str(served_model),
                "--input",
                str(image_folder),
                "--output",
                str(tmp_path / "p.txt"),
            ]
        )
        == 2
    )
    assert "--output" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_multi_process_beam_gives_the_in_process_predictions(
    brightness_model, image_folder, tmp_path
):
    outputs = {}
    for preset in ("in-process", "multi-process"):
        output = tmp_path / f"{preset}.jsonl"
        batch_infer.run_inference(
            str(brightness_model),
            str(image_folder),
            str(output),
            beam_args=resolve_beam_args([], preset, 2),
            batch_size=2,
        )
        outputs[preset] = output.read_text()
    assert outputs["in-process"] == outputs["multi-process"]
    rows = [json.loads(line) for line in outputs["in-process"].splitlines()]
    assert len(rows) == 7
    # The answers differ image by image, so the comparison pairs each row with its image.
    assert len({tuple(r["probabilities"]) for r in rows}) == len(rows)


def test_tfrecord_input_reads_examples_and_reports_bad_records(served_model, holdout_dir, tmp_path):
    import tensorflow as tf

    def example(image: bytes, label: bytes) -> bytes:
        feature = {
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
            "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[label])),
        }
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    records = tmp_path / "in" / "images.tfrecord"
    records.parent.mkdir()
    pngs = sorted((holdout_dir / "sandal").glob("*.png"))[:3]
    with tf.io.TFRecordWriter(str(records)) as writer:
        for png in pngs:
            writer.write(example(png.read_bytes(), b"sandal"))
        writer.write(example(b"\x89PNG\r\n\x1a\nbroken", b"sandal"))
    output = tmp_path / "p.jsonl"
    result = batch_infer.run_inference(str(served_model), str(records.parent), str(output))
    rows = _rows(output)
    assert [r["path"] for r in rows] == [f"images.tfrecord#{i}" for i in range(3)]
    assert {r["label"] for r in rows} == {"sandal"}
    assert [s["path"] for s in _rows(Path(result.skipped_output))] == ["images.tfrecord#3"]
