"""The serving directory layout TF Serving watches, written so it never sees a partial model.

    SERVING_ROOT/
      models.config            model_config_list of every model below, for --model_config_file
      MODEL_NAME/
        1/ saved_model.pb variables/ assets/ assets.extra/
        2/ ...

A version is copied into a hidden temporary folder beside the versions and renamed into
place, so it appears whole or not at all (rename is atomic on local and POSIX filesystems;
on object stores such as gs:// it is a copy, see README). Pure Python and tf.io.gfile only.
"""

from __future__ import annotations

import logging
import os
import uuid

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

MODELS_CONFIG_FILE = "models.config"
_TEMP_PREFIX = ".incoming-"


def list_versions(model_dir: str) -> list[int]:
    """Integer version folders under ``model_dir`` that hold a SavedModel, ascending."""
    if not tf.io.gfile.isdir(model_dir):
        return []
    versions = []
    for name in tf.io.gfile.listdir(model_dir):
        name = name.rstrip("/")
        if name.isdigit() and tf.io.gfile.exists(os.path.join(model_dir, name, "saved_model.pb")):
            versions.append(int(name))
    return sorted(versions)


def _copy_tree(source: str, destination: str) -> None:
    tf.io.gfile.makedirs(destination)
    for dirpath, dirnames, filenames in tf.io.gfile.walk(source):
        relative = os.path.relpath(dirpath, source)
        target_dir = destination if relative == "." else os.path.join(destination, relative)
        for dirname in dirnames:
            tf.io.gfile.makedirs(os.path.join(target_dir, dirname))
        for filename in filenames:
            tf.io.gfile.copy(
                os.path.join(dirpath, filename), os.path.join(target_dir, filename), overwrite=True
            )


def publish_version(saved_model_dir: str, model_dir: str, max_attempts: int = 5) -> int:
    """Copies ``saved_model_dir`` to ``model_dir/<next integer version>`` atomically.

    The next version is one more than the highest existing one (1 for the first). If
    another pusher takes that number first, the rename fails and the next number is tried.
    Returns the published version.
    """
    if not tf.io.gfile.exists(os.path.join(saved_model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"{saved_model_dir} holds no saved_model.pb")
    tf.io.gfile.makedirs(model_dir)
    staging = os.path.join(model_dir, f"{_TEMP_PREFIX}{uuid.uuid4().hex}")
    _copy_tree(saved_model_dir, staging)
    try:
        for _ in range(max_attempts):
            existing = list_versions(model_dir)
            version = (existing[-1] + 1) if existing else 1
            target = os.path.join(model_dir, str(version))
            if tf.io.gfile.exists(target):
                continue
            try:
                tf.io.gfile.rename(staging, target, overwrite=False)
            except (tf.errors.OpError, OSError) as err:
                logging.warning("version %d was taken while pushing (%s); retrying", version, err)
                continue
            return version
        raise RuntimeError(f"could not publish a new version under {model_dir}")
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)


def prune_versions(model_dir: str, keep: int) -> list[int]:
    """Deletes all but the newest ``keep`` versions; returns the deleted ones."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    versions = list_versions(model_dir)
    removed = versions[:-keep]
    for version in removed:
        tf.io.gfile.rmtree(os.path.join(model_dir, str(version)))
    return removed


def write_models_config(serving_root: str, base_path_in_server: str = "") -> str:
    """Writes ``SERVING_ROOT/models.config`` listing every model folder that has versions.

    ``base_path_in_server`` is where TF Serving sees SERVING_ROOT (e.g. ``/models`` inside
    the tensorflow/serving container); empty means SERVING_ROOT itself. Written to a
    temporary file and renamed, so TF Serving never reads half a config. Returns its path.
    """
    config = model_server_config_pb2.ModelServerConfig()
    base = base_path_in_server or serving_root
    for name in (
        sorted(tf.io.gfile.listdir(serving_root)) if tf.io.gfile.isdir(serving_root) else []
    ):
        name = name.rstrip("/")
        if list_versions(os.path.join(serving_root, name)):
            model = config.model_config_list.config.add()
            model.name = name
            model.base_path = os.path.join(base, name)
            model.model_platform = "tensorflow"
    path = os.path.join(serving_root, MODELS_CONFIG_FILE)
    temp = f"{path}.{uuid.uuid4().hex}.tmp"
    with tf.io.gfile.GFile(temp, "w") as f:
        f.write(text_format.MessageToString(config))
    tf.io.gfile.rename(temp, path, overwrite=True)
    return path
