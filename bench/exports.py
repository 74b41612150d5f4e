"""Exports and batch inference: size, accuracy and latency of each export; ``infer`` throughput.

    python bench/exports.py --model-dir outputs/serving/image_classifier --images /tmp/fmnist/test

``--model-dir`` is SERVING_DIR/MODEL_NAME of a pipeline run with exports (its newest version
and MODEL_DIR/exports/VERSION are used); ``--images`` a folder of class folders of labelled
images (``tfx-image-pipeline export-data --split test`` writes the 10,000 Fashion-MNIST test
PNGs so). Measures, in one run on one machine:

- size on disk of the SavedModel and of each export, and each one's top-1 accuracy on the
  first ``--accuracy-images`` images (taken round-robin over the classes) and its agreement
  with the SavedModel; the exporter's own eval-split figures from export_report.json beside;
- single-image latency (p50, p99) of each export in its runtime (tf.lite.Interpreter, one
  image per invoke; onnxruntime) against the SavedModel's ``serving_default`` in-process on
  one encoded image. Exports take decoded pixels, so their timing excludes the decode and
  resize the SavedModel does inside; the same calls are interleaved over rounds;
- ``infer`` throughput in images/s over every image of ``--images`` (in-process and
  multi-process Beam) against a plain loop: ``tf.data`` reading and batching the same files
  and the SavedModel's ``serving_default`` called batch by batch, in the same run.

Targets (issue 16): int8 within 1 point of float32's accuracy; int8 at most a third of the
float32 size; ``infer`` in-process at least 0.8x the plain loop. Writes the "Exports and
batch inference" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import write_section
from serving import layout

SECTION = "Exports and batch inference"
INT8_ACCURACY_TARGET = 0.01
INT8_SIZE_TARGET = 1 / 3
INFER_TARGET = 0.8


def _labelled_images(folder: Path, count: int | None) -> list[tuple[Path, str]]:
    """(path, class folder) pairs, round-robin over the classes; all when count is None."""
    by_class = [
        [(p, d.name) for p in sorted(d.iterdir()) if p.is_file()]
        for d in sorted(folder.iterdir())
        if d.is_dir()
    ]
    ordered = [item for group in zip(*by_class, strict=False) for item in group]
    ordered += [item for group in by_class for item in group[len(ordered) // len(by_class) :]]
    return ordered if count is None else ordered[:count]


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def _disk_and_accuracy(args, saved_model_dir, exports_dir, images, names):
    import tensorflow as tf

    from trainer_module import features
    from trainer_module.model_exports import (
        as_export_input,
        load_runtime,
        pixels_from_encoded,
        read_report,
    )

    report = read_report(str(exports_dir))
    size = int(report["image_size"])
    encoded = [p.read_bytes() for p, _ in images]
    truth = np.array([names.index(label) for _, label in images])
    serve = tf.saved_model.load(str(saved_model_dir)).signatures[features.SERVING_SIGNATURE]
    saved = np.concatenate(
        [
            serve(**{features.SERVING_INPUT_KEY: tf.constant(encoded[i : i + 64])})[
                features.CLASS_ID_OUTPUT
            ].numpy()
            for i in range(0, len(encoded), 64)
        ]
    )
    pixels = pixels_from_encoded(encoded, size, args.resize_mode)
    rows = [
        (
            "SavedModel",
            _folder_size(Path(saved_model_dir)),
            float(np.mean(saved == truth)),
            1.0,
            report["saved_model_accuracy"],
        )
    ]
    runtimes = {}
    eval_accuracy = {e["kind"]: e["accuracy"] for e in report["exports"]}
    for kind, name in layout.EXPORT_FILES.items():
        path = exports_dir / name
        if not path.exists():
            continue
        runtimes[kind] = load_runtime(kind, str(path))
        predicted = np.argmax(runtimes[kind].predict(as_export_input(pixels, kind)), axis=-1)
        rows.append(
            (
                kind,
                path.stat().st_size,
                float(np.mean(predicted == truth)),
                float(np.mean(predicted == saved)),
                eval_accuracy.get(kind, float("nan")),
            )
        )
    return rows, runtimes, serve, encoded, pixels


def _latency(args, runtimes, serve, encoded, pixels):
    import tensorflow as tf

    from trainer_module import features

    calls = {
        "SavedModel (encoded PNG in)": lambda i: serve(
            **{
                features.SERVING_INPUT_KEY: tf.constant(
                    encoded[i % len(encoded) : i % len(encoded) + 1]
                )
            }
        ),
    }
    from trainer_module.model_exports import as_export_input

    for kind, runtime in runtimes.items():
        inputs = as_export_input(pixels, kind)
        calls[kind] = lambda i, r=runtime, x=inputs: r.predict(x[i % len(x) : i % len(x) + 1])
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for i in range(args.warmup):
            call(i)
    for _ in range(args.rounds):
        for name, call in calls.items():
            for i in range(args.latency_calls):
                start = time.perf_counter()
                call(i)
                timings[name].append(time.perf_counter() - start)
    return timings


def _plain_loop(saved_model_dir: str, paths: list[str], batch_size: int) -> float:
    """Images/s of a plain loop: tf.data reads and batches the files, and the SavedModel's
    ``serving_default`` (encoded bytes in) is called batch by batch."""
    import tensorflow as tf

    from trainer_module import features

    serve = tf.saved_model.load(saved_model_dir).signatures[features.SERVING_SIGNATURE]
    dataset = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    start = time.perf_counter()
    count = 0
    for batch in dataset:
        serve(**{features.SERVING_INPUT_KEY: batch})
        count += int(batch.shape[0])
    return count / (time.perf_counter() - start)


def _infer_rate(model_dir: str, folder: str, preset: str, workers: int, batch_size: int) -> float:
    from pipeline.batch_infer import run_inference
    from pipeline.config import resolve_beam_args

    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        result = run_inference(
            model_dir,
            folder,
            os.path.join(work, "p.jsonl"),
            beam_args=resolve_beam_args([], preset, workers),
            batch_size=batch_size,
        )
        return result.predicted / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> str:
    """Measures everything; returns the section's markdown."""
    import tensorflow as tf  # noqa: F401  (TF_USE_LEGACY_KERAS is set by the package)

    model_dir = Path(args.model_dir)
    versions = layout.scan_versions(str(model_dir))
    if not versions:
        raise SystemExit(f"{model_dir} holds no version")
    version = max(versions)
    saved_model_dir = versions[version]
    exports_dir = Path(layout.exports_path(str(model_dir), version))
    if not exports_dir.is_dir():
        raise SystemExit(f"{exports_dir} does not exist: push a model with exports first")
    names = (exports_dir / layout.EXPORT_LABELS_FILE).read_text().splitlines()
    images_root = Path(args.images)
    all_images = _labelled_images(images_root, None)
    sample = all_images[: args.accuracy_images]

    rows, runtimes, serve, encoded, pixels = _disk_and_accuracy(
        args, saved_model_dir, exports_dir, sample, names
    )
    timings = _latency(args, runtimes, serve, encoded, pixels)

    # infer reads a folder: the first --infer-images images, linked into one.
    infer_images = all_images[: args.infer_images] if args.infer_images else all_images
    with tempfile.TemporaryDirectory() as folder:
        for index, (path, label) in enumerate(infer_images):
            target = Path(folder) / label / f"{index:06d}{path.suffix}"
            target.parent.mkdir(exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        paths = [str(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()]
        rates: dict[str, list[float]] = {"plain": [], "in-process": [], "multi-process": []}
        for _ in range(args.infer_rounds):
            rates["plain"].append(_plain_loop(saved_model_dir, paths, args.batch_size))
            rates["in-process"].append(
                _infer_rate(str(model_dir), folder, "in-process", 1, args.batch_size)
            )
            rates["multi-process"].append(
                _infer_rate(
                    str(model_dir), folder, "multi-process", args.beam_num_workers, args.batch_size
                )
            )

    sizes = {kind: size for kind, size, *_ in rows}
    accuracy = {kind: acc for kind, _, acc, *_ in rows}
    lines = [
        f"Model: {saved_model_dir} (version {version}), exports from {exports_dir}; accuracy "
        f"on {len(sample)} images of {images_root} (round-robin over {len(names)} classes); "
        f"eval-split accuracy from the exporter's export_report.json.",
        "",
        "| model | size on disk (MB) | accuracy | agreement with SavedModel | eval accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, size, acc, agreement, eval_acc in rows:
        lines.append(
            f"| {kind} | {size / 1e6:.2f} | {acc:.4f} | {agreement:.4f} | {eval_acc:.4f} |"
        )
    lines += [
        "",
        f"Single-image latency ({args.rounds} interleaved rounds of {args.latency_calls} calls; "
        "exports take decoded pixels, the SavedModel decodes and resizes inside):",
        "",
        "| model | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|",
    ]
    for name, values in timings.items():
        p50, p99 = (_percentile(values, q) * 1e3 for q in (50, 99))
        lines.append(f"| {name} | {p50:.2f} | {p99:.2f} |")
    median = {k: statistics.median(v) for k, v in rates.items()}
    lines += [
        "",
        f"Batch inference over {len(infer_images)} images ({args.infer_rounds} rounds, batch "
        f"{args.batch_size}; min / median images/s; multi-process: {args.beam_num_workers} "
        "workers; Beam start-up included in `infer`):",
        "",
        "| path | images/s (min) | images/s (median) | vs plain loop |",
        "|---|---:|---:|---:|",
    ]
    for name, label in (
        ("plain", "tf.data + serving_default, batch by batch"),
        ("in-process", "`infer --beam-preset in-process`"),
        ("multi-process", "`infer --beam-preset multi-process`"),
    ):
        lines.append(
            f"| {label} | {min(rates[name]):.1f} | {median[name]:.1f} | "
            f"{median[name] / median['plain']:.2f}x |"
        )
    lines.append("")
    if "tflite_int8" in accuracy and "tflite_fp32" in accuracy:
        drop = accuracy["tflite_fp32"] - accuracy["tflite_int8"]
        ratio = sizes["tflite_int8"] / sizes["tflite_fp32"]
        verdict = "met" if drop <= INT8_ACCURACY_TARGET else "NOT met"
        lines.append(
            f"- int8 accuracy {drop * 100:+.1f} points below float32 (target: within "
            f"{INT8_ACCURACY_TARGET * 100:.0f}): {verdict}."
        )
        lines.append(
            f"- int8 size {ratio:.2f}x float32 (target: at most {INT8_SIZE_TARGET:.2f}x): "
            f"{'met' if ratio <= INT8_SIZE_TARGET else 'NOT met'}."
        )
    ratio = median["in-process"] / median["plain"]
    lines.append(
        f"- `infer` in-process {ratio:.2f}x the plain loop (target: at least {INFER_TARGET}x): "
        f"{'met' if ratio >= INFER_TARGET else 'NOT met'}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", required=True, help="SERVING_DIR/MODEL_NAME with exports published."
    )
    parser.add_argument("--images", required=True, help="Folder of class folders of images.")
    parser.add_argument("--resize-mode", default="stretch", help="The model's resize_mode.")
    parser.add_argument("--accuracy-images", type=int, default=1000, help="Images for accuracy.")
    parser.add_argument("--latency-calls", type=int, default=100, help="Calls per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved latency rounds.")
    parser.add_argument("--warmup", type=int, default=5, help="Warm-up calls per model.")
    parser.add_argument(
        "--infer-images", type=int, default=0, help="Images for throughput (0: all)."
    )
    parser.add_argument("--infer-rounds", type=int, default=2, help="Throughput rounds.")
    parser.add_argument("--batch-size", type=int, default=32, help="Batch size of both loops.")
    parser.add_argument("--beam-num-workers", type=int, default=2, help="Multi-process workers.")
    parser.add_argument(
        "--no-write", action="store_true", help="Print the section without writing BENCHMARKS.md."
    )
    args = parser.parse_args(argv)
    section = run(args)
    print(section)
    if not args.no_write:
        write_section(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
