"""Feature and signature names, defined once.

ExampleGen writes the raw features, Transform reads them, the exported model's signatures
take and return the names below, and serving clients use them. Import from here; never
repeat the strings.
"""

# Raw features written by the image ExampleGen (one tf.train.Example per image).
IMAGE_KEY = "image"  # bytes: the original encoded file, never re-encoded
IMAGE_FORMAT_KEY = "image_format"  # bytes: "png", "jpeg", ...
IMAGE_HEIGHT_KEY = "image_height"  # int64
IMAGE_WIDTH_KEY = "image_width"  # int64
IMAGE_CHANNELS_KEY = "image_channels"  # int64
LABEL_KEY = "label"  # bytes: the class name
IMAGE_ID_KEY = "image_id"  # bytes: path relative to the data root (splits go by image bytes)

# ImageExampleGen's ingestion report, beside the split folders of its Examples artifact (the
# Trainer reads its per-class counts for class weights).
INGESTION_REPORT_FILE = "ingestion_report.json"

# Transformed features produced by preprocessing_fn.
TRANSFORMED_IMAGE_KEY = "image_xf"  # float32 [height, width, 3], normalized for the backbone
TRANSFORMED_LABEL_KEY = "label_id"  # int64 class id

# tf.Transform vocabulary of class names; its order defines the class ids.
LABEL_VOCABULARY_NAME = "label_vocabulary"

# Exported SavedModel signatures.
SERVING_SIGNATURE = "serving_default"  # encoded image bytes -> predictions
EXAMPLES_SIGNATURE = "serving_examples"  # serialized raw tf.Examples -> predictions
TRANSFORM_SIGNATURE = "transform_features"  # serialized raw tf.Examples -> transformed features
CLASSIFY_SIGNATURE = "classification"  # TF Serving Classify API: tf.Examples -> classes, scores

SERVING_INPUT_KEY = "images"  # serving_default input: tf.string [batch]
EXAMPLES_INPUT_KEY = "examples"  # serving_examples / transform_features input: tf.string [batch]
# The classification signature uses TF Serving's fixed keys (signature_constants.CLASSIFY_*).
CLASSIFY_INPUT_KEY = "inputs"  # serialized raw tf.Examples, tf.string [batch]
CLASSIFY_CLASSES_OUTPUT = "classes"  # string [batch, num_classes]: every class name
CLASSIFY_SCORES_OUTPUT = "scores"  # float32 [batch, num_classes]: their probabilities
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"

# Outputs of both prediction signatures.
PROBABILITIES_OUTPUT = "probabilities"  # float32 [batch, num_classes]
CLASS_ID_OUTPUT = "class_id"  # int64 [batch]
CLASS_NAME_OUTPUT = "class_name"  # string [batch]

# The logger of the Trainer's progress records (trainer_module.training_record), which the
# CLI's console draws (pipeline.console).
PROGRESS_LOGGER = "tfx_image_pipeline.progress"
