"""ImageExampleGen's real executor on tiny folders made here, full of real bad files.

Each test builds a data root in tmp_path, runs ``Executor.Do`` with real artifacts (Beam's
DirectRunner, in-process unless stated), and checks the written records, the splits and
``ingestion_report.json``. The slow tests run 2 multi_processing workers, a LocalDagRunner
pipeline and a Kubeflow compilation.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
import tensorflow as tf
from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.image_example_gen import ImageExampleGen
from components.image_example_gen.executor import (
    Executor,
    ImageIngestionError,
    failed_report_path,
)
from components.image_example_gen.options import IngestOptions, SplitPlan, content_digest
from components.image_example_gen.report import REPORT_FILE_NAME
from tests.conftest import REPO_ROOT
from tests.unit.test_image_files import (
    BAD_REASONS,
    GOOD_VARIANTS,
    bad_files,
    class_folders,
    image_bytes,
    write,
)
from trainer_module import features

CIFAR_DIR = REPO_ROOT.parent / "shared" / "data" / "cifar10_subset"
FEATURE_KEYS = {
    features.IMAGE_KEY,
    features.IMAGE_FORMAT_KEY,
    features.IMAGE_HEIGHT_KEY,
    features.IMAGE_WIDTH_KEY,
    features.IMAGE_CHANNELS_KEY,
    features.LABEL_KEY,
    features.IMAGE_ID_KEY,
}
TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@dataclass
class Record:
    """One written tf.train.Example, decoded."""

    image: bytes
    format: str
    height: int
    width: int
    channels: int
    label: str
    image_id: str


@dataclass
class Run:
    """What one executor run wrote."""

    examples: standard_artifacts.Examples
    splits: dict[str, list[Record]]
    report: dict

    def split_of(self) -> dict[str, str]:
        """image_id -> split."""
        return {r.image_id: split for split, records in self.splits.items() for r in records}

    def record(self, image_id: str) -> Record:
        return next(
            r for records in self.splits.values() for r in records if r.image_id == image_id
        )

    def skipped(self) -> dict[str, str]:
        """path -> reason."""
        return {s["path"]: s["reason"] for s in self.report["skipped"]}


def _parse(serialized: bytes) -> Record:
    feature = tf.train.Example.FromString(serialized).features.feature
    assert set(feature) == FEATURE_KEYS

    def text(key: str) -> str:
        return feature[key].bytes_list.value[0].decode("utf-8")

    return Record(
        image=feature[features.IMAGE_KEY].bytes_list.value[0],
        format=text(features.IMAGE_FORMAT_KEY),
        height=feature[features.IMAGE_HEIGHT_KEY].int64_list.value[0],
        width=feature[features.IMAGE_WIDTH_KEY].int64_list.value[0],
        channels=feature[features.IMAGE_CHANNELS_KEY].int64_list.value[0],
        label=text(features.LABEL_KEY),
        image_id=text(features.IMAGE_ID_KEY),
    )


def run_example_gen(
    root: Path,
    out: Path,
    options: IngestOptions | None = None,
    beam_args: list[str] | None = None,
) -> Run:
    """Builds the component (layout detection) and runs its executor's Do."""
    component = ImageExampleGen(str(root), options)
    exec_properties = {
        key: proto_utils.proto_to_json(value) if hasattr(value, "DESCRIPTOR") else value
        for key, value in component.exec_properties.items()
    }
    examples = standard_artifacts.Examples()
    examples.uri = str(out / "ImageExampleGen" / "examples" / "1")
    # No beam args means the in-process DirectRunner (and skips TFX packaging the code).
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=beam_args)
    Executor(context).Do({}, {"examples": [examples]}, exec_properties)
    splits = {}
    for split in json.loads(examples.split_names):
        files = sorted((Path(examples.uri) / f"Split-{split}").glob("*.gz"))
        dataset = tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP")
        splits[split] = [_parse(r) for r in dataset.as_numpy_iterator()]
    report = json.loads((Path(examples.uri) / REPORT_FILE_NAME).read_text(encoding="utf-8"))
    return Run(examples, splits, report)


def _decodes(record: Record) -> bool:
    image = tf.io.decode_image(record.image, channels=3, expand_animations=False)
    return tuple(image.shape) == (record.height, record.width, 3)


# --- The zoo: every kind of file in one class-folder root ---------------------------------

CAFE = unicodedata.normalize("NFD", "café")  # a folder name as macOS writes it


def make_zoo(root: Path, outside: Path) -> None:
    class_folders(root, {"cat": 5, "sea lion": 5, CAFE: 5})
    for name, (make, _, _, _) in GOOD_VARIANTS.items():
        write(root / "cat" / "formats" / name, make())
    for name, data in bad_files().items():
        write(root / "cat" / "bad" / name, data)
    # Byte-identical copies: one with the same label, one with another label.
    write(root / "cat" / "again.png", (root / "cat" / "0.png").read_bytes())
    write(root / "sea lion" / "looks_like_cat.png", (root / "cat" / "0.png").read_bytes())
    write(root / "cat" / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(root / "cat" / "notes.txt", "not an image")
    write(outside / "secret.png", image_bytes(seed=99))
    (root / "cat" / "escape.png").symlink_to(outside / "secret.png")
    write(root / "empty_class" / ".DS_Store", b"x")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> tuple[Path, Run]:
    base = tmp_path_factory.mktemp("zoo")
    root = base / "data"
    make_zoo(root, base / "outside")
    options = IngestOptions(max_bad_fraction=1.0, max_image_pixels=1_000_000)
    return root, run_example_gen(root, base / "out", options)


def test_every_bad_file_is_skipped_with_its_reason(zoo):
    _, run = zoo
    expected = {f"cat/bad/{name}": reason for name, reason in BAD_REASONS.items()}
    expected.update(
        {
            "cat/escape.png": "outside_root",
            "cat/.DS_Store": "hidden_file",
            "cat/notes.txt": "not_an_image_file",
            "empty_class/.DS_Store": "hidden_file",
        }
    )
    assert run.skipped() == expected
    totals = run.report["totals"]
    assert (totals["skipped_bad"], totals["skipped_ignored"]) == (len(BAD_REASONS) + 1, 3)
    assert run.report["notes"] == ["empty class folder empty_class/ (no image files)"]
    detail = {s["path"]: s["detail"] for s in run.report["skipped"]}
    assert "Invalid" in detail["cat/bad/truncated.jpg"] or "JPEG" in detail["cat/bad/truncated.jpg"]
    assert "5000x5000" in detail["cat/bad/huge.png"]


def test_every_good_file_is_ingested_in_our_layout(zoo):
    root, run = zoo
    ids = [r.image_id for records in run.splits.values() for r in records]
    assert len(ids) == len(set(ids)) == run.report["totals"]["ingested"] == 15 + 20 + 2
    assert {r.label for records in run.splits.values() for r in records} == {
        "cat",
        "sea lion",
        "café",
    }
    for name, (_, stored_format, channels, kept) in GOOD_VARIANTS.items():
        record = run.record(f"cat/formats/{name}")
        assert (record.format, record.channels) == (stored_format, channels), name
        assert (record.image == (root / "cat" / "formats" / name).read_bytes()) is kept, name
    assert all(_decodes(r) for records in run.splits.values() for r in records)
    assert run.report["formats"] == {
        "bmp->png": 3,
        "gif": 2,
        "jpeg": 4,
        "png": 15 + 6 + 2,
        "tiff->png": 3,
        "webp->png": 2,
    }
    assert run.examples.get_string_custom_property("ingestion_report").endswith(REPORT_FILE_NAME)
    assert run.examples.get_int_custom_property("ingested_images") == len(ids)


def test_splits_follow_the_content_hash_and_keep_duplicates_together(zoo):
    root, run = zoo
    assert list(run.splits) == ["train", "eval"]
    assert all(run.splits.values())
    plan = SplitPlan.create(["all"], [("train", 800), ("eval", 200)])
    for image_id, split in run.split_of().items():
        assert plan.assign("all", content_digest((root / image_id).read_bytes())) == split
    duplicates = run.report["duplicates"]
    assert (duplicates["groups"], duplicates["images"], duplicates["label_conflicts"]) == (1, 3, 1)
    group = {entry["image_id"] for entry in duplicates["conflict_groups"][0]}
    assert group == {"cat/0.png", "cat/again.png", "sea lion/looks_like_cat.png"}
    assert len({run.split_of()[i] for i in group}) == 1


def test_splits_are_stable_when_images_come_and_go(tmp_path):
    root = tmp_path / "data"
    class_folders(root, {"a": 12, "b": 12})
    first = run_example_gen(root, tmp_path / "out1").split_of()
    for i in range(3):
        (root / "a" / f"{i}.png").unlink()
    class_folders(root / "b" / "new", {"x": 8}, seed=5)
    second = run_example_gen(root, tmp_path / "out2").split_of()
    kept = set(first) & set(second)
    assert len(kept) == len(first) - 3 and len(second) == len(first) - 3 + 8
    assert {i: first[i] for i in kept} == {i: second[i] for i in kept}


def test_output_is_sharded_by_size_and_readable_by_beam(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    root = tmp_path / "data"
    for label in ("a", "b"):
        for i in range(4):  # about 0.5 MB each: random pixels do not compress
            write(root / label / f"{i}.png", image_bytes(size=(400, 400), seed=ord(label) + i))
    options = IngestOptions(example_shard_mb=1, eval_fraction=0.5)
    run = run_example_gen(root, tmp_path / "out", options)
    for split, records in run.splits.items():
        files = sorted((Path(run.examples.uri) / f"Split-{split}").iterdir())
        assert len(files) == 2, files  # ceil(8 x 0.5 MB x 50% / 1 MB)
        assert files[0].name == "data_tfrecord-00000-of-00002.gz"
        with beam.Pipeline() as pipeline:
            count = (
                pipeline
                | beam.io.ReadFromTFRecord(str(files[0].parent / "*"))
                | beam.combiners.Count.Globally()
            )
            assert_that(count, equal_to([len(records)]))


# --- Split folders -----------------------------------------------------------------------


def test_train_val_test_folders_are_kept(tmp_path):
    root = tmp_path / "data"
    class_folders(root / "train", {"cat": 3, "dog": 3})
    class_folders(root / "validation", {"cat": 2, "dog": 2}, seed=1)
    class_folders(root / "test", {"cat": 1, "dog": 1}, seed=2)
    write(root / "extra" / "cat" / "x.png", image_bytes(seed=9))
    run = run_example_gen(root, tmp_path / "out")
    assert run.report["notes"] == ["folders beside the split folders are not read: extra/"]
    ids = {split: sorted(r.image_id for r in records) for split, records in run.splits.items()}
    assert ids == {
        "train": [f"train/{c}/{i}.png" for c in ("cat", "dog") for i in range(3)],
        "eval": [f"validation/{c}/{i}.png" for c in ("cat", "dog") for i in range(2)],
        "test": ["test/cat/0.png", "test/dog/0.png"],
    }
    assert run.report["splits"]["eval"]["source"] == "folder validation/"


def test_train_and_test_folders_get_an_eval_split_from_train(tmp_path):
    root = tmp_path / "data"
    class_folders(root / "train", {"cat": 10, "dog": 10})
    class_folders(root / "test", {"cat": 2, "dog": 2}, seed=1)
    run = run_example_gen(root, tmp_path / "out", IngestOptions(eval_fraction=0.3))
    assert list(run.splits) == ["train", "eval", "test"]
    assert all(r.image_id.startswith("train/") for s in ("train", "eval") for r in run.splits[s])
    assert sorted(r.image_id for r in run.splits["test"]) == [
        "test/cat/0.png",
        "test/cat/1.png",
        "test/dog/0.png",
        "test/dog/1.png",
    ]


def test_generate_examples_by_beam_gives_serialized_examples(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that

    root = tmp_path / "data"
    class_folders(root, {"cat": 3, "dog": 3})
    component = ImageExampleGen(str(root))
    exec_properties = {
        key: proto_utils.proto_to_json(value) if hasattr(value, "DESCRIPTOR") else value
        for key, value in component.exec_properties.items()
    }
    context = base_beam_executor.BaseBeamExecutor.Context(tmp_dir=str(tmp_path), unique_id="1")
    expected = sorted(f"{c}/{i}.png" for c in ("cat", "dog") for i in range(3))

    def check(records):
        assert sorted(_parse(r).image_id for r in records) == expected

    with beam.Pipeline() as pipeline:
        splits = Executor(context).GenerateExamplesByBeam(pipeline, exec_properties)
        assert_that(tuple(splits.values()) | beam.Flatten(), check)


# --- Manifests ---------------------------------------------------------------------------


def test_manifest_with_bad_rows(tmp_path):
    root = tmp_path / "kaggle"
    for i in range(6):
        write(root / "images" / f"{i}.jpg", image_bytes("JPEG", seed=i))
    write(root / "images" / "broken.jpg", b"<html>404</html>")
    write(tmp_path / "elsewhere.jpg", image_bytes("JPEG", seed=50))
    rows = [
        "image,breed",
        "images/0.jpg,Golden Retriever",
        "images/1.jpg,Golden Retriever",
        "images/2.jpg,Chow Chow",
        "images/3.jpg,Chow Chow",
        "images/4.jpg,Löwchen",
        "images/5.jpg,",
        "images/missing.jpg,Chow Chow",
        "../elsewhere.jpg,Chow Chow",
        f"{tmp_path / 'elsewhere.jpg'},Chow Chow",
        "images/broken.jpg,Löwchen",
    ]
    write(root / "train.csv", "\n".join(rows) + "\n")
    options = IngestOptions(
        manifest="train.csv",
        manifest_path_column="image",
        manifest_label_column="breed",
        max_bad_fraction=1.0,
    )
    run = run_example_gen(root, tmp_path / "out", options)
    assert sorted((r.image_id, r.label) for rs in run.splits.values() for r in rs) == [
        ("images/0.jpg", "Golden Retriever"),
        ("images/1.jpg", "Golden Retriever"),
        ("images/2.jpg", "Chow Chow"),
        ("images/3.jpg", "Chow Chow"),
        ("images/4.jpg", "Löwchen"),
    ]
    assert run.skipped() == {
        "images/5.jpg": "empty_label",
        "images/missing.jpg": "missing_file",
        "../elsewhere.jpg": "outside_root",
        str(tmp_path / "elsewhere.jpg"): "outside_root",
        "images/broken.jpg": "not_an_image",
    }
    assert run.report["splits"]["train"]["source"].endswith("of manifest train.csv by content hash")


# --- TFRecords ---------------------------------------------------------------------------


@pytest.mark.skipif(not CIFAR_DIR.is_dir(), reason=f"{CIFAR_DIR} not present")
def test_cifar10_tfrecords_are_converted_to_our_layout(tmp_path):
    run = run_example_gen(CIFAR_DIR, tmp_path / "out")
    assert run.report["data_format"] == "tfrecord"
    assert list(run.splits) == ["train", "eval", "test"]
    assert len(run.splits["test"]) == 128
    assert len(run.splits["train"]) + len(run.splits["eval"]) == 128
    names = (CIFAR_DIR / "labels.txt").read_text().split()
    source = {}
    for i, serialized in enumerate(
        tf.data.TFRecordDataset(str(CIFAR_DIR / "test" / "cifar10_test.tfrecord"))
    ):
        feature = tf.train.Example.FromString(serialized.numpy()).features.feature
        source[f"test/cifar10_test.tfrecord#{i}"] = (
            feature["image"].bytes_list.value[0],
            names[feature["label"].int64_list.value[0]],
        )
    for record in run.splits["test"]:
        assert (record.image, record.label) == source[record.image_id]
        assert (record.format, record.height, record.width, record.channels) == ("png", 32, 32, 3)
    assert {r.label for rs in run.splits.values() for r in rs} <= set(names)
    assert run.report["totals"]["skipped_bad"] == 0


def _example(**feature_values) -> bytes:
    feature = {}
    for key, value in feature_values.items():
        if isinstance(value, int):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_bad_tfrecords_are_reported(tmp_path):
    root = tmp_path / "records"
    write(root / "labels.txt", "cat\ndog\n")
    good = [_example(img=image_bytes(seed=i), cls=i % 2) for i in range(6)]
    with tf.io.TFRecordWriter(str(root / "a.tfrecord.gz"), options="GZIP") as writer:
        for record in good[:3]:
            writer.write(record)
        writer.write(_example(img=image_bytes(seed=10), cls=7))
        writer.write(_example(cls=1))
        writer.write(b"\xff\xff\xff not an example")
        writer.write(_example(img=b"GIF89a broken", cls=0))
        writer.write(_example(img=image_bytes(seed=11), cls=b"dog"))
    plain = root / "b.tfrecord"
    with tf.io.TFRecordWriter(str(plain)) as writer:
        for record in good[3:]:
            writer.write(record)
    with open(plain, "ab") as f:
        f.write(b"\x00" * 20)  # a torn write at the end of the file
    options = IngestOptions(
        tfrecord_image_feature="img", tfrecord_label_feature="cls", max_bad_fraction=1.0
    )
    run = run_example_gen(root, tmp_path / "out", options)
    ids = sorted((r.image_id, r.label) for rs in run.splits.values() for r in rs)
    assert ids == [
        ("a.tfrecord.gz#0", "cat"),
        ("a.tfrecord.gz#1", "dog"),
        ("a.tfrecord.gz#2", "cat"),
        ("a.tfrecord.gz#7", "dog"),
        ("b.tfrecord#0", "dog"),
        ("b.tfrecord#1", "cat"),
        ("b.tfrecord#2", "dog"),
    ]
    assert run.skipped() == {
        "a.tfrecord.gz#3": "unknown_label_id",
        "a.tfrecord.gz#4": "missing_feature",
        "a.tfrecord.gz#5": "bad_record",
        "a.tfrecord.gz#6": "not_an_image",
        "b.tfrecord#3": "corrupt_record_file",
        "labels.txt": "not_a_tfrecord_file",
    }


# --- Failing runs ------------------------------------------------------------------------


def _expect_failure(root: Path, out: Path, match: str, options: IngestOptions | None = None):
    with pytest.raises(ImageIngestionError, match=match) as err:
        run_example_gen(root, out, options)
    report_path = failed_report_path(str(out / "ImageExampleGen" / "examples" / "1"))
    assert report_path in str(err.value)
    return json.loads(Path(report_path).read_text(encoding="utf-8"))


def test_one_class_fails_before_beam(tmp_path):
    class_folders(tmp_path / "data", {"cat": 3})
    report = _expect_failure(tmp_path / "data", tmp_path / "out", "only one class \\('cat'\\)")
    assert report["totals"]["ingested"] == 0


def test_no_valid_images_fails(tmp_path):
    for label in ("cat", "dog"):
        write(tmp_path / "data" / label / "a.jpg", "text")
        write(tmp_path / "data" / label / "b.png", b"")
    report = _expect_failure(
        tmp_path / "data", tmp_path / "out", "no valid images", IngestOptions(max_bad_fraction=1)
    )
    assert report["skipped_by_reason"]["not_an_image"]["count"] == 2
    assert report["skipped_by_reason"]["empty_file"]["count"] == 2


def test_too_many_bad_files_fails_naming_the_report(tmp_path):
    root = tmp_path / "data"
    class_folders(root, {"cat": 8, "dog": 8})
    write(root / "cat" / "bad1.jpg", "text")
    write(root / "dog" / "bad2.png", image_bytes()[:40])
    report = _expect_failure(
        root,
        tmp_path / "out",
        "2 of 18 input files \\(11.1%\\) are bad, above max_bad_fraction=0.1",
    )
    assert {s["path"] for s in report["skipped"]} == {"cat/bad1.jpg", "dog/bad2.png"}


def test_one_class_left_after_checks_fails(tmp_path):
    root = tmp_path / "data"
    class_folders(root, {"cat": 4})
    write(root / "dog" / "a.jpg", "text")
    _expect_failure(
        root, tmp_path / "out", "only 1 class \\(cat\\)", IngestOptions(max_bad_fraction=1)
    )


# --- Runners -----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_multi_processing_workers_give_the_same_output(zoo, tmp_path, monkeypatch):
    root, in_process = zoo
    # Beam's worker processes are new interpreters: they must import this repository.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    )
    options = IngestOptions(max_bad_fraction=1.0, max_image_pixels=1_000_000)
    run = run_example_gen(root, tmp_path / "out", options, TWO_WORKERS)
    assert run.split_of() == in_process.split_of()
    assert run.skipped() == in_process.skipped()
    assert run.report["duplicates"] == in_process.report["duplicates"]


@pytest.mark.slow
def test_local_dag_runner_keeps_the_report_of_a_failed_run(tmp_path):
    from tfx import v1 as tfx

    root = tmp_path / "data"
    class_folders(root / "train", {"cat": 4, "dog": 4})
    class_folders(root / "val", {"cat": 2, "dog": 2}, seed=1)

    def run_pipeline(name: str, options: IngestOptions) -> Path:
        pipeline_root = tmp_path / name
        tfx.orchestration.LocalDagRunner().run(
            tfx.dsl.Pipeline(
                pipeline_name=name,
                pipeline_root=str(pipeline_root),
                components=[ImageExampleGen(str(root), options)],
                metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                    str(tmp_path / f"{name}.sqlite")
                ),
            )
        )
        return pipeline_root

    pipeline_root = run_pipeline("ok", IngestOptions())
    [examples_dir] = (pipeline_root / "ImageExampleGen" / "examples").iterdir()
    assert sorted(p.name for p in examples_dir.iterdir()) == [
        "Split-eval",
        "Split-train",
        REPORT_FILE_NAME,
    ]
    write(root / "train" / "cat" / "bad.jpg", "text")
    with pytest.raises(RuntimeError, match="max_bad_fraction"):
        run_pipeline("bad", IngestOptions(max_bad_fraction=0.0))
    reports = list(
        (tmp_path / "bad").glob(f"ImageExampleGen/ingestion_report/*/{REPORT_FILE_NAME}")
    )
    assert len(reports) == 1
    assert json.loads(reports[0].read_text())["skipped"][0]["path"] == "train/cat/bad.jpg"


@pytest.mark.slow
def test_kubeflow_compilation_carries_the_layout(tmp_path):
    pytest.importorskip("kfp")
    import yaml
    from tfx import v1 as tfx

    root = tmp_path / "data"
    class_folders(root / "train", {"cat": 1, "dog": 1})
    class_folders(root / "test", {"cat": 1, "dog": 1})
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image="img:1"),
        output_dir=str(tmp_path),
        output_filename="spec.yaml",
    )
    component = ImageExampleGen(str(root), IngestOptions(manifest=""))
    runner.run(
        tfx.dsl.Pipeline(
            pipeline_name="eg", pipeline_root="gs://bucket/root", components=[component]
        ),
        write_out=True,
    )
    spec = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    executor = spec["deploymentSpec"]["executors"]["ImageExampleGen_executor"]["container"]
    assert "components.image_example_gen.executor.Executor" in executor["args"]
    parameters = json.dumps(spec["root"]["dag"]["tasks"]["ImageExampleGen"])
    assert (
        "train/*" in parameters
        and "test/*" in parameters
        and "tfrecord_image_feature" in parameters
    )


def test_outputs_are_not_left_in_temporary_folders(zoo):
    _, run = zoo
    assert not (Path(run.examples.uri) / ".tmp").exists()
    assert sorted(p.name for p in Path(run.examples.uri).iterdir()) == [
        "Split-eval",
        "Split-train",
        REPORT_FILE_NAME,
    ]
