"""torch graphs for `bridge.export`: classifier, features, LPIPS, DISTS -> ONNX.

Every graph takes float32 NCHW RGB in [0, 1] and normalises inside. Exported with the
dynamo exporter (opset 18), one file, `optimize=False`: its graph optimiser drops
LPIPS's `+ 1e-10` and turns 0 / 0 into NaN. tf_models/onnx.py mirrors this file.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from bridge.core.metrics import Heads
from bridge.core.spec import ArchSpec, InputContract
from bridge.core.weights import StateDict
from torch_models.backbones import create_model
from torch_models.metrics import DISTS, LPIPS, lpips_distance, lpips_spatial


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


def graph(
    spec: ArchSpec,
    num_classes: int,
    state: StateDict,
    kind: str,
    contract: InputContract,
    heads: Heads | None,
) -> tuple[nn.Module, list[str], list[str]]:
    """The module to export, its input names and its output names."""
    model = create_model(spec, num_classes)
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True
    )
    model.eval()
    if kind == "classifier":
        return Classifier(model, contract).eval(), ["image"], ["logits"]
    if kind == "features":
        return Features(model, contract).eval(), ["image"], list(spec.tap_names)
    if kind == "lpips":
        scorer = LPIPSScorer(LPIPS(model, heads.weights)).eval()
        return scorer, ["image_a", "image_b"], ["distance", "distance_map"]
    return DISTS(model, *heads.weights).eval(), ["image_a", "image_b"], ["distance"]


def export(
    spec: ArchSpec,
    num_classes: int,
    state: StateDict,
    kind: str,
    contract: InputContract,
    heads: Heads | None,
    path,
    opset: int,
    dynamic: bool = True,
) -> Callable[..., dict[str, np.ndarray]]:
    """Write the ONNX file; return the native model as numpy in, {output: array} out."""
    module, inputs, outputs = graph(spec, num_classes, state, kind, contract, heads)
    # A dynamic graph is traced where no tap is 1 x 1 and declared from 33 px: upsampling
    # a 1 x 1 map (LPIPS's distance_map on a 32 px ResNet) is a special case that
    # torch.export would otherwise bake in as a fixed size. The ONNX graph has no such
    # branch and runs at 32 px too (the parity probes check the native size).
    n = max(contract.native_size, 64) if dynamic else contract.native_size
    example = tuple(torch.rand(2, 3, n, n) for _ in inputs)
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
