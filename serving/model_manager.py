"""Versions of one model on disk, loaded, warmed up and reported the way TF Serving does.

``ModelManager`` polls ``SERVING_DIR/MODEL_NAME`` for integer version folders, loads new ones
(replaying their warmup requests), unloads removed ones, and keeps each version's status,
errors included, for ``ModelService.GetModelStatus``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Before TensorFlow is imported anywhere.

import numpy as np  # noqa: E402

from serving.layout import scan_versions, warmup_path  # noqa: E402
from serving.protocol import (  # noqa: E402
    DEFAULT_SIGNATURE,
    DTYPES,
    ServingError,
    TensorSpec,
    VersionStatus,
    array_from_tensor_proto,
    code_name,
    dtype_of_array,
    invalid_argument,
    servable_request,
    shape_string,
)

logger = logging.getLogger(__name__)

VERSION_POLICIES = ("latest", "all")
_MAX_WARMUP_RECORDS = 1000  # WarmupConsts::kMaxNumRecords

# ---------------------------------------------------------------------------------------------
# Loaded versions and the version manager
# ---------------------------------------------------------------------------------------------


def _clean_tf_message(message: str) -> str:
    """The op's own message from a TF runtime error, without the eager call-site preamble.

    ``Graph execution error: ... Detected at node X ... <reason>\\n\\t [[{{node X}}]] [Op:..]``
    becomes ``<reason>\\n\\t [[{{node X}}]]``, close to what TF Serving's Session::Run gives.
    """
    lines = message.split("\n")
    for index, line in enumerate(lines):
        if line.startswith("\t [[") and index > 0:
            node = re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", line)
            return f"{lines[index - 1].strip()}\n{node}"
    text = re.sub(r"^Graph execution error:\s*", "", message.strip())
    return re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", text)


def _error_from_exception(err: BaseException) -> ServingError:
    """A ServingError for anything a TensorFlow call raised."""
    if isinstance(err, ServingError):
        return err
    error_code = getattr(err, "error_code", None)
    if isinstance(error_code, int):
        return ServingError(code_name(error_code), _clean_tf_message(getattr(err, "message", "")))
    if isinstance(err, TypeError | ValueError):
        return invalid_argument(str(err))
    return ServingError("INTERNAL", f"{type(err).__name__}: {err}")


def read_signature_defs(saved_model_dir: str | os.PathLike) -> dict[str, Any]:
    """The SignatureDef protos of the 'serve' MetaGraph, as TF Serving's metadata reports them."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    path = Path(saved_model_dir)
    if (path / "saved_model.pb").exists():
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # Partial parses warn; refuse them.
            try:
                saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
            except (RuntimeWarning, ValueError) as err:  # DecodeError is a ValueError.
                raise ServingError(
                    "DATA_LOSS", f"{path / 'saved_model.pb'} is not a valid SavedModel: {err}"
                ) from None
    else:
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ServingError("NOT_FOUND", f"No MetaGraph tagged 'serve' in {saved_model_dir}")


class LoadedVersion:
    """One loaded SavedModel version: its signatures and the functions that run them."""

    def __init__(self, model_name: str, version: int, path: str):
        import tensorflow as tf
        from tensorflow.core.framework import types_pb2

        self.model_name = model_name
        self.version = version
        self.path = path
        self.signature_defs = read_signature_defs(path)
        self.module = tf.saved_model.load(path, tags=["serve"])
        self.functions = dict(self.module.signatures)
        self.input_specs: dict[str, dict[str, TensorSpec]] = {}
        for signature, definition in self.signature_defs.items():
            specs = {}
            for name, info in definition.inputs.items():
                shape = None
                if not info.tensor_shape.unknown_rank:
                    shape = tuple(d.size if d.size >= 0 else None for d in info.tensor_shape.dim)
                specs[name] = TensorSpec(types_pb2.DataType.Name(info.dtype), shape)
            self.input_specs[signature] = specs
        self.warmup_records = self._replay_warmup_requests()

    def _replay_warmup_requests(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` as TF Serving does at load time.

        Every record is a PredictionLog, run once; any failure fails the load (TF Serving's
        saved_model_warmup_util.cc). Only predict_log records are supported here. Returns the
        number of records replayed (0 without a warmup file).
        """
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        path = warmup_path(self.path)
        if not os.path.isfile(path):
            return 0
        count = 0
        try:
            for record in tf.data.TFRecordDataset(path):
                count += 1
                if count > _MAX_WARMUP_RECORDS:
                    raise invalid_argument(
                        f"Number of warmup records exceeds the maximum ({_MAX_WARMUP_RECORDS}) "
                        f"at {path}"
                    )
                log = prediction_log_pb2.PredictionLog()
                try:
                    log.ParseFromString(record.numpy())
                except Exception:  # noqa: BLE001 - DecodeError and friends
                    raise invalid_argument(
                        f"Failed to parse warmup record {count} from {path}"
                    ) from None
                kind = log.WhichOneof("log_type")
                if kind != "predict_log":
                    raise ServingError(
                        "UNIMPLEMENTED",
                        f"Warmup record {count} in {path} is a {kind}; the local server "
                        "replays predict_log records only",
                    )
                request = log.predict_log.request
                inputs = {name: array_from_tensor_proto(t) for name, t in request.inputs.items()}
                try:
                    self.predict(
                        request.model_spec.signature_name, inputs, list(request.output_filter)
                    )
                except ServingError as err:
                    raise ServingError(
                        err.code, f"Warmup record {count} from {path} failed: {err.message}"
                    ) from None
        except tf.errors.DataLossError as err:
            raise ServingError(
                "DATA_LOSS",
                f"{_clean_tf_message(err.message)}. Please verify your warmup data is in "
                "TFRecord format.",
            ) from None
        logger.info("Replayed %d warmup records from %s", count, path)
        return count

    def inputs_for(self, signature_name: str) -> dict[str, TensorSpec]:
        """The inputs of a signature; INVALID_ARGUMENT as the REST API words it when absent."""
        signature = signature_name or DEFAULT_SIGNATURE
        if signature not in self.input_specs:
            raise invalid_argument(
                f'Serving signature name: "{signature}" not found in signature def'
            )
        return self.input_specs[signature]

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Runs a signature (predict_util.cc RunPredict); errors as ServingError."""
        import tensorflow as tf
        from tensorflow.core.framework import types_pb2

        signature = signature_name or DEFAULT_SIGNATURE
        function = self.functions.get(signature)
        if function is None or signature not in self.input_specs:
            raise ServingError(
                "FAILED_PRECONDITION", f'Serving signature key "{signature}" not found.'
            )
        specs = self.input_specs[signature]
        if set(inputs) != set(specs):
            sent, wanted = sorted(inputs), sorted(specs)
            if len(sent) != len(wanted):
                raise invalid_argument(
                    f"input size does not match signature: {len(sent)}!={len(wanted)} "
                    f"len({{{','.join(sent)}}}) != len({{{','.join(wanted)}}}). "
                    f"Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
                    f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}."
                )
            extra = sorted(set(sent) - set(wanted))[0]
            raise invalid_argument(
                f"input tensor alias not found in signature: {extra}. "
                f"Inputs expected to be in the set {{{','.join(wanted)}}}."
            )
        outputs_wanted = list(output_filter)
        known_outputs = set(self.signature_defs[signature].outputs)
        for alias in outputs_wanted:
            if alias not in known_outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(known_outputs))}}}."
                )
        if len(set(outputs_wanted)) != len(outputs_wanted):
            raise invalid_argument("duplicate output tensor alias")
        tensors = {}
        for index, name in enumerate(sorted(specs)):
            spec, array = specs[name], np.asarray(inputs[name])
            got = dtype_of_array(array)
            if got is None or got.name != spec.dtype:
                want_name = DTYPES[spec.dtype].tf_name if spec.dtype in DTYPES else spec.dtype
                got_name = got.tf_name if got else str(array.dtype)
                raise invalid_argument(
                    f"Expects arg[{index}] to be {want_name} but {got_name} is provided"
                )
            if not spec.is_compatible(array.shape):
                raise invalid_argument(
                    f"Input '{name}' has shape {shape_string(array.shape)}, which does not "
                    f"match the signature's shape {spec.describe()}"
                )
            tf_dtype = tf.dtypes.as_dtype(types_pb2.DataType.Value(spec.dtype))
            tensors[name] = tf.constant(array, dtype=tf_dtype)
        try:
            result = function(**tensors)
        except Exception as err:  # noqa: BLE001 - every runtime error becomes a status
            raise _error_from_exception(err) from None
        outputs = {name: value.numpy() for name, value in result.items()}
        if outputs_wanted:
            outputs = {name: outputs[name] for name in outputs_wanted}
        return outputs


def _version_fingerprint(path: str) -> tuple:
    """Names, sizes and mtimes of a version's files: a changed directory is retried."""
    entries = []
    for root, _, files in os.walk(path):
        for file_name in files:
            full = os.path.join(root, file_name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class ModelManager:
    """Loads, serves and unloads the versions of one model, like TF Serving's ServerCore.

    ``version_policy``: "latest" serves the newest version only (TF Serving's default), "all"
    every version. As in TF Serving's availability-preserving policy, a version that is no
    longer wanted stays loaded until a wanted one is available, so a broken new push leaves the
    previous version serving.
    """

    def __init__(
        self,
        model_name: str,
        base_path: str | os.PathLike,
        version_policy: str = "latest",
        loader: Callable[[str, int, str], LoadedVersion] = LoadedVersion,
    ):
        if version_policy not in VERSION_POLICIES:
            raise ValueError(f"version_policy must be one of {VERSION_POLICIES}")
        self.model_name = model_name
        self.base_path = str(base_path)
        self.version_policy = version_policy
        self._loader = loader
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._available: dict[int, LoadedVersion] = {}
        self._states: dict[int, VersionStatus] = {}
        self._failed: dict[int, tuple] = {}
        self._reported_empty = False
        self._explained_failure: set[int] = set()

    # -- queries (any thread) --

    def servable(self, model_name: str, version: int | None = None) -> LoadedVersion:
        """The loaded version asked for (newest when ``version`` is None), else NOT_FOUND."""
        with self._lock:
            if model_name == self.model_name and self._available:
                if version is None:
                    return self._available[max(self._available)]
                if version in self._available:
                    return self._available[version]
        raise ServingError(
            "NOT_FOUND", f"Servable not found for request: {servable_request(model_name, version)}"
        )

    def status(self, model_name: str, version: int | None = None) -> list[VersionStatus]:
        """Every version seen so far (or one), like ModelService.GetModelStatus."""
        with self._lock:
            known = self._states if model_name == self.model_name else {}
            if version is not None:
                if version not in known:
                    raise ServingError(
                        "NOT_FOUND", f"Could not find version {version} of model {model_name}"
                    )
                return [dataclasses.replace(known[version])]
            if not known:
                raise ServingError(
                    "NOT_FOUND", f"Could not find any versions of model {model_name}"
                )
            return [dataclasses.replace(known[v]) for v in sorted(known, reverse=True)]

    def available_versions(self) -> list[int]:
        with self._lock:
            return sorted(self._available)

    # -- polling (one thread at a time) --

    def poll(self) -> None:
        """Scans the model folder once; loads wanted versions and unloads unwanted ones."""
        with self._poll_lock:
            on_disk = scan_versions(self.base_path)
            if not on_disk and not self._reported_empty:
                logger.warning(
                    "No versions of servable %s found under base path %s",
                    self.model_name,
                    self.base_path,
                )
            self._reported_empty = not on_disk
            if self.version_policy == "all":
                wanted = set(on_disk)
            else:
                wanted = {max(on_disk)} if on_disk else set()
            for version in sorted(wanted, reverse=True):
                with self._lock:
                    if version in self._available:
                        continue
                fingerprint = _version_fingerprint(on_disk[version])
                if self._failed.get(version) == fingerprint:
                    continue  # Failed before and unchanged since: do not retry.
                self._load(version, on_disk[version], fingerprint)
            with self._lock:
                loaded = sorted(self._available)
            self._explain_if_serving_nothing(wanted, on_disk, loaded)
            unwanted = [v for v in loaded if v not in wanted]
            if unwanted and not any(v in loaded for v in wanted):
                unwanted = unwanted[:-1]  # Keep the newest until a wanted version is up.
            for version in unwanted:
                self._unload(version)

    def _explain_if_serving_nothing(self, wanted: set, on_disk: dict, loaded: list) -> None:
        """Logs once why nothing is served while versions exist (e.g. a corrupt newest one).

        As in TF Serving, the 'latest' policy wants the newest version only and never falls
        back to an older one, so a broken newest version on disk at start means no model.
        """
        if loaded or not wanted or self._explained_failure == wanted:
            return
        with self._lock:
            failed = {v: self._states[v] for v in wanted if v in self._states}
        if not failed or any(status.state != "END" for status in failed.values()):
            return
        self._explained_failure = set(wanted)
        newest = max(wanted)
        older = sorted(v for v in on_disk if v < newest)
        logger.error(
            "Serving nothing for %s: version %d failed to load (%s). The '%s' policy, like TF "
            "Serving's, %s and does not fall back to older versions%s. Push a good version "
            "or remove version %d (a good version pushed later is picked up).",
            self.model_name,
            newest,
            failed[newest].error_message if newest in failed else "see above",
            self.version_policy,
            "serves the newest version only" if self.version_policy == "latest" else "failed them",
            f" ({', '.join(map(str, older))} on disk)" if older else "",
            newest,
        )

    def _set_state(self, version: int, state: str, code: str = "OK", message: str = "") -> None:
        with self._lock:
            self._states[version] = VersionStatus(version, state, code, message)

    def _load(self, version: int, path: str, fingerprint: tuple) -> None:
        logger.info("Loading servable %s version %d from %s", self.model_name, version, path)
        self._set_state(version, "LOADING")
        started = time.monotonic()
        try:
            loaded = self._loader(self.model_name, version, path)
        except Exception as err:  # noqa: BLE001 - a bad version is reported, never fatal
            error = _error_from_exception(err)
            if error.code == "INTERNAL":
                error = ServingError("UNKNOWN", error.message)
            logger.error(
                "Loading servable %s version %d failed: %s", self.model_name, version, error.message
            )
            after = _version_fingerprint(path)
            # Retry on a later poll only if the files changed (e.g. were still being written).
            self._failed[version] = fingerprint if after == fingerprint else ()
            self._set_state(version, "END", error.code, error.message)
            return
        self._failed.pop(version, None)
        with self._lock:
            self._available[version] = loaded
            self._states[version] = VersionStatus(version, "AVAILABLE")
        logger.info(
            "Servable %s version %d is AVAILABLE (loaded in %.1f s)",
            self.model_name,
            version,
            time.monotonic() - started,
        )

    def _unload(self, version: int) -> None:
        with self._lock:
            self._states[version] = VersionStatus(version, "UNLOADING")
            self._available.pop(version, None)
            self._states[version] = VersionStatus(version, "END")
        logger.info("Unloaded servable %s version %d", self.model_name, version)
