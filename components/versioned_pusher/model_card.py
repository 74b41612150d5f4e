"""The model card the Pusher puts into every version it publishes (``assets.extra/``).

Its parts follow the Model Cards paper (Mitchell et al., 2019) and the fields of tfx-addons'
model card generator as far as this pipeline knows them: model details, intended use and
limits, data, training, quantitative analysis (overall and per class), the comparison with
the served baseline (the gate's decision), caveats, and the date and versions.

TF Serving reads only ``saved_model.pb``, ``variables/``, ``assets/`` and, from
``assets.extra/``, the warm-up requests; other files there are ignored, so the card
travels with the model without changing what is served.
"""

from __future__ import annotations

import datetime
import math
from importlib import metadata as importlib_metadata
from typing import Any

from components.evaluation_results import ACCURACY_METRIC
from serving.layout import WARMUP_DIR

# Beside the warm-up requests, in the folder TF Serving reads nothing else from.
CARD_PATH = f"{WARMUP_DIR}/model_card.md"
_PACKAGES = ("tfx", "tensorflow", "tensorflow-model-analysis", "tensorflow-transform")


def _version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _precision_line(evaluation: dict[str, Any]) -> str:
    metrics = evaluation.get("metrics", {})
    accuracy, count = metrics.get(ACCURACY_METRIC), metrics.get("example_count")
    if accuracy is None or not count:
        return "- Small eval sets give coarse figures; this one's size is not recorded."
    error = 100 * math.sqrt(accuracy * (1 - accuracy) / count)
    return (
        f"- Small eval sets give coarse figures: on {count:g} eval images, accuracy has a "
        f"standard error of about {error:.1f} points."
    )


def build_model_card(
    model_name: str,
    version: int,
    training: dict[str, Any] | None,
    evaluation: dict[str, Any] | None,
    now: datetime.datetime | None = None,
) -> str:
    """The card's Markdown, from the Trainer's training record and the Evaluator's
    ``evaluation_summary.json`` (either may be None: what is unknown is said so)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    training = training or {}
    evaluation = evaluation or {}
    settings = training.get("settings", {})
    classes = training.get("class_names", [])
    lines = [
        f"# Model card: {model_name}, version {version}",
        "",
        "## Model details",
        "",
        f"- Image classifier over {len(classes)} classes, trained by the TFX image pipeline.",
        f"- Backbone: {settings.get('backbone', 'unknown')} "
        f"({'ImageNet-pretrained' if training.get('pretrained') else 'trained from scratch'}), "
        f"input {training.get('image_size', '?')} px RGB; a new classification head.",
        f"- Published {now.strftime('%Y-%m-%d %H:%M')} UTC as version {version}.",
        "- Versions: " + ", ".join(f"{n} {_version(n)}" for n in _PACKAGES) + ".",
        "- Serving signatures: `serving_default` takes encoded image bytes (PNG, JPEG, ...) "
        "and returns class probabilities and names; preprocessing is inside the graph.",
        "",
        "## Intended use",
        "",
        f"- Classifying images into exactly these classes: {', '.join(classes) or 'unknown'}.",
        "- Images like the training data (see Data): same kind of subject, framing and size.",
        "",
        "## Limits",
        "",
        "- Every image gets one of the known classes, also an image of none of them: the "
        "probabilities do not say 'unknown'. Check the confidence and the calibration below.",
        "- Measured only on the eval split below; accuracy on other data (other cameras, "
        "lighting, sources) is not known.",
        _precision_line(evaluation),
        "",
        "## Data",
        "",
        f"- Training examples: {training.get('train_examples', 'unknown')}; eval examples: "
        f"{training.get('eval_examples', 'unknown')}.",
    ]
    fingerprints = training.get("data_fingerprints")
    if fingerprints:
        lines.append(
            f"- Content fingerprints of the examples: train `{fingerprints.get('train')}`, "
            f"eval `{fingerprints.get('eval')}`."
        )
    per_class = evaluation.get("per_class", {})
    if per_class:
        lines.append(
            "- Eval images per class: "
            + ", ".join(f"{name} {int(m['support'])}" for name, m in per_class.items())
            + "."
        )
    lines += ["", "## Training", ""]
    for phase in training.get("phases", []):
        if phase.get("resumed"):
            lines.append(f"- {phase['name']}: resumed from a saved checkpoint (not re-run).")
            continue
        lines.append(
            f"- {phase['name']}: {len(phase['epochs'])} of {phase.get('epochs_planned')} "
            f"epochs at learning rate {phase.get('learning_rate')}; best eval accuracy "
            f"{_number(phase.get('best_eval_accuracy'))} at epoch {phase.get('best_epoch')}"
            + (" (best weights restored)" if phase.get("restores_best") else "")
            + "."
        )
    shown = ("optimizer", "batch_size", "learning_rate_schedule", "dropout", "seed")
    if settings:
        lines.append(
            "- Settings: " + ", ".join(f"{k} {settings[k]}" for k in shown if k in settings) + "."
        )
    lines += ["", "## Quantitative analysis (eval split, TFMA)", ""]
    metrics = evaluation.get("metrics", {})
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_number(value)} |" for name, value in sorted(metrics.items())]
    else:
        lines.append("No evaluation recorded.")
    if per_class:
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [
            f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | "
            f"{int(m['support'])} |"
            for name, m in per_class.items()
        ]
    lines += ["", "## Comparison with the served baseline", ""]
    baseline = evaluation.get("baseline_metrics", {})
    floor, drop = evaluation.get("accuracy_floor"), evaluation.get("max_accuracy_drop")
    lines.append(f"- Gate: accuracy at least {floor}, and at most {drop} below the served version.")
    if evaluation.get("baseline_version") and baseline:
        lines.append(
            f"- Baseline: served version {evaluation['baseline_version']}, accuracy "
            f"{_number(baseline.get(ACCURACY_METRIC))}; this model "
            f"{_number(metrics.get(ACCURACY_METRIC))}."
        )
    else:
        lines.append("- Baseline: none (nothing was served before this model).")
    if "blessed" in evaluation:
        lines.append(f"- Decision: {'blessed' if evaluation['blessed'] else 'not blessed'}.")
    lines += [
        "",
        "## Caveats and recommendations",
        "",
        "- Re-evaluate on data from where the model will be used before relying on it.",
        "- Per-class figures on few images are noisy; look at the classes with low recall.",
        "",
    ]
    return "\n".join(lines)
