"""The serving directory layout, defined once: what a version is, where its warmup file lies.

    SERVING_ROOT/
      models.config            model_config_list of every model below, for --model_config_file
      MODEL_NAME/
        1/ saved_model.pb variables/ assets/ assets.extra/tf_serving_warmup_requests
        2/ ...
        exports/               not a version (not numeric): TF Serving and scan_versions skip it
          1/ model_fp32.tflite model_fp16.tflite model_int8.tflite model.onnx labels.txt
             export_report.json

A *version* is a folder whose name is a non-negative int64 written in ASCII digits (as TF
Serving parses it) holding ``saved_model.pb`` or ``saved_model.pbtxt``. Anything else in a
model folder (hidden staging folders, notes, an integer folder still being copied by hand)
is not a version. The Pusher, the infra check, the local server and ``inspect`` all ask
this module.

Light on purpose: no TensorFlow import. Local paths use ``os``/``shutil``; a URL
(``gs://...``) goes through ``tf.io.gfile``, imported only then.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator

DEFAULT_MODEL_NAME = "image_classifier"
MODELS_CONFIG_FILE = "models.config"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
# Where TF Serving looks for warmup requests inside a version folder.
WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_VERSION = 2**63 - 1  # TF Serving keeps version numbers as int64.
# Other runtimes' copies of version N lie in MODEL_NAME/EXPORTS_DIR/N/: a name TF Serving
# never takes for a version (it is not numeric), so the version scanners skip it.
EXPORTS_DIR = "exports"
# Export kind -> file name inside an exports folder; the order is the pipeline's default.
EXPORT_FILES = {
    "tflite_fp32": "model_fp32.tflite",
    "tflite_fp16": "model_fp16.tflite",
    "tflite_int8": "model_int8.tflite",
    "onnx": "model.onnx",
}
EXPORT_LABELS_FILE = "labels.txt"  # class names, one per line: line i is class id i
EXPORT_REPORT_FILE = "export_report.json"  # accuracies, agreement and the gate's reasons

_VERSION_NAME = re.compile(r"[0-9]+")


def is_remote(path: str) -> bool:
    """True for URLs (``gs://``, ``s3://``...), which only tf.io.gfile can reach."""
    return "://" in str(path)


def _gfile():
    import tensorflow as tf  # Only for remote paths; local ones never load TensorFlow.

    return tf.io.gfile


def list_dir(path: str) -> list[str]:
    """Entry names of a folder (no trailing slashes); [] when it does not exist."""
    path = str(path)
    if is_remote(path):
        gfile = _gfile()
        return [name.rstrip("/") for name in gfile.listdir(path)] if gfile.isdir(path) else []
    try:
        return os.listdir(path)
    except OSError:
        return []


def is_dir(path: str) -> bool:
    """Whether ``path`` is a folder (local or remote)."""
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def exists(path: str) -> bool:
    """Whether ``path`` exists (local or remote)."""
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def version_number(name: str) -> int | None:
    """The version a folder name stands for (ASCII digits, at most int64), else None."""
    if not _VERSION_NAME.fullmatch(name):
        return None
    number = int(name)
    return number if number <= MAX_VERSION else None


def has_saved_model(path: str) -> bool:
    """Whether ``path`` holds a SavedModel (saved_model.pb or saved_model.pbtxt)."""
    return any(exists(os.path.join(str(path), name)) for name in SAVED_MODEL_FILES)


def integer_folders(model_dir: str) -> dict[int, str]:
    """Every integer-named folder under ``model_dir``, complete or not: {number: path}.

    When two names stand for one number ("7" and "007"), the first listed is kept.
    """
    folders: dict[int, str] = {}
    for name in sorted(list_dir(model_dir)):
        number = version_number(name)
        path = os.path.join(str(model_dir), name)
        if number is not None and number not in folders and is_dir(path):
            folders[number] = path
    return folders


def scan_versions(model_dir: str) -> dict[int, str]:
    """The complete versions under ``model_dir``: {version: path}.

    A pusher writes a version under a hidden name and renames it into place, so an integer
    folder without a SavedModel file is still being written (or is not ours) and is skipped.
    """
    return {n: p for n, p in integer_folders(model_dir).items() if has_saved_model(p)}


def list_versions(model_dir: str) -> list[int]:
    """The complete versions under ``model_dir``, ascending."""
    return sorted(scan_versions(model_dir))


def exports_root(model_dir: str) -> str:
    """MODEL_DIR/exports: the folder of every version's exports."""
    return os.path.join(str(model_dir), EXPORTS_DIR)


def exports_path(model_dir: str, version: int) -> str:
    """MODEL_DIR/exports/VERSION: the exports published beside version ``version``."""
    return os.path.join(exports_root(model_dir), str(version))


def warmup_path(version_dir: str) -> str:
    """Where TF Serving reads a version's warmup requests."""
    return os.path.join(str(version_dir), WARMUP_DIR, WARMUP_FILE)


def walk_files(root: str) -> Iterator[str]:
    """Paths of every file below ``root``, relative to it, in sorted order."""
    root = str(root)
    if is_remote(root):
        walked = ((d, sorted(n.rstrip("/") for n in f)) for d, _, f in _gfile().walk(root))
    else:
        walked = ((d, sorted(f)) for d, _, f in os.walk(root))
    for dirpath, filenames in sorted(walked):
        for filename in filenames:
            yield os.path.relpath(os.path.join(dirpath, filename), root)


def copy_tree(source: str, destination: str) -> None:
    """Copies every folder and file of ``source`` into ``destination`` (created if missing).

    File contents only (no permissions or times), so a read-only source gives a copy its
    owner can delete. Stops at the first error (a full disk raises OSError ENOSPC).
    """
    source, destination = str(source), str(destination)
    if not is_remote(source) and not is_remote(destination):
        os.makedirs(destination, exist_ok=True)
        for dirpath, dirnames, filenames in os.walk(source):
            target_dir = os.path.join(destination, os.path.relpath(dirpath, source))
            for dirname in dirnames:
                os.makedirs(os.path.join(target_dir, dirname), exist_ok=True)
            for filename in filenames:
                shutil.copyfile(os.path.join(dirpath, filename), os.path.join(target_dir, filename))
        return
    gfile = _gfile()
    gfile.makedirs(destination)
    for dirpath, dirnames, filenames in gfile.walk(source):
        relative = os.path.relpath(dirpath, source)
        target_dir = destination if relative == "." else os.path.join(destination, relative)
        for dirname in dirnames:
            gfile.makedirs(os.path.join(target_dir, dirname.rstrip("/")))
        for filename in filenames:
            gfile.copy(
                os.path.join(dirpath, filename), os.path.join(target_dir, filename), overwrite=True
            )


def remove_tree(path: str) -> None:
    """Deletes a folder and everything in it; a missing folder is fine."""
    path = str(path)
    if is_remote(path):
        if _gfile().exists(path):
            _gfile().rmtree(path)
    elif os.path.lexists(path):
        shutil.rmtree(path)


def _open_binary(path: str):
    return _gfile().GFile(path, "rb") if is_remote(path) else open(path, "rb")  # noqa: SIM115


def _same_file(first: str, second: str, chunk: int = 1 << 20) -> bool:
    with _open_binary(first) as a, _open_binary(second) as b:
        while True:
            block = a.read(chunk)
            if block != b.read(chunk):
                return False
            if not block:
                return True


def same_tree(first: str, second: str, ignore: tuple[str, ...] = ()) -> bool:
    """Whether two folders hold the same relative file paths with byte-identical contents,
    leaving out the relative paths in ``ignore``."""
    files = [f for f in walk_files(first) if f not in ignore]
    if files != [f for f in walk_files(second) if f not in ignore]:
        return False
    return all(_same_file(os.path.join(str(first), f), os.path.join(str(second), f)) for f in files)
