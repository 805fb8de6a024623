"""Console entry points (hvt-prepare, hvt-train, hvt-eval, hvt-export, hvt-demo).

Importing this package, which every console script does before TensorFlow is loaded,
silences TensorFlow's C++ start-up notices unless the environment already sets these:
``TF_CPP_MIN_LOG_LEVEL=2`` (C++ warnings and errors only) and ``TF_ENABLE_ONEDNN_OPTS=0``
(whose notice TF prints at every start whatever the log level). TensorFlow only reads
data here (tf.data, TFDS): JAX does the maths.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
