"""PyTorch backbones with named taps: torchvision VGG16 / ResNet50, timm ViT-B/16.

Each class reproduces its reference exactly (same modules, same state-dict keys, so
the libraries' own checkpoints load with `strict=True`) and adds
`forward_features(x) -> dict[str, Tensor]` returning the spec's taps in NCHW.
Inputs are normalised images (the spec's input contract says how).

Random initialisation draws the reference library's scheme in numpy
(`bridge.core.weights.init_state_dict`), so a torch and a Keras model of one seed start
from the same weights. tf_models/backbones.py mirrors this file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from timm.models.vision_transformer import VisionTransformer as _TimmViT
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck
from torchvision.models.vgg import make_layers

from bridge.core.files import atomic_path
from bridge.core.metrics import L2POOL_EPS, l2pool_filter
from bridge.core.spec import ArchSpec, get_arch
from bridge.core.weights import (
    TORCH_SUFFIXES,
    StateDict,
    check_state_dict,
    init_state_dict,
    read_state_dict,
    resolve_imagenet,
    write_state_dict,
)

# ------------------------------------------------------------- custom layers


class L2Pooling2D(nn.Module):
    """DISTS's L2 pooling: sqrt(depthwise conv(x^2, g) + 1e-12), stride 2, padding 1."""

    def __init__(self, channels: int):
        super().__init__()
        g = torch.from_numpy(l2pool_filter()).float()
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.conv2d(x**2, self.filter, stride=2, padding=1, groups=x.shape[1])
        return torch.sqrt(out + L2POOL_EPS)


# ------------------------------------------------------------------------- VGG


class VGG(nn.Module):
    """torchvision VGG without batch norm, widths from the spec.

    The features come from torchvision's own `make_layers`; avgpool, classifier,
    initialisation and forward are those of `torchvision.models.VGG`, whose
    classifier width is fixed at 4096 (tiny variants need a narrower one).
    """

    def __init__(self, spec: ArchSpec, num_classes: int):
        super().__init__()
        cfg = spec.config
        self.spec = spec
        layers_cfg: list[int | str] = []
        for stage in cfg.stages:
            layers_cfg += [*stage, "M"]
        self.features = make_layers(layers_cfg, batch_norm=False)
        self.avgpool = nn.AdaptiveAvgPool2d((cfg.pool_size, cfg.pool_size))
        flat = cfg.stages[-1][-1] * cfg.pool_size**2
        self.classifier = nn.Sequential(
            nn.Linear(flat, cfg.hidden),
            nn.ReLU(True),
            nn.Dropout(p=cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(True),
            nn.Dropout(p=cfg.dropout),
            nn.Linear(cfg.hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits."""
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Return the taps (the last ReLU of each stage), stopping after the last."""
        taps = {int(t.layer.split(".")[1]): t.name for t in self.spec.taps}
        out = {}
        for i, layer in enumerate(self.features[: max(taps) + 1]):
            x = layer(x)
            if i in taps:
                out[taps[i]] = x
        return out


# ---------------------------------------------------------------------- ResNet


class ResNet(torchvision.models.ResNet):
    """torchvision ResNet v1.5 (`resnet50` with blocks (3, 4, 6, 3)) with taps."""

    def __init__(self, spec: ArchSpec, num_classes: int):
        cfg = spec.config
        if cfg.width != 64 or cfg.expansion != Bottleneck.expansion:
            raise ValueError(f"{spec.name}: torchvision ResNet needs width 64 and expansion 4")
        super().__init__(Bottleneck, list(cfg.blocks), num_classes=num_classes)
        self.spec = spec

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Return the stem (after ReLU, before max-pool) and each stage's output."""
        names = [t.name for t in self.spec.taps]
        x = self.relu(self.bn1(self.conv1(x)))
        out = {names[0]: x}
        x = self.maxpool(x)
        for name, stage in zip(
            names[1:], (self.layer1, self.layer2, self.layer3, self.layer4), strict=True
        ):
            x = stage(x)
            out[name] = x
        return out


# ------------------------------------------------------------------------- ViT


class VisionTransformer(_TimmViT):
    """timm VisionTransformer (`vit_base_patch16_224` for ViT-B/16) with taps.

    `forward_features` returns tap blocks instead of timm's final normed tokens;
    `forward` is timm's (blocks, final norm, class-token head).
    """

    def __init__(self, spec: ArchSpec, num_classes: int):
        cfg = spec.config
        super().__init__(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.dim,
            depth=cfg.depth,
            num_heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=True,
            class_token=True,
            global_pool="token",
            num_classes=num_classes,
            norm_layer=partial(nn.LayerNorm, eps=cfg.ln_eps),
        )
        self.spec = spec

    def _tokens(self, x: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        blocks = {int(t.layer.split(".")[1]): t.name for t in self.spec.taps}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if taps is not None and i in blocks:
                taps[blocks[i]] = x
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Return logits."""
        return self.forward_head(self.norm(self._tokens(x)))

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Return tap blocks: patch tokens as an NCHW grid, class token as `<name>_cls`."""
        tokens: dict[str, Tensor] = {}
        self._tokens(x, tokens)
        g = self.spec.config.grid
        out = {}
        for name, t in tokens.items():
            out[name] = t[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], g, g)
            out[f"{name}_cls"] = t[:, 0]
        return out


# --------------------------------------------------------------------- factory

_BUILDERS = {"vgg": VGG, "resnet": ResNet, "vit": VisionTransformer}


def create_model(
    arch: str | ArchSpec,
    num_classes: int | None = None,
    weights: str | os.PathLike | StateDict | None = None,
    seed: int = 0,
) -> nn.Module:
    """Build a backbone (NCHW, normalised input), in eval mode.

    Args:
        arch: `vgg16`, `resnet50`, `vit_b16` or a tiny variant.
        num_classes: Head size; None keeps the reference head (1000 classes).
        weights: None (random init with the reference library's scheme, drawn
            by `bridge.core.weights.init_state_dict` with `seed`), `"imagenet"` (found
            on disk, never downloaded), a `.pth` / `.safetensors` state dict of the
            reference library's layout, or such a state dict in memory (numpy arrays).
        seed: Seed of the random init; torch's global RNG state is left untouched.

    Returns:
        The model; `model.spec` is its `ArchSpec`.

    Raises:
        ValueError: Unknown arch, bad head size, or weights that do not fit.
        FileNotFoundError: Missing weights file.
    """
    spec = get_arch(arch)
    k = spec.resolve_num_classes(num_classes)
    # built without the libraries' own init (every tensor is then loaded, strictly), which
    # also leaves torch's global RNG untouched
    with torch.device("meta"):
        model = _BUILDERS[spec.family](spec, k)
    model = model.to_empty(device="cpu")
    if weights is None:
        set_torch_state_dict(model, init_state_dict(spec, k, seed))
    else:
        load_weights(model, weights)
    return model.eval()


def load_weights(model: nn.Module, weights: str | os.PathLike | StateDict) -> None:
    """Load `"imagenet"` or a torch state dict (file or in memory), checked."""
    if isinstance(weights, Mapping):
        set_torch_state_dict(model, check_state_dict(weights, model.spec, _head_size(model)))
        return
    path = resolve_imagenet(model.spec) if str(weights) == "imagenet" else weights
    state = read_state_dict(path)
    set_torch_state_dict(model, check_state_dict(state, model.spec, _head_size(model), str(path)))


def set_torch_state_dict(model: nn.Module, state_dict: StateDict) -> None:
    """Set the model's weights from a torch-layout state dict, strictly (every key, no extra)."""
    model.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, strict=True
    )


def torch_state_dict(model: nn.Module) -> StateDict:
    """Return the model's weights as a torch-layout state dict (numpy arrays)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Save the model's state dict atomically as `.safetensors` or torch's `.pth`."""
    path = str(path)
    if path.endswith(".safetensors"):
        write_state_dict(torch_state_dict(model), path)
        return
    if not path.endswith(TORCH_SUFFIXES):
        raise ValueError(f"{path}: torch weights files must end with .safetensors or .pth")
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


def _head_size(model: nn.Module) -> int:
    return int(model.get_submodule(model.spec.head).out_features)
