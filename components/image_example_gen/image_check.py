"""What to do with one image's bytes: keep them, convert them to PNG, or skip them (and why).

Pure Python with Pillow (no TensorFlow): the executor runs TensorFlow's own decoder on
whatever this module keeps, so every stored image is known to decode in Transform and in
the serving graph.

Per-format decisions (``tf.io.decode_image``, which Transform and serving use, reads only
PNG, JPEG, GIF and BMP):

- PNG, JPEG, GIF: stored as they are, never re-encoded. This covers 16-bit, palette,
  grayscale, gray+alpha and RGBA PNGs, grayscale and CMYK JPEGs (TensorFlow converts Adobe
  CMYK to RGB itself) and animated GIFs (decoded as their first frame). 12-bit JPEGs, which
  TensorFlow cannot decode, are unsupported.
- BMP: converted to PNG, losslessly. TensorFlow's BMP decoder misreads palette BMPs and
  rejects 1-bit ones, and PNG is smaller.
- WebP and TIFF: converted to PNG (first frame or page), losslessly from the decoded pixels.
  16-bit grayscale TIFFs stay 16-bit; 32-bit integer and float TIFFs are unsupported.
- Everything else Pillow recognises (ICO, PSD, PPM, ...): unsupported_format.

Images whose header declares more than ``max_pixels`` pixels are skipped before any pixel
is decoded (decompression bombs).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image

from components.image_example_gen import report
from components.image_example_gen.report import SkippedInputError

# Pillow format -> stored format, for formats kept byte for byte.
KEPT_FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif"}
# Pillow formats converted to PNG.
CONVERTED_FORMATS = {"BMP": "bmp", "DIB": "bmp", "WEBP": "webp", "TIFF": "tiff"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels
# JPEG start-of-frame markers (C4 DHT, C8 JPG and CC DAC are not frames).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Pillow mode -> channels of the stored image.
_MODE_CHANNELS = {
    "1": 1,
    "L": 1,
    "I;16": 1,
    "I;16B": 1,
    "I;16L": 1,
    "LA": 2,
    "P": 3,
    "PA": 4,
    "RGB": 3,
    "RGBA": 4,
    "CMYK": 4,
    "YCbCr": 3,
}


@dataclass(frozen=True)
class CheckedImage:
    """An image to store: its (original or converted) bytes and what they hold."""

    data: bytes
    format: str  # stored format: "png", "jpeg" or "gif"
    height: int
    width: int
    channels: int
    source_format: str  # format of the input: "png", "jpeg", "gif", "bmp", "webp", "tiff"

    @property
    def converted(self) -> bool:
        """True if the bytes were re-encoded (the input format is not stored as is)."""
        return self.source_format != self.format


def png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, channels) from a PNG's IHDR chunk, or None if not a PNG."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_CHANNELS or width == 0 or height == 0:
        return None
    return width, height, depth, _PNG_CHANNELS[colour]


def jpeg_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bits per sample, components) from a JPEG's frame header, or None."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            if i + 10 > n:
                return None
            precision, height, width, components = struct.unpack(">BHHB", data[i + 4 : i + 10])
            if width == 0 or height == 0:  # height given later (DNL): let Pillow decide
                return None
            if not 1 <= components <= 4:  # not a frame TensorFlow decodes: let Pillow decide
                return None
            return width, height, precision, components
        i += 2 + length
    return None


def check_image(data: bytes, max_pixels: int) -> CheckedImage:
    """Decides what to store for one input; raises SkippedInputError with the reason if nothing.

    PNG and JPEG headers are parsed directly (fast path); other inputs go through Pillow,
    which reads only the header before the size check.
    """
    if not data:
        raise SkippedInputError(report.EMPTY_FILE)
    header = png_header(data)
    if header is not None:
        width, height, _, channels = header
        _check_size(width, height, max_pixels)
        return CheckedImage(data, "png", height, width, channels, "png")
    header = jpeg_header(data)
    if header is not None:
        width, height, precision, channels = header
        _check_size(width, height, max_pixels)
        if precision != 8:
            raise SkippedInputError(
                report.UNSUPPORTED_FORMAT, f"{precision}-bit JPEG (TensorFlow decodes 8-bit)"
            )
        return CheckedImage(data, "jpeg", height, width, channels, "jpeg")
    return _check_with_pillow(data, max_pixels)


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise SkippedInputError(
            report.TOO_MANY_PIXELS,
            f"{width}x{height} = {width * height} pixels > max_image_pixels {max_pixels}",
        )


def _check_with_pillow(data: bytes, max_pixels: int) -> CheckedImage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:
            raise SkippedInputError(report.TOO_MANY_PIXELS, str(err)) from None
        except Image.UnidentifiedImageError:
            raise SkippedInputError(report.NOT_AN_IMAGE, "no known image format") from None
        except Exception as err:  # Pillow raises many types on corrupt headers.
            raise SkippedInputError(report.CORRUPT_IMAGE, f"{type(err).__name__}: {err}") from None
        with image:
            width, height = image.size
            _check_size(width, height, max_pixels)
            pil_format = image.format or ""
            if pil_format in KEPT_FORMATS:
                channels = _MODE_CHANNELS.get(image.mode, 3)
                if pil_format == "GIF":
                    channels = 3
                stored = KEPT_FORMATS[pil_format]
                return CheckedImage(data, stored, height, width, channels, stored)
            if pil_format in CONVERTED_FORMATS:
                return _convert_to_png(image, CONVERTED_FORMATS[pil_format])
    raise SkippedInputError(
        report.UNSUPPORTED_FORMAT,
        f"{pil_format or 'unknown'} (accepted: PNG, JPEG, GIF as they are; BMP, WebP, TIFF "
        "converted to PNG)",
    )


def _convert_to_png(image: Image.Image, source_format: str) -> CheckedImage:
    """The first frame as a lossless PNG; raises SkippedInputError if it cannot be decoded."""
    try:
        image.seek(0)
        image.load()
    except Exception as err:  # Truncated or corrupt pixel data.
        raise SkippedInputError(report.CORRUPT_IMAGE, f"{type(err).__name__}: {err}") from None
    mode = image.mode
    if mode in ("I", "F") or mode.startswith(("I;32", "F;")):
        raise SkippedInputError(
            report.UNSUPPORTED_FORMAT, f"{source_format.upper()} with {mode} pixels (32-bit)"
        )
    if mode.startswith("I;16"):
        converted = image if mode == "I;16" else image.convert("I;16")
    elif mode in ("1", "L", "LA", "RGB", "RGBA"):
        converted = image
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        converted = image.convert("RGBA" if has_alpha else "RGB")
    else:  # CMYK, YCbCr, LAB, HSV, ...
        converted = image.convert("RGB")
    buffer = io.BytesIO()
    try:
        converted.save(buffer, format="PNG")
    except Exception as err:
        raise SkippedInputError(
            report.UNSUPPORTED_FORMAT, f"cannot store {source_format} {mode} as PNG: {err}"
        ) from None
    width, height = converted.size
    channels = _MODE_CHANNELS.get(converted.mode, 3)
    return CheckedImage(buffer.getvalue(), "png", height, width, channels, source_format)
