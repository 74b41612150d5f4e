"""The ImageExampleGen component: TFX's FileBasedExampleGen with an image-folder executor."""

from __future__ import annotations

from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.image_example_gen import executor
from trainer_module import features


def hash_split_output_config(eval_fraction: float) -> example_gen_pb2.Output:
    """Train/eval split by a hash of each image's relative path, in 100 buckets.

    Hashing the path (not the bytes or the enumeration order) keeps every image in the
    same split when other images are added or removed.
    """
    eval_buckets = max(1, round(100 * eval_fraction))
    return example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=100 - eval_buckets),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=eval_buckets),
            ],
            partition_feature_name=features.IMAGE_ID_KEY,
        )
    )


class ImageExampleGen(FileBasedExampleGen):
    """Reads ``input_base/<class>/<image>`` files into tf.Examples with train/eval splits."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, input_base: str, eval_fraction: float = 0.2):
        """Args:
        input_base: the data root, one subfolder per class.
        eval_fraction: fraction of images (by path hash) in the eval split.
        """
        super().__init__(
            input_base=input_base,
            output_config=hash_split_output_config(eval_fraction),
        )
