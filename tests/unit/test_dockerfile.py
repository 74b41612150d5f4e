"""deploy/Dockerfile installs exactly the stack of constraints.txt, offline, with all our code.

These read the Dockerfile; tests/containers/ builds it and runs the image.
"""

from __future__ import annotations

import re
import shlex

import pytest
import setuptools
import tomli
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
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


def _from_images() -> list[str]:
    """Each FROM's image with build arguments at their defaults (``${A:-b}``: A's default)."""
    defaults = _arg_defaults()
    images = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            image = rest.split()[0]
            match = re.fullmatch(r"\$\{(\w+)(?::-[\w-]*)?\}", image)
            images.append(defaults.get(match.group(1), image) if match else image)
    return images


def _stage_names() -> set[str]:
    froms = [rest for keyword, rest in _instructions() if keyword == "FROM"]
    return {rest.split()[-1] for rest in froms if " AS " in rest}


def _project_packages() -> list[str]:
    """The top-level packages of pyproject.toml's [tool.setuptools.packages.find]."""
    find = tomli.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = setuptools.find_packages(str(REPO_ROOT), include=find["include"])
    return sorted(p for p in packages if "." not in p)


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


def test_install_needs_no_network():
    """Every pip install reads the wheels built on the host (build/wheels), never an index."""
    for command in _pip_commands():
        if command[1] in ("install", "download"):
            assert "--no-index" in command, command
            assert any(w.startswith("--find-links=") for w in command), command
    runs = [rest for keyword, rest in _instructions() if keyword == "RUN" and "pip install" in rest]
    assert all("--mount=type=bind,source=build/wheels,target=/tmp/wheels" in r for r in runs), runs


def test_no_syntax_directive():
    """A `# syntax=` line makes BuildKit pull a frontend image, which fails offline."""
    first_lines = DOCKERFILE.read_text().splitlines()[:5]
    assert not any(re.match(r"#\s*syntax\s*=", line) for line in first_lines), first_lines


def test_every_registry_image_is_a_build_argument():
    """Offline builds replace the base image and skip the optional registry stages."""
    stages = _stage_names()
    for keyword, rest in _instructions():
        if keyword == "FROM":
            image = rest.split()[0]
            assert image in stages or image.startswith("${"), f"FROM {rest}: not a build argument"
    defaults = _arg_defaults()
    assert set(defaults) >= {"BASE_IMAGE", "BEAM_SDK_IMAGE", "TF_SERVING_IMAGE"}
    # Empty optional arguments fall back to a stage of this Dockerfile.
    for keyword, rest in _instructions():
        if keyword != "FROM":
            continue
        match = re.fullmatch(r"\$\{(\w+):-([\w-]+)\}", rest.split()[0])
        if match:
            assert match.group(2) in stages, rest


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
    images = _from_images()
    python_images = [i for i in images if i.startswith("python:")]
    assert python_images and all(i.startswith("python:3.10") for i in python_images), images
    requires = tomli.loads(PYPROJECT.read_text())["project"]["requires-python"]
    for image in python_images:
        assert SpecifierSet(requires).contains(image.split(":")[1].split("-")[0]), image
    beam_images = [i for i in images if i.startswith("apache/beam_python")]
    assert beam_images == [f"apache/beam_python3.10_sdk:{pins['apache-beam']}"]
    serving_images = [i for i in images if i.startswith("tensorflow/serving")]
    assert serving_images == [f"tensorflow/serving:{pins['tensorflow-serving-api']}"]


def test_pyproject_pins_agree_with_constraints():
    pins = _constraints()
    for dependency in tomli.loads(PYPROJECT.read_text())["project"]["dependencies"]:
        requirement = Requirement(dependency)
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{dependency} is missing from constraints.txt"
        assert requirement.specifier.contains(version), f"{dependency} vs constraints {version}"


def test_project_packages_are_found():
    assert {"pipeline", "components", "trainer_module", "serving"} <= set(_project_packages())


@pytest.mark.parametrize("package", _project_packages())
def test_project_code_is_copied_and_importable(package):
    """Every package the project installs is in the image (InfraCheck imports serving.*)."""
    copies = [rest for keyword, rest in _instructions() if keyword == "COPY"]
    assert f"{package}/ {package}/" in copies, f"deploy/Dockerfile does not COPY {package}/"
    allowed = [line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    assert package in allowed, f".dockerignore keeps {package}/ out of the build context"
    env = " ".join(rest for keyword, rest in _instructions() if keyword == "ENV")
    workdir = [rest for keyword, rest in _instructions() if keyword == "WORKDIR"][-1]
    assert f"PYTHONPATH={workdir}" in env


def test_build_context_holds_every_copied_path():
    """Each local COPY source is let into the context by .dockerignore's allowlist."""
    allowed = [line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    sources = [rest.split()[0] for keyword, rest in _instructions() if keyword == "COPY"]
    sources += [
        m.group(1)
        for keyword, rest in _instructions()
        if keyword == "RUN"
        for m in re.finditer(r"--mount=type=bind,source=([^,\s]+)", rest)
    ]
    for source in (s.rstrip("/") for s in sources if not s.startswith("--from=")):
        assert source in allowed, f"{source} is not in .dockerignore's allowlist"
        assert (REPO_ROOT / source).exists() or source == "build/wheels", source


def test_legacy_keras_is_set_for_every_process():
    env = " ".join(rest for keyword, rest in _instructions() if keyword == "ENV")
    assert "TF_USE_LEGACY_KERAS=1" in env.split()
