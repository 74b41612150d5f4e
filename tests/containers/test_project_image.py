"""The project image (deploy/Dockerfile), built offline and run: code, stack and entrypoint."""

from __future__ import annotations

import json

from tests.containers import docker_cli
from tests.unit.test_dockerfile import _project_packages

IMPORT_CHECK = """
import importlib, json, sys
names = sys.argv[1:]
modules = {name: importlib.import_module(name).__file__ for name in names}
import tfx, tensorflow as tf
print(json.dumps({"modules": modules, "tfx": tfx.__version__, "tf": tf.__version__,
                  "keras": tf.keras.__name__}))
"""


def test_image_imports_every_project_package(container_engine, project_image):
    """Each top-level package of pyproject and serving.server (InfraCheck's import) loads
    from /pipeline, with the pinned TFX and Keras 2."""
    names = [*_project_packages(), "serving.server", "components.infra_check.executor"]
    result = docker_cli.docker(
        container_engine,
        "run",
        "--rm",
        "--network=none",
        project_image,
        "python",
        "-c",
        IMPORT_CHECK,
        *names,
        timeout=300,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["modules"]) == set(names)
    for name, path in report["modules"].items():
        assert path.startswith("/pipeline/"), (name, path)
    assert report["tfx"] == "1.16.0"
    assert report["tf"] == "2.16.2"
    assert report["keras"].startswith("tf_keras"), report["keras"]  # TF_USE_LEGACY_KERAS=1


def test_image_stack_is_consistent(container_engine, project_image):
    result = docker_cli.docker(
        container_engine, "run", "--rm", "--network=none", project_image, "pip", "check"
    )
    assert "No broken requirements found" in result.stdout


def test_entrypoint_refuses_beam_boot_flags_without_the_boot_binary(
    container_engine, project_image
):
    """Built offline, the image has no Beam boot binary: SDK-harness flags get a clear message
    (where the Beam SDK stage ran, they go to /opt/apache/beam/boot)."""
    has_boot = (
        docker_cli.docker(
            container_engine,
            "run",
            "--rm",
            project_image,
            "test",
            "-x",
            "/opt/apache/beam/boot",
            check=False,
        ).returncode
        == 0
    )
    result = docker_cli.docker(
        container_engine,
        "run",
        "--rm",
        "--network=none",
        project_image,
        "--id=1",
        check=False,
    )
    if has_boot:
        assert "boot" in result.stderr.lower() or result.returncode != 0
    else:
        assert result.returncode == 2
        assert "--worker_pool" in result.stderr and "EXTERNAL" in result.stderr
