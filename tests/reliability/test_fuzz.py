"""Fuzz tests (hypothesis) of the input parsers that face users' bytes: the manifest reader,
the image checker and the REST request parser of serving/ (issue 14).

Each property: no crash (only the module's own rejection type), no hang (a deadline per
example), and every rejection a clear error: a known reason code or status code and a
printable one-line message.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from components.image_example_gen import report
from components.image_example_gen.formats.manifest import read_manifest
from components.image_example_gen.image_check import CheckedImage, check_image
from components.image_example_gen.image_files import ImageFolderError
from serving.protocol import (
    STATUS_CODES,
    ServingError,
    TensorSpec,
    parse_predict_request,
    parse_rest_route,
)
from trainer_module import features

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=2000,  # ms per example: a hang or a pathological slow path fails the test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _assert_printable_line(text: str) -> None:
    assert text and text.isprintable(), repr(text)


# --- The manifest reader --------------------------------------------------------------

_ROOT = Path(tempfile.mkdtemp(prefix="fuzz-manifest-"))
(_ROOT / "img").mkdir()
for _name in ("a.png", "b c.png", "ü.png"):
    Image.new("L", (2, 2)).save(_ROOT / "img" / _name)

# Pieces a manifest is made of, and the ones that break CSV readers.
_CELL = st.one_of(
    st.sampled_from(
        [
            "img/a.png",
            "img/b c.png",
            "img/ü.png",
            "../x.png",
            "/etc/passwd",
            "img\\a.png",
            "img/missing.png",
            "cat",
            "dog",
            "",
            " ",
            "C:\\x.png",
        ]
    ),
    st.text(max_size=20),
    st.text(alphabet='",\n\r\t\x00\\ ab', max_size=12),
    st.sampled_from([1_000, 131_072, 131_073]).map(lambda n: "x" * n),  # the csv field limit
)
_ROW = st.lists(_CELL, min_size=0, max_size=4).map(",".join)


@FUZZ
@given(
    header=st.sampled_from(["path,label", "label,path,extra", "\ufeffpath,label", "path"]),
    rows=st.lists(_ROW, max_size=12),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    tsv=st.booleans(),
)
def test_the_manifest_reader_never_crashes(header, rows, newline, tsv):
    text = newline.join([header, *rows])
    name = "m.tsv" if tsv else "m.csv"
    if tsv:
        text = text.replace(",", "\t")
    (_ROOT / name).write_text(text, encoding="utf-8", newline="")
    try:
        listing = read_manifest(str(_ROOT), name, "path", "label")
    except ImageFolderError as err:
        assert name in str(err)  # names the manifest
        return
    for image in listing.images:
        assert image.relative_path.startswith("img/")
        assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in image.label)
    for path, reason, detail in listing.facts.skipped:
        assert reason in report.REASONS
        _assert_printable_line(path)
        assert detail == "" or detail.isprintable()
    lines = text.count("\n") + text.count("\r") - text.count("\r\n") + 1
    assert len(listing.images) + len(listing.facts.skipped) <= lines


@FUZZ
@given(data=st.binary(max_size=2000))
def test_manifest_bytes_that_are_not_text_are_a_clear_error(data):
    (_ROOT / "raw.csv").write_bytes(b"path,label\n" + data)
    try:
        read_manifest(str(_ROOT), "raw.csv", "path", "label")
    except ImageFolderError as err:
        assert "raw.csv" in str(err)


# --- The image checker ------------------------------------------------------------------


def _encoded(fmt: str, mode: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format=fmt)
    return buffer.getvalue()


_SEEDS = [
    _encoded("PNG", "RGB", (7, 5)),
    _encoded("PNG", "I;16", (3, 3)),
    _encoded("JPEG", "RGB", (9, 9)),
    _encoded("JPEG", "CMYK", (4, 4)),
    _encoded("GIF", "P", (5, 5)),
    _encoded("BMP", "RGB", (4, 3)),
    _encoded("WEBP", "RGB", (4, 4)),
    _encoded("TIFF", "RGB", (4, 4)),
    _encoded("ICO", "RGB", (16, 16)),
]


@st.composite
def _mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "big"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:  # a header field set to a huge value (width, height, length)
            data[at : at + 4] = b"\x7f\xff\xff\xff"
    return bytes(data)


@FUZZ
@given(data=st.one_of(_mutated_images(), st.binary(max_size=512)))
def test_the_image_checker_never_crashes(data):
    try:
        checked = check_image(data, max_pixels=1_000_000)
    except report.SkippedInputError as err:
        assert err.reason in report.REASONS
        assert str(err).isprintable() or "\n" not in str(err)
        return
    assert isinstance(checked, CheckedImage)
    assert checked.format in ("png", "jpeg", "gif")
    assert checked.width * checked.height <= 1_000_000 and checked.channels in (1, 2, 3, 4)


# --- The REST request parser of serving/ --------------------------------------------------

_SPECS = {
    "": {features.SERVING_INPUT_KEY: TensorSpec("DT_STRING", (None,))},
    "serving_default": {features.SERVING_INPUT_KEY: TensorSpec("DT_STRING", (None,))},
    "numbers": {"x": TensorSpec("DT_FLOAT", (None, 2)), "n": TensorSpec("DT_INT64", (None,))},
}


def _input_specs(signature: str):
    if signature not in _SPECS:
        raise ServingError("INVALID_ARGUMENT", f"Serving signature name: {signature!r} not found")
    return _SPECS[signature]


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
    | st.sampled_from(["b64", "instances", "inputs", "images", "x", "n"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["b64", "instances", "inputs", "images", "signature_name", "x", "n"])
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=25,
)


def _check_rejection(err: ServingError) -> None:
    assert err.code in STATUS_CODES and err.message
    assert json.loads(err.to_json())["error"] == err.message


@FUZZ
@given(
    document=st.one_of(
        _JSON,
        st.fixed_dictionaries(
            {"instances": _JSON},
            optional={"signature_name": st.sampled_from(["", "numbers", "nope", 3])},
        ),
        st.fixed_dictionaries({"inputs": _JSON}, optional={"signature_name": st.just("numbers")}),
    )
)
def test_the_rest_predict_parser_never_crashes(document):
    body = json.dumps(document, allow_nan=True)
    try:
        request = parse_predict_request(body, _input_specs)
    except ServingError as err:
        _check_rejection(err)
        return
    for name, tensor in request.inputs.items():
        assert isinstance(tensor, np.ndarray), name


@FUZZ
@given(body=st.binary(max_size=300))
def test_the_rest_predict_parser_on_raw_bytes(body):
    try:
        parse_predict_request(body, _input_specs)
    except ServingError as err:
        _check_rejection(err)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "get"]),
    uri=st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda name, tail: f"/v1/models/{name}{tail}",
            st.text(max_size=12),
            st.sampled_from(
                [
                    "",
                    ":predict",
                    "/versions/1:predict",
                    "/versions/99999999999999999999:predict",
                    "/labels/x:classify",
                    "/metadata",
                    "/versions/:predict",
                    ":Predict",
                    "%zz",
                ]
            ),
        ),
    ),
)
def test_the_rest_route_parser_never_crashes(method, uri):
    try:
        route = parse_rest_route(method, uri)
    except ServingError as err:
        _check_rejection(err)
        return
    assert route.kind in ("predict", "classify", "regress", "status", "metadata")


@pytest.fixture(autouse=True, scope="module")
def _cleanup_manifest_root():
    yield
    import shutil

    shutil.rmtree(_ROOT, ignore_errors=True)
