"""The Keras 2 switch is set by importing any of the project's packages, before TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _run_without_switch(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return result.stdout.strip()


PACKAGES = ["pipeline", "components", "trainer_module", "serving", "bench"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_sets_the_switch_on_import(package):
    code = f"import os, {package}; print(os.environ.get('TF_USE_LEGACY_KERAS'))"
    assert _run_without_switch(code) == "1"


def test_a_module_that_imports_tensorflow_first_thing_gets_keras_2():
    # serving.protocol imports TensorFlow at its top; its package's __init__ ran before.
    code = "import serving.protocol, tensorflow as tf; print(tf.keras.__name__)"
    assert _run_without_switch(code).splitlines()[-1].startswith("tf_keras")
