"""Weight layouts of the torch and Keras twins of an architecture, and the moves between them.

The conversions are pure numpy, driven by the spec's layer layout:

| kind    | torch (state dict)                        | Keras (layer weights)              |
| ------- | ----------------------------------------- | ---------------------------------- |
| conv    | weight (out, in, kh, kw), bias            | kernel (kh, kw, in, out), bias     |
| linear  | weight (out, in), bias                    | kernel (in, out), bias             |
| linear after a flatten of (C, H, W)       | rows in C, H, W order   | rows in H, W, C order |
| bn      | weight, bias, running_mean, running_var   | gamma, beta, moving_mean, moving_variance |
| ln      | weight, bias                              | gamma, beta                        |
| tokens  | cls_token (1, 1, D), pos_embed (1, T, D)  | the same arrays                    |

Every value is moved, never recomputed, so a round trip reproduces it bit for bit.
torch's `num_batches_tracked` counter has no Keras counterpart; it comes back as 0
(it only matters for batch norm with `momentum=None`, which these models don't use).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bridge.core.spec import ArchSpec, LayerSpec, get_arch, layer_specs


def torch_to_keras(
    state_dict: Mapping[str, np.ndarray], arch: str | ArchSpec, num_classes: int | None = None
) -> dict[str, list[np.ndarray]]:
    """Convert a checked torch-layout state dict to Keras weights per layer name."""
    return {
        layer.name: _to_keras(layer, [np.asarray(state_dict[key]) for key, _ in layer.entries])
        for layer in layer_specs(arch, num_classes)
    }


def keras_to_torch(
    layer_weights: Mapping[str, Sequence[np.ndarray]],
    arch: str | ArchSpec,
    num_classes: int | None = None,
) -> dict[str, np.ndarray]:
    """Convert Keras weights per layer name to a torch-layout state dict.

    Raises:
        ValueError: If a layer of the architecture is missing or has the wrong
            number of weights.
    """
    spec = get_arch(arch)
    state = {}
    for layer in layer_specs(spec, num_classes):
        if layer.name not in layer_weights:
            raise ValueError(f"Keras weights lack layer '{layer.name}' of {spec.name}")
        arrays = _to_torch(layer, [np.asarray(w) for w in layer_weights[layer.name]])
        keys = [key for key, _ in layer.entries]
        if len(arrays) != len(keys):
            raise ValueError(
                f"Keras layer '{layer.name}' has {len(arrays)} weights, expected {len(keys)}"
            )
        state.update(zip(keys, arrays, strict=True))
    return state


def _to_keras(layer: LayerSpec, arrays: list[np.ndarray]) -> list[np.ndarray]:
    if layer.kind == "conv":
        return [arrays[0].transpose(2, 3, 1, 0), *arrays[1:]]
    if layer.kind == "linear":
        weight = arrays[0]
        if layer.flatten_chw is not None:
            c, h, w = layer.flatten_chw
            kernel = weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
        else:
            kernel = weight.T
        return [kernel, arrays[1]]
    if layer.kind == "bn":
        return arrays[:4]  # num_batches_tracked has no Keras counterpart
    if layer.kind in ("ln", "tokens"):
        return arrays
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def _to_torch(layer: LayerSpec, arrays: list[np.ndarray]) -> list[np.ndarray]:
    if layer.kind == "conv":
        return [arrays[0].transpose(3, 2, 0, 1), *arrays[1:]]
    if layer.kind == "linear":
        kernel = arrays[0]
        if layer.flatten_chw is not None:
            c, h, w = layer.flatten_chw
            weight = kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)
        else:
            weight = kernel.T
        return [weight, arrays[1]]
    if layer.kind == "bn":
        return [*arrays, np.zeros((), dtype=np.int64)]
    if layer.kind in ("ln", "tokens"):
        return arrays
    raise ValueError(f"unknown layer kind {layer.kind!r}")
