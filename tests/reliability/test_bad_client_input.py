"""The predict client on hostile inputs (issue 14, client side), against the local server
serving the tiny model: class names come from the model, and one bad file among many is
reported by name while the others are printed."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import pytest

from serving import client
from serving.server import LocalModelServer
from tests.tiny_model import save_tiny_model
from trainer_module import features

MODEL_NAME = "tiny"
NUM_CLASSES = 4
CLASS_NAMES = [f"class_{i}" for i in range(NUM_CLASSES)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server on version 1 of the tiny model, whose assets hold its vocabulary (as the
    pipeline's exported models do)."""
    base = tmp_path_factory.mktemp("serving") / MODEL_NAME
    version = save_tiny_model(base / "1", NUM_CLASSES, favourite=1)
    (version / "assets").mkdir(exist_ok=True)
    (version / "assets" / features.LABEL_VOCABULARY_NAME).write_text("\n".join(CLASS_NAMES) + "\n")
    server = LocalModelServer(base, rest_port=0, grpc_port=0, poll_interval=0.2)
    server.start()
    yield server, base
    server.stop()


@pytest.fixture(scope="module")
def images(holdout_dir) -> list[Path]:
    return sorted(holdout_dir.glob("bag/*.png"))[:3]


def _args(server, paths, *flags: str, protocol: str = "rest") -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    client.add_predict_arguments(parser)
    port = server.rest_port if protocol == "rest" else server.grpc_port
    return parser.parse_args(
        [*map(str, paths), f"--protocol={protocol}", f"--port={port}", f"--model-name={MODEL_NAME}"]
        + list(flags)
    )


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_top_k_names_come_from_the_models_vocabulary(served, images, capsys, protocol):
    server, base = served
    args = _args(server, images, "--top-k=3", f"--model-dir={base}", protocol=protocol)
    assert client.run_predict(args) == 0
    out, err = capsys.readouterr()
    for path, line in zip(images, out.splitlines(), strict=True):
        assert line.startswith(f"{path}: class_1 0.9000, class_0 0.0333, class_2 0.0333")
    assert "#" not in out and err == ""


def test_the_default_model_dir_is_the_pipelines_serving_dir(
    served, images, capsys, tmp_path, monkeypatch
):
    from pipeline.config import load_config

    server, base = served
    defaults = load_config(validate=False)
    assert os.path.abspath(client.DEFAULT_SERVING_DIR) == defaults.serving_dir
    monkeypatch.chdir(tmp_path)  # outputs/serving/tiny under the working directory
    shutil.copytree(base, tmp_path / "outputs" / "serving" / MODEL_NAME)
    assert client.run_predict(_args(server, images, "--top-k=3")) == 0
    out, _ = capsys.readouterr()
    assert "#" not in out and out.count("class_0") == len(images)


def test_without_a_vocabulary_unnamed_ids_are_explained(served, images, capsys, tmp_path):
    server, _ = served
    assert client.run_predict(_args(server, images, "--top-k=3", f"--model-dir={tmp_path}")) == 0
    out, err = capsys.readouterr()
    assert "#0" in out
    assert "note: class ids 0, 2 have no name here" in err and "--model-dir" in err


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_one_corrupt_image_is_reported_by_name_and_the_rest_printed(
    served, images, capsys, tmp_path, protocol
):
    server, base = served
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(images[0].read_bytes()[:50])
    paths = [images[0], corrupt, images[1], images[2]]
    args = _args(server, paths, f"--model-dir={base}", "--batch-size=8", protocol=protocol)
    assert client.run_predict(args) == 1
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [str(p) for p in images]
    [error] = err.strip().splitlines()
    assert error.startswith(f"error: {corrupt}: ")
    assert ("HTTP 400" if protocol == "rest" else "INVALID_ARGUMENT") in error


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission")
def test_one_unreadable_file_is_reported_by_name_and_the_rest_printed(
    served, images, capsys, tmp_path
):
    server, base = served
    locked = tmp_path / "locked.png"
    locked.write_bytes(images[0].read_bytes())
    locked.chmod(0)
    args = _args(server, [images[0], locked, images[1]], f"--model-dir={base}")
    assert client.run_predict(args) == 2
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert f"cannot read {locked}" in err


# --- inspect -------------------------------------------------------------------------------


def _store_with_a_push(path: Path, pipeline_name: str, model_dir: Path):
    """An ML Metadata store holding one run whose Pusher was configured with ``model_dir``,
    written with ml_metadata as TFX writes it (contexts, execution, push_destination)."""
    import json

    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    )
    store = metadata_store.MetadataStore(config)
    run_type = store.put_context_type(metadata_store_pb2.ContextType(name="pipeline_run"))
    node_type = store.put_context_type(metadata_store_pb2.ContextType(name="node"))
    pusher_type = store.put_execution_type(
        metadata_store_pb2.ExecutionType(
            name="components.versioned_pusher.component.VersionedPusher"
        )
    )
    run_id, node_id = store.put_contexts(
        [
            metadata_store_pb2.Context(type_id=run_type, name="20261201-000000.000000"),
            metadata_store_pb2.Context(type_id=node_type, name=f"{pipeline_name}.Pusher"),
        ]
    )
    execution = metadata_store_pb2.Execution(
        type_id=pusher_type, last_known_state=metadata_store_pb2.Execution.COMPLETE
    )
    destination = {"filesystem": {"base_directory": str(model_dir)}}
    execution.custom_properties["push_destination"].string_value = json.dumps(destination)
    [execution_id] = store.put_executions([execution])
    store.put_attributions_and_associations(
        [],
        [
            metadata_store_pb2.Association(context_id=run_id, execution_id=execution_id),
            metadata_store_pb2.Association(context_id=node_id, execution_id=execution_id),
        ],
    )


def test_inspect_finds_versions_pushed_under_a_non_default_model_name(capsys, tmp_path):
    from pipeline import cli

    out_dir = tmp_path / "out"
    model_dir = out_dir / "serving" / "pets"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "saved_model.pb").write_bytes(b"")
    _store_with_a_push(out_dir / "metadata.sqlite", "image-classifier", model_dir)
    assert cli.main(["inspect", f"--output-dir={out_dir}"]) == 0
    out = capsys.readouterr().out
    assert f"Serving directory {model_dir}:" in out
    assert "  version 1 " in out and "no pushed versions" not in out
    # An explicit --model-name still wins.
    assert cli.main(["inspect", f"--output-dir={out_dir}", "--model-name=other"]) == 0
    assert "no pushed versions" in capsys.readouterr().out
