"""The data components on Beam's PortableRunner, with SDK workers in a project-image container.

Beam's Python job server runs on the host; a worker pool runs in a container of the project
image (host networking, the data and output folders mounted at the same paths), and the
pipeline's own ImageExampleGen and StatisticsGen run with configs/portable.yaml's arguments
(``--runner=PortableRunner --environment_type=EXTERNAL``), their endpoints moved to free
ports. Both servers are stopped at the end, pass or fail: the job server by its pid, the
container by its name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from components.infra_check.checks import free_port
from pipeline.pipeline import EXAMPLE_GEN, STATISTICS_GEN
from tests.conftest import REPO_ROOT
from tests.containers import docker_cli
from trainer_module import features

PORTABLE_CONFIG = REPO_ROOT / "configs" / "portable.yaml"
START_TIMEOUT_SECONDS = 120
RUN_TIMEOUT_SECONDS = 20 * 60


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_port(port: int, what: str, alive) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _listening(port):
        assert alive(), f"{what} stopped before it listened on port {port}"
        assert time.monotonic() < deadline, f"{what} did not listen on {port} in time"
        time.sleep(0.5)


@pytest.fixture
def job_server(tmp_path: Path):
    """Beam's Python job server on a free port; stopped by its pid (its process group)."""
    port = free_port()
    log = tmp_path / "job_server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.portability.local_job_service_main",
                f"--port={port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_port(port, f"the job server (log {log})", lambda: process.poll() is None)
        yield port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def worker_pool(container_engine, project_image, tmp_path):
    """Beam's Python SDK worker pool in a project-image container (its entrypoint's
    --worker_pool), with the sample data and tmp_path mounted at the same paths."""
    port = free_port()
    data = (REPO_ROOT / "data" / "sample").resolve()
    options = ["--network=host", "-v", f"{data}:{data}:ro", "-v", f"{tmp_path}:{tmp_path}"]
    with docker_cli.running_container(
        container_engine,
        project_image,
        ["--worker_pool", f"--service_port={port}"],
        options=options,
        name_prefix="beam-worker-pool",
    ) as name:
        docker_cli.wait_until(
            lambda: _listening(port),
            START_TIMEOUT_SECONDS,
            f"the worker pool listening on {port}",
            docker_host=container_engine,
            name=name,
        )
        yield port, name


def _portable_args(job_port: int, worker_port: int) -> list[str]:
    """configs/portable.yaml's Beam arguments, with the endpoints on the given ports."""
    args = yaml.safe_load(PORTABLE_CONFIG.read_text())["beam_pipeline_args"]
    moved = {
        "--job_endpoint": f"localhost:{job_port}",
        "--environment_config": f"localhost:{worker_port}",
    }
    result = [
        f"{a.split('=')[0]}={moved[a.split('=')[0]]}" if a.split("=")[0] in moved else a
        for a in args
    ]
    assert result != args, "configs/portable.yaml lost its --job_endpoint/--environment_config"
    return result


def _count_records(files: list[Path]) -> int:
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP")
    return sum(1 for _ in dataset)


@pytest.mark.slow
def test_data_components_run_on_the_portable_runner(
    container_engine, job_server, worker_pool, tmp_path, sample_dir
):
    import tensorflow_data_validation as tfdv

    worker_port, worker_name = worker_pool
    output_dir = tmp_path / "outputs"
    command = [
        sys.executable,
        "-m",
        "tests.containers.data_components",
        f"--config={PORTABLE_CONFIG}",
        f"--data-root={sample_dir}",
        f"--output-dir={output_dir}",
        *(f"--beam-pipeline-args={a}" for a in _portable_args(job_server, worker_port)),
    ]
    # --beam-pipeline-args flags replace the YAML list (flags win over the file).
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]

    # The SDK workers ran in the container: the pool started them there.
    pool_logs = docker_cli.logs(container_engine, worker_name)
    assert "Starting worker with command" in pool_logs, pool_logs[-3000:]

    root = output_dir / "pipeline_root"
    split_records = {}
    for split in ("train", "eval"):
        files = sorted(root.glob(f"{EXAMPLE_GEN}/examples/*/Split-{split}/*.gz"))
        assert files, f"no {split} examples under {root}"
        split_records[split] = _count_records(files)
        stats_file = next(root.glob(f"{STATISTICS_GEN}/statistics/*/Split-{split}/FeatureStats.pb"))
        stats = tfdv.load_stats_binary(str(stats_file)).datasets[0]
        assert stats.num_examples == split_records[split], (split, stats.num_examples)
        names = {f.path.step[0] for f in stats.features}
        assert {features.IMAGE_KEY, features.LABEL_KEY} <= names, names
    assert sum(split_records.values()) == len(list(sample_dir.glob("*/*.png")))
