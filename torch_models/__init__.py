"""dermsim PyTorch side (the twin of tf_models): backbones, LPIPS / DISTS, trainer, ONNX.

Importing this package first makes torchvision importable on the CPU build of torch
(see `torch_models._compat`); import it before torchvision, timm, lpips or
DISTS_pytorch.
"""

from torch_models._compat import ensure_torchvision_importable

ensure_torchvision_importable()

from torch_models.backbones import (  # noqa: E402
    VGG,
    ResNet,
    VisionTransformer,
    create_model,
    load_weights,
    save_weights,
    set_torch_state_dict,
    state_dict_numpy,
)

__all__ = [
    "VGG",
    "ResNet",
    "VisionTransformer",
    "create_model",
    "load_weights",
    "save_weights",
    "set_torch_state_dict",
    "state_dict_numpy",
]
