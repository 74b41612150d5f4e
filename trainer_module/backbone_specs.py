"""What the pipeline needs to know about each backbone, without importing TensorFlow.

The configuration validates names and image sizes against this table before any
TensorFlow work starts; ``trainer_module.models`` builds the networks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts about one backbone."""

    name: str
    default_image_size: int
    min_image_size: int
    # How Transform maps RGB values in [0, 255] to the network's input range:
    # ``(x - input_offset) / input_scale``.
    input_offset: float
    input_scale: float
    description: str


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="small_cnn",
            default_image_size=64,
            min_image_size=16,
            input_offset=0.0,
            input_scale=255.0,
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
            f"unknown backbone {name!r}; choose one of: {', '.join(sorted(BACKBONES))}"
        ) from None
