"""The model the pipeline pushed, served by the local server and queried with the predict client.

REST and gRPC must name real classes and agree with the SavedModel loaded in-process.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from serving import client
from serving.server import start_server_subprocess
from tests.conftest import REPO_ROOT
from trainer_module import features

pytestmark = pytest.mark.slow


def _predict_args(paths: list[Path], *flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    client.add_predict_arguments(parser)
    return parser.parse_args([*map(str, paths), *flags])


def test_predict_client_over_rest_and_grpc_matches_in_process(pushed_model, holdout_dir, capsys):
    class_names = sorted(d.name for d in holdout_dir.iterdir() if d.is_dir())
    paths = [sorted((holdout_dir / name).glob("*.png"))[0] for name in class_names]
    loaded = tf.saved_model.load(str(pushed_model.version_dir))
    expected = loaded.signatures[features.SERVING_SIGNATURE](
        images=tf.constant([p.read_bytes() for p in paths])
    )
    expected_names = [n.decode() for n in expected[features.CLASS_NAME_OUTPUT].numpy()]
    expected_ids = expected[features.CLASS_ID_OUTPUT].numpy()
    expected_probabilities = expected[features.PROBABILITIES_OUTPUT].numpy()
    labels = pushed_model.version_dir / "assets" / features.LABEL_VOCABULARY_NAME

    model_dir = pushed_model.serving_dir / pushed_model.model_name
    with start_server_subprocess(model_dir, poll_interval=0, startup_timeout=300) as server:
        rows = {}
        for protocol, port in (("rest", server.rest_port), ("grpc", server.grpc_port)):
            args = _predict_args(
                paths,
                f"--protocol={protocol}",
                f"--port={port}",
                f"--model-name={pushed_model.model_name}",
                f"--labels={labels}",
                "--top-k=3",
                "--json",
            )
            assert client.run_predict(args) == 0, capsys.readouterr().err
            rows[protocol] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

        # The command line, as a user runs it (plain text, REST).
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(REPO_ROOT))
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "serving.client",
                *map(str, paths[:3]),
                f"--port={server.rest_port}",
                f"--model-name={pushed_model.model_name}",
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for path, name, line in zip(paths, expected_names, lines, strict=False):
        assert line.startswith(f"{path}: {name} ")

    for protocol, answers in rows.items():
        assert [row["path"] for row in answers] == [str(p) for p in paths], protocol
        for i, row in enumerate(answers):
            top = row["top_k"]
            assert len(top) == 3
            assert all(entry["class_name"] in class_names for entry in top), (protocol, top)
            assert top[0]["class_name"] == expected_names[i], protocol
            assert top[0]["class_id"] == expected_ids[i], protocol
            for entry in top:
                assert entry["probability"] == pytest.approx(
                    float(expected_probabilities[i, entry["class_id"]]), abs=1e-5
                ), protocol
    rest, grpc = rows["rest"], rows["grpc"]
    for rest_row, grpc_row in zip(rest, grpc, strict=True):
        assert [e["class_name"] for e in rest_row["top_k"]] == [
            e["class_name"] for e in grpc_row["top_k"]
        ]
        np.testing.assert_allclose(
            [e["probability"] for e in rest_row["top_k"]],
            [e["probability"] for e in grpc_row["top_k"]],
            atol=1e-6,
        )


def test_classify_api_on_the_pushed_model_matches_in_process(pushed_model, holdout_dir):
    """TF Serving's Classify API on the exported `classification` signature: REST :classify
    with raw tf.Example features names every class, with the serving signature's probabilities."""
    from serving.server import LocalModelServer

    paths = sorted(holdout_dir.glob("*/*.png"))[:4]
    loaded = tf.saved_model.load(str(pushed_model.version_dir))
    expected = loaded.signatures[features.SERVING_SIGNATURE](
        images=tf.constant([p.read_bytes() for p in paths])
    )[features.PROBABILITIES_OUTPUT].numpy()
    labels_file = pushed_model.version_dir / "assets" / features.LABEL_VOCABULARY_NAME
    class_names = labels_file.read_text().split()

    model_dir = pushed_model.serving_dir / pushed_model.model_name
    with LocalModelServer(model_dir, rest_port=0, grpc_port=None, poll_interval=0) as server:
        body = {
            "signature_name": features.CLASSIFY_SIGNATURE,
            "examples": [
                {features.IMAGE_KEY: {"b64": base64.b64encode(p.read_bytes()).decode()}}
                for p in paths
            ],
        }
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=120)
        try:
            connection.request(
                "POST", f"/v1/models/{pushed_model.model_name}:classify", json.dumps(body)
            )
            response = connection.getresponse()
            result = json.loads(response.read())
        finally:
            connection.close()
    assert response.status == 200, result
    assert len(result["result"]) == len(paths)
    for row, probabilities in zip(result["result"], expected, strict=True):
        assert [label for label, _ in row] == class_names
        np.testing.assert_allclose([score for _, score in row], probabilities, atol=1e-5)
