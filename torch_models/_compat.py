"""Make a CUDA build of torchvision importable on a CPU build of torch.

The registry's torchvision 0.28.0 is built for CUDA. On the CPU torch its C extension
does not load, so its operators are never defined, and `import torchvision` fails
when it registers fake kernels for `torchvision::nms` and `torchvision::qnms`
("operator torchvision::nms does not exist"). Defining those two schemas first lets
torchvision import: models and transforms work; detection ops (nms, roi_align) and
`torchvision.io` do not, so dermsim decodes images with Pillow.

`ensure_torchvision_importable` does nothing on a CUDA build of torch, when
torchvision is not a CUDA build, when torchvision is already imported, or when the
operators already exist. It must run before the first `import torchvision` (and so
before timm, lpips or DISTS_pytorch): `torch_models/__init__.py` calls it first.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# The Library object must stay alive: its definitions vanish when it is collected.
_LIBRARY: torch.library.Library | None = None


def needs_shim() -> bool:
    """True when a CUDA torchvision meets a CPU torch and its operators are missing."""
    if torch.version.cuda is not None or "torchvision" in sys.modules:
        return False
    if "+cu" not in _torchvision_build_version():
        return False
    return not _op_defined()


def _torchvision_build_version() -> str:
    """Read torchvision's `__version__` (e.g. `0.28.0+cu130`) without importing it.

    The package metadata drops the local `+cu130` tag; `torchvision/version.py` keeps it.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return ""
    version_file = Path(spec.origin).with_name("version.py")
    try:
        match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text())
    except OSError:
        return ""
    return match.group(1) if match else ""


def _op_defined() -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
    except RuntimeError:
        return False
    return True


def ensure_torchvision_importable() -> bool:
    """Define the missing torchvision operator schemas when needed.

    Returns:
        True if the schemas were defined by this call.
    """
    global _LIBRARY
    if _LIBRARY is not None or not needs_shim():
        return False
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _LIBRARY.define(schema)
    log.debug("defined torchvision operator schemas for the CPU build of torch")
    return True
