"""preprocessing_fn on real sample images, run by tf.Transform's Beam implementation."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from PIL import Image
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from trainer_module import features
from trainer_module.backbone_specs import BACKBONES
from trainer_module.image_ops import decode_batch
from trainer_module.preprocessing import preprocessing_fn
from trainer_module.settings import TransformSettings
from trainer_module.train import transformed_image_size

IMAGE_SIZE = 32


def _sample_rows(sample_dir, per_class=3):
    rows = []
    for class_dir in sorted(p for p in sample_dir.iterdir() if p.is_dir()):
        for path in sorted(class_dir.glob("*.png"))[:per_class]:
            rows.append(
                {features.IMAGE_KEY: [path.read_bytes()], features.LABEL_KEY: [class_dir.name]}
            )
    return rows


@pytest.fixture(scope="module")
def transformed(sample_dir, tmp_path_factory):
    rows = _sample_rows(sample_dir)
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(
            {
                features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
                features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.string),
            }
        )
    )
    # EfficientNet-Lite0 maps 0..255 to (x - 127) / 128.
    config = dataclasses.asdict(
        TransformSettings(backbone="efficientnet_lite0", image_size=IMAGE_SIZE)
    )
    temp_dir = str(tmp_path_factory.mktemp("tft"))
    with tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
        (out_rows, _), transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, config)
        )
        output_dir = str(tmp_path_factory.mktemp("transform_fn"))
        _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
    return rows, out_rows, tft.TFTransformOutput(output_dir)


def test_images_are_decoded_resized_and_normalized(transformed):
    rows, out_rows, _ = transformed
    assert len(out_rows) == len(rows) == 30
    for row in out_rows:
        image = np.asarray(row[features.TRANSFORMED_IMAGE_KEY])
        assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert image.min() >= -127 / 128 - 1e-6 and image.max() <= 128 / 128 + 1e-6
        # Grayscale sources are repeated to three identical channels.
        np.testing.assert_allclose(image[..., 0], image[..., 2])
        assert image.std() > 0.05  # real content, not a blank image


def test_the_transform_graph_tells_the_trainer_its_image_size(transformed):
    _, _, tft_output = transformed
    assert transformed_image_size(tft_output) == IMAGE_SIZE


def test_label_vocabulary_maps_every_class_name_to_its_id(transformed):
    rows, out_rows, tft_output = transformed
    vocabulary = [v.decode() for v in tft_output.vocabulary_by_name(features.LABEL_VOCABULARY_NAME)]
    assert sorted(vocabulary) == sorted({r[features.LABEL_KEY][0] for r in rows})
    for row, out in zip(rows, out_rows):
        assert vocabulary[int(out[features.TRANSFORMED_LABEL_KEY])] == row[features.LABEL_KEY][0]


def test_transform_graph_serves_raw_bytes_without_labels(transformed, sample_dir):
    rows, out_rows, tft_output = transformed
    layer = tft_output.transform_features_layer()
    images = tf.constant([[rows[0][features.IMAGE_KEY][0]]])
    result = layer({features.IMAGE_KEY: images})
    np.testing.assert_allclose(
        result[features.TRANSFORMED_IMAGE_KEY][0].numpy(),
        out_rows[0][features.TRANSFORMED_IMAGE_KEY],
        atol=1e-5,
    )


def _encode(array: np.ndarray, mode: str, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=image_format)
    return buffer.getvalue()


def test_decode_batch_converts_every_layout_to_rgb():
    gray = np.full((10, 6), 200, np.uint8)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10  # red, nearly transparent: alpha is dropped
    jpeg = _encode(np.full((8, 8, 3), 40, np.uint8), "RGB", "JPEG")
    batch = tf.constant([_encode(gray, "L"), _encode(rgba, "RGBA"), jpeg])
    images = decode_batch(batch, 16, BACKBONES["small_cnn"]).numpy()  # x / 255
    assert images.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(images[0], 200 / 255, atol=1e-5)
    np.testing.assert_allclose(images[1, ..., 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(images[1, ..., 1:], 0.0, atol=1e-5)
    np.testing.assert_allclose(images[2], 40 / 255, atol=3 / 255)
