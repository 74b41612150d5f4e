"""``predict``: send image files to a TensorFlow Serving endpoint and print the top classes.

Works against the real ``tensorflow_model_server`` and the local ``serving.server`` alike:
the image bytes go to the ``serving_default`` signature unchanged (the model decodes and
resizes them itself), over REST (base64 in JSON) or gRPC.

    python -m serving.client data/holdout/bag/*.png
    python -m serving.client --protocol grpc --top-k 5 'data/holdout/*/*.png'

One line per file: ``PATH: NAME PROBABILITY, NAME PROBABILITY, ...``. The model returns the
name of its top class only; the other classes are named from the model's own vocabulary
(``VERSION_DIR/assets/label_vocabulary`` of the newest version under ``--model-dir``, by
default the pipeline's ``outputs/serving/MODEL_NAME``), from ``--labels``, or from the top
classes seen in the same run, and shown as ``#ID`` otherwise. A file that cannot be read, or
that the server rejects, is reported by name on stderr and the others are still printed.
Exit codes: 0 done, 1 server or connection error (or a file the server rejected), 2 bad
input (a file that cannot be read).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import glob
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.layout import DEFAULT_MODEL_NAME
from trainer_module import features

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = {"rest": 8501, "grpc": 8500}  # TF Serving's defaults
# The pipeline's default serving_dir (OUTPUT_DIR/serving with output_dir "outputs"), where
# predict looks for the model's vocabulary when --model-dir is not given.
DEFAULT_SERVING_DIR = os.path.join("outputs", "serving")


class PredictError(Exception):
    """A failure to report on one line; ``exit_code`` 1 (server/transport) or 2 (input).

    ``rejected_input``: the server refused the request's content (HTTP 400,
    INVALID_ARGUMENT), so one bad image may be to blame, not the server.
    """

    def __init__(self, message: str, exit_code: int = 1, rejected_input: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.rejected_input = rejected_input


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image."""

    path: str
    probabilities: np.ndarray  # float [num_classes]
    class_id: int
    class_name: str


def _one_line(text: str) -> str:
    return " | ".join(part.strip() for part in str(text).splitlines() if part.strip())


def expand_image_paths(patterns: Sequence[str]) -> list[str]:
    """Files named or matched by ``patterns``, in order, without duplicates."""
    paths: list[str] = []
    for pattern in patterns:
        if os.path.isfile(pattern):
            matches = [pattern]
        else:
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not matches:
            raise PredictError(f"no file matches {pattern!r}", exit_code=2)
        paths.extend(m for m in matches if m not in paths)
    return paths


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise PredictError(f"cannot read {path}: {err.strerror or err}", exit_code=2) from None


# --- REST ----------------------------------------------------------------------------------


def predict_rest(
    images: Sequence[bytes],
    *,
    host: str,
    port: int,
    model_name: str,
    model_version: int | None = None,
    signature_name: str = features.SERVING_SIGNATURE,
    timeout: float = 30.0,
) -> dict[str, np.ndarray]:
    """Columnar outputs of one REST predict call (row format request, b64 images)."""
    host_part = f"[{host}]" if ":" in host else host
    path = f"/v1/models/{urllib.parse.quote(model_name, safe='')}"
    if model_version is not None:
        path += f"/versions/{model_version}"
    url = f"http://{host_part}:{port}{path}:predict"
    body = json.dumps(
        {
            "signature_name": signature_name,
            "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images],
        }
    ).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        raise PredictError(
            f"{url} answered HTTP {err.code}: {_one_line(detail)}", rejected_input=err.code == 400
        ) from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, ConnectionRefusedError):
            raise PredictError(
                f"cannot connect to {url}: connection refused (is the server running?)"
            ) from None
        if isinstance(reason, TimeoutError):
            raise PredictError(f"{url} did not answer within {timeout:g} s") from None
        raise PredictError(f"cannot connect to {url}: {_one_line(reason)}") from None
    except TimeoutError:
        raise PredictError(f"{url} did not answer within {timeout:g} s") from None
    except (ConnectionError, OSError) as err:
        raise PredictError(f"request to {url} failed: {_one_line(err)}") from None
    except ValueError as err:
        raise PredictError(f"{url} answered with invalid JSON: {err}") from None
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
        raise PredictError(f"{url} answered without per-image output objects: {payload!r:.200}")
    names = predictions[0].keys() if predictions else ()
    return {name: np.array([p[name] for p in predictions]) for name in names}


# --- gRPC ----------------------------------------------------------------------------------


def predict_grpc(
    images: Sequence[bytes],
    *,
    host: str,
    port: int,
    model_name: str,
    model_version: int | None = None,
    signature_name: str = features.SERVING_SIGNATURE,
    timeout: float = 30.0,
) -> dict[str, np.ndarray]:
    """Outputs of one gRPC PredictionService.Predict call."""
    import grpc
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if model_version is not None:
        request.model_spec.version.value = model_version
    tensor = request.inputs[features.SERVING_INPUT_KEY]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add().size = len(images)
    tensor.string_val.extend(images)
    limit = max(64 * 1024 * 1024, 2 * request.ByteSize())
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as err:
            code, details = err.code(), _one_line(err.details() or "")
            if code == grpc.StatusCode.UNAVAILABLE:
                raise PredictError(f"cannot connect to {target}: {details}") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise PredictError(f"{target} did not answer within {timeout:g} s") from None
            raise PredictError(
                f"{target} answered {code.name}: {details}",
                rejected_input=code == grpc.StatusCode.INVALID_ARGUMENT,
            ) from None
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


# --- Results -------------------------------------------------------------------------------


def _predictions(paths: Sequence[str], outputs: dict[str, np.ndarray]) -> list[Prediction]:
    wanted = (
        features.PROBABILITIES_OUTPUT,
        features.CLASS_ID_OUTPUT,
        features.CLASS_NAME_OUTPUT,
    )
    missing = [name for name in wanted if name not in outputs]
    if missing:
        raise PredictError(
            f"the response lacks the output(s) {', '.join(missing)} "
            f"(got {', '.join(sorted(outputs)) or 'none'}); is this the image classifier?"
        )
    probabilities = np.asarray(outputs[features.PROBABILITIES_OUTPUT], dtype=np.float64)
    class_ids = np.asarray(outputs[features.CLASS_ID_OUTPUT]).reshape(-1)
    class_names = np.asarray(outputs[features.CLASS_NAME_OUTPUT], dtype=object).reshape(-1)
    if not (len(probabilities) == len(class_ids) == len(class_names) == len(paths)):
        raise PredictError(f"the response has results for {len(class_ids)} of {len(paths)} images")
    results = []
    for i, path in enumerate(paths):
        raw = class_names[i]
        if isinstance(raw, dict):  # REST's {"b64": ...} for a name that is not UTF-8
            name = base64.b64decode(raw.get("b64", "")).decode("utf-8", "replace")
        elif isinstance(raw, bytes):
            name = raw.decode("utf-8", "replace")
        else:
            name = str(raw)
        results.append(Prediction(path, probabilities[i], int(class_ids[i]), name))
    return results


def top_k(prediction: Prediction, k: int, names: dict[int, str]) -> list[tuple[int, str, float]]:
    """(class id, class name, probability) of the ``k`` likeliest classes, best first."""
    order = [prediction.class_id] + [
        int(i)
        for i in np.argsort(-prediction.probabilities, kind="stable")
        if int(i) != prediction.class_id
    ]
    return [
        (i, names.get(i, f"#{i}"), float(prediction.probabilities[i])) for i in order[: max(1, k)]
    ]


def read_labels(path: str | os.PathLike) -> dict[int, str]:
    """Class names by id from a vocabulary file: one name per line, line number = id."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise PredictError(f"cannot read labels {path}: {reason}", exit_code=2) from None
    return {i: line.strip() for i, line in enumerate(lines) if line.strip()}


def model_vocabulary(model_dir: str | os.PathLike) -> dict[int, str] | None:
    """Class names from the exported model's vocabulary asset, or None if there is none.

    ``model_dir`` is a SavedModel version folder, or a model folder holding integer
    versions (the newest complete one is read).
    """
    from serving.model_manager import scan_versions

    folder = Path(model_dir)
    if not (folder / "saved_model.pb").is_file():
        versions = scan_versions(folder)
        if not versions:
            return None
        folder = Path(versions[max(versions)])
    vocabulary = folder / "assets" / features.LABEL_VOCABULARY_NAME
    return read_labels(vocabulary) if vocabulary.is_file() else None


@dataclass
class PredictRun:
    """What predict_files got: one Prediction per file answered, one message per failure."""

    results: list[Prediction]
    failures: list[tuple[str, PredictError]]


def predict_files(args: argparse.Namespace) -> PredictRun:
    """Sends the files in batches of ``args.batch_size``.

    A file that cannot be read is a failure of its own; a batch the server rejects is sent
    again one file at a time, so only the files it rejects fail. Server and connection
    errors still raise PredictError.
    """
    paths = expand_image_paths(args.images)
    call = predict_grpc if args.protocol == "grpc" else predict_rest
    port = args.port or DEFAULT_PORTS[args.protocol]
    run = PredictRun([], [])
    readable: list[tuple[str, bytes]] = []
    for path in paths:
        try:
            readable.append((path, _read(path)))
        except PredictError as err:
            run.failures.append((path, err))

    def send(batch: list[tuple[str, bytes]]) -> list[Prediction]:
        outputs = call(
            [data for _, data in batch],
            host=args.host,
            port=port,
            model_name=args.model_name,
            model_version=args.model_version,
            signature_name=args.signature_name,
            timeout=args.timeout,
        )
        return _predictions([path for path, _ in batch], outputs)

    batch_size = max(1, args.batch_size)
    for start in range(0, len(readable), batch_size):
        batch = readable[start : start + batch_size]
        try:
            run.results.extend(send(batch))
        except PredictError as err:
            if not err.rejected_input:
                raise
            for one in batch:  # find the files the server rejects
                try:
                    run.results.extend(send([one]))
                except PredictError as one_err:
                    if not one_err.rejected_input:
                        raise
                    run.failures.append((one[0], one_err))
    order = {path: i for i, path in enumerate(paths)}
    run.results.sort(key=lambda r: order[r.path])
    return run


def _class_names(args: argparse.Namespace, results: list[Prediction]) -> dict[int, str]:
    """Names by class id: --labels, else the model's vocabulary, else the names seen."""
    if args.labels:
        names = read_labels(args.labels)
    else:
        model_dir = args.model_dir or os.path.join(DEFAULT_SERVING_DIR, args.model_name)
        names = model_vocabulary(model_dir) or {}
        if any(names.get(r.class_id, r.class_name) != r.class_name for r in results):
            print(
                f"note: the vocabulary under {model_dir} does not match the served model's "
                "class names (another version?); it is not used",
                file=sys.stderr,
            )
            names = {}
    for result in results:  # Name every class some image was predicted as.
        names.setdefault(result.class_id, result.class_name)
    return names


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``predict`` command's arguments to ``parser``."""
    parser.add_argument("images", nargs="+", help="Image files or glob patterns (quote globs).")
    parser.add_argument(
        "--protocol", choices=("rest", "grpc"), default="rest", help="API to call (default rest)."
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"Server host (default {DEFAULT_HOST})."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="Server port (default: 8501 for REST, 8500 for gRPC, as TF Serving).",
    )
    parser.add_argument(
        "--model-name",
        default=DEFAULT_MODEL_NAME,
        help=f"Model name on the server (default {DEFAULT_MODEL_NAME}).",
    )
    parser.add_argument(
        "--model-version", type=int, default=None, help="A specific version (default: latest)."
    )
    parser.add_argument(
        "--signature-name",
        default=features.SERVING_SIGNATURE,
        help=f"Signature taking encoded images (default {features.SERVING_SIGNATURE}).",
    )
    parser.add_argument("--top-k", type=int, default=3, help="Classes shown per image (default 3).")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="Images per request (default 32)."
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="Seconds to wait per request (default 30)."
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="Vocabulary file naming every class (e.g. VERSION_DIR/assets/label_vocabulary); "
        "default: the model's own, from --model-dir.",
    )
    parser.add_argument(
        "--model-dir",
        default=None,
        help="The served model's folder (SERVING_DIR/MODEL_NAME, or one version), to read its "
        "class names from (default: "
        f"{os.path.join(DEFAULT_SERVING_DIR, 'MODEL_NAME')}, the pipeline's default).",
    )
    parser.add_argument(
        "--json", action="store_true", help="Print one JSON object per image instead of text."
    )


def run_predict(args: argparse.Namespace) -> int:
    """Runs ``predict``: prints the top classes per file; returns the exit code."""
    try:
        run = predict_files(args)
        names = _class_names(args, run.results)
    except PredictError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    for result in run.results:
        best = top_k(result, args.top_k, names)
        if args.json:
            print(
                json.dumps(
                    {
                        "path": result.path,
                        "top_k": [
                            {"class_id": i, "class_name": name, "probability": p}
                            for i, name, p in best
                        ],
                    }
                )
            )
        else:
            print(f"{result.path}: " + ", ".join(f"{name} {p:.4f}" for _, name, p in best))
    for path, err in run.failures:
        message = str(err) if path in str(err) else f"{path}: {err}"
        print(f"error: {message}", file=sys.stderr)
    unnamed = sorted(
        {i for r in run.results for i, _, _ in top_k(r, args.top_k, names) if i not in names}
    )
    if unnamed:
        print(
            f"note: class ids {', '.join(map(str, unnamed))} have no name here (shown as #ID); "
            "pass --model-dir SERVING_DIR/MODEL_NAME or --labels FILE",
            file=sys.stderr,
        )
    return max((err.exit_code for _, err in run.failures), default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m serving.client",
        description="Send image files to a TensorFlow Serving endpoint; print the top classes.",
    )
    add_predict_arguments(parser)
    return run_predict(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
