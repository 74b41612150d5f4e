"""Transfer learning: ImageNet-pretrained EfficientNet-Lite0 against training from scratch.

    nice -n 10 .venv/bin/python -m bench.transfer_learning cifar10
    nice -n 10 .venv/bin/python -m bench.transfer_learning fashion_mnist
    .venv/bin/python -m bench.transfer_learning --smoke cifar10 fashion_mnist   # minutes, no write

Two small-data comparisons, each training three candidates with the same budget in one run:

- ``efficientnet_lite0`` with ImageNet weights, trained the way ``trainer_module.train.run_fn``
  trains a pretrained backbone: phase 1 (frozen backbone, new head) for E1 epochs, then phase 2
  (top 30% of the backbone unfrozen, BatchNorm kept frozen, learning rate 1e-4) for E2 epochs;
- the same network from random initialisation, whole network trained for E1 + E2 epochs at the
  phase-1 learning rate;
- ``small_cnn`` (random initialisation), trained the same way.

All candidates share image size, batch size, augmentation (``trainer_module.train.augment_batch``
through ``training_batch_fn``, with the pipeline's defaults: horizontal flip, zoom 0.1), dropout
and seed. Networks come from
``trainer_module.models`` (build_backbone / build_classifier) and train through run_fn's own
phase code (``trainer_module.train.training_phases`` and ``fit_phase``, with the budget's
``TrainingSettings``), so the benchmark measures what the pipeline trains. It does not call
``run_fn`` itself, on purpose: the images are decoded once into memory instead of read from
TFRecords through a tf.Transform graph (the same decode and normalization ops), there is no
validation split, early stopping, TensorBoard or backup (the test set is evaluated once, after
training, with the budgets fixed below before any run), and a from-scratch candidate's one
phase gets E1 + E2 epochs, so that every candidate trains as many epochs.

Datasets:

- ``cifar10``: ``/work/shared/data/cifar10_subset`` (128 train / 128 test tf.Examples, PNG
  bytes 32x32), decoded with ``trainer_module.image_ops.decode_batch`` (bilinear upscaling) and
  each backbone's normalization from ``backbone_specs``;
- ``fashion_mnist``: Debian's idx files (``pipeline.data_export.load_split``), the first 100
  training images of each class in file order (1,000 images), the full 10,000-image test set;
  28x28 grayscale is resized bilinearly, repeated to RGB and normalized with
  ``trainer_module.image_ops.normalize``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench.report import write_section
from pipeline.data_export import (
    DEFAULT_IDX_DIR,
    FASHION_MNIST_CLASSES,
    load_split,
    select_indices,
)
from trainer_module.backbone_specs import BackboneSpec, get_backbone_spec
from trainer_module.image_ops import decode_batch, normalize
from trainer_module.models import build_backbone, build_classifier
from trainer_module.settings import TrainingSettings
from trainer_module.train import Phase, fit_phase, training_batch_fn, training_phases

DEFAULT_CIFAR_DIR = Path("/work/shared/data/cifar10_subset")
FASHION_MNIST_PER_CLASS = 100
TARGET_MARGIN = 0.20  # CIFAR-10 subset: pretrained must beat both others by 20 points.
SECTIONS = {
    "cifar10": "Transfer learning: CIFAR-10 subset",
    "fashion_mnist": "Transfer learning: Fashion-MNIST 1k",
}
_EVAL_BATCH = 128


@dataclasses.dataclass(frozen=True)
class Budget:
    """The training budget every candidate of one comparison gets (fixed before running)."""

    image_size: int
    batch_size: int
    phase1_epochs: int  # E1
    phase2_epochs: int  # E2
    learning_rate: float = 1e-3  # Adam, phase 1 (and the whole of from-scratch training)
    fine_tune_learning_rate: float = 1e-4  # Adam, phase 2
    fine_tune_fraction: float = 0.3
    dropout: float = 0.2
    augment_flip: bool = True
    augment_zoom: float = 0.1
    augment_color: float = 0.0
    seed: int = 42

    def training_settings(self, candidate: Candidate, pretrained: bool) -> TrainingSettings:
        """run_fn's settings for this budget and candidate (Adam, constant learning rates).

        A pretrained candidate trains E1 epochs in phase 1 and E2 in phase 2; one trained
        from scratch has a single phase (as in run_fn), given E1 + E2 epochs so that every
        candidate trains as many epochs.
        """
        shared = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(TrainingSettings)
            if f.name in {g.name for g in dataclasses.fields(self)}
        }
        return TrainingSettings(
            **shared,
            backbone=candidate.backbone,
            backbone_weights=candidate.weights,
            epochs=self.phase1_epochs if pretrained else self.phase1_epochs + self.phase2_epochs,
            fine_tune_epochs=self.phase2_epochs,
            early_stopping_patience=0,
        )


# Chosen up front from the CPU cost of each candidate (about 20 minutes per benchmark on
# 2 shared cores); never changed after looking at test accuracy.
BUDGETS = {
    # 32x32 photos upscaled to 160: close to the 224 the ImageNet weights were trained at,
    # at half the cost. 128 images at batch 16 = 8 steps per epoch.
    "cifar10": Budget(image_size=160, batch_size=16, phase1_epochs=10, phase2_epochs=10),
    # 28x28 grayscale upscaled to 96; 1,000 images at batch 32 = 32 steps per epoch.
    "fashion_mnist": Budget(image_size=96, batch_size=32, phase1_epochs=4, phase2_epochs=4),
}
SMOKE_BUDGET = Budget(image_size=32, batch_size=16, phase1_epochs=1, phase2_epochs=1)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One network and initialisation."""

    label: str
    backbone: str
    weights: str  # "imagenet" or "none"


CANDIDATES = (
    Candidate("efficientnet_lite0, ImageNet weights", "efficientnet_lite0", "imagenet"),
    Candidate("efficientnet_lite0, random init", "efficientnet_lite0", "none"),
    Candidate("small_cnn, random init", "small_cnn", "none"),
)


@dataclasses.dataclass
class Dataset:
    """Train images already at model size (0..255 float RGB source), labels, and test input.

    ``train_images(spec)`` returns normalized float32 [N, size, size, 3] for a backbone;
    ``test_dataset(spec)`` a batched tf.data.Dataset of (normalized images, labels).
    """

    name: str
    description: str
    class_names: list[str]
    num_train: int
    num_test: int
    train_labels: np.ndarray
    train_images: Callable[[BackboneSpec], tf.Tensor]
    test_dataset: Callable[[BackboneSpec], tf.data.Dataset]


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def _read_cifar_split(folder: Path) -> tuple[tf.Tensor, np.ndarray]:
    """(PNG bytes [N], labels [N]) of every tf.Example in ``folder``'s TFRecord files."""
    files = sorted(str(p) for p in folder.glob("*.tfrecord*"))
    if not files:
        raise SystemExit(f"no TFRecord files in {folder}")
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    records = (
        tf.data.TFRecordDataset(files).batch(100_000).map(lambda r: tf.io.parse_example(r, spec))
    )
    batch = next(iter(records))
    return batch["image"], batch["label"].numpy()


def cifar10_dataset(root: Path, image_size: int, test_limit: int | None = None) -> Dataset:
    """The CIFAR-10 subset, decoded per backbone with image_ops.decode_batch."""
    train_png, train_labels = _read_cifar_split(root / "train")
    test_png, test_labels = _read_cifar_split(root / "test")
    if test_limit:
        test_png, test_labels = test_png[:test_limit], test_labels[:test_limit]
    class_names = (root / "labels.txt").read_text().split()

    def decode(encoded: tf.Tensor, spec: BackboneSpec) -> tf.Tensor:
        return decode_batch(encoded, image_size, spec)

    return Dataset(
        name="cifar10",
        description=f"`{root}`: {len(train_labels)} train / {len(test_labels)} test CIFAR-10 "
        f"images (32x32 PNG), decoded with `image_ops.decode_batch` and upscaled to "
        f"{image_size}x{image_size}",
        class_names=class_names,
        num_train=len(train_labels),
        num_test=len(test_labels),
        train_labels=train_labels,
        train_images=lambda spec: decode(train_png, spec),
        test_dataset=lambda spec: tf.data.Dataset.from_tensor_slices(
            (decode(test_png, spec), test_labels)
        ).batch(_EVAL_BATCH),
    )


def grayscale_to_model_input(images: tf.Tensor, image_size: int, spec: BackboneSpec) -> tf.Tensor:
    """uint8 [N, 28, 28] -> normalized float32 RGB [N, size, size, 3] (bilinear resize)."""
    images = tf.cast(images, tf.float32)[..., tf.newaxis]
    images = tf.image.resize(images, [image_size, image_size])
    images = tf.clip_by_value(tf.image.grayscale_to_rgb(images), 0.0, 255.0)
    return normalize(images, spec)


def fashion_mnist_dataset(
    idx_dir: Path, image_size: int, per_class: int, test_limit: int | None = None
) -> Dataset:
    """Fashion-MNIST: the first ``per_class`` training images of each class, the test set."""
    train_x, train_y = load_split(idx_dir, "train")
    test_x, test_y = load_split(idx_dir, "test")
    chosen = np.fromiter(select_indices(train_y, per_class), dtype=np.int64)
    train_x, train_y = train_x[chosen], train_y[chosen].astype(np.int64)
    if test_limit:
        test_x, test_y = test_x[:test_limit], test_y[:test_limit]
    test_y = test_y.astype(np.int64)

    def test_dataset(spec: BackboneSpec) -> tf.data.Dataset:
        return (
            tf.data.Dataset.from_tensor_slices((test_x, test_y))
            .batch(_EVAL_BATCH)
            .map(
                lambda x, y: (grayscale_to_model_input(x, image_size, spec), y),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            .prefetch(tf.data.AUTOTUNE)
        )

    return Dataset(
        name="fashion_mnist",
        description=f"Fashion-MNIST idx files in `{idx_dir}`: the first {per_class} training "
        f"images of each class in file order ({len(train_y)} images), the {len(test_y)}-image "
        f"test set; 28x28 grayscale resized (bilinear) to {image_size}x{image_size}, repeated "
        "to RGB, normalized with `image_ops.normalize`",
        class_names=list(FASHION_MNIST_CLASSES),
        num_train=len(train_y),
        num_test=len(test_y),
        train_labels=train_y,
        train_images=lambda spec: grayscale_to_model_input(train_x, image_size, spec),
        test_dataset=test_dataset,
    )


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def one_hot(labels: np.ndarray | tf.Tensor, num_classes: int) -> tf.Tensor:
    """Class ids -> the one-hot labels run_fn's models train and evaluate on."""
    return tf.one_hot(tf.cast(labels, tf.int64), num_classes)


def train_dataset(
    images: tf.Tensor,
    labels: np.ndarray,
    settings: TrainingSettings,
    spec: BackboneSpec,
    num_classes: int,
    class_weights: list[float] | None = None,
) -> tf.data.Dataset:
    """Shuffled (fixed seed, reshuffled each epoch), batched training batches, through
    run_fn's own ``train.training_batch_fn`` (augmentation, mixup, class weights)."""
    return (
        tf.data.Dataset.from_tensor_slices((images, one_hot(labels, num_classes)))
        .shuffle(len(labels), seed=settings.seed, reshuffle_each_iteration=True)
        .batch(settings.batch_size)
        .map(
            training_batch_fn(settings, spec, num_classes, class_weights),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )


def _phase_title(phase: Phase) -> str:
    if phase.backbone_fraction is None:
        return "whole network"
    if phase.backbone_fraction == 0:
        return "phase 1 (frozen backbone)"
    return f"phase 2 (top {phase.backbone_fraction:.0%} unfrozen)"


def _trainable_count(model: tf.keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def run_candidate(candidate: Candidate, data: Dataset, budget: Budget) -> dict[str, object]:
    """Trains one candidate with ``budget``, evaluates it once on the test set."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(budget.seed)
    spec = get_backbone_spec(candidate.backbone)
    pretrained = spec.starts_pretrained(candidate.weights)
    print(f"\n=== {data.name}: {candidate.label} ===", flush=True)

    start = time.perf_counter()
    images = data.train_images(spec)
    settings = budget.training_settings(candidate, pretrained)
    num_classes = len(data.class_names)
    train = train_dataset(images, data.train_labels, settings, spec, num_classes)
    backbone = build_backbone(spec, budget.image_size, candidate.weights)
    model = build_classifier(
        backbone, budget.image_size, len(data.class_names), budget.dropout, pretrained=pretrained
    )
    steps_per_epoch = math.ceil(data.num_train / budget.batch_size)

    phase_rows = []
    train_accuracy = float("nan")
    for phase in training_phases(settings, pretrained):
        title = _phase_title(phase)
        print(f"{title}: {phase.epochs} epochs, lr {phase.learning_rate:g}", flush=True)
        phase_start = time.perf_counter()
        history = fit_phase(model, phase, settings, train, steps_per_epoch)
        seconds = time.perf_counter() - phase_start
        train_accuracy = history.history["accuracy"][-1]
        phase_rows.append(
            {
                "phase": title,
                "epochs": phase.epochs,
                "learning_rate": phase.learning_rate,
                "trainable_weights": _trainable_count(model),
                "seconds": seconds,
                "images_per_s": data.num_train * phase.epochs / seconds,
            }
        )
    train_seconds = time.perf_counter() - start

    # Diagnostic, on training data only: the training images without augmentation, network
    # in inference mode (BatchNorm moving statistics, no dropout).
    train_eval = tf.data.Dataset.from_tensor_slices(
        (images, one_hot(data.train_labels, num_classes))
    ).batch(_EVAL_BATCH)
    _, train_eval_accuracy = model.evaluate(train_eval, verbose=0)

    print(f"evaluating on {data.num_test} test images ...", flush=True)
    eval_start = time.perf_counter()
    test = data.test_dataset(spec).map(lambda x, y: (x, one_hot(y, num_classes)))
    _, test_accuracy = model.evaluate(test, verbose=0)
    eval_seconds = time.perf_counter() - eval_start
    print(
        f"{candidate.label}: test accuracy {test_accuracy:.4f}, train {train_seconds:.0f} s, "
        f"eval {eval_seconds:.0f} s",
        flush=True,
    )
    return {
        "candidate": candidate.label,
        "backbone": candidate.backbone,
        "weights": candidate.weights,
        "pretrained": pretrained,
        "phases": phase_rows,
        "test_accuracy": float(test_accuracy),
        "train_accuracy_last_epoch": float(train_accuracy),
        "train_accuracy_inference": float(train_eval_accuracy),
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
    }


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def _schedule(result: dict[str, object]) -> str:
    return " + ".join(
        f"{p['epochs']} ep {p['phase']} @ {p['learning_rate']:g}"
        for p in result["phases"]  # type: ignore[union-attr]
    )


def margins(results: list[dict[str, object]]) -> dict[str, float]:
    """Test-accuracy points by which the pretrained candidate beats each other candidate."""
    pretrained = next(r for r in results if r["pretrained"])
    return {
        str(r["candidate"]): float(pretrained["test_accuracy"]) - float(r["test_accuracy"])
        for r in results
        if r is not pretrained
    }


def markdown(data: Dataset, budget: Budget, results: list[dict[str, object]], target: bool) -> str:
    """The BENCHMARKS.md section body."""
    lines = [
        f"Data: {data.description}.",
        "",
        f"Budget, fixed before the run (same for every candidate): {budget.image_size}x"
        f"{budget.image_size} input, batch {budget.batch_size}, Adam; E1 = "
        f"{budget.phase1_epochs}, E2 = {budget.phase2_epochs}. Pretrained: phase 1 head only "
        f"(backbone frozen) E1 epochs at {budget.learning_rate:g}, then phase 2 with the top "
        f"{budget.fine_tune_fraction:.0%} of the backbone's layers unfrozen (BatchNorm stays "
        f"frozen, as in run_fn) E2 epochs at {budget.fine_tune_learning_rate:g}. From scratch: "
        f"whole network E1 + E2 = {budget.phase1_epochs + budget.phase2_epochs} epochs at "
        f"{budget.learning_rate:g}. Augmentation `train.augment_batch` (flip "
        f"{budget.augment_flip}, zoom {budget.augment_zoom}, colour {budget.augment_color}), "
        f"dropout {budget.dropout}, seed {budget.seed}. No validation split or early stopping; "
        "the test set is used once, after training.",
        "",
        "| candidate | schedule | test accuracy | train accuracy: last epoch (training mode, "
        "augmented) | train accuracy: inference mode | train wall s | test-eval wall s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['candidate']} | {_schedule(r)} | **{r['test_accuracy']:.3f}** | "
            f"{r['train_accuracy_last_epoch']:.3f} | {r['train_accuracy_inference']:.3f} | "
            f"{r['train_seconds']:.0f} | "
            f"{r['eval_seconds']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Test accuracy = fraction of the {data.num_test} test images right (chance: "
        f"{1 / len(data.class_names):.2f}). 'Inference mode' re-evaluates the training images "
        "without augmentation, BatchNorm on its moving statistics and no dropout, as the test "
        "set is evaluated (a diagnostic: a gap to the training-mode figure means the BatchNorm "
        "moving statistics lag the weights). Train wall time includes decoding the training "
        "images and building the network (ImageNet weights come from the local cache)."
    )
    lines.append("")
    gaps = margins(results)
    gap_text = ", ".join(f"{name}: {gap * 100:+.1f} points" for name, gap in gaps.items())
    if target:
        met = all(gap >= TARGET_MARGIN for gap in gaps.values())
        lines.append(
            f"Target: pretrained beats both others by at least {TARGET_MARGIN * 100:.0f} points. "
            f"Margins: {gap_text}. **{'Met' if met else 'Not met'}.**"
        )
    else:
        lines.append(f"Margins of the pretrained network (no target set): {gap_text}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def run_benchmark(name: str, args: argparse.Namespace) -> list[dict[str, object]]:
    """Runs one comparison, prints its figures and (unless smoke/no-write) writes its section."""
    budget = SMOKE_BUDGET if args.smoke else BUDGETS[name]
    test_limit = 256 if args.smoke else None
    if name == "cifar10":
        data = cifar10_dataset(args.cifar_dir, budget.image_size, test_limit)
    else:
        per_class = 10 if args.smoke else FASHION_MNIST_PER_CLASS
        data = fashion_mnist_dataset(args.idx_dir, budget.image_size, per_class, test_limit)
    print(f"{SECTIONS[name]}: {budget}", flush=True)
    wall = time.perf_counter()
    results = [run_candidate(c, data, budget) for c in CANDIDATES]
    wall = time.perf_counter() - wall
    body = markdown(data, budget, results, target=name == "cifar10")
    body += f"\n\nWhole benchmark: {wall / 60:.1f} min wall time."
    print("\n" + body, flush=True)
    if args.json:
        previous = json.loads(args.json.read_text()) if args.json.exists() else {}
        args.json.write_text(json.dumps({**previous, name: results}, indent=2))
    if not (args.smoke or args.no_write):
        write_section(
            SECTIONS[name],
            body,
            command=f"nice -n 10 .venv/bin/python -m bench.transfer_learning {name}",
        )
    return results


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "benchmarks", nargs="*", choices=sorted(SECTIONS), help="default: both, one after another"
    )
    parser.add_argument("--cifar-dir", type=Path, default=DEFAULT_CIFAR_DIR)
    parser.add_argument("--idx-dir", type=Path, default=DEFAULT_IDX_DIR)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny budget (32 px, 1 + 1 epochs, 256 test images) to check the script; "
        "writes nothing to BENCHMARKS.md",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    args = parser.parse_args(argv)
    print("command:", shlex.join(sys.argv), flush=True)
    for name in args.benchmarks or ["cifar10", "fashion_mnist"]:
        run_benchmark(name, args)


if __name__ == "__main__":
    main()
