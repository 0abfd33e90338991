"""What an exported graph is built from, shared by the torch and Keras exporters.

`bridge.export` fills one `GraphSpec` per file and hands it to `torch_models.onnx` or
`tf_models.onnx`, whose `graph(g)` and `export(g, path, opset)` read the same fields
and name the graph's inputs and outputs from it, so both origins' files share one
interface.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.metrics import Heads
from bridge.core.runtime import KINDS, SCORER_KINDS
from bridge.core.spec import ArchSpec, InputContract
from bridge.core.weights import StateDict


@dataclass(frozen=True)
class GraphSpec:
    """One graph to export: what it computes, on which weights, behind which contract.

    Attributes:
        spec: The backbone.
        num_classes: Its head size (the state dict's).
        state: Torch-layout weights, checked (`bridge.export.Source.state_dict`).
        kind: `classifier`, `features`, `lpips` or `dists`.
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
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind in SCORER_KINDS and self.heads is None:
            raise ValueError(f"a {self.kind} graph needs heads")

    @property
    def input_names(self) -> list[str]:
        """`image`, or `image_a` and `image_b` for a scorer (float32 NCHW in [0, 1])."""
        return ["image_a", "image_b"] if self.kind in SCORER_KINDS else ["image"]

    @property
    def output_names(self) -> list[str]:
        """`logits`, the taps (ViT class tokens as `<tap>_cls`) or `distance` (+ `distance_map`)."""
        if self.kind == "classifier":
            return ["logits"]
        if self.kind == "features":
            return list(self.spec.tap_names)
        return ["distance", "distance_map"] if self.kind == "lpips" else ["distance"]
