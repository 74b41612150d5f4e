"""deploy/Dockerfile installs exactly the stack of constraints.txt (it cannot be built here)."""

from __future__ import annotations

import re
import shlex

import pytest
import tomli
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
CONSTRAINTS = REPO_ROOT / "constraints.txt"
PYPROJECT = REPO_ROOT / "pyproject.toml"


def _constraints() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    text = re.sub(r"\\\n", " ", text)
    result = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _pip_commands() -> list[list[str]]:
    commands = []
    for keyword, rest in _instructions():
        if keyword != "RUN":
            continue
        for part in re.split(r"&&|;", rest):
            words = shlex.split(part)
            if "pip" in words:
                commands.append(words[words.index("pip") :])
    return commands


def _arg_defaults() -> dict[str, str]:
    return dict(
        rest.split("=", 1) for keyword, rest in _instructions() if keyword == "ARG" and "=" in rest
    )


def test_constraints_file_is_a_complete_pin_list():
    pins = _constraints()
    assert pins["tfx"] == "1.16.0"
    assert len(pins) > 100, "constraints.txt should be a full freeze of the stack"


def test_every_install_uses_constraints_txt():
    pip_commands = [c for c in _pip_commands() if c[1] in ("install", "wheel")]
    assert pip_commands, "the Dockerfile installs nothing with pip"
    for command in pip_commands:
        assert "/tmp/constraints.txt" in command, command
        flag = command[command.index("/tmp/constraints.txt") - 1]
        assert flag in ("-r", "-c"), command
    copies = [rest for keyword, rest in _instructions() if keyword == "COPY"]
    assert "constraints.txt /tmp/constraints.txt" in copies


def test_install_is_exact_and_checked():
    install = next(c for c in _pip_commands() if c[1] == "install")
    # -r of a full freeze with --no-deps installs exactly those versions and nothing else.
    assert "-r" in install and "--no-deps" in install
    assert any(c[:2] == ["pip", "check"] for c in _pip_commands())


def test_explicit_pins_agree_with_constraints():
    pins = _constraints()
    for command in _pip_commands():
        for word in command[2:]:
            if "==" in word and not word.startswith("-"):
                requirement = Requirement(word)
                name = canonicalize_name(requirement.name)
                assert name in pins, f"{word} is not in constraints.txt"
                assert str(requirement.specifier) == f"=={pins[name]}", word


def test_base_images_match_the_pinned_stack():
    pins = _constraints()
    images = [rest.split()[0] for keyword, rest in _instructions() if keyword == "FROM"]
    images = [_arg_defaults().get(i.strip("${}"), i) for i in images]
    python_images = [i for i in images if i.startswith("python:")]
    assert python_images and all(i.startswith("python:3.10") for i in python_images), images
    requires = tomli.loads(PYPROJECT.read_text())["project"]["requires-python"]
    for image in python_images:
        assert SpecifierSet(requires).contains(image.split(":")[1].split("-")[0]), image
    beam_images = [i for i in images if i.startswith("apache/beam_python")]
    assert beam_images == [f"apache/beam_python3.10_sdk:{pins['apache-beam']}"]


def test_pyproject_pins_agree_with_constraints():
    pins = _constraints()
    for dependency in tomli.loads(PYPROJECT.read_text())["project"]["dependencies"]:
        requirement = Requirement(dependency)
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{dependency} is missing from constraints.txt"
        assert requirement.specifier.contains(version), f"{dependency} vs constraints {version}"


@pytest.mark.parametrize("package", ["pipeline", "components", "trainer_module", "serving"])
def test_project_code_is_copied_and_importable(package):
    copies = [rest for keyword, rest in _instructions() if keyword == "COPY"]
    assert f"{package}/ {package}/" in copies
    env = " ".join(rest for keyword, rest in _instructions() if keyword == "ENV")
    workdir = [rest for keyword, rest in _instructions() if keyword == "WORKDIR"][-1]
    assert f"PYTHONPATH={workdir}" in env


def test_legacy_keras_is_set_for_every_process():
    env = " ".join(rest for keyword, rest in _instructions() if keyword == "ENV")
    assert "TF_USE_LEGACY_KERAS=1" in env.split()
