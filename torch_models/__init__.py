"""dermsim PyTorch side: backbones, LPIPS / DISTS, head fitting, trainer and ONNX graphs.

The twins of tf_models. Importing this package first makes torchvision importable when
a CUDA build of it meets the CPU build of torch (see `torch_models._compat`); import it
before torchvision, timm, lpips or DISTS_pytorch.
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
    torch_state_dict,
)

__all__ = [
    "VGG",
    "ResNet",
    "VisionTransformer",
    "create_model",
    "load_weights",
    "save_weights",
    "set_torch_state_dict",
    "torch_state_dict",
]
