"""Make sure Keras runs on the TensorFlow backend.

dermsim's Keras models are built and exported (tf2onnx) on TensorFlow. Keras picks
its backend once, at import, from `KERAS_BACKEND` or `~/.keras/keras.json`; so this
module sets `KERAS_BACKEND=tensorflow` when nothing chose a backend yet, and refuses
clearly when another one was chosen. `tf_models/__init__.py` calls it first.
"""

from __future__ import annotations

import os
import sys


def ensure_tensorflow_backend() -> None:
    """Select the TensorFlow backend, or fail with a one-line explanation.

    Raises:
        RuntimeError: If Keras is (or will be) on another backend.
    """
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"tf_models needs Keras on the TensorFlow backend, but Keras runs on {backend!r}; "
            "set KERAS_BACKEND=tensorflow before Keras is first imported"
        )
