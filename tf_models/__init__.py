"""dermsim Keras 3 side: backbones, LPIPS / DISTS, head fitting, trainer and ONNX graphs.

The twins of torch_models, on the TensorFlow backend. Importing this package selects
that backend (or refuses clearly when Keras already runs on another one); see
`tf_models._compat`.
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
