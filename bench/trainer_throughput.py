"""Trainer throughput: the TFX Trainer (``trainer_module.train.run_fn``) against plain Keras.

    nice -n 10 .venv/bin/python -m bench.trainer_throughput               # small_cnn, 3 repeats
    nice -n 10 .venv/bin/python -m bench.trainer_throughput --presets efficientnet_lite0
    .venv/bin/python -m bench.trainer_throughput --smoke      # a few minutes, writes nothing

Each configuration (PRESETS) takes up to about 20 minutes on 2 shared cores, so they run one
command each; a run replaces its own subsection of the BENCHMARKS.md section and keeps the
others (each subsection names the command and date that produced it).

Both sides train the same network (``build_classifier``; see PRESETS for the backbone, input
size, data size and epochs of each configuration; the other settings are the pipeline's
defaults) on the same gzipped TFRecords, for the same number of epochs, with a validation pass
on the eval split after each epoch (what run_fn does):

- ``TFX Trainer``: a LocalDagRunner pipeline of two Importers (the Examples and the Transform
  graph) and ``tfx.components.Trainer(run_fn="trainer_module.train.run_fn")``, so run_fn runs
  unchanged under the TFX launcher, with its tf.Transform input pipeline, TensorBoard and
  BackupAndRestore callbacks and the export at the end. The only addition: this benchmark wraps
  ``tf.keras.Model.fit`` in the worker process to append a timing callback to run_fn's own.
- ``plain Keras``: a script-style ``tf.data`` pipeline over the same files: parse,
  ``tf.io.decode_png`` + ``tf.image.resize`` + the backbone's normalization, cache, shuffle,
  batch, ``train.augment_batch``, prefetch; ``model.fit`` with the same timing callback.

Steady state excludes epoch 1 (graph building, the first decode into the cache): throughput =
training images x (epochs - 1) / wall time from the start of epoch 2 to the end of the last
epoch, validation and end-of-epoch callbacks included. Each repeat runs in a fresh process;
sides alternate (ABBA order) so drift on a shared machine hits both alike.

Data: the benchmark writes Fashion-MNIST training-split PNGs as tf.Examples (``image`` bytes,
``label`` class name) and runs ImportExampleGen -> StatisticsGen -> SchemaGen -> Transform (the
pipeline's ``preprocessing_fn``, the backbone's size and normalization) once per preset, into
``--work-dir``. It does not use ImageExampleGen, so it does not depend on that component's
state.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.report import BENCHMARKS_MD, write_section
from trainer_module.backbone_specs import get_backbone_spec

REPO_ROOT = Path(__file__).resolve().parent.parent

SECTION = "Trainer throughput: TFX Trainer vs plain Keras"
TARGET_RATIO = 0.9
SIDES = ("tfx", "plain")
SIDE_NAMES = {"tfx": "TFX Trainer (run_fn)", "plain": "plain Keras script"}


# ------------------------------------------------------------------------------------------
# Settings shared by both sides
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preset:
    """One configuration to compare: the network, its input size and the data size."""

    name: str
    backbone: str
    image_size: int
    train_per_class: int
    eval_per_class: int
    epochs: int
    repeats: int
    about: str


PRESETS = {
    preset.name: preset
    for preset in (
        Preset(
            "small_cnn",
            "small_cnn",
            64,
            train_per_class=200,
            eval_per_class=50,
            epochs=6,
            repeats=3,
            about="the quick-run backbone at its default size (a cheap network: per-step and "
            "per-epoch overheads weigh most here)",
        ),
        Preset(
            "efficientnet_lite0",
            "efficientnet_lite0",
            224,
            train_per_class=16,
            eval_per_class=8,
            epochs=4,
            repeats=2,
            about="the pipeline's default backbone, ImageNet weights, phase 1 (frozen backbone)",
        ),
    )
}


def preset_config(preset: Preset, epochs: int) -> Any:
    """The pipeline configuration of a preset: the pipeline's defaults plus the preset.

    Both components get their custom_config from it through the pipeline's own builders
    (``trainer_custom_config``, ``transform_component``), so new settings follow along.
    """
    from pipeline.config import load_config

    overrides = {
        "backbone": preset.backbone,
        "backbone_weights": "imagenet",
        "image_size": preset.image_size,
        "epochs": epochs,
        "fine_tune_epochs": 0,
        # Every repeat must run all epochs; EarlyStopping itself costs nothing measurable.
        "early_stopping_patience": 0,
    }
    return load_config(None, overrides, validate=False)


# ------------------------------------------------------------------------------------------
# Artifacts: examples + transform graph
# ------------------------------------------------------------------------------------------


def _write_examples(
    out_dir: Path, idx_dir: Path, train_per_class: int, eval_per_class: int
) -> None:
    """Fashion-MNIST train-split images as PNG tf.Examples in out_dir/{train,eval}/."""
    import numpy as np
    import tensorflow as tf

    from pipeline.data_export import FASHION_MNIST_CLASSES, load_split, select_indices

    images, labels = load_split(idx_dir, "train")
    picks = {
        "train": list(select_indices(labels, train_per_class)),
        "eval": list(select_indices(labels, eval_per_class, skip=train_per_class)),
    }
    for split, indices in picks.items():
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        path = str(out_dir / split / "data.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for index in indices:
                png = tf.io.encode_png(images[index][..., np.newaxis]).numpy()
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                    "label": tf.train.Feature(
                        bytes_list=tf.train.BytesList(
                            value=[FASHION_MNIST_CLASSES[labels[index]].encode()]
                        )
                    ),
                    "image_id": tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[f"train_{index:05d}".encode()])
                    ),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
        print(f"wrote {len(indices)} {split} examples to {path}", flush=True)


def _latest(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    if not found:
        raise SystemExit(f"no {pattern} under {root}")
    return found[-1]


def prepare_artifacts(preset: Preset, config: Any, work: Path, idx_dir: Path) -> dict[str, str]:
    """Examples (gzipped TFRecords, Split-train/Split-eval) and a Transform graph."""
    from tfx import v1 as tfx

    from pipeline.config import IN_PROCESS_BEAM_ARGS
    from pipeline.pipeline import transform_component

    raw_dir = work / "raw_examples"
    shutil.rmtree(work / "prepare", ignore_errors=True)
    shutil.rmtree(raw_dir, ignore_errors=True)
    _write_examples(raw_dir, idx_dir, preset.train_per_class, preset.eval_per_class)
    example_gen = tfx.components.ImportExampleGen(
        input_base=str(raw_dir),
        input_config=tfx.proto.Input(
            splits=[
                tfx.proto.Input.Split(name="train", pattern="train/*"),
                tfx.proto.Input.Split(name="eval", pattern="eval/*"),
            ]
        ),
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
    )
    transform = transform_component(
        example_gen.outputs["examples"], schema_gen.outputs["schema"], config
    )
    prepare_root = work / "prepare"
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="throughput-prepare",
        pipeline_root=str(prepare_root / "pipeline_root"),
        components=[example_gen, statistics_gen, schema_gen, transform],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(prepare_root / "metadata.sqlite")
        ),
        beam_pipeline_args=list(IN_PROCESS_BEAM_ARGS),
    )
    start = time.perf_counter()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    print(f"prepared examples and transform graph in {time.perf_counter() - start:.0f} s")
    root = prepare_root / "pipeline_root"
    return {
        "examples": str(_latest(root, "ImportExampleGen/examples/*")),
        "transform_graph": str(_latest(root, "Transform/transform_graph/*")),
    }


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------


def _epoch_timer():
    import tensorflow as tf

    class EpochTimer(tf.keras.callbacks.Callback):
        """perf_counter at each epoch's start, validation start and end."""

        def __init__(self) -> None:
            super().__init__()
            self.begin: list[float] = []
            self.validation: list[float] = []
            self.end: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.begin.append(time.perf_counter())

        def on_test_begin(self, logs: dict | None = None) -> None:
            self.validation.append(time.perf_counter())

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.end.append(time.perf_counter())

    return EpochTimer()


def _timings(timer: Any, num_train: int) -> dict[str, Any]:
    """Steady-state figures from an EpochTimer: epochs 2..N."""
    epochs = len(timer.end)
    if epochs < 2 or len(timer.validation) != epochs:
        raise RuntimeError(
            f"timing callback saw {epochs} epochs and {len(timer.validation)} validation passes; "
            "need at least 2 epochs, each with validation"
        )
    window = timer.end[-1] - timer.begin[1]
    train_only = sum(v - b for b, v in zip(timer.begin[1:], timer.validation[1:]))
    return {
        "epochs": epochs,
        "num_train": num_train,
        "epoch_seconds": [e - b for b, e in zip(timer.begin, timer.end)],
        "first_epoch_seconds": timer.end[0] - timer.begin[0],
        "steady_images_per_s": num_train * (epochs - 1) / window,
        "train_only_images_per_s": num_train * (epochs - 1) / train_only,
    }


def _count(pattern: str) -> int:
    from trainer_module.train import count_examples

    return count_examples([pattern])


# ------------------------------------------------------------------------------------------
# Workers (one fresh process per repeat)
# ------------------------------------------------------------------------------------------


def worker_tfx(job: dict[str, Any]) -> dict[str, Any]:
    """Runs the Trainer through LocalDagRunner; returns the timing callback's figures."""
    import tensorflow as tf
    from tfx import v1 as tfx

    # The Trainer re-imports (importlib.reload) trainer_module.train before calling run_fn,
    # so the timer goes in through Model.fit, which run_fn calls with its own callbacks.
    timer = _epoch_timer()
    original_fit = tf.keras.Model.fit

    def fit_with_timer(self: Any, *args: Any, callbacks: Any = None, **kwargs: Any) -> Any:
        return original_fit(self, *args, callbacks=[*(callbacks or []), timer], **kwargs)

    tf.keras.Model.fit = fit_with_timer

    run_root = Path(job["run_dir"])
    examples = tfx.dsl.Importer(
        source_uri=job["examples"],
        artifact_type=tfx.types.standard_artifacts.Examples,
        properties={"split_names": json.dumps(["train", "eval"])},
    ).with_id("import_examples")
    transform_graph = tfx.dsl.Importer(
        source_uri=job["transform_graph"],
        artifact_type=tfx.types.standard_artifacts.TransformGraph,
    ).with_id("import_transform_graph")
    trainer = tfx.components.Trainer(
        run_fn=job["run_fn"],
        examples=examples.outputs["result"],
        transform_graph=transform_graph.outputs["result"],
        custom_config=job["settings"],
    )
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="throughput-trainer",
        pipeline_root=str(run_root / "pipeline_root"),
        components=[examples, transform_graph, trainer],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(run_root / "metadata.sqlite")
        ),
    )
    start = time.perf_counter()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    result = _timings(timer, _count(os.path.join(job["examples"], "Split-train", "*")))
    result["process_seconds"] = time.perf_counter() - start
    return result


def worker_plain(job: dict[str, Any]) -> dict[str, Any]:
    """A plain Keras training script on the same files, network and settings."""
    import tensorflow as tf

    from trainer_module.backbone_specs import get_backbone_spec
    from trainer_module.models import build_backbone, build_classifier
    from trainer_module.train import augment_batch

    start = time.perf_counter()
    settings = job["settings"]
    size, batch_size, seed = job["image_size"], settings["batch_size"], settings["seed"]
    spec = get_backbone_spec(settings["backbone"])
    tf.keras.utils.set_random_seed(seed)
    vocabulary_file = os.path.join(job["transform_graph"], "transform_fn", "assets")
    vocabulary_file = os.path.join(vocabulary_file, "label_vocabulary")
    class_names = [line for line in Path(vocabulary_file).read_text().splitlines() if line]
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(class_names), tf.range(len(class_names), dtype=tf.int64)
        ),
        default_value=-1,
    )
    feature_spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.string),
    }
    mean = tf.constant(spec.input_mean, tf.float32)
    std = tf.constant(spec.input_std, tf.float32)

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(record, feature_spec)
        image = tf.cast(tf.io.decode_png(example["image"], channels=3), tf.float32)
        image = tf.clip_by_value(tf.image.resize(image, [size, size]), 0.0, 255.0)
        if spec.bgr:
            image = image[..., ::-1]
        return (image - mean) / std, table.lookup(example["label"])

    def files(split: str) -> list[str]:
        return sorted(tf.io.gfile.glob(os.path.join(job["examples"], f"Split-{split}", "*")))

    def dataset(split: str) -> tf.data.Dataset:
        return (
            tf.data.TFRecordDataset(
                files(split), compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE
            )
            .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
            .cache()
        )

    num_train = _count(os.path.join(job["examples"], "Split-train", "*"))

    def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = augment_batch(
            images,
            settings["augment_flip"],
            settings["augment_zoom"],
            settings["augment_color"],
            spec.pixel_range,
        )
        return images, labels

    train = (
        dataset("train")
        .shuffle(min(num_train, 10_000), seed=seed)
        .batch(batch_size)
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = dataset("eval").batch(batch_size).prefetch(tf.data.AUTOTUNE)

    pretrained = spec.starts_pretrained(settings["backbone_weights"])
    backbone = build_backbone(spec, size, settings["backbone_weights"])
    model = build_classifier(
        backbone, size, len(class_names), settings["dropout"], pretrained=pretrained
    )
    if pretrained:
        from trainer_module.models import set_backbone_trainable

        set_backbone_trainable(model, 0.0)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(settings["learning_rate"]),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    timer = _epoch_timer()
    model.fit(
        train,
        validation_data=validation,
        epochs=settings["epochs"],
        callbacks=[timer],
        verbose=2,
    )
    result = _timings(timer, num_train)
    result["process_seconds"] = time.perf_counter() - start
    return result


def run_worker(side: str, job: dict[str, Any], log_path: Path) -> dict[str, Any]:
    """Runs one repeat of ``side`` in a fresh Python process; returns its figures."""
    job_path = log_path.with_suffix(".job.json")
    result_path = log_path.with_suffix(".result.json")
    job_path.write_text(json.dumps(job))
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.trainer_throughput", "--worker", side]
    command += ["--job", str(job_path), "--result", str(result_path)]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(REPO_ROOT))
    with log_path.open("w") as log:
        completed = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    if completed.returncode != 0 or not result_path.exists():
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        raise SystemExit(
            f"{side} worker failed (exit {completed.returncode}); log {log_path}:\n{tail}"
        )
    return json.loads(result_path.read_text())


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def _order(repeats: int) -> list[str]:
    """tfx, plain, plain, tfx, tfx, plain, ...: each side goes first equally often."""
    pairs = [SIDES if i % 2 == 0 else SIDES[::-1] for i in range(repeats)]
    return [side for pair in pairs for side in pair]


def markdown(
    preset: Preset, settings: dict[str, Any], results: dict[str, list], measured: str
) -> str:
    """The part of the BENCHMARKS.md section for one preset (a ``### `` subsection)."""
    steady = {s: [r["steady_images_per_s"] for r in results[s]] for s in SIDES}
    train_only = {s: [r["train_only_images_per_s"] for r in results[s]] for s in SIDES}
    first = {s: [r["first_epoch_seconds"] for r in results[s]] for s in SIDES}
    process = {s: [r["process_seconds"] for r in results[s]] for s in SIDES}
    num_train = results["tfx"][0]["num_train"]
    ratio_median = statistics.median(steady["tfx"]) / statistics.median(steady["plain"])
    ratio_min = min(steady["tfx"]) / min(steady["plain"])
    paired = [t / p for t, p in zip(steady["tfx"], steady["plain"])]
    train_ratio = statistics.median(train_only["tfx"]) / statistics.median(train_only["plain"])
    met = ratio_median >= TARGET_RATIO
    repeats = len(steady["tfx"])
    weights = (
        "ImageNet weights"
        if get_backbone_spec(settings["backbone"]).starts_pretrained(settings["backbone_weights"])
        else "random init"
    )
    lines = [
        f"{_PRESET_MARK.format(preset.name)}",
        f"### {settings['backbone']} at {preset.image_size}x{preset.image_size}",
        "",
        f"Measured {measured}.",
        "",
        f"{preset.about[0].upper()}{preset.about[1:]}. {num_train} training / "
        f"{preset.eval_per_class * 10} eval images, {weights}, batch "
        f"{settings['batch_size']}, "
        f"{settings['epochs']} epochs, Adam {settings['learning_rate']:g}, augmentation flip "
        f"{settings['augment_flip']} / zoom {settings['augment_zoom']} / colour "
        f"{settings['augment_color']}, dropout {settings['dropout']}, seed {settings['seed']}. "
        f"{repeats} repeats per side.",
        "",
        "| side | steady images/s min | median | train-only images/s min | median "
        "| epoch 1 s (median) | process s (median) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for side in SIDES:
        lines.append(
            f"| {SIDE_NAMES[side]} | {min(steady[side]):.1f} | "
            f"{statistics.median(steady[side]):.1f} | {min(train_only[side]):.1f} | "
            f"{statistics.median(train_only[side]):.1f} | {statistics.median(first[side]):.1f} "
            f"| {statistics.median(process[side]):.0f} |"
        )
    lines += [
        "",
        f"TFX / plain, steady images/s: ratio of medians **{ratio_median:.2f}x**, ratio of "
        f"minimums {ratio_min:.2f}x, per repeat pair {', '.join(f'{r:.2f}' for r in paired)}. "
        f"Train only: ratio of medians {train_ratio:.2f}x. Target (ratio of medians >= "
        f"{TARGET_RATIO}x): **{'met' if met else 'not met'}**.",
    ]
    return "\n".join(lines)


INTRO = (
    "Both sides train the same network (`build_classifier`) on the same gzipped TFRecords "
    "(Fashion-MNIST PNGs written as tf.Examples, through ImportExampleGen; the Transform graph "
    "from the pipeline's `preprocessing_fn`), same batch size, epochs, augmentation and seed, "
    "with a validation pass on the eval split after every epoch (as run_fn does). **TFX**: "
    "`tfx.components.Trainer(run_fn='trainer_module.train.run_fn')` under LocalDagRunner, "
    "inputs from Importers; run_fn unchanged (tf.Transform layer in the input pipeline, "
    "TensorBoard + BackupAndRestore callbacks, export at the end), a timing callback appended "
    "through `tf.keras.Model.fit`. **Plain**: `tf.data` parse + `tf.io.decode_png` + "
    "`tf.image.resize` + the backbone's normalization, cache, shuffle, batch, "
    "`train.augment_batch`, `model.fit`. Steady state = training images x (epochs - 1) / wall "
    "time of epochs 2..N, validation and end-of-epoch callbacks included (epoch 1 holds graph "
    "building and the first decode); 'train only' leaves the validation passes out. Each "
    "repeat is a fresh process; the sides alternate in ABBA order. Each configuration below "
    "is one run of the command it names (TFX and plain measured in that same run)."
)


_PRESET_MARK = "<!-- preset:{} -->"


def kept_parts(run_now: list[str]) -> dict[str, str]:
    """Subsections of presets not run now, from the section already in BENCHMARKS.md."""
    if not BENCHMARKS_MD.exists():
        return {}
    text = BENCHMARKS_MD.read_text()
    section = re.search(
        rf"<!-- bench:{re.escape(SECTION)} -->(.*?)<!-- /bench:{re.escape(SECTION)} -->", text, re.S
    )
    if not section:
        return {}
    kept = {}
    for match in re.finditer(
        r"<!-- preset:(\w+) -->.*?(?=<!-- preset:|\Z)", section.group(1), re.S
    ):
        if match.group(1) in PRESETS and match.group(1) not in run_now:
            kept[match.group(1)] = match.group(0).strip()
    return kept


def run_preset(preset: Preset, args: argparse.Namespace) -> tuple[dict[str, Any], dict]:
    """Prepares the artifacts, runs both sides ``args.repeats`` times; returns the figures."""
    epochs = args.epochs or preset.epochs
    from pipeline.pipeline import RUN_FN, trainer_custom_config

    config = preset_config(preset, epochs)
    settings = trainer_custom_config(config)
    repeats = args.repeats or preset.repeats
    print(f"\n=== {preset.name} ===\nTrainer custom_config: {json.dumps(settings)}", flush=True)
    work = Path(args.work_dir) / preset.name
    work.mkdir(parents=True, exist_ok=True)
    artifacts = prepare_artifacts(preset, config, work, Path(args.idx_dir))
    print("artifacts:", artifacts, flush=True)

    results: dict[str, list] = {side: [] for side in SIDES}
    for index, side in enumerate(_order(repeats)):
        run_dir = work / f"run{index}_{side}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        job = {
            **artifacts,
            "settings": settings,
            "image_size": config.resolved_image_size,
            "run_fn": RUN_FN,
            "run_dir": str(run_dir),
        }
        print(f"[{index + 1}/{2 * repeats}] {SIDE_NAMES[side]} ...", flush=True)
        result = run_worker(side, job, run_dir / "worker.log")
        results[side].append(result)
        print(
            f"    steady {result['steady_images_per_s']:.1f} images/s, train only "
            f"{result['train_only_images_per_s']:.1f}, epochs "
            f"{', '.join(f'{s:.1f}' for s in result['epoch_seconds'])} s, process "
            f"{result['process_seconds']:.0f} s",
            flush=True,
        )
        shutil.rmtree(run_dir / "pipeline_root", ignore_errors=True)
    (work / "results.json").write_text(json.dumps({"settings": settings, **results}, indent=2))
    return settings, results


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (also the worker's)."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--presets",
        nargs="+",
        choices=sorted(PRESETS),
        default=["small_cnn"],
        help="configurations to compare (default: small_cnn)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="processes per side (default: the preset's)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the presets' epochs")
    parser.add_argument("--idx-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--work-dir", default="/tmp/trainer_throughput")
    parser.add_argument("--smoke", action="store_true", help="tiny run; writes nothing")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        job = json.loads(Path(args.job).read_text())
        result = (worker_tfx if args.worker == "tfx" else worker_plain)(job)
        Path(args.result).write_text(json.dumps(result))
        return

    presets = [PRESETS[name] for name in args.presets]
    if args.smoke:
        args.repeats, args.epochs = 1, 2
        presets = [dataclasses.replace(p, train_per_class=20, eval_per_class=5) for p in presets]
    flags = f"--presets {' '.join(args.presets)}"
    if args.repeats:
        flags += f" --repeats {args.repeats}"
    if args.epochs:
        flags += f" --epochs {args.epochs}"
    command = f"nice -n 10 .venv/bin/python -m bench.trainer_throughput {flags}"
    parts = {}
    for preset in presets:
        start = time.perf_counter()
        settings, results = run_preset(preset, args)
        minutes = (time.perf_counter() - start) / 60
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        measured = f"{stamp} by `{command}` ({minutes:.1f} min for this part)"
        parts[preset.name] = markdown(preset, settings, results, measured)
        print("\n" + parts[preset.name], flush=True)
    if args.smoke or args.no_write:
        return
    # Presets not run now keep their earlier subsection (each states when and how it was run).
    parts.update({k: v for k, v in kept_parts(args.presets).items() if k not in parts})
    body = "\n\n".join([INTRO, *(parts[name] for name in PRESETS if name in parts)])
    write_section(SECTION, body, command=command)


if __name__ == "__main__":
    main()
