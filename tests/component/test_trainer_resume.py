"""A Trainer killed with SIGKILL resumes where it stopped when run again on the same inputs.

``run_fn`` runs in fresh processes on tiny data: a real tf.Transform graph (analysed with
tf.Transform's Beam API from our ``preprocessing_fn``), gzipped TFRecords written by the
ExampleGen's codec, pretrained EfficientNet-Lite0 at 32 px with two short phases. A probe
callback records each epoch a process starts and kills the process (SIGKILL, no clean-up)
at a chosen epoch end. Every re-run gets a new ``model_run_dir``, as TFX gives each
execution, beside the earlier ones.

The same inputs also serve the Trainer's class-weighted input and TFX's Tuner running our
``tuner_fn`` (tiny trials), whose best hyperparameters the Trainer then takes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CLASSES = ("bag", "sneaker", "trouser")
IMAGES_PER_CLASS = 8

# Runs run_fn with a probe appended to the training callbacks. argv: fn_args JSON, the
# "phase epoch" at whose end to SIGKILL the process ("" for never), the probe's log file.
_RUNNER = r"""
import json, os, signal, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs
from trainer_module import train

fn_args, kill_at, probe_log = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]


class Probe(tf.keras.callbacks.Callback):
    def __init__(self, phase):
        super().__init__()
        self.phase = phase

    def on_epoch_begin(self, epoch, logs=None):
        with open(probe_log, "a") as log:
            log.write(f"{self.phase} {epoch}\n")

    def on_epoch_end(self, epoch, logs=None):
        # Appended after BackupAndRestore, so that epoch's backup is already written.
        if f"{self.phase} {epoch}" == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


make_callbacks = train._callbacks
train._callbacks = lambda settings, log_dir, backup_dir: make_callbacks(
    settings, log_dir, backup_dir
) + [Probe(os.path.basename(log_dir))]
train.run_fn(FnArgs(**fn_args))
"""


def _write_tfrecord_gz(path: Path, records: list[bytes]) -> None:
    """Gzipped TFRecords, as ExampleGen writes its splits."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for record in records:
            writer.write(record)


@pytest.fixture(scope="module")
def trainer_inputs(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> dict:
    """Example files and a transform graph, as ExampleGen and Transform would hand them over."""
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    from components.image_example_gen.example_codec import serialize_example
    from pipeline.pipeline import transform_custom_config
    from trainer_module import features
    from trainer_module.preprocessing import preprocessing_fn

    root = tmp_path_factory.mktemp("trainer_inputs")
    records, instances = [], []
    for label in CLASSES:
        for path in sorted((sample_dir / label).glob("*.png"))[:IMAGES_PER_CLASS]:
            image = path.read_bytes()
            records.append(serialize_example(image, "png", 28, 28, 1, label, path.name))
            instances.append({features.IMAGE_KEY: [image], features.LABEL_KEY: [label.encode()]})
    for split in ("train", "eval"):
        (root / split).mkdir()
        _write_tfrecord_gz(root / split / "data.gz", records)

    custom_config = transform_custom_config(_config())
    feature_spec = {
        features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
        features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.string),
    }
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(feature_spec)

    def analyse(transform_dir: Path) -> Path:
        with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(root / "tft_tmp")):
            analyze = tft_beam.AnalyzeDataset(
                functools.partial(preprocessing_fn, custom_config=custom_config)
            )
            transform_fn = (pipeline | beam.Create(instances), metadata) | analyze
            _ = transform_fn | tft_beam.WriteTransformFn(str(transform_dir))
        # The raw schema, which TFX's Transform writes beside the graph from SchemaGen's output.
        metadata_io.write_metadata(metadata, str(transform_dir / "metadata"))
        return transform_dir

    # A second ExampleGen and Transform execution on the same data, as an uncached re-run
    # makes them: new folders, the records in other shards and order, a re-analysed graph.
    for split in ("train", "eval"):
        (root / "again" / split).mkdir(parents=True)
        reordered = records[::-1]
        _write_tfrecord_gz(root / "again" / split / "part-1.gz", reordered[::2])
        _write_tfrecord_gz(root / "again" / split / "part-2.gz", reordered[1::2])
    return {
        "root": root,
        "transform_dir": analyse(root / "transform_graph"),
        "transform_dir_again": analyse(root / "again" / "transform_graph"),
        "records": records,
    }


# Pretrained EfficientNet-Lite0 at 32 px, two short phases with a decaying rate.
_CONFIG_OVERRIDES = {
    "backbone": "efficientnet_lite0",
    "backbone_weights": "imagenet",
    "image_size": 32,
    "epochs": 2,
    "batch_size": 8,
    "learning_rate_schedule": "cosine",
    "fine_tune_epochs": 2,
    "early_stopping_patience": 0,
    "seed": 7,
}


def _config():
    from pipeline.config import load_config

    return load_config(None, _CONFIG_OVERRIDES, validate=False)


def _fn_args(inputs: dict, run: str, again: bool = False) -> dict:
    from pipeline.pipeline import trainer_custom_config

    root = inputs["root"]
    examples = root / "again" if again else root
    return {
        "train_files": [str(examples / "train" / "*.gz")],
        "eval_files": [str(examples / "eval" / "*.gz")],
        "transform_output": str(inputs["transform_dir_again" if again else "transform_dir"]),
        "serving_model_dir": str(root / "model" / run / "Format-Serving"),
        "model_run_dir": str(root / "model_run" / run),
        "custom_config": trainer_custom_config(_config()),
    }


def _run_trainer(
    inputs: dict, run: str, kill_at: str, again: bool = False
) -> tuple[int, list[str]]:
    """Runs run_fn in a fresh process; returns its exit code and the epochs it started."""
    probe_log = inputs["root"] / f"{run}.epochs"
    fn_args = json.dumps(_fn_args(inputs, run, again))
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, fn_args, kill_at, probe_log],
        cwd=Path(__file__).resolve().parents[2],
        env=dict(os.environ, TF_USE_LEGACY_KERAS="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    epochs = probe_log.read_text().split("\n")[:-1] if probe_log.exists() else []
    if result.returncode not in (0, -9):
        pytest.fail(f"run_fn failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.returncode, epochs


def test_killed_trainer_resumes_mid_phase_and_after_phase_one(trainer_inputs, holdout_dir):
    root = trainer_inputs["root"]
    resume_root = root / "model_run" / "resume"

    # Killed at the end of phase 1's first epoch: its backup is what a re-run finds.
    code, epochs = _run_trainer(trainer_inputs, "run1", kill_at="phase1 0")
    assert (code, epochs) == (-9, ["phase1 0"])
    assert len(list(resume_root.iterdir())) == 1

    # Resumes phase 1 at its second epoch; killed after phase 2's first epoch.
    code, epochs = _run_trainer(trainer_inputs, "run2", kill_at="phase2 0")
    assert (code, epochs) == (-9, ["phase1 1", "phase2 0"])
    (state_dir,) = resume_root.iterdir()
    assert (state_dir / "phase1_done.weights.h5").is_file()

    # Skips phase 1 (its weights are loaded), resumes phase 2 at its second epoch, exports
    # a servable model and removes the progress it no longer needs.
    code, epochs = _run_trainer(trainer_inputs, "run3", kill_at="")
    assert (code, epochs) == (0, ["phase2 1"])
    model_dir = root / "model" / "run3" / "Format-Serving"
    assert (model_dir / "saved_model.pb").is_file()
    assert not state_dir.exists()

    import tensorflow as tf

    from trainer_module import features

    serve = tf.saved_model.load(str(model_dir)).signatures[features.SERVING_SIGNATURE]
    image = sorted((holdout_dir / "bag").glob("*.png"))[0].read_bytes()
    outputs = serve(**{features.SERVING_INPUT_KEY: tf.constant([image])})
    names = outputs[features.CLASS_NAME_OUTPUT].numpy()
    assert names[0].decode() in CLASSES


def test_an_uncached_rerun_on_the_same_content_resumes_and_stale_progress_goes(trainer_inputs):
    """The resume key is the inputs' content: new paths, shards and a re-analysed graph match."""
    root = trainer_inputs["root"]
    resume_root = root / "model_run" / "resume"
    shutil.rmtree(resume_root, ignore_errors=True)

    code, epochs = _run_trainer(trainer_inputs, "first", kill_at="phase1 0")
    assert (code, epochs) == (-9, ["phase1 0"])
    (state_dir,) = resume_root.iterdir()
    # Progress of other inputs: one untouched for two days (stale), one from a minute ago.
    stale, fresh = resume_root / "0000000000000000", resume_root / "ffffffffffffffff"
    for folder in (stale, fresh):
        (folder / "phase1").mkdir(parents=True)
        (folder / "phase1" / "checkpoint").write_text("x")
    two_days_ago = time.time() - 2 * 24 * 3600
    for path in (stale / "phase1" / "checkpoint", stale / "phase1", stale):
        os.utime(path, (two_days_ago, two_days_ago))

    code, epochs = _run_trainer(trainer_inputs, "again", kill_at="", again=True)
    assert (code, epochs) == (0, ["phase1 1", "phase2 0", "phase2 1"])
    assert not state_dir.exists() and not stale.exists()
    assert sorted(p.name for p in resume_root.iterdir()) == [fresh.name]


def test_the_resume_key_changes_with_the_settings_and_the_examples(trainer_inputs):
    from tfx.components.trainer.fn_args_utils import FnArgs

    from trainer_module import train

    def key(fn_args: dict, train_fingerprint: str = "t") -> str:
        return train.resume_dir(FnArgs(**fn_args), train_fingerprint, "e")

    base = _fn_args(trainer_inputs, "x")
    assert key(base) == key(_fn_args(trainer_inputs, "y", again=True))
    assert key(base) != key(base, train_fingerprint="t2")
    changed = dict(base, custom_config={**base["custom_config"], "seed": 8})
    assert key(base) != key(changed)
    first = train.examples_fingerprint(base["train_files"])
    assert first == train.examples_fingerprint(_fn_args(trainer_inputs, "y", True)["train_files"])
    assert first[0] == len(trainer_inputs["records"])


def test_balanced_class_weights_weigh_training_batches(trainer_inputs, tmp_path):
    """run_fn's input on a real transform graph: each example weighs its class's weight.

    The counts come from an ingestion report beside the split, as ImageExampleGen writes it;
    the same batches with mixup carry mixed labels and mixed weights.
    """
    import collections

    import numpy as np
    import tensorflow_transform as tft

    from components.image_example_gen.report import Facts, ReportContext, build_report
    from trainer_module import features
    from trainer_module.backbone_specs import get_backbone_spec
    from trainer_module.settings import TrainingSettings
    from trainer_module.train import make_dataset, training_class_weights

    # 8 bags, 2 sneakers, 2 trousers in the training split.
    records = trainer_inputs["records"]
    kept = records[:8] + records[8:10] + records[16:18]
    split_dir = tmp_path / "Split-train"
    split_dir.mkdir()
    _write_tfrecord_gz(split_dir / "data.gz", kept)
    counts = collections.Counter({("train", "bag"): 8, ("train", "sneaker"): 2})
    counts[("train", "trouser")] = 2
    context = ReportContext(str(tmp_path), "folders", {"train": "test"}, 0.1, "report.json")
    report = build_report(Facts(ingested=counts), context)
    (tmp_path / features.INGESTION_REPORT_FILE).write_text(json.dumps(report))

    tft_output = tft.TFTransformOutput(str(trainer_inputs["transform_dir"]))
    names = [n.decode() for n in tft_output.vocabulary_by_name(features.LABEL_VOCABULARY_NAME)]
    settings = dataclasses.replace(
        TrainingSettings(**_fn_args(trainer_inputs, "w")["custom_config"]),
        class_weight="balanced",
        batch_size=12,
    )
    patterns = [str(split_dir / "*")]
    weights = training_class_weights(settings, patterns, tft_output)
    expected = {"bag": 12 / (3 * 8), "sneaker": 12 / (3 * 2), "trouser": 12 / (3 * 2)}
    assert weights == pytest.approx([expected[n] for n in names])

    spec = get_backbone_spec(settings.backbone)
    _, labels, sample_weights = next(
        iter(make_dataset(patterns, tft_output, settings, spec, True, class_weights=weights))
    )
    labels = labels.numpy()
    assert labels.shape == (12, len(names)) and set(labels.sum(axis=1)) == {1.0}
    np.testing.assert_allclose(sample_weights.numpy(), labels @ np.array(weights))
    assert sorted(sample_weights.numpy().tolist()).count(pytest.approx(0.5)) == 8

    mixed = dataclasses.replace(settings, augment_mixup=0.4, augment_rotation=20.0)
    _, labels, sample_weights = next(
        iter(make_dataset(patterns, tft_output, mixed, spec, True, class_weights=weights))
    )
    labels = labels.numpy()
    assert (labels.max(axis=1) < 0.999).any()
    np.testing.assert_allclose(sample_weights.numpy(), labels @ np.array(weights), rtol=1e-5)


def _examples_artifact(trainer_inputs: dict, root: Path):
    """An Examples artifact over the fixture's train and eval files, as ExampleGen makes it."""
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    examples.split_names = json.dumps(["train", "eval"])
    for split in ("train", "eval"):
        target = root / "examples" / f"Split-{split}"
        target.mkdir(parents=True)
        shutil.copy(trainer_inputs["root"] / split / "data.gz", target / "data.gz")
    return examples


def test_tuner_searches_and_the_trainer_takes_the_best(trainer_inputs, tmp_path, monkeypatch):
    """TFX's Tuner executor runs tuner_fn: 2 trials of 1 epoch on 12 examples.

    small_cnn (one phase) keeps it quick; the phase-2 search space is unit-tested.
    """
    from tfx.components.trainer.fn_args_utils import FnArgs
    from tfx.components.tuner import executor as tuner_executor
    from tfx.dsl.components.base import base_executor
    from tfx.proto import trainer_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from pipeline.config import load_config
    from pipeline.pipeline import trainer_custom_config, tuner_custom_config
    from pipeline.run_summary import load_tuner_results
    from trainer_module import train

    overrides = {
        **_CONFIG_OVERRIDES,
        "backbone": "small_cnn",
        "tuner_trials": 2,
        "tuner_max_examples": 12,
    }
    config = load_config(None, overrides, validate=False)
    transform_graph = standard_artifacts.TransformGraph()
    transform_graph.uri = str(trainer_inputs["transform_dir"])
    best, results = standard_artifacts.HyperParameters(), standard_artifacts.TunerResults()
    best.uri, results.uri = str(tmp_path / "best"), str(tmp_path / "results")
    context = base_executor.BaseExecutor.Context(tmp_dir=str(tmp_path / "tmp"), unique_id="1")
    tuner_executor.Executor(context).Do(
        {
            "examples": [_examples_artifact(trainer_inputs, tmp_path)],
            "transform_graph": [transform_graph],
        },
        {"best_hyperparameters": [best], "tuner_results": [results]},
        {
            "tuner_fn": "trainer_module.tuning.tuner_fn",
            "custom_config": json.dumps(tuner_custom_config(config)),
            "train_args": proto_utils.proto_to_json(trainer_pb2.TrainArgs()),
            "eval_args": proto_utils.proto_to_json(trainer_pb2.EvalArgs()),
        },
    )
    # Read as the run summary reads it (which also checks the file name TFX writes).
    table = load_tuner_results(results.uri)
    assert len(table) == 2
    searched = ("learning_rate", "dropout")  # A from-scratch backbone has no phase 2.
    assert set(table[0]) == {"trial_id", "score", *searched}
    assert all(0.0 <= row["score"] <= 1.0 for row in table)
    assert 1e-4 <= table[0]["learning_rate"] <= 1e-2
    assert table[0]["learning_rate"] != table[1]["learning_rate"]  # Trials differ.
    best_config = json.loads((tmp_path / "best" / "best_hyperparameters.txt").read_text())
    assert best_config["values"] == {k: table[0][k] for k in searched}  # Best first.

    # The Trainer trains with them: the settings reaching its first phase are the best's.
    class StopTrainingError(Exception):
        pass

    seen = []

    def first_phase(model, phase, settings, *args, **kwargs):
        seen.append((phase, settings))
        raise StopTrainingError

    monkeypatch.setattr(train, "fit_phase", first_phase)
    fn_args = dict(_fn_args(trainer_inputs, "tuned"), custom_config=trainer_custom_config(config))
    with pytest.raises(StopTrainingError):
        train.run_fn(FnArgs(**fn_args, hyperparameters=best_config))
    ((phase, settings),) = seen
    assert phase.learning_rate == pytest.approx(table[0]["learning_rate"])
    for name in searched:
        assert getattr(settings, name) == pytest.approx(table[0][name]), name
    assert (settings.backbone, settings.epochs) == ("small_cnn", config.epochs)  # The rest kept.
