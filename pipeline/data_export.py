"""Export Fashion-MNIST into the image-folder layout the pipeline reads.

The idx files come from Debian's ``dataset-fashion-mnist`` package
(``apt-get install dataset-fashion-mnist``), so no download from the web is needed.
The output is one subfolder per class holding PNG files, the layout of
``keras.utils.image_dataset_from_directory``::

    OUT/trouser/train_00016.png
    OUT/bag/train_00035.png
    ...

Usage::

    python -m pipeline.data_export --out data/sample --split train --per-class 50
    python -m pipeline.data_export --out /tmp/fmnist --split all  # OUT/train, OUT/test
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DEFAULT_IDX_DIR = Path("/usr/share/datasets/fashion-mnist")

# Index i is Fashion-MNIST label i; folder-safe spellings of the official names.
FASHION_MNIST_CLASSES = (
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DataExportError(RuntimeError):
    """Raised when the source idx files are missing or malformed."""


def read_idx(path: Path) -> np.ndarray:
    """Reads one gzipped idx file (the MNIST container format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataExportError(f"{path}: not an idx file of unsigned bytes")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataExportError(f"{path}: expected {shape} values, found {body.size}")
    return body.reshape(shape)


def load_split(idx_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images [N, 28, 28] uint8, labels [N] uint8) of one Fashion-MNIST split."""
    image_file, label_file = _IDX_FILES[split]
    paths = [idx_dir / image_file, idx_dir / label_file]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataExportError(
            f"Fashion-MNIST idx files not found: {', '.join(missing)}. "
            "Install them with: apt-get update && apt-get install -y dataset-fashion-mnist "
            "(or pass --idx-dir)."
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if len(images) != len(labels):
        raise DataExportError(f"{idx_dir}: {len(images)} images but {len(labels)} labels")
    return images, labels


def select_indices(labels: np.ndarray, per_class: int | None, skip: int = 0) -> Iterator[int]:
    """Yields indices in file order; per class, skips ``skip`` images, then takes ``per_class``."""
    seen = np.zeros(len(FASHION_MNIST_CLASSES), dtype=np.int64)
    for index, label in enumerate(labels):
        seen[label] += 1
        if seen[label] <= skip:
            continue
        if per_class is None or seen[label] <= skip + per_class:
            yield index


def export_split(
    idx_dir: Path, split: str, out_dir: Path, per_class: int | None = None, skip: int = 0
) -> int:
    """Writes the chosen images of ``split`` as ``out_dir/<class>/<split>_<index>.png``.

    Returns the number of files written. Existing files with the same name are overwritten,
    so a re-run is idempotent.
    """
    from PIL import Image  # Imported here so reading idx files needs numpy only.

    images, labels = load_split(idx_dir, split)
    for name in FASHION_MNIST_CLASSES:
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    count = 0
    for index in select_indices(labels, per_class, skip):
        path = out_dir / FASHION_MNIST_CLASSES[labels[index]] / f"{split}_{index:05d}.png"
        Image.fromarray(images[index], mode="L").save(path, format="PNG", optimize=True)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--split",
        choices=["train", "test", "all"],
        default="all",
        help="which split; 'all' writes OUT/train and OUT/test",
    )
    parser.add_argument(
        "--per-class", type=int, default=None, help="images per class (default all)"
    )
    parser.add_argument("--skip", type=int, default=0, help="skip the first N images of each class")
    parser.add_argument("--idx-dir", type=Path, default=DEFAULT_IDX_DIR)
    args = parser.parse_args(argv)
    try:
        if args.split == "all":
            for split in ("train", "test"):
                n = export_split(args.idx_dir, split, args.out / split, args.per_class, args.skip)
                print(f"wrote {n} images to {args.out / split}")
        else:
            n = export_split(args.idx_dir, args.split, args.out, args.per_class, args.skip)
            print(f"wrote {n} images to {args.out}")
    except DataExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
