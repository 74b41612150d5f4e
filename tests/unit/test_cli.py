"""The ``tfx-image-pipeline`` command: help, dry runs, configuration errors and exit codes.

Most tests call ``pipeline.cli.main(argv)`` in-process; the few that must prove something
about a fresh interpreter (no TensorFlow import before a configuration error, the module and
runner entry points) start a subprocess.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.config import ConfigError, PipelineConfig, load_config, resolve_beam_args
from tests.conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
MULTI_PROCESS_ARGS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _subprocess(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture()
def out_dir(tmp_path):
    return tmp_path / "out"


# --- help --------------------------------------------------------------------------------


def test_top_level_help_lists_every_subcommand(capsys):
    code, out, _ = _run_cli(capsys, "--help")
    assert code == 0
    for command in ("run", "compile", "inspect", "defaults", "export-data", "serve", "predict"):
        assert f"    {command}" in out
    assert "exit codes" in out


@pytest.mark.parametrize("command", ["run", "compile", "inspect"])
def test_subcommand_help_lists_every_config_field(capsys, command):
    code, out, _ = _run_cli(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: {cli.PROG} {command}")
    for name in PipelineConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in out, name
    assert "--config" in out


def test_run_and_compile_help_document_their_own_flags(capsys):
    _, run_help, _ = _run_cli(capsys, "run", "--help")
    assert "--dry-run" in run_help and "--beam-preset" in run_help
    _, compile_help, _ = _run_cli(capsys, "compile", "--help")
    assert "--output" in compile_help and ".json" in compile_help and "--dry-run" in compile_help


def test_export_data_help_is_delegated(capsys):
    code, out, _ = _run_cli(capsys, "export-data", "--help")
    assert code == 0
    assert out.startswith(f"usage: {cli.PROG} export-data")
    assert "--out" in out and "--split" in out


def _fake_serving_module(name: str, add: str, run: str, calls: list) -> types.ModuleType:
    module = types.ModuleType(name)

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model-dir", required=True, help="model folder")

    def run_command(args: argparse.Namespace) -> int:
        calls.append(args)
        return 3

    setattr(module, add, add_arguments)
    setattr(module, run, run_command)
    return module


@pytest.mark.parametrize(
    ("command", "module", "add", "run"),
    [
        ("serve", "serving.server", "add_pipeline_serve_arguments", "run_serve"),
        ("predict", "serving.client", "add_predict_arguments", "run_predict"),
    ],
)
def test_serve_and_predict_delegate_to_the_serving_package(
    capsys, monkeypatch, command, module, add, run
):
    calls: list = []
    monkeypatch.setitem(sys.modules, "serving", types.ModuleType("serving"))
    monkeypatch.setitem(sys.modules, module, _fake_serving_module(module, add, run, calls))
    code, out, _ = _run_cli(capsys, command, "--help")
    assert code == 0 and out.startswith(f"usage: {cli.PROG} {command}") and "--model-dir" in out
    assert _run_cli(capsys, command, "--model-dir", "/m")[0] == 3  # The delegate's exit code.
    assert calls[-1].model_dir == "/m"
    assert _run_cli(capsys, command)[0] == 2  # Its own usage error (missing --model-dir).


@pytest.mark.parametrize(("command", "module"), [("serve", "server"), ("predict", "client")])
def test_serve_and_predict_help_of_the_real_serving_package(capsys, command, module):
    pytest.importorskip(f"serving.{module}", reason="the serving package is not in this tree")
    code, out, _ = _run_cli(capsys, command, "--help")
    assert code == 0 and out.startswith(f"usage: {cli.PROG} {command}")


@pytest.mark.parametrize("command", ["serve", "predict"])
def test_serve_and_predict_without_the_serving_package(capsys, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "serving", None)  # Makes `import serving...` fail.
    monkeypatch.setitem(sys.modules, "serving.server", None)
    monkeypatch.setitem(sys.modules, "serving.client", None)
    code, _, err = _run_cli(capsys, command, "--help")
    assert code == 1
    assert err.count("\n") == 1 and "serving package" in err


def test_module_and_runner_entry_points():
    for script in (["-m", "pipeline", "--help"], ["local_runner.py", "--help"]):
        result = _subprocess(*script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: {cli.PROG}")
    result = _subprocess("kubeflow_runner.py", "--help")
    assert result.returncode == 0 and f"usage: {cli.PROG} compile" in result.stdout


# --- configuration errors ------------------------------------------------------------------


@pytest.fixture()
def empty_dir(tmp_path):
    path = tmp_path / "empty"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("flags", "field", "allowed"),
    [
        (["--image-size=8"], "image_size", "minimum of"),
        (["--data-root={missing}"], "data_root", "is not a folder"),
        (["--data-root={empty}"], "data_root", "is empty"),
        (["--accuracy-floor=1.5"], "accuracy_floor", "between 0 and 1"),
        (["--max-accuracy-drop=-0.1"], "max_accuracy_drop", "between 0 and 1"),
        (["--eval-fraction=0.9"], "eval_fraction", "between 0.01 and 0.5"),
        (["--epochs=0"], "epochs", "at least 1"),
        (["--beam-num-workers=-1"], "beam_num_workers", "0 (one per CPU core) or more"),
        (["--trainer-cpu=-2"], "trainer_cpu", "0 (unset) or positive"),
        (
            ["--beam-preset=multi-process", "--beam-pipeline-args=--runner=DataflowRunner"],
            "beam_preset",
            "set beam_preset to 'none'",
        ),
        (["--epochs=many"], "epochs", "expected a number"),
    ],
)
@pytest.mark.parametrize("command", ["run", "compile"])
def test_config_errors_name_the_field(
    capsys, tmp_path, empty_dir, out_dir, command, flags, field, allowed
):
    flags = [f.format(missing=tmp_path / "missing", empty=empty_dir) for f in flags]
    image = ["--container-image=example/image:1"] if command == "compile" else []
    code, out, err = _run_cli(capsys, command, f"--output-dir={out_dir}", *image, *flags)
    assert code == cli.EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1, err  # One line.
    assert f"configuration error: {field}: " in err and allowed in err
    assert not out_dir.exists()


def test_unknown_backbone_from_flag_and_from_yaml(capsys, tmp_path):
    code, _, err = _run_cli(capsys, "run", "--backbone=vgg99", "--dry-run")
    assert code == 2 and "--backbone" in err and "invalid choice" in err and "small_cnn" in err
    config_file = tmp_path / "c.yaml"
    config_file.write_text("backbone: vgg99\n")
    code, _, err = _run_cli(capsys, "run", f"--config={config_file}", "--dry-run")
    assert code == 2
    assert "backbone: unknown backbone 'vgg99'; choose one of:" in err and "small_cnn" in err


def test_compile_needs_an_image_and_a_known_extension(capsys, out_dir):
    code, _, err = _run_cli(capsys, "compile", f"--output-dir={out_dir}")
    assert code == 2 and "container_image: required to compile" in err
    code, _, err = _run_cli(
        capsys, "compile", "--container-image=x/y:1", f"--output={out_dir / 'spec.txt'}"
    )
    assert code == 2 and "--output" in err and ".yaml" in err and ".json" in err


def test_unknown_flag_and_missing_subcommand_are_usage_errors(capsys):
    assert _run_cli(capsys, "run", "--no-such-flag")[0] == 2
    assert _run_cli(capsys)[0] == 2


@pytest.mark.parametrize("command", ["run", "compile"])
def test_config_errors_are_reported_before_tensorflow_is_imported(command):
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        f"code = main([{command!r}, '--accuracy-floor=2', '--container-image=x/y:1'])\n"
        "print(sorted(m for m in ('tensorflow', 'tfx', 'apache_beam') if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    result = _subprocess("-c", code)
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip() == "[]"
    assert "accuracy_floor" in result.stderr


# --- unwritable outputs --------------------------------------------------------------------


def test_output_dir_that_cannot_be_created(capsys, tmp_path):
    # /proc refuses new folders even to root, whatever its permission bits say.
    code, _, err = _run_cli(
        capsys, "run", "--output-dir=/proc/tfx-image-pipeline-test", "--dry-run"
    )
    assert code == 2 and "output_dir: /proc/tfx-image-pipeline-test is not writable" in err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = _run_cli(capsys, "run", f"--output-dir={a_file / 'sub'}", "--dry-run")
    assert code == 2 and f"output_dir: cannot create {a_file / 'sub'}" in err
    assert "is a file, not a folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders anyway")
def test_read_only_output_dir(capsys, tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        code, _, err = _run_cli(capsys, "run", f"--output-dir={read_only / 'out'}", "--dry-run")
    finally:
        read_only.chmod(0o700)
    assert code == 2 and "output_dir:" in err and "not writable" in err


def test_each_unwritable_path_names_its_own_field(capsys, out_dir):
    for field in ("pipeline_root", "serving_dir"):
        flag = f"--{field.replace('_', '-')}=/proc/tfx-test/{field}"
        code, _, err = _run_cli(capsys, "run", f"--output-dir={out_dir}", flag, "--dry-run")
        assert code == 2 and f"configuration error: {field}: " in err
    flag = "--metadata-path=/proc/tfx-test/m.sqlite"
    code, _, err = _run_cli(capsys, "run", f"--output-dir={out_dir}", flag, "--dry-run")
    assert code == 2 and "configuration error: metadata_path: " in err


def test_remote_uris_are_left_alone(capsys, tmp_path):
    # The configuration accepts a remote data root without looking at it...
    config = load_config(overrides={"data_root": "gs://bucket/images"})
    assert config.data_root == "gs://bucket/images"
    # ...and a compile checks no remote root for writability (nothing is written there).
    output = tmp_path / "spec.yaml"
    code, out, err = _run_cli(
        capsys,
        "compile",
        "--container-image=x/y:1",
        "--pipeline-root=gs://bucket/root",
        "--serving-dir=s3://bucket/serving",
        f"--output={output}",
        "--dry-run",
    )
    assert code == 0, err
    document = yaml.safe_load(out)
    assert document["config"]["pipeline_root"] == "gs://bucket/root"
    assert document["config"]["serving_dir"] == "s3://bucket/serving"
    assert not output.exists()


# --- dry runs ------------------------------------------------------------------------------


def test_run_dry_run_prints_config_and_graph(capsys, out_dir):
    from pipeline import pipeline as pipeline_module

    code, out, err = _run_cli(
        capsys, "run", f"--output-dir={out_dir}", "--beam-preset=multi-process", "--dry-run"
    )
    assert code == 0, err
    assert out.startswith("# dry run of `run`")
    document = yaml.safe_load(out)
    config = document["config"]
    assert config["output_dir"] == str(out_dir)
    assert config["beam_pipeline_args"] == MULTI_PROCESS_ARGS
    graph = {c["id"]: c["upstream"] for c in document["components"]}
    expected_ids = {
        pipeline_module.EXAMPLE_GEN,
        pipeline_module.STATISTICS_GEN,
        pipeline_module.SCHEMA_GEN,
        pipeline_module.EXAMPLE_VALIDATOR,
        pipeline_module.TRANSFORM,
        pipeline_module.TRAINER,
        pipeline_module.SERVED_BASELINE,
        pipeline_module.EVALUATOR,
        pipeline_module.INFRA_CHECK,
        pipeline_module.MODEL_EXPORTER,
        pipeline_module.PUSHER,
    }
    assert set(graph) == expected_ids
    assert graph[pipeline_module.EXAMPLE_GEN] == []
    assert pipeline_module.TRANSFORM in graph[pipeline_module.TRAINER]
    assert set(graph[pipeline_module.PUSHER]) == {
        pipeline_module.TRAINER,
        pipeline_module.EVALUATOR,
        pipeline_module.INFRA_CHECK,
        pipeline_module.MODEL_EXPORTER,
    }
    # The exporter converts only a blessed model: it comes after the Evaluator.
    assert pipeline_module.EVALUATOR in graph[pipeline_module.MODEL_EXPORTER]
    # Every component comes after all of its upstream components.
    seen: set[str] = set()
    for component in document["components"]:
        assert set(component["upstream"]) <= seen, component
        seen.add(component["id"])
    assert not out_dir.exists(), "a dry run must not write anything"


def test_dry_run_config_round_trips_through_yaml(capsys, tmp_path, out_dir):
    code, out, _ = _run_cli(capsys, "run", f"--output-dir={out_dir}", "--epochs=3", "--dry-run")
    assert code == 0
    config_file = tmp_path / "resolved.yaml"
    config_file.write_text(yaml.safe_dump(yaml.safe_load(out)["config"]))
    assert load_config(config_file) == load_config(
        overrides={"output_dir": str(out_dir), "epochs": 3}
    )


def test_compile_dry_run_shows_kubeflow_settings(capsys, tmp_path):
    output = tmp_path / "job.json"
    code, out, err = _run_cli(
        capsys,
        "compile",
        "--container-image=example/image:2",
        "--trainer-cpu=2",
        "--trainer-memory-gb=8",
        "--pipeline-root=gs://bucket/root",
        f"--output={output}",
        "--dry-run",
    )
    assert code == 0, err
    kubeflow = yaml.safe_load(out)["kubeflow"]
    assert kubeflow["image"] == "example/image:2"
    assert kubeflow["format"].startswith("PipelineJob JSON")
    assert kubeflow["trainer_resources"] == {"cpu_limit": 2.0, "memory_limit": 8.0}
    assert not output.exists()


# --- Beam presets and the example configs ---------------------------------------------------


def test_beam_presets_replace_only_the_direct_runner_flags():
    given = ["--direct_num_workers", "7", "--direct_running_mode=in_memory", "--foo=1"]
    assert resolve_beam_args(given, "none", 2) == given
    assert resolve_beam_args(given, "multi-process", 4) == [
        "--foo=1",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=4",
    ]
    assert resolve_beam_args(given, "in-process", 4) == [
        "--foo=1",
        "--direct_running_mode=in_memory",
        "--direct_num_workers=1",
    ]
    assert resolve_beam_args(["--runner=DirectRunner"], "multi-process", 2)[-2:] == (
        MULTI_PROCESS_ARGS
    )
    with pytest.raises(ConfigError, match="beam_preset: unknown preset"):
        resolve_beam_args([], "fast", 2)
    with pytest.raises(ConfigError, match="--runner=FlinkRunner"):
        resolve_beam_args(["--runner", "FlinkRunner"], "in-process", 2)


def test_beam_preset_is_applied_by_load_config():
    config = load_config(overrides={"beam_preset": "multi-process", "beam_num_workers": 0})
    assert config.beam_pipeline_args[-2:] == [
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=0",
    ]
    assert load_config().beam_pipeline_args == list(PipelineConfig().beam_pipeline_args)


def test_local_yaml_holds_exactly_the_defaults(capsys):
    assert cli.main(["defaults"]) == 0
    generated = capsys.readouterr().out
    assert (CONFIGS / "local.yaml").read_text() == generated, (
        "configs/local.yaml is out of date: python -m pipeline defaults > configs/local.yaml"
    )
    document = yaml.safe_load(generated)
    assert set(document) == set(PipelineConfig.__dataclass_fields__)
    assert load_config(CONFIGS / "local.yaml") == load_config()


@pytest.mark.parametrize("name", ["kubeflow", "dataflow", "flink", "spark"])
def test_example_configs_load_and_their_beam_args_are_known_to_beam(name, caplog):
    from apache_beam.options.pipeline_options import PipelineOptions

    path = CONFIGS / f"{name}.yaml"
    config = load_config(path)
    assert "://" in config.pipeline_root and "://" in config.data_root
    if name != "kubeflow":
        assert "NOT RUN HERE" in path.read_text()
    with caplog.at_level(logging.WARNING):
        PipelineOptions(config.beam_pipeline_args).get_all_options()
    assert "Discarding unparseable args" not in caplog.text, caplog.text


def test_direct_runner_components_skip_tfx_packaging_itself(tmp_path, monkeypatch):
    """Without a dependency flag TFX builds an sdist of itself per Beam component."""
    from tfx.dsl.components.base import base_beam_executor

    from components.image_example_gen.executor import Executor
    from pipeline.pipeline import LOCAL_WORKER_ENVIRONMENT, component_beam_args

    local = component_beam_args(load_config())
    assert local == [
        *PipelineConfig().beam_pipeline_args,
        "--sdk_container_image=" + (LOCAL_WORKER_ENVIRONMENT),
    ]
    kubeflow = component_beam_args(load_config(CONFIGS / "kubeflow.yaml"))
    assert (
        kubeflow[-1]
        == "--sdk_container_image=" + load_config(CONFIGS / "kubeflow.yaml").container_image
    )
    # Arguments that already name the workers' dependencies, or another runner, stay as given.
    for name in ("dataflow", "flink", "spark"):
        config = load_config(CONFIGS / f"{name}.yaml")
        assert component_beam_args(config) == config.beam_pipeline_args

    # TFX's Beam executors take the local arguments as they are: no package is built.
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=local)
    executor = Executor(context)
    assert not any("extra_package" in a for a in executor._beam_pipeline_args)
    assert list(tmp_path.iterdir()) == []
    # The check is real: TFX does build one when no dependency flag is given.
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=list(PipelineConfig().beam_pipeline_args)
    )
    executor = Executor(context)
    assert any(a.startswith("--extra_package=") for a in executor._beam_pipeline_args)


# --- a real failure ------------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_failure_names_the_component_and_inspect_shows_it(capsys, tmp_path, sample_dir):
    """Two class folders, one holding only a broken image: config validation passes (a
    single class folder no longer does), ImageExampleGen fails (about 15 s)."""
    data = tmp_path / "one_class" / "bag"
    data.mkdir(parents=True)
    image = next((sample_dir / "bag").iterdir())
    (data / image.name).write_bytes(image.read_bytes())
    (data.parent / "coat").mkdir()
    (data.parent / "coat" / "broken.png").write_text("not an image")
    out_dir = tmp_path / "out"
    code, _, err = _run_cli(capsys, "run", f"--data-root={data.parent}", f"--output-dir={out_dir}")
    assert code == cli.EXIT_FAILED
    reason = err.strip().splitlines()[-1]
    assert reason.startswith(f"{cli.PROG} run: pipeline failed: component ImageExampleGen failed")
    assert "state FAILED" in reason
    log_file = Path(reason.split("log: ")[1].split(";")[0])
    assert "Traceback" in log_file.read_text()
    assert f"artifacts: {out_dir / 'pipeline_root' / 'ImageExampleGen'}/" in reason

    code, out, _ = _run_cli(capsys, "inspect", f"--output-dir={out_dir}", "--json")
    assert code == 0
    document = json.loads(out)
    [run] = document["runs"]
    assert [(c["component_id"], c["state"]) for c in run["components"]] == [
        ("ImageExampleGen", "FAILED")
    ]
    assert document["served_versions"] == []
    code, out, _ = _run_cli(capsys, "inspect", f"--output-dir={out_dir}")
    assert (
        code == 0 and "ImageExampleGen" in out and "FAILED" in out and "no pushed versions" in out
    )


def test_data_problems_found_while_building_are_one_line_failures(capsys, tmp_path):
    """ImageExampleGen reads the data root when the pipeline is built (e.g. for a dry run).

    A URI is not checked by the configuration, so a missing one is first noticed there.
    """
    missing_uri = f"file://{tmp_path / 'missing'}"
    for command in ("run", "compile"):
        code, out, err = _run_cli(
            capsys,
            command,
            f"--data-root={missing_uri}",
            f"--output-dir={tmp_path / 'out'}",
            "--container-image=x/y:1",
            "--dry-run",
        )
        assert code == cli.EXIT_FAILED, err
        assert out == ""
        assert err.count("\n") == 1 and "building the pipeline failed" in err, err


def test_inspect_without_a_store(capsys, tmp_path):
    code, _, err = _run_cli(capsys, "inspect", f"--output-dir={tmp_path}")
    assert code == 2 and "metadata_path: no ML Metadata store" in err
