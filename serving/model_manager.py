"""Model versions on disk, loaded, warmed up, run and reported the way TF Serving does.

- ``LoadedVersion``: one SavedModel version in a TF Session; Predict, Classify, Regress and
  MultiInference with TF Serving's checks and messages; warmup replay.
- ``ModelManager`` polls ``SERVING_DIR/MODEL_NAME`` for integer version folders, loads the ones
  its VersionPolicy wants (replaying their warmup requests), unloads the others, and keeps each
  version's status, errors included, for ``ModelService.GetModelStatus``.
- ``ServerCore``: several models from a ModelServerConfig (``parse_model_server_config``),
  with version labels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.layout import scan_versions, warmup_path
from serving.protocol import (
    DEFAULT_SIGNATURE,
    ServingError,
    TensorSpec,
    VersionStatus,
    array_from_tensor_proto,
    code_name,
    dtype_of_array,
    invalid_argument,
    python_error_status,
    serialized_examples,
    servable_request,
)

logger = logging.getLogger(__name__)

VERSION_POLICIES = ("latest", "all")  # the --model_version_policy shorthands
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
    return python_error_status(err)


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
    """One loaded SavedModel version: its signatures, run in a TF Session as TF Serving does.

    TF Serving loads the 'serve' MetaGraph into a Session and feeds the signature's tensors
    (predict_util.cc, classifier.cc, regressor.cc, multi_inference.cc). Doing the same here
    keeps its semantics: input shapes are checked by the graph's ops only (not against the
    signature's declared shapes), a wrong dtype fails with the runtime's own "Type mismatch",
    and an output filter runs only the part of the graph those outputs need.

    ``batcher``: a ``serving.batching.BatchScheduler`` that merges concurrent Session runs
    (``--enable_batching``); None runs each request on its own.
    """

    def __init__(
        self,
        model_name: str,
        version: int,
        path: str,
        *,
        batcher: Any = None,
        enable_warmup: bool = True,
    ):
        import tensorflow as tf
        from tensorflow.core.framework import types_pb2

        self.model_name = model_name
        self.version = version
        self.path = path
        self.signature_defs = read_signature_defs(path)  # DATA_LOSS for a corrupt file
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        try:
            with self._graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self._session, ["serve"], path)
        except Exception:
            self._session.close()
            raise
        self.signature_defs = dict(meta_graph.signature_def)
        self._callables: dict[tuple, Any] = {}
        self._callables_lock = threading.Lock()
        self._batcher = batcher
        self.input_specs: dict[str, dict[str, TensorSpec]] = {}
        for signature, definition in self.signature_defs.items():
            specs = {}
            for name, info in definition.inputs.items():
                shape = None
                if not info.tensor_shape.unknown_rank:
                    shape = tuple(d.size if d.size >= 0 else None for d in info.tensor_shape.dim)
                specs[name] = TensorSpec(types_pb2.DataType.Name(info.dtype), shape)
            self.input_specs[signature] = specs
        try:
            self.warmup_records = self._replay_warmup_requests() if enable_warmup else 0
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        """Releases the Session (the version is unloaded)."""
        self._callables.clear()
        self._session.close()

    # -- Session::Run --

    def _callable(self, feeds: tuple[str, ...], fetches: tuple[str, ...]):
        key = (feeds, fetches)
        function = self._callables.get(key)
        if function is None:
            from tensorflow.core.protobuf import config_pb2

            options = config_pb2.CallableOptions()
            options.feed.extend(feeds)
            options.fetch.extend(fetches)
            with self._callables_lock:
                function = self._callables.get(key)
                if function is None:
                    # The low-level callable feeds without the Python client's shape checks,
                    # as TF Serving's C++ Session::Run does.
                    function = self._session._make_callable_from_options(options)  # noqa: SLF001
                    self._callables[key] = function
        return function

    def run_session(
        self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]
    ) -> list[np.ndarray]:
        """Session::Run: feeds (tensor name -> array) and fetches (tensor names), unbatched."""
        names = tuple(sorted(feeds))
        function = self._callable(names, tuple(fetches))
        try:
            return list(function(*(feeds[name] for name in names)))
        except Exception as err:  # noqa: BLE001 - every runtime error becomes a status
            raise _error_from_exception(err) from None

    def run(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        """Session::Run through the batching layer when there is one."""
        if self._batcher is not None:
            return self._batcher.run(self, feeds, fetches)
        return self.run_session(feeds, fetches)

    # -- warmup --

    def _replay_warmup_requests(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` as TF Serving does at load time.

        Every record is a PredictionLog (predict, classify, regress or multi_inference), run
        once; any failure fails the load (saved_model_warmup_util.cc). Returns the number of
        records replayed (0 without a warmup file).
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
                try:
                    self._replay_one(log)
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

    def _replay_one(self, log) -> None:
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            request = log.predict_log.request
            inputs = {name: array_from_tensor_proto(t) for name, t in request.inputs.items()}
            self.predict(request.model_spec.signature_name, inputs, list(request.output_filter))
        elif kind == "classify_log":
            request = log.classify_log.request
            self.classify(request.model_spec.signature_name, request.input)
        elif kind == "regress_log":
            request = log.regress_log.request
            self.regress(request.model_spec.signature_name, request.input)
        elif kind == "multi_inference_log":
            self.multi_inference(log.multi_inference_log.request)
        else:
            raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind}")

    # -- Predict --

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
        signature = signature_name or DEFAULT_SIGNATURE
        definition = self.signature_defs.get(signature)
        if definition is None:
            raise ServingError(
                "FAILED_PRECONDITION", f'Serving signature key "{signature}" not found.'
            )
        wanted = sorted(definition.inputs)
        if set(inputs) != set(wanted):
            sent = sorted(inputs)
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
        known_outputs = set(definition.outputs)
        aliases = list(output_filter)
        for alias in aliases:
            if alias not in known_outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(known_outputs))}}}."
                )
        if len(set(aliases)) != len(aliases):
            raise invalid_argument("duplicate output tensor alias")
        aliases = aliases or sorted(known_outputs)
        feeds = {definition.inputs[name].name: np.asarray(inputs[name]) for name in wanted}
        results = self.run(feeds, [definition.outputs[a].name for a in aliases])
        return dict(zip(aliases, results, strict=True))

    # -- Classify, Regress, MultiInference --

    def _signature_for(self, signature_name: str, method: str):
        """GetClassificationSignatureDef / GetRegressionSignatureDef."""
        name = signature_name or DEFAULT_SIGNATURE
        definition = self.signature_defs.get(name)
        if definition is None:
            raise invalid_argument(f"No signature was found with the name: {name}")
        expected = METHOD_NAMES[method]
        if definition.method_name != expected:
            raise invalid_argument(
                f"Expected {method} signature method_name to be {expected}. "
                f"Was: {definition.method_name}"
            )
        return definition

    def classify(self, signature_name: str, request_input):
        """TF Serving's Classify: a ClassificationResult for a tensorflow.serving.Input."""
        definition = self._signature_for(signature_name, "classification")
        input_name, output_names = preprocess_classification(definition)
        examples = serialized_examples(request_input)
        outputs = self.run({input_name: examples}, output_names)
        return postprocess_classification(definition, len(examples), output_names, outputs)

    def regress(self, signature_name: str, request_input):
        """TF Serving's Regress: a RegressionResult for a tensorflow.serving.Input."""
        definition = self._signature_for(signature_name, "regression")
        input_name, output_names = preprocess_regression(definition)
        examples = serialized_examples(request_input)
        outputs = self.run({input_name: examples}, output_names)
        return postprocess_regression(definition, len(examples), output_names, outputs)

    def multi_inference(self, request):
        """TF Serving's MultiInference (multi_inference.cc): several classify/regress
        signatures over one input, in one Session run."""
        from tensorflow_serving.apis import inference_pb2

        model_name = ""
        input_name = ""
        seen: set[str] = set()
        fetches: set[str] = set()
        tasks = []
        for task in request.tasks:
            if not task.model_spec.name:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            if model_name and task.model_spec.name != model_name:
                raise invalid_argument(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            model_name = task.model_spec.name
            signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature in seen:
                raise invalid_argument(f"Duplicate evaluation of signature: {signature}")
            seen.add(signature)
            definition = self.signature_defs.get(signature)
            if definition is None:
                raise invalid_argument(f"Requested signature not found in model graph: {signature}")
            if task.method_name == METHOD_NAMES["classification"]:
                name, outputs = preprocess_classification(definition)
            elif task.method_name == METHOD_NAMES["regression"]:
                name, outputs = preprocess_regression(definition)
            else:
                raise ServingError(
                    "UNIMPLEMENTED", f"Unsupported signature method_name: {task.method_name}"
                )
            if input_name and name != input_name:
                raise invalid_argument("Input tensor must be the same for all Signatures.")
            input_name = name
            fetches.update(outputs)
            tasks.append((task, definition))
        fetch_list = sorted(fetches)
        examples = serialized_examples(request.input)
        outputs = self.run({input_name: examples}, fetch_list) if tasks else []
        response = inference_pb2.MultiInferenceResponse()
        for task, definition in tasks:
            result = response.results.add()
            if task.method_name == METHOD_NAMES["classification"]:
                result.classification_result.CopyFrom(
                    postprocess_classification(definition, len(examples), fetch_list, outputs)
                )
            else:
                result.regression_result.CopyFrom(
                    postprocess_regression(definition, len(examples), fetch_list, outputs)
                )
            result.model_spec.name = task.model_spec.name
            result.model_spec.signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            result.model_spec.version.value = self.version
        return response


METHOD_NAMES = {
    "classification": "tensorflow/serving/classify",
    "regression": "tensorflow/serving/regress",
    "predict": "tensorflow/serving/predict",
}
_CLASSIFY_INPUTS, _CLASSIFY_CLASSES, _CLASSIFY_SCORES = "inputs", "classes", "scores"
_REGRESS_INPUTS, _REGRESS_OUTPUTS = "inputs", "outputs"


def _debug_string(definition) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(definition)


def preprocess_classification(definition) -> tuple[str, list[str]]:
    """classifier.cc PreProcessClassification: the input tensor and the output tensors."""
    expected = METHOD_NAMES["classification"]
    if definition.method_name != expected:
        raise invalid_argument(
            f"Expected classification signature method_name to be {expected}. "
            f"Was: {definition.method_name}"
        )
    if len(definition.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(definition.outputs) not in (1, 2):
        raise invalid_argument(
            f"Expected one or two output Tensors, found {len(definition.outputs)}"
        )
    if _CLASSIFY_INPUTS not in definition.inputs:
        raise ServingError(
            "FAILED_PRECONDITION",
            f"No classification inputs found in SignatureDef: {_debug_string(definition)}",
        )
    outputs = [
        definition.outputs[key].name
        for key in (_CLASSIFY_CLASSES, _CLASSIFY_SCORES)
        if key in definition.outputs
    ]
    if not outputs:
        raise ServingError(
            "FAILED_PRECONDITION",
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {_debug_string(definition)}',
        )
    return definition.inputs[_CLASSIFY_INPUTS].name, outputs


def _shape_debug(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def postprocess_classification(definition, num_examples: int, names: Sequence[str], outputs):
    """classifier.cc PostProcessClassificationResult: the tensors checked, as a result."""
    from tensorflow_serving.apis import classification_pb2

    if len(outputs) != len(names):
        raise invalid_argument(f"Expected {len(names)} output tensor(s).  Got: {len(outputs)}")
    by_name = dict(zip(names, outputs, strict=True))
    classes = scores = None
    if _CLASSIFY_CLASSES in definition.outputs:
        classes = by_name.get(definition.outputs[_CLASSIFY_CLASSES].name)
    if _CLASSIFY_SCORES in definition.outputs:
        scores = by_name.get(definition.outputs[_CLASSIFY_SCORES].name)
    for label, tensor, dtype in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape_debug(tensor)}"
            )
        got = dtype_of_array(tensor)
        if got is None or got.name != dtype:
            raise invalid_argument(
                f"Expected {label} Tensor of {dtype}. Got: {got.name if got else tensor.dtype}"
            )
        if tensor.shape[0] != num_examples:
            raise invalid_argument(
                f"Expected {label} output batch size of {num_examples}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for i in range(num_examples):
        classifications = result.classifications.add()
        for c in range(num_classes):
            cls = classifications.classes.add()
            if classes is not None:
                label = classes[i, c]
                cls.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else label
            if scores is not None:
                cls.score = float(scores[i, c])
    return result


def preprocess_regression(definition) -> tuple[str, list[str]]:
    """regressor.cc PreProcessRegression."""
    expected = METHOD_NAMES["regression"]
    if definition.method_name != expected:
        raise invalid_argument(
            f"Expected regression signature method_name to be {expected}. "
            f"Was: {definition.method_name}"
        )
    if len(definition.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(definition.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if _REGRESS_INPUTS not in definition.inputs:
        raise ServingError(
            "FAILED_PRECONDITION",
            f"No regression inputs found in SignatureDef: {_debug_string(definition)}",
        )
    if _REGRESS_OUTPUTS not in definition.outputs:
        raise ServingError(
            "FAILED_PRECONDITION",
            f"No regression outputs found in SignatureDef: {_debug_string(definition)}",
        )
    return definition.inputs[_REGRESS_INPUTS].name, [definition.outputs[_REGRESS_OUTPUTS].name]


def postprocess_regression(definition, num_examples: int, names: Sequence[str], outputs):
    """regressor.cc PostProcessRegressionResult."""
    from tensorflow_serving.apis import regression_pb2

    if len(outputs) != len(names):
        raise invalid_argument(
            "Expected output_tensors and output_tensor_names to have the same size."
        )
    name = definition.outputs[_REGRESS_OUTPUTS].name
    tensor = dict(zip(names, outputs, strict=True)).get(name)
    if tensor is None:
        raise invalid_argument(f"Could not find output tensor '{name}'")
    if not (tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{_shape_debug(tensor)}"
        )
    if tensor.shape[0] != num_examples:
        raise invalid_argument(
            "Input batch size did not match output batch size: "
            f"{num_examples} vs. {tensor.shape[0]}"
        )
    got = dtype_of_array(tensor)
    if got is None or got.name != "DT_FLOAT":
        raise invalid_argument(
            f"Expected output Tensor of DT_FLOAT.  Got: {got.name if got else tensor.dtype}"
        )
    result = regression_pb2.RegressionResult()
    for value in tensor.reshape(-1):
        result.regressions.add().value = float(value)
    return result


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


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk to serve: ModelConfig's ``model_version_policy``.

    ``latest`` serves the newest ``num_versions`` (TF Serving's default: 1), ``all`` every
    version, ``specific`` exactly ``versions`` (those of them that are on disk).
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(f"unknown version policy {self.kind!r}")
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError("the latest policy needs num_versions >= 1")
        if self.kind == "specific" and not self.versions:
            raise ValueError("the specific policy needs at least one version")

    @classmethod
    def of(cls, policy: str | VersionPolicy) -> VersionPolicy:
        """A policy from itself or from a ``--model_version_policy`` shorthand."""
        if isinstance(policy, VersionPolicy):
            return policy
        if policy not in VERSION_POLICIES:
            raise ValueError(f"version_policy must be one of {VERSION_POLICIES}")
        return cls(policy)

    @classmethod
    def from_proto(cls, proto) -> VersionPolicy:
        """From a FileSystemStoragePathSourceConfig.ServableVersionPolicy proto."""
        choice = proto.WhichOneof("policy_choice")
        if choice == "all":
            return cls("all")
        if choice == "specific":
            return cls("specific", versions=tuple(sorted(set(proto.specific.versions))))
        if choice == "latest":
            return cls("latest", num_versions=proto.latest.num_versions or 1)
        return cls("latest")

    def wanted(self, on_disk: Iterable[int]) -> set[int]:
        versions = sorted(on_disk)
        if self.kind == "all":
            return set(versions)
        if self.kind == "specific":
            return set(versions) & set(self.versions)
        return set(versions[-self.num_versions :])


class ModelManager:
    """Loads, serves and unloads the versions of one model, like TF Serving's ServerCore.

    ``version_policy``: a VersionPolicy, or "latest" (the newest version only, TF Serving's
    default) or "all". As in TF Serving's availability-preserving policy, a version that is no
    longer wanted stays loaded until a wanted one is available, so a broken new push leaves the
    previous version serving.
    """

    def __init__(
        self,
        model_name: str,
        base_path: str | os.PathLike,
        version_policy: str | VersionPolicy = "latest",
        loader: Callable[[str, int, str], LoadedVersion] = LoadedVersion,
    ):
        self.model_name = model_name
        self.base_path = str(base_path)
        self.version_policy = VersionPolicy.of(version_policy)
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
            wanted = self.version_policy.wanted(on_disk)
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
            # Dropped, not closed: requests still running on it hold a reference, and its
            # Session closes when the last one lets go (TF Serving's servable handles).
            self._available.pop(version, None)
            self._states[version] = VersionStatus(version, "END")
        logger.info("Unloaded servable %s version %d", self.model_name, version)

    def unload_all(self) -> None:
        """Unloads every version (the model was removed from the server's config)."""
        with self._poll_lock:
            for version in self.available_versions():
                self._unload(version)


# ---------------------------------------------------------------------------------------------
# Several models: the ModelServerConfig (--model_config_file) and ServerCore
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSpecConfig:
    """One entry of a ModelServerConfig's model_config_list."""

    name: str
    base_path: str
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: tuple[tuple[str, int], ...] = ()


_MODEL_CONFIG_TYPE = "tensorflow.serving.ModelServerConfig"


def parse_model_server_config(
    text: str, source: str, base_path_map: tuple[str, str] | None = None
) -> list[ModelSpecConfig]:
    """The models of a ModelServerConfig in text format, validated like TF Serving's.

    ``base_path_map`` = (PREFIX, DIRECTORY) rewrites base paths under PREFIX to DIRECTORY (the
    Pusher writes base paths as TF Serving's container sees them, e.g. under /models). Errors
    are ServingErrors whose message starts with TF Serving's own ("Invalid protobuf file").
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise invalid_argument(
            f"Invalid protobuf file: '{source}' "
            f"(Error parsing text-format {_MODEL_CONFIG_TYPE}: {err})"
        ) from None
    if config.WhichOneof("config") == "custom_model_config":
        raise ServingError(
            "UNIMPLEMENTED",
            f"{source}: custom_model_config is not supported; use model_config_list",
        )
    models: list[ModelSpecConfig] = []
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise invalid_argument(f"{source}: every model in model_config_list needs a name")
        if model.name in seen:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        seen.add(model.name)
        if not model.base_path:
            raise invalid_argument(f"{source}: model {model.name} has no base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise invalid_argument(
                f"Model {model.name} requested model_platform {model.model_platform!r}; "
                "the local server serves 'tensorflow' SavedModels only"
            )
        base_path = model.base_path
        if base_path_map is not None:
            prefix, directory = base_path_map
            prefix = prefix.rstrip("/")
            if base_path == prefix or base_path.startswith(prefix + "/"):
                base_path = directory.rstrip("/") + base_path[len(prefix) :]
        if not os.path.isabs(base_path) and "://" not in base_path:
            raise invalid_argument(
                f"{source}: base_path {model.base_path!r} of model {model.name} must be absolute"
            )
        try:
            policy = VersionPolicy.from_proto(model.model_version_policy)
        except ValueError as err:
            raise invalid_argument(f"{source}: model {model.name}: {err}") from None
        models.append(
            ModelSpecConfig(
                model.name,
                base_path,
                policy,
                tuple(sorted(model.version_labels.items())),
            )
        )
    return models


def read_model_config_file(
    path: str | os.PathLike, base_path_map: tuple[str, str] | None = None
) -> list[ModelSpecConfig]:
    """Reads and validates a --model_config_file (see ``parse_model_server_config``)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ServingError(
            "NOT_FOUND", f"{path}: cannot read the model config file: {err}"
        ) from None
    return parse_model_server_config(text, os.fspath(path), base_path_map)


class ServerCore:
    """Several models, each a ModelManager, with version labels, like TF Serving's ServerCore.

    ``reload_config`` applies a new model list: new models are added, removed ones unloaded,
    changed base paths and policies take effect at the next poll. Version labels are checked
    after the models are polled: a label must name an AVAILABLE version (unless
    ``allow_labels_for_unavailable``), else the reload fails and the previous labels stay.
    """

    def __init__(
        self,
        configs: Sequence[ModelSpecConfig] = (),
        *,
        loader: Callable[[str, int, str], LoadedVersion] = LoadedVersion,
        allow_labels_for_unavailable: bool = False,
    ):
        self._loader = loader
        self._allow_unavailable_labels = allow_labels_for_unavailable
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self.managers: dict[str, ModelManager] = {}
        self._retired: dict[str, ModelManager] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self.configs: list[ModelSpecConfig] = []
        self._pending_labels: list[ModelSpecConfig] | None = None
        if configs:
            self.reload_config(configs)

    # -- configuration --

    def reload_config(self, configs: Sequence[ModelSpecConfig], *, poll: bool = True) -> None:
        """Applies a model list; raises ServingError (FAILED_PRECONDITION) for bad labels."""
        with self._reload_lock:
            configs = list(configs)
            wanted = {c.name: c for c in configs}
            with self._lock:
                for name in [n for n in self.managers if n not in wanted]:
                    self._retired[name] = self.managers.pop(name)
                    self._labels.pop(name, None)
                for config in configs:
                    manager = self.managers.get(config.name) or self._retired.pop(config.name, None)
                    if manager is None:
                        manager = ModelManager(
                            config.name, config.base_path, config.version_policy, self._loader
                        )
                    manager.base_path = config.base_path
                    manager.version_policy = config.version_policy
                    self.managers[config.name] = manager
                retired = list(self._retired.values())
            for manager in retired:
                manager.unload_all()
            self.configs = configs
            if poll:
                self.poll()
            self._pending_labels = configs
            self._apply_labels()

    def _apply_labels(self) -> None:
        configs = self._pending_labels
        if configs is None:
            return
        labels: dict[str, dict[str, int]] = {}
        for config in configs:
            manager = self.managers[config.name]
            available = set(manager.available_versions())
            for label, version in config.version_labels:
                if version not in available and not self._allow_unavailable_labels:
                    raise ServingError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model "
                        f"{config.name}, which is not currently available for inference",
                    )
                labels.setdefault(config.name, {})[label] = version
        with self._lock:
            self._labels = labels
        self._pending_labels = None

    def poll(self) -> None:
        """Polls every model's folder once; then retries labels that could not be applied."""
        with self._lock:
            managers = list(self.managers.values())
        for manager in managers:
            manager.poll()
        if self._pending_labels is not None:
            with contextlib.suppress(ServingError):  # Reported by reload_config.
                self._apply_labels()

    @property
    def pending_labels(self) -> list[ModelSpecConfig] | None:
        """The configuration whose version labels could not be applied yet, if any."""
        return self._pending_labels

    # -- queries --

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self.managers)

    def labels(self, model_name: str) -> dict[str, int]:
        with self._lock:
            return dict(self._labels.get(model_name, {}))

    def resolve_version(
        self, model_name: str, version: int | None, label: str | None
    ) -> int | None:
        """The version a ModelSpec asks for: its number, its label's version, or None."""
        if label is None:
            return version
        with self._lock:
            labels = self._labels.get(model_name, {})
            if label in labels:
                return labels[label]
        raise invalid_argument(f"Unrecognized servable version label: {label}")

    def servable(
        self, model_name: str, version: int | None = None, label: str | None = None
    ) -> LoadedVersion:
        """The loaded version asked for (newest when neither version nor label is given)."""
        version = self.resolve_version(model_name, version, label)
        with self._lock:
            manager = self.managers.get(model_name)
        if manager is None:
            raise ServingError(
                "NOT_FOUND",
                f"Servable not found for request: {servable_request(model_name, version)}",
            )
        return manager.servable(model_name, version)

    def status(
        self, model_name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """ModelService.GetModelStatus for one model (retired models report END)."""
        version = self.resolve_version(model_name, version, label)
        with self._lock:
            manager = self.managers.get(model_name) or self._retired.get(model_name)
        if manager is None:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {model_name}")
        return manager.status(model_name, version)

    def available_versions(self, model_name: str) -> list[int]:
        with self._lock:
            manager = self.managers.get(model_name)
        return manager.available_versions() if manager else []
