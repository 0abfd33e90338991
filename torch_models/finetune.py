"""Fitting LPIPS heads / DISTS alpha, beta to ratings in PyTorch, on a frozen backbone.

Both metrics are linear in their heads given per-channel terms, so the terms of every
(reference, comparison) pair are computed once with this framework's own LPIPS / DISTS
module, and only the heads are trained on them: full batch, Adam on the negative
Pearson correlation between case distances and ratings, projected onto heads >= 0
after every step (a clamp, as the original lpips training does). The term layout is
`bridge.core.fitting`'s; the protocol (folds, validation) is `bridge.fit_protocol`'s.
tf_models/finetune.py mirrors this file function for function.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from bridge.core.fitting import HEADS_SUM_FLOOR, FitConfig
from bridge.core.metrics import DISTS_C1, DISTS_C2, Heads
from bridge.core.spec import ArchSpec
from bridge.core.weights import StateDict
from torch_models.backbones import create_model
from torch_models.metrics import DISTS, LPIPS, normalize_channels

CORRELATION_EPS = 1e-12  # keeps the loss defined (0) when every distance is equal


def build_metric(
    metric: str, spec: ArchSpec, num_classes: int, state: StateDict, heads: Heads
) -> nn.Module:
    """This framework's LPIPS or DISTS module on a backbone with the given weights.

    Args:
        metric: `lpips` or `dists`.
        spec: The backbone.
        num_classes: Its head size (the state dict's).
        state: Torch-layout weights (`Source.state_dict()`), checked.
        heads: The heads the module carries (only its own distance uses them).
    """
    model = create_model(spec, num_classes, weights=state)
    if metric == "lpips":
        return LPIPS(model, heads.weights).eval()
    if metric == "dists":
        return DISTS(model, *heads.weights).eval()
    raise ValueError(f"unknown metric {metric!r}; expected lpips or dists")


@torch.no_grad()
def pair_terms(
    module: nn.Module, a: np.ndarray, b: np.ndarray, index: np.ndarray | None = None
) -> np.ndarray:
    """Per-channel terms of image pairs: the metric is linear in its heads given these.

    LPIPS: per tap and channel, the mean over positions of
    (normalize_channels(f_a) - normalize_channels(f_b))^2, taps concatenated.
    DISTS: per stage and channel (stage 0 = the raw image), first every texture term
    (2 mu_a mu_b + c1) / (mu_a^2 + mu_b^2 + c1), then every structure term
    (2 sigma_ab + c2) / (sigma_a^2 + sigma_b^2 + c2).

    Args:
        module: From `build_metric`.
        a: Reference images, NCHW float32 in [0, 1]: one per pair, one shared by every
            pair, or any number with `index`.
        b: Comparison images, NCHW float32 in [0, 1], one per pair.
        index: For each image of `b`, the row of `a` it is compared with (each image
            goes through the backbone once, however many pairs it is in).

    Returns:
        (N, T) float64: T = sum of tap channels (LPIPS) or 2 * (3 + sum) (DISTS).
    """
    fa = module.features(torch.from_numpy(np.ascontiguousarray(a, np.float32)))
    fb = module.features(torch.from_numpy(np.ascontiguousarray(b, np.float32)))
    if index is not None:
        rows = torch.as_tensor(np.asarray(index, np.int64))
        fa = [f[rows] for f in fa]
    if isinstance(module, LPIPS):
        terms = [
            ((normalize_channels(x) - normalize_channels(y)) ** 2).mean(dim=(2, 3))
            for x, y in zip(fa, fb, strict=True)
        ]
        return torch.cat(terms, dim=1).double().numpy()
    texture, structure = [], []
    for x, y in zip(fa, fb, strict=True):
        mx = x.mean(dim=(2, 3), keepdim=True)
        my = y.mean(dim=(2, 3), keepdim=True)
        texture.append(((2 * mx * my + DISTS_C1) / (mx**2 + my**2 + DISTS_C1)).flatten(1))
        vx = ((x - mx) ** 2).mean(dim=(2, 3), keepdim=True)
        vy = ((y - my) ** 2).mean(dim=(2, 3), keepdim=True)
        cov = (x * y).mean(dim=(2, 3), keepdim=True) - mx * my
        structure.append(((2 * cov + DISTS_C2) / (vx + vy + DISTS_C2)).flatten(1))
    return torch.cat([*texture, *structure], dim=1).double().numpy()


@torch.no_grad()
def pair_distances(module: nn.Module, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The module's own distances (N,) of image pairs (NCHW float32 in [0, 1])."""
    a = np.array(np.broadcast_to(a, b.shape), np.float32)
    b = np.ascontiguousarray(b, np.float32)
    return module(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def term_distances(metric: str, terms: Tensor, theta: Tensor) -> Tensor:
    """Distances from terms (N, T) and flat heads `theta` (T / 2 alpha, then beta for DISTS).

    LPIPS: terms @ theta. DISTS: 1 - terms @ theta / sum(theta), the joint normalisation
    of alpha and beta, the sum floored at `HEADS_SUM_FLOOR` (`bridge.core.fitting`).
    """
    if metric == "lpips":
        return terms @ theta
    return 1 - (terms @ theta) / theta.sum().clamp_min(HEADS_SUM_FLOOR)


def correlation_loss(distances: Tensor, target: Tensor) -> Tensor:
    """The negative Pearson correlation of distances with the target (scale-free)."""
    d = distances - distances.mean()
    y = target - target.mean()
    return -(d * y).sum() / torch.sqrt((d * d).sum() * (y * y).sum() + CORRELATION_EPS)


def fit_heads(
    metric: str,
    terms: np.ndarray,
    target: np.ndarray,
    start: np.ndarray,
    config: FitConfig,
    checkpoints: Iterable[int],
    trainable: np.ndarray | None = None,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Train flat heads on case terms: full-batch Adam on -Pearson, clamped at 0.

    Runs in float64 (the problem is tiny); deterministic, so nothing to seed. One epoch
    is one step over every case given.

    Args:
        metric: `lpips` or `dists`.
        terms: (cases, T) case terms (`pair_terms`, averaged over a case's comparisons).
        target: (cases,) the ratings to agree with (higher = more different).
        start: (T,) non-negative starting heads.
        config: Epochs and Adam's lr, beta1, beta2, eps.
        checkpoints: Epochs whose heads to return (0: the start).
        trainable: (T,) bool: the heads that move; the others keep their start (their
            gradient is zeroed, so Adam leaves them exactly). Default: all.

    Returns:
        Heads (T,) float64 per checkpoint epoch, and the training loss before every step
        (epochs,).
    """
    t = torch.as_tensor(np.asarray(terms, np.float64))
    y = torch.as_tensor(np.asarray(target, np.float64))
    theta = nn.Parameter(torch.as_tensor(np.array(start, np.float64)))
    mask = torch.as_tensor(np.ones(len(start)) if trainable is None else trainable, dtype=t.dtype)
    optimizer = torch.optim.Adam(
        [theta], lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps
    )
    wanted = set(checkpoints)
    snapshots = {0: theta.detach().numpy().copy()} if 0 in wanted else {}
    losses = np.empty(config.epochs)
    for epoch in range(1, config.epochs + 1):
        optimizer.zero_grad()
        loss = correlation_loss(term_distances(metric, t, theta), y)
        loss.backward()
        theta.grad.mul_(mask)
        optimizer.step()
        with torch.no_grad():
            theta.clamp_(min=0.0)
        losses[epoch - 1] = loss.item()
        if epoch in wanted:
            snapshots[epoch] = theta.detach().numpy().copy()
    return snapshots, losses
