"""tf.Transform ``preprocessing_fn``: raw tf.Examples -> normalized images and class ids."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from trainer_module import features
from trainer_module.image_ops import decode_batch
from trainer_module.settings import TransformSettings, settings_from_custom_config


def _as_vector(tensor: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """[batch, 1] dense or [batch, None] sparse single-valued feature -> [batch] dense."""
    if isinstance(tensor, tf.SparseTensor):
        tensor = tf.sparse.to_dense(tensor, default_value="")
    return tf.reshape(tensor, [-1])


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any]) -> dict[str, Any]:
    """Maps raw features to model inputs.

    Args:
      inputs: raw features; the encoded image bytes and the class name are used.
      custom_config: the ``TransformSettings`` fields (backbone, image size, resize mode),
        set by the pipeline's Transform component.

    Returns:
      ``image_xf``: float32 [batch, size, size, 3], normalized for the backbone (its static
      shape is saved in the transform graph's metadata: it tells the Trainer the size);
      ``label_id``: int64 [batch] from a vocabulary of class names that is saved with the
      transform graph, so class names travel with the model.
    """
    settings = settings_from_custom_config(TransformSettings, custom_config)
    images = decode_batch(
        _as_vector(inputs[features.IMAGE_KEY]),
        settings.resolved_image_size,
        settings.backbone_spec,
        resize_mode=settings.resize_mode,
    )
    labels = _as_vector(inputs[features.LABEL_KEY])
    label_ids = tft.compute_and_apply_vocabulary(
        labels,
        vocab_filename=features.LABEL_VOCABULARY_NAME,
        num_oov_buckets=0,
        default_value=-1,
    )
    return {features.TRANSFORMED_IMAGE_KEY: images, features.TRANSFORMED_LABEL_KEY: label_ids}
