"""ExampleGen for a folder of images laid out as one subfolder per class."""

from components.image_example_gen.component import ImageExampleGen

__all__ = ["ImageExampleGen"]
