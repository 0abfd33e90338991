"""dermsim Keras 3 side (TensorFlow backend): the twins of torch_models.

Importing this package selects the TensorFlow backend (or refuses clearly when Keras
already runs on another one); see `tf_models._compat`.
"""

from tf_models._compat import ensure_tensorflow_backend

ensure_tensorflow_backend()

from tf_models.backbones import (  # noqa: E402
    create_model,
    features_model,
    keras_file_info,
    load_weights,
    save_weights,
    set_torch_state_dict,
    torch_state_dict,
)

__all__ = [
    "create_model",
    "features_model",
    "keras_file_info",
    "load_weights",
    "save_weights",
    "set_torch_state_dict",
    "torch_state_dict",
]
