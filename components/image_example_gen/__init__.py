"""ExampleGen for images: class folders, CSV/TSV manifests or TFRecords, with a report.

``ImageExampleGen`` is imported on first use, so ``options`` (pure Python) can be imported
by the pipeline configuration without loading TFX.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ImageExampleGen"]


def __getattr__(name: str) -> Any:
    if name == "ImageExampleGen":
        from components.image_example_gen.component import ImageExampleGen

        return ImageExampleGen
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
