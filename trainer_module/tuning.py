"""TFX Tuner ``tuner_fn``: KerasTuner's random search over the two training phases.

Each trial trains as ``run_fn`` does (``training_phases`` and ``fit_phase``), shortened to
``tuner_epochs_per_trial`` epochs per phase, on a random subset of at most
``tuner_max_examples`` training and eval examples, and scores the best eval accuracy of its
last phase. TFX's Tuner executor writes the best hyperparameters (the Trainer's
``hyperparameters`` input, applied by ``settings.with_tuned_values``) and every completed
trial with its score (``tuner_results.json``, the search table).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.v1.components import TunerFnResult

from trainer_module import features
from trainer_module.backbone_specs import get_backbone_spec
from trainer_module.models import build_backbone, build_classifier
from trainer_module.settings import (
    TrainingSettings,
    TuningSettings,
    settings_from_custom_config,
    with_tuned_values,
)
from trainer_module.train import (
    count_examples,
    fit_phase,
    make_dataset,
    training_class_weights,
    training_phases,
    transformed_image_size,
)

OBJECTIVE = "val_accuracy"

# Search ranges: log-uniform rates, uniform dropout and fraction.
_RANGES: dict[str, tuple[float, float, str]] = {
    "learning_rate": (1e-4, 1e-2, "log"),
    "dropout": (0.0, 0.5, "linear"),
    "fine_tune_learning_rate": (1e-5, 1e-3, "log"),
    "fine_tune_fraction": (0.1, 1.0, "linear"),
}


def search_space(settings: TrainingSettings, pretrained: bool) -> keras_tuner.HyperParameters:
    """The hyperparameters searched; the phase-2 ones only where phase 2 runs.

    Defaults are the configured values (clipped into the ranges).
    """
    names = ["learning_rate", "dropout"]
    if pretrained and settings.fine_tune_epochs > 0:
        names += ["fine_tune_learning_rate", "fine_tune_fraction"]
    space = keras_tuner.HyperParameters()
    for name in names:
        low, high, sampling = _RANGES[name]
        default = min(max(getattr(settings, name), low), high)
        space.Float(name, low, high, sampling=sampling, default=default)
    return space


class TwoPhaseSearch(keras_tuner.RandomSearch):
    """Random search whose trials are short runs of the Trainer's two phases."""

    def __init__(
        self,
        settings: TrainingSettings,
        train_dataset: tf.data.Dataset,
        eval_dataset: tf.data.Dataset,
        steps_per_epoch: int,
        image_size: int,
        num_classes: int,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._settings = settings
        self._train = train_dataset
        self._eval = eval_dataset
        self._steps_per_epoch = steps_per_epoch
        self._image_size = image_size
        self._num_classes = num_classes

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args, **kwargs) -> dict:
        """Trains one trial's settings; returns the best eval accuracy of its last phase."""
        settings = with_tuned_values(self._settings, trial.hyperparameters.values)
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(settings.seed)
        spec = get_backbone_spec(settings.backbone)
        pretrained = spec.starts_pretrained(settings.backbone_weights)
        backbone = build_backbone(spec, self._image_size, settings.backbone_weights)
        model = build_classifier(
            backbone, self._image_size, self._num_classes, settings.dropout, pretrained=pretrained
        )
        history = None
        for phase in training_phases(settings, pretrained):
            history = fit_phase(
                model, phase, settings, self._train, self._steps_per_epoch, self._eval
            )
        score = max(history.history[OBJECTIVE])
        logging.info(
            "trial %s: %s -> %s %.4f",
            trial.trial_id,
            trial.hyperparameters.values,
            OBJECTIVE,
            score,
        )
        return {OBJECTIVE: score}


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    """Builds the search the TFX Tuner runs (its ``tuner_fn``)."""
    settings = settings_from_custom_config(TrainingSettings, fn_args.custom_config)
    tuning = settings_from_custom_config(TuningSettings, fn_args.custom_config)
    settings.validate()
    tuning.validate()
    # Trials are short: their phases run tuner_epochs_per_trial epochs each.
    trial_settings = dataclasses.replace(
        settings,
        epochs=tuning.tuner_epochs_per_trial,
        fine_tune_epochs=min(settings.fine_tune_epochs, tuning.tuner_epochs_per_trial),
        early_stopping_patience=0,
    )
    # The Tuner's fn_args name the graph transform_graph_path (transform_output is the
    # Trainer's older name for it).
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path or fn_args.transform_output)
    spec = get_backbone_spec(settings.backbone)
    train_count = min(count_examples(fn_args.train_files), tuning.tuner_max_examples)
    eval_count = min(count_examples(fn_args.eval_files), tuning.tuner_max_examples)
    common = dict(tft_output=tft_output, settings=trial_settings, spec=spec)
    train_dataset = make_dataset(
        fn_args.train_files,
        training=True,
        max_examples=tuning.tuner_max_examples,
        class_weights=training_class_weights(settings, fn_args.train_files, tft_output),
        **common,
    )
    eval_dataset = make_dataset(
        fn_args.eval_files, training=False, max_examples=tuning.tuner_max_examples, **common
    )
    search = TwoPhaseSearch(
        settings=trial_settings,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        steps_per_epoch=math.ceil(train_count / settings.batch_size),
        image_size=transformed_image_size(tft_output),
        num_classes=tft_output.vocabulary_size_by_name(features.LABEL_VOCABULARY_NAME),
        hyperparameters=search_space(settings, spec.starts_pretrained(settings.backbone_weights)),
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        max_trials=tuning.tuner_trials,
        seed=settings.seed,
        directory=fn_args.working_dir,
        project_name="search",
        overwrite=True,
    )
    logging.info("Tuning on %d train / %d eval examples", train_count, eval_count)
    return TunerFnResult(tuner=search, fit_kwargs={})
