"""Serialized tf.train.Examples in our feature layout, written without TensorFlow.

The protobuf wire format is simple enough to write directly, and doing so is about ten
times faster than building ``tf.train.Example`` messages in Python, which matters at
thousands of images per second per core. The tests parse the output back with
``tf.train.Example``.
"""

from __future__ import annotations

import functools

from trainer_module import features


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


_ONE_BYTE = [bytes((i,)) for i in range(128)]


def _varint(value: int) -> bytes:
    if value < 128:
        return _ONE_BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(name: str) -> bytes:
    return b"\x0a" + _varint(len(name)) + name.encode()


def _bytes_entry(key: bytes, value: bytes) -> bytes:
    """One ``Features.feature`` map entry holding ``bytes_list {value: [value]}``.

    Protobuf wire format: entry{1: key, 2: Feature{1: BytesList{1: value}}}.
    """
    value_length = _varint(len(value))
    list_size = 1 + len(value_length) + len(value)
    list_length = _varint(list_size)
    feature_size = 1 + len(list_length) + list_size
    feature_length = _varint(feature_size)
    entry_size = len(key) + 1 + len(feature_length) + feature_size
    return b"".join(
        (
            b"\x0a",
            _varint(entry_size),
            key,
            b"\x12",
            feature_length,
            b"\x0a",
            list_length,
            b"\x0a",
            value_length,
            value,
        )
    )


@functools.lru_cache(maxsize=4096)
def _int_entry(key: bytes, value: int) -> bytes:
    """One map entry holding ``int64_list {value: [value]}`` (value >= 0), cached."""
    packed = _varint(value)
    int_list = b"\x0a" + _varint(len(packed)) + packed
    feature = b"\x1a" + _varint(len(int_list)) + int_list
    entry = key + b"\x12" + _varint(len(feature)) + feature
    return b"\x0a" + _varint(len(entry)) + entry


@functools.lru_cache(maxsize=4096)
def _text_entry(key: bytes, text: str) -> bytes:
    """A cached bytes entry for values that repeat (formats, labels)."""
    return _bytes_entry(key, _utf8(text))


_IMAGE = _key(features.IMAGE_KEY)
_FORMAT = _key(features.IMAGE_FORMAT_KEY)
_HEIGHT = _key(features.IMAGE_HEIGHT_KEY)
_WIDTH = _key(features.IMAGE_WIDTH_KEY)
_CHANNELS = _key(features.IMAGE_CHANNELS_KEY)
_LABEL = _key(features.LABEL_KEY)
_IMAGE_ID = _key(features.IMAGE_ID_KEY)


def serialize_example(
    image: bytes,
    image_format: str,
    height: int,
    width: int,
    channels: int,
    label: str,
    image_id: str,
) -> bytes:
    """A serialized tf.train.Example in our feature layout (trainer_module/features.py).

    Written directly in the protobuf wire format, about ten times faster than building the
    message in Python, which matters at thousands of images per second per core. The unit
    tests parse it back with ``tf.train.Example``.
    """
    entries = b"".join(
        (
            _bytes_entry(_IMAGE, image),
            _text_entry(_FORMAT, image_format),
            _int_entry(_HEIGHT, height),
            _int_entry(_WIDTH, width),
            _int_entry(_CHANNELS, channels),
            _text_entry(_LABEL, label),
            _bytes_entry(_IMAGE_ID, _utf8(image_id)),
        )
    )
    return b"\x0a" + _varint(len(entries)) + entries  # Example{1: Features{1: entries}}
