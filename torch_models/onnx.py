"""torch graphs for `bridge.export`: classifier, features, LPIPS, DISTS (masked too) -> ONNX.

Every graph takes float32 NCHW RGB in [0, 1] and normalises inside. Exported with the
dynamo exporter (opset 18), one file, `optimize=False`: its graph optimiser drops
LPIPS's `+ 1e-10` and turns 0 / 0 into NaN. tf_models/onnx.py mirrors this file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from bridge.core.graphs import GraphSpec
from bridge.core.spec import InputContract
from torch_models.backbones import create_model
from torch_models.metrics import (
    DISTS,
    LPIPS,
    lpips_distance,
    lpips_distance_masked,
    lpips_spatial,
)


class Classifier(nn.Module):
    """Images in [0, 1] -> logits."""

    def __init__(self, model: nn.Module, contract: InputContract):
        super().__init__()
        self.model = model
        # distinctive names: the exporter can give an initializer and a node output one name
        self.register_buffer("input_mean", torch.tensor(contract.mean).reshape(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(contract.std).reshape(1, 3, 1, 1))

    def forward(self, image: Tensor) -> Tensor:
        return self.model((image - self.input_mean) / self.input_std)


class Features(Classifier):
    """Images in [0, 1] -> the taps (NCHW; ViT class tokens (N, C))."""

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        taps = self.model.forward_features((image - self.input_mean) / self.input_std)
        return tuple(taps[name] for name in self.model.spec.tap_names)


class LPIPSScorer(nn.Module):
    """Two image batches in [0, 1] -> LPIPS `distance` (N,) and `distance_map` (N, 1, H, W).

    The map is `LPIPS.spatial` (every tap's map upsampled bilinearly to the input size,
    summed); both outputs come from one backbone pass per batch. The twin of
    tf_models/onnx.py's `lpips_outputs`.
    """

    def __init__(self, metric: LPIPS):
        super().__init__()
        self.metric = metric

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        fa, fb = self.metric.features(a), self.metric.features(b)
        heads = self.metric.heads
        size = (a.shape[2], a.shape[3])
        return lpips_distance(fa, fb, heads), lpips_spatial(fa, fb, heads, size)


class MaskedLPIPSScorer(LPIPSScorer):
    """Images and masks -> masked LPIPS `distance` (N,) and `distance_map` (N, 1, H, W).

    The distance is `lpips_distance_masked`; the map is `LPIPS.spatial` times the joint
    weight m_a m_b at the input size. The twin of tf_models/onnx.py's
    `lpips_masked_outputs`.
    """

    def forward(self, a: Tensor, b: Tensor, mask_a: Tensor, mask_b: Tensor):
        fa, fb = self.metric.features(a), self.metric.features(b)
        heads = self.metric.heads
        size = (a.shape[2], a.shape[3])
        spatial = lpips_spatial(fa, fb, heads, size) * (mask_a * mask_b)
        return lpips_distance_masked(fa, fb, heads, mask_a, mask_b), spatial


class MaskedDISTSScorer(nn.Module):
    """Images and masks -> masked DISTS `distance` (N,) (`DISTS.masked`)."""

    def __init__(self, metric: DISTS):
        super().__init__()
        self.metric = metric

    def forward(self, a: Tensor, b: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
        return self.metric.masked(a, b, mask_a, mask_b)


def graph(g: GraphSpec) -> tuple[nn.Module, list[str], list[str]]:
    """What to export: a module of NCHW [0, 1] images, its input names, its output names.

    The module returns a tensor, or a tuple of them in the output names' order.
    """
    model = create_model(g.spec, g.num_classes, weights=g.state)
    if g.kind == "classifier":
        module = Classifier(model, g.contract)
    elif g.kind == "features":
        module = Features(model, g.contract)
    elif g.kind == "lpips":
        module = LPIPSScorer(LPIPS(model, g.heads.weights))
    elif g.kind == "lpips_masked":
        module = MaskedLPIPSScorer(LPIPS(model, g.heads.weights))
    elif g.kind == "dists_masked":
        module = MaskedDISTSScorer(DISTS(model, *g.heads.weights))
    else:
        module = DISTS(model, *g.heads.weights)
    return module.eval(), g.input_names, g.output_names


def export(
    g: GraphSpec, path: str | os.PathLike, opset: int, dynamic: bool = True
) -> Callable[..., dict[str, np.ndarray]]:
    """Write the ONNX file; return the native model as numpy in, {output: array} out."""
    module, inputs, outputs = graph(g)
    # A dynamic graph is traced where no tap is 1 x 1 and declared from 33 px: upsampling
    # a 1 x 1 map (LPIPS's distance_map on a 32 px ResNet) is a special case that
    # torch.export would otherwise bake in as a fixed size. The ONNX graph has no such
    # branch and runs at 32 px too (the parity probes check the native size).
    n = max(g.contract.native_size, 64) if dynamic else g.contract.native_size
    example = tuple(torch.rand(2, g.input_channels[name], n, n) for name in inputs)
    batch = torch.export.Dim("batch", min=1)
    if not dynamic:
        axes = {0: batch}
    else:
        axes = {
            0: batch,
            2: torch.export.Dim("height", min=33),
            3: torch.export.Dim("width", min=33),
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, example, str(path), input_names=inputs, output_names=outputs,
            dynamo=True, opset_version=opset, external_data=False, optimize=False,
            dynamic_shapes=tuple(axes for _ in inputs), verbose=False,
        )  # fmt: skip

    @torch.no_grad()
    def native(*arrays: np.ndarray) -> dict[str, np.ndarray]:
        out = module(*(torch.from_numpy(a) for a in arrays))
        out = out if isinstance(out, tuple) else (out,)
        return {name: o.numpy() for name, o in zip(outputs, out, strict=True)}

    return native
