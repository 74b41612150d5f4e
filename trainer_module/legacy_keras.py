"""The Keras 2 switch, in one place: importing this module sets it.

TensorFlow 2.16 defaults to Keras 3, but TFX 1.16, tf.Transform and TFMA need Keras 2
(``tf_keras``); ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first imported.
Each package of the project (``pipeline``, ``components``, ``trainer_module``, ``serving``,
``bench``) imports this module in its ``__init__``, which Python runs before any module of the
package, so no module sets it again. Child processes (Beam workers) inherit it; the Makefile,
the Dockerfile and the test suite's conftest set it for their processes too.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
