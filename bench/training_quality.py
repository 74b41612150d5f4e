"""Training options of issue 17, each against the defaults in one run with a budget fixed first.

    nice -n 10 .venv/bin/python -m bench.training_quality imbalance
    nice -n 10 .venv/bin/python -m bench.training_quality lite_sizes
    nice -n 10 .venv/bin/python -m bench.training_quality regularisation_cifar10
    nice -n 10 .venv/bin/python -m bench.training_quality regularisation_fashion_mnist
    nice -n 10 .venv/bin/python -m bench.training_quality tuning
    .venv/bin/python -m bench.training_quality --smoke imbalance lite_sizes   # minutes, no write

Comparisons:

- ``imbalance``: Fashion-MNIST 5k (the first 500 training images of each class in file order)
  with three classes, drawn with ``numpy.random.default_rng(IMBALANCE_SEED)``, cut to 5% of
  their images (the first 25); ``class_weight`` none against balanced; test on the full 10k
  test set: accuracy, macro-F1 and the worst class's recall (``pipeline.run_summary``'s own
  per-class figures). Target: worst-class recall up by at least 10 points.
- ``lite_sizes``: EfficientNet-Lite0, -Lite1 and -Lite2 with ImageNet weights on the CIFAR-10
  subset (128 train / 128 test) at their default sizes (224, 240, 260): test accuracy, and
  training and inference images/s.
- ``tuning``: on Fashion-MNIST 5k (test on the 10k test set), the defaults against a tuned
  run at the same total budget, trials included: ``trainer_module.tuning``'s search
  (``TwoPhaseSearch`` over ``search_space``) runs TUNING_TRIALS trials of one epoch per phase on
  TUNING_SUBSET training images, scored on TUNING_VALIDATION other training images (never the
  test set); the tuned run then trains with the best values for what is left of the
  defaults' image-epochs.
- ``regularisation_cifar10`` / ``regularisation_fashion_mnist``: label smoothing 0.1, one
  warmup epoch, mixup (alpha 0.2) and rotation (15 degrees), each alone against the defaults,
  on the CIFAR-10 subset and on Fashion-MNIST 5k.

Every candidate trains the way ``run_fn`` does, through its own code: networks from
``trainer_module.models``, batches through ``train.training_batch_fn`` (augmentation, mixup,
class weights), phases through ``train.training_phases`` and ``fit_phase`` with the
candidate's ``TrainingSettings``. As in ``bench.transfer_learning`` (whose data loading this
reuses), images are decoded once into memory instead of read through a tf.Transform graph,
and there is no validation split or early stopping: the test set is evaluated once, after
training.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench.report import write_section
from bench.transfer_learning import (
    DEFAULT_CIFAR_DIR,
    Dataset,
    cifar10_dataset,
    grayscale_to_model_input,
    one_hot,
    train_dataset,
)
from pipeline.data_export import DEFAULT_IDX_DIR, FASHION_MNIST_CLASSES, load_split, select_indices
from pipeline.run_summary import class_balance, per_class_from_confusion
from trainer_module.backbone_specs import get_backbone_spec
from trainer_module.class_weights import balanced_class_weights
from trainer_module.models import build_backbone, build_classifier
from trainer_module.settings import TrainingSettings, with_tuned_values
from trainer_module.train import fit_phase, training_phases

IMBALANCE_SEED = 17
IMBALANCE_KEPT = 0.05
IMBALANCE_TARGET = 0.10  # worst-class recall up by 10 points
FASHION_MNIST_5K_PER_CLASS = 500
_EVAL_BATCH = 128

SECTIONS = {
    "imbalance": "Class imbalance: Fashion-MNIST 5k with 3 classes cut to 5%",
    "lite_sizes": "EfficientNet-Lite0/1/2 on the CIFAR-10 subset",
    "regularisation_cifar10": "Regularisation and schedule: CIFAR-10 subset",
    "regularisation_fashion_mnist": "Regularisation and schedule: Fashion-MNIST 5k",
    "tuning": "Tuning: Fashion-MNIST 5k, tuned against defaults at the same budget",
}
TUNING_TRIALS = 4
TUNING_SUBSET = 1000
TUNING_VALIDATION = 500

# Budgets, fixed before any run from the CPU cost of each candidate on 2 shared cores; never
# changed after looking at test figures. Shared by every candidate of a comparison.
BUDGETS: dict[str, dict] = {
    # 3,575 images at 64 px, batch 32: 112 steps per epoch; 2 + 2 epochs.
    "imbalance": dict(image_size=64, batch_size=32, epochs=2, fine_tune_epochs=2),
    # 128 images at batch 16: 8 steps per epoch; 5 + 5 epochs at each network's default size.
    "lite_sizes": dict(image_size=0, batch_size=16, epochs=5, fine_tune_epochs=5),
    "regularisation_cifar10": dict(image_size=160, batch_size=16, epochs=10, fine_tune_epochs=10),
    "regularisation_fashion_mnist": dict(
        image_size=64, batch_size=32, epochs=2, fine_tune_epochs=2
    ),
    # Defaults: 2 + 2 epochs of 5,000 images = 20,000 image-epochs. Tuned: 4 trials x (1 + 1)
    # epochs x 1,000 images = 8,000, then 1 + 1 epochs of 5,000 = 10,000: 18,000 in all.
    "tuning": dict(image_size=64, batch_size=32, epochs=2, fine_tune_epochs=2),
}
SMOKE_BUDGET = dict(image_size=32, batch_size=16, epochs=1, fine_tune_epochs=1)

REGULARISATION_CANDIDATES = {
    "defaults": {},
    "label_smoothing 0.1": {"label_smoothing": 0.1},
    "warmup_epochs 1": {"warmup_epochs": 1.0},
    "augment_mixup 0.2": {"augment_mixup": 0.2},
    "augment_rotation 15": {"augment_rotation": 15.0},
}


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def imbalanced_classes() -> list[int]:
    """The three Fashion-MNIST class ids cut to 5% (seeded, so the choice is written down)."""
    rng = np.random.default_rng(IMBALANCE_SEED)
    return sorted(int(c) for c in rng.choice(len(FASHION_MNIST_CLASSES), 3, replace=False))


def fashion_mnist_5k(
    idx_dir: Path, image_size: int, cut: list[int], per_class: int, test_limit: int | None
) -> Dataset:
    """The first ``per_class`` training images of each class; those of ``cut`` kept to 5%."""
    train_x, train_y = load_split(idx_dir, "train")
    test_x, test_y = load_split(idx_dir, "test")
    chosen = np.fromiter(select_indices(train_y, per_class), dtype=np.int64)
    kept_per_cut_class = max(1, round(per_class * IMBALANCE_KEPT))
    seen: dict[int, int] = {}
    selected = []
    for index in chosen:
        label = int(train_y[index])
        seen[label] = seen.get(label, 0) + 1
        if label not in cut or seen[label] <= kept_per_cut_class:
            selected.append(index)
    train_x, train_y = train_x[selected], train_y[selected].astype(np.int64)
    if test_limit:
        test_x, test_y = test_x[:test_limit], test_y[:test_limit]
    test_y = test_y.astype(np.int64)
    cut_names = ", ".join(FASHION_MNIST_CLASSES[c] for c in cut) or "none"
    return Dataset(
        name="fashion_mnist",
        description=f"Fashion-MNIST idx files in `{idx_dir}`: the first {per_class} training "
        f"images of each class in file order, classes cut to their first "
        f"{kept_per_cut_class}: {cut_names} ({len(train_y)} training images); the "
        f"{len(test_y)}-image test set; 28x28 grayscale resized (bilinear) to "
        f"{image_size}x{image_size}, repeated to RGB",
        class_names=list(FASHION_MNIST_CLASSES),
        num_train=len(train_y),
        num_test=len(test_y),
        train_labels=train_y,
        train_images=lambda spec: grayscale_to_model_input(train_x, image_size, spec),
        test_dataset=lambda spec: (
            tf.data.Dataset.from_tensor_slices((test_x, test_y))
            .batch(_EVAL_BATCH)
            .map(lambda x, y: (grayscale_to_model_input(x, image_size, spec), y))
        ),
    )


# ------------------------------------------------------------------------------------------
# Training and evaluation
# ------------------------------------------------------------------------------------------


def run_candidate(
    label: str, data: Dataset, settings: TrainingSettings, image_size: int
) -> dict[str, object]:
    """Trains one candidate as run_fn does, evaluates it once on the test set."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(settings.seed)
    spec = get_backbone_spec(settings.backbone)
    size = image_size or spec.default_image_size
    pretrained = spec.starts_pretrained(settings.backbone_weights)
    num_classes = len(data.class_names)
    print(f"\n=== {label}: {settings} at {size} px ===", flush=True)
    weights = None
    if settings.class_weight == "balanced":
        counts = np.bincount(data.train_labels, minlength=num_classes)
        weights = balanced_class_weights(
            {name: int(n) for name, n in zip(data.class_names, counts, strict=True)},
            data.class_names,
        )
    images = data.train_images(spec)
    train = train_dataset(images, data.train_labels, settings, spec, num_classes, weights)
    model = build_classifier(
        build_backbone(spec, size, settings.backbone_weights),
        size,
        num_classes,
        settings.dropout,
        pretrained=pretrained,
    )
    steps_per_epoch = math.ceil(data.num_train / settings.batch_size)
    start = time.perf_counter()
    trained_images = 0
    for phase in training_phases(settings, pretrained):
        fit_phase(model, phase, settings, train, steps_per_epoch)
        trained_images += data.num_train * phase.epochs
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    predicted, actual = [], []
    for x, y in data.test_dataset(spec):
        predicted.append(np.argmax(model(x, training=False).numpy(), axis=1))
        actual.append(y.numpy())
    eval_seconds = time.perf_counter() - start
    predicted, actual = np.concatenate(predicted), np.concatenate(actual)
    cells: dict[tuple[int, int], float] = {}
    for a, p in zip(actual, predicted, strict=True):
        cells[(int(a), int(p))] = cells.get((int(a), int(p)), 0.0) + 1.0
    per_class = per_class_from_confusion(
        [(a, p, n) for (a, p), n in cells.items()], data.class_names
    )
    result = {
        "candidate": label,
        "image_size": size,
        "accuracy": float((predicted == actual).mean()),
        **class_balance(per_class),
        "train_seconds": train_seconds,
        "train_images_per_s": trained_images / train_seconds,
        "inference_images_per_s": len(actual) / eval_seconds,
    }
    print(result, flush=True)
    return result


def tune(
    data: Dataset,
    base: TrainingSettings,
    size: int,
    trials: int,
    subset: int,
    validation: int,
    directory: str,
) -> tuple[dict[str, float], int]:
    """The tuner's search on ``subset`` training images, scored on ``validation`` others.

    Returns the best trial's values and the image-epochs the search trained.
    """
    import keras_tuner

    from trainer_module.tuning import OBJECTIVE, TwoPhaseSearch, search_space

    spec = get_backbone_spec(base.backbone)
    num_classes = len(data.class_names)
    trial_settings = dataclasses.replace(base, epochs=1, fine_tune_epochs=1)
    images = data.train_images(spec)
    order = np.random.default_rng(base.seed).permutation(data.num_train)
    fit_ids, score_ids = order[:subset], order[subset : subset + validation]
    train = train_dataset(
        tf.gather(images, fit_ids), data.train_labels[fit_ids], trial_settings, spec, num_classes
    )
    held_out = tf.data.Dataset.from_tensor_slices(
        (tf.gather(images, score_ids), one_hot(data.train_labels[score_ids], num_classes))
    ).batch(_EVAL_BATCH)
    search = TwoPhaseSearch(
        settings=trial_settings,
        train_dataset=train,
        eval_dataset=held_out,
        steps_per_epoch=math.ceil(subset / base.batch_size),
        image_size=size,
        num_classes=num_classes,
        hyperparameters=search_space(base, spec.starts_pretrained(base.backbone_weights)),
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        max_trials=trials,
        seed=base.seed,
        directory=directory,
        project_name="bench",
        overwrite=True,
    )
    search.search()
    best = search.oracle.get_best_trials(1)[0]
    print(f"best trial {best.trial_id}: {best.hyperparameters.values} ({best.score})")
    return dict(best.hyperparameters.values), trials * 2 * subset


def _table(results: list[dict[str, object]]) -> list[str]:
    lines = [
        "| candidate | size | test accuracy | macro-F1 | worst-class recall (class) | "
        "train images/s | inference images/s | train wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['candidate']} | {r['image_size']} | **{r['accuracy']:.3f}** | "
            f"{r['macro_f1']:.3f} | {r['worst_class_recall']:.3f} ({r['worst_class']}) | "
            f"{r['train_images_per_s']:.1f} | {r['inference_images_per_s']:.1f} | "
            f"{r['train_seconds']:.0f} |"
        )
    return lines


def _budget_text(budget: dict, settings: TrainingSettings) -> str:
    size = f"{budget['image_size']} px" if budget["image_size"] else "each network's default size"
    return (
        f"Budget, fixed before the run (same for every candidate): {size}, batch "
        f"{budget['batch_size']}, {settings.optimizer}, phase 1 {budget['epochs']} epochs at "
        f"{settings.learning_rate:g} (frozen backbone), phase 2 {budget['fine_tune_epochs']} "
        f"epochs at {settings.fine_tune_learning_rate:g} (top {settings.fine_tune_fraction:.0%} "
        f"unfrozen), {settings.learning_rate_schedule} rates, the pipeline's default "
        f"augmentation (flip, zoom {settings.augment_zoom}), dropout {settings.dropout}, seed "
        f"{settings.seed}; no early stopping. Test set used once, after training."
    )


def run_comparison(name: str, args: argparse.Namespace) -> str:
    """Runs one comparison; returns its BENCHMARKS.md section body."""
    budget = SMOKE_BUDGET if args.smoke else BUDGETS[name]
    test_limit = 256 if args.smoke else None
    base = TrainingSettings(
        batch_size=budget["batch_size"],
        epochs=budget["epochs"],
        fine_tune_epochs=budget["fine_tune_epochs"],
        early_stopping_patience=0,
    )
    per_class = 20 if args.smoke else FASHION_MNIST_5K_PER_CLASS
    size = budget["image_size"]
    if name == "imbalance":
        data = fashion_mnist_5k(args.idx_dir, size, imbalanced_classes(), per_class, test_limit)
        candidates = [
            ("class_weight none", base),
            ("class_weight balanced", dataclasses.replace(base, class_weight="balanced")),
        ]
    elif name == "tuning":
        import tempfile

        data = fashion_mnist_5k(args.idx_dir, size, [], per_class, test_limit)
        subset = 40 if args.smoke else TUNING_SUBSET
        validation = 20 if args.smoke else TUNING_VALIDATION
        trials = 2 if args.smoke else TUNING_TRIALS
        tune_start = time.perf_counter()
        best, tuning_image_epochs = tune(
            data, base, size, trials, subset, validation, tempfile.mkdtemp(prefix="bench-tuning-")
        )
        tune_seconds = time.perf_counter() - tune_start
        # What is left of the defaults' image-epochs, in whole epochs of each phase.
        left = (base.epochs + base.fine_tune_epochs) * data.num_train - tuning_image_epochs
        epochs = max(1, left // data.num_train // 2)
        tuned = with_tuned_values(
            dataclasses.replace(base, epochs=epochs, fine_tune_epochs=epochs), best
        )
        candidates = [("defaults", base), (f"tuned ({trials} trials first)", tuned)]
    elif name == "lite_sizes":
        candidates = [
            (variant, dataclasses.replace(base, backbone=variant))
            for variant in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
        ]
        data = None
    else:
        candidates = [
            (label, dataclasses.replace(base, **changes))
            for label, changes in REGULARISATION_CANDIDATES.items()
        ]
        if name == "regularisation_cifar10":
            data = cifar10_dataset(args.cifar_dir, size, test_limit)
        else:
            data = fashion_mnist_5k(args.idx_dir, size, [], per_class, test_limit)
    wall = time.perf_counter()
    results = []
    for label, settings in candidates:
        if name == "lite_sizes":  # Each network at its own default size.
            size = budget["image_size"] or get_backbone_spec(settings.backbone).default_image_size
            data = cifar10_dataset(args.cifar_dir, size, test_limit)
        results.append(run_candidate(label, data, settings, size))
    wall = time.perf_counter() - wall
    description = data.description
    if name == "lite_sizes":  # Decoded again for each network, at its own size.
        description = description.replace(f"{size}x{size}", "each network's default size")
    lines = [f"Data: {description}.", "", _budget_text(budget, base), "", *_table(results)]
    lines.append("")
    if name == "tuning":
        spent = tuning_image_epochs + (tuned.epochs + tuned.fine_tune_epochs) * data.num_train
        default_spent = (base.epochs + base.fine_tune_epochs) * data.num_train
        gain = results[1]["accuracy"] - results[0]["accuracy"]
        lines.append(
            f"Search: {trials} trials of 1 + 1 epochs on {subset} training images, scored on "
            f"{validation} other training images ({tune_seconds:.0f} s, not in the tuned row's "
            f"train wall time); best values {best}. Image-epochs: defaults {default_spent}, "
            f"tuned {spent} (search {tuning_image_epochs} + training {spent - tuning_image_epochs}"
            f", {tuned.epochs} + {tuned.fine_tune_epochs} epochs). Tuning "
            f"{'paid off' if gain > 0 else 'did not pay off'}: {gain * 100:+.1f} points."
        )
        lines.append("")
    if name == "imbalance":
        gain = results[1]["worst_class_recall"] - results[0]["worst_class_recall"]
        met = gain >= IMBALANCE_TARGET
        lines.append(
            f"Worst-class recall with balanced class weights: {gain * 100:+.1f} points "
            f"(target: +{IMBALANCE_TARGET * 100:.0f}). **{'Met' if met else 'Not met'}.** "
            f"Cut classes drawn with numpy.random.default_rng({IMBALANCE_SEED})."
        )
        lines.append("")
    lines.append(
        "Images/s: training images x epochs / training wall time (graph building included); "
        "inference: test images / wall time of the test pass (batch 128, eager calls)."
    )
    lines.append(f"\nWhole comparison: {wall / 60:.1f} min wall time.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("comparisons", nargs="+", choices=sorted(SECTIONS))
    parser.add_argument("--cifar-dir", type=Path, default=DEFAULT_CIFAR_DIR)
    parser.add_argument("--idx-dir", type=Path, default=DEFAULT_IDX_DIR)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny budget to check the script; writes nothing"
    )
    args = parser.parse_args(argv)
    for name in args.comparisons:
        body = run_comparison(name, args)
        print("\n" + body, flush=True)
        if not args.smoke:
            write_section(
                SECTIONS[name],
                body,
                command=f"nice -n 10 .venv/bin/python -m bench.training_quality {name}",
            )


if __name__ == "__main__":
    main()
