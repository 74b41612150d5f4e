"""The settings Transform and the Trainer read from their custom_config: pure Python, no TF.

Each dataclass is the one list of its component's settings: the pipeline builds the
component's custom_config from its fields (``pipeline.pipeline``), every field is also a
``PipelineConfig`` field with the same type and default (a unit test checks it), and each
class's ``validate`` is the one range check of its fields, which the configuration calls
before any TensorFlow work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from trainer_module.backbone_specs import BackboneSpec, get_backbone_spec

# Ways an image reaches the square model input (see trainer_module.image_ops).
RESIZE_MODES = ("stretch", "pad")
# Optimizers the Trainer builds by name.
OPTIMIZERS = ("adam", "sgd", "rmsprop")
# How each phase's learning rate moves over its epochs: held, or cosine-decayed to zero.
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
# How training examples are weighted: all alike, or by inverse class frequency.
CLASS_WEIGHTS = ("none", "balanced")

_Settings = TypeVar("_Settings")


def settings_from_custom_config(cls: type[_Settings], custom_config: dict[str, Any]) -> _Settings:
    """``cls`` from a component's custom_config; a missing field raises KeyError naming it."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    missing = [n for n in names if n not in custom_config]
    if missing:
        raise KeyError(f"{cls.__name__}: custom_config lacks {', '.join(missing)}")
    return cls(**{n: custom_config[n] for n in names})


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class TransformSettings:
    """What ``preprocessing_fn`` reads: which backbone's input to make, at what size."""

    backbone: str = "efficientnet_lite0"
    image_size: int = 0  # 0: the backbone's default size
    resize_mode: str = "stretch"

    @property
    def backbone_spec(self) -> BackboneSpec:
        """The spec of ``backbone`` (its normalization and sizes)."""
        return get_backbone_spec(self.backbone)

    @property
    def resolved_image_size(self) -> int:
        """The square input size in pixels: ``image_size`` or the backbone's default."""
        return self.image_size or self.backbone_spec.default_image_size

    def validate(self) -> None:
        """Raises ValueError naming the first setting out of range."""
        spec = self.backbone_spec
        if self.image_size < 0:
            raise ValueError("image_size: must be 0 (backbone default) or a positive size")
        if self.image_size and self.image_size < spec.min_image_size:
            raise ValueError(
                f"image_size: {self.image_size} is below the minimum of {spec.min_image_size} "
                f"for backbone {spec.name!r} (0 selects its default, {spec.default_image_size})"
            )
        _check_choice("resize_mode", self.resize_mode, RESIZE_MODES)


@dataclass(frozen=True)
class TrainingSettings:
    """What ``run_fn`` reads; the image size comes from the Transform graph instead."""

    backbone: str = "efficientnet_lite0"
    backbone_weights: str = "imagenet"
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    learning_rate_schedule: str = "constant"
    dropout: float = 0.2
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-4
    fine_tune_fraction: float = 0.3
    augment_flip: bool = True
    augment_zoom: float = 0.1
    augment_color: float = 0.0
    augment_rotation: float = 0.0  # largest random rotation in degrees; 0: off
    augment_mixup: float = 0.0  # mixup's Beta(alpha, alpha) parameter; 0: off
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0  # linear warmup at the start of each phase
    class_weight: str = "none"
    early_stopping_patience: int = 4
    seed: int = 42

    def validate(self) -> None:
        """Raises ValueError naming the first setting out of range.

        ``backbone_weights`` is checked by the configuration, where it is a local path.
        """
        get_backbone_spec(self.backbone)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice(
            "learning_rate_schedule", self.learning_rate_schedule, LEARNING_RATE_SCHEDULES
        )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("learning_rate", "fine_tune_learning_rate"):
            if not 0 < getattr(self, name) < 10:
                raise ValueError(f"{name}: must be in (0, 10), got {getattr(self, name)}")
        if self.fine_tune_epochs < 0:
            raise ValueError("fine_tune_epochs: must be 0 (phase 2 off) or more")
        if not 0 < self.fine_tune_fraction <= 1:
            raise ValueError(
                f"fine_tune_fraction: must be in (0, 1], got {self.fine_tune_fraction}"
            )
        if not 0 <= self.dropout <= 0.9:
            raise ValueError(f"dropout: must be between 0 and 0.9, got {self.dropout}")
        if not 0 <= self.augment_zoom < 0.5:
            raise ValueError(f"augment_zoom: must be in [0, 0.5), got {self.augment_zoom}")
        if not 0 <= self.augment_color <= 0.5:
            raise ValueError(f"augment_color: must be in [0, 0.5], got {self.augment_color}")
        if not 0 <= self.augment_rotation <= 180:
            raise ValueError(
                f"augment_rotation: must be in [0, 180] degrees, got {self.augment_rotation}"
            )
        if not 0 <= self.augment_mixup <= 10:
            raise ValueError(
                f"augment_mixup: must be 0 (off) or a Beta alpha up to 10, got {self.augment_mixup}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs: must be 0 (off) or more, got {self.warmup_epochs}")
        _check_choice("class_weight", self.class_weight, CLASS_WEIGHTS)
        if self.early_stopping_patience < 0:
            raise ValueError("early_stopping_patience: must be 0 (off) or more")


@dataclass(frozen=True)
class TuningSettings:
    """What ``tuner_fn`` reads besides the TrainingSettings: the search's budget.

    ``tuner_trials`` 0 leaves the Tuner out of the pipeline. Each trial trains phase 1 (and
    phase 2 of a pretrained backbone, unless ``fine_tune_epochs`` is 0) for
    ``tuner_epochs_per_trial`` epochs on at most ``tuner_max_examples`` training and as many
    eval examples, drawn at random (seeded).
    """

    tuner_trials: int = 0
    tuner_epochs_per_trial: int = 1
    tuner_max_examples: int = 2000

    def validate(self) -> None:
        """Raises ValueError naming the first setting out of range."""
        if self.tuner_trials < 0:
            raise ValueError(
                f"tuner_trials: must be 0 (no tuning) or more, got {self.tuner_trials}"
            )
        for name in ("tuner_epochs_per_trial", "tuner_max_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")


# The TrainingSettings fields the Tuner searches over (trainer_module.tuning).
TUNED_SETTINGS = ("learning_rate", "fine_tune_learning_rate", "dropout", "fine_tune_fraction")


def with_tuned_values(settings: TrainingSettings, values: dict[str, Any]) -> TrainingSettings:
    """``settings`` with the TUNED_SETTINGS that ``values`` (a trial's or the best) holds."""
    tuned = {
        name: type(getattr(settings, name))(values[name])
        for name in TUNED_SETTINGS
        if name in values
    }
    return dataclasses.replace(settings, **tuned)
