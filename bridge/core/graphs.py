"""What an exported graph is built from, shared by the torch and Keras exporters.

`bridge.export` fills one `GraphSpec` per file and hands it to `torch_models.onnx` or
`tf_models.onnx`, whose `graph(g)` and `export(g, path, opset)` read the same fields
and name the graph's inputs and outputs from it, so both origins' files share one
interface.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.metrics import Heads
from bridge.core.runtime import EXPORT_KINDS, is_masked, metric_of
from bridge.core.spec import ArchSpec, InputContract
from bridge.core.weights import StateDict


@dataclass(frozen=True)
class GraphSpec:
    """One graph to export: what it computes, on which weights, behind which contract.

    Attributes:
        spec: The backbone.
        num_classes: Its head size (the state dict's).
        state: Torch-layout weights, checked (`bridge.export.Source.state_dict`).
        kind: `classifier`, `features`, `lpips`, `dists`, `lpips_masked` or
            `dists_masked`.
        contract: Input contract: the normalisation put inside the graph.
        heads: The scorer's heads (`lpips` and `dists` only).
    """

    spec: ArchSpec
    num_classes: int
    state: StateDict
    kind: str
    contract: InputContract
    heads: Heads | None = None

    def __post_init__(self):
        if self.kind not in EXPORT_KINDS:
            raise ValueError(
                f"unknown kind {self.kind!r}; expected one of {', '.join(EXPORT_KINDS)}"
            )
        if metric_of(self.kind) and self.heads is None:
            raise ValueError(f"a {self.kind} graph needs heads")

    @property
    def input_names(self) -> list[str]:
        """`image`, or `image_a`, `image_b` (+ `mask_a`, `mask_b` when masked) for a scorer.

        Images are float32 NCHW in [0, 1]; masks (N, 1, H, W) weights in [0, 1].
        """
        if not metric_of(self.kind):
            return ["image"]
        return ["image_a", "image_b"] + (["mask_a", "mask_b"] if is_masked(self.kind) else [])

    @property
    def input_channels(self) -> dict[str, int]:
        """Channels of each input: 3 for images, 1 for masks."""
        return {name: 1 if name.startswith("mask") else 3 for name in self.input_names}

    @property
    def output_names(self) -> list[str]:
        """`logits`, the taps (ViT class tokens as `<tap>_cls`) or `distance` (+ `distance_map`)."""
        if self.kind == "classifier":
            return ["logits"]
        if self.kind == "features":
            return list(self.spec.tap_names)
        return ["distance", "distance_map"] if metric_of(self.kind) == "lpips" else ["distance"]
