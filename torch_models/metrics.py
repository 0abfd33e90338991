"""LPIPS and DISTS on dermsim backbones: a pure functional core, thin modules around it.

The formulas (docs/metrics.md) reproduce lpips 0.1.4 (`net="vgg"`, v0.1 linear
heads) and DISTS_pytorch 0.1 exactly when the backbone is ImageNet VGG16; on other
backbones (ResNet50, ViT-B/16, fine-tuned weights) they run with uniform heads or
heads the user fitted. Both take images in [0, 1], NCHW, and return one distance per
pair (0 = identical, lower = more similar). tf_models/metrics.py mirrors this file.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bridge.core.metrics import DISTS_C1, DISTS_C2, LPIPS_EPS, dists_stages, lpips_input
from torch_models.backbones import L2Pooling2D

# ------------------------------------------------------------- functional core


def normalize_channels(features: Tensor, eps: float = LPIPS_EPS) -> Tensor:
    """Unit-normalise every position's feature vector: f / (||f||_2 over channels + eps)."""
    return features / (torch.sqrt(torch.sum(features**2, dim=1, keepdim=True)) + eps)


def lpips_maps(
    feats0: Sequence[Tensor], feats1: Sequence[Tensor], heads: Sequence[Tensor]
) -> list[Tensor]:
    """Per-tap LPIPS maps: sum_c w_c (f0^ - f1^)^2, each (N, 1, H_l, W_l).

    Args:
        feats0: Taps of the first images (NCHW).
        feats1: Taps of the second images.
        heads: One weight vector (C_l,) per tap.
    """
    maps = []
    for f0, f1, w in zip(feats0, feats1, heads, strict=True):
        diff = (normalize_channels(f0) - normalize_channels(f1)) ** 2
        maps.append(F.conv2d(diff, w.reshape(1, -1, 1, 1)))
    return maps


def lpips_distance(
    feats0: Sequence[Tensor], feats1: Sequence[Tensor], heads: Sequence[Tensor]
) -> Tensor:
    """LPIPS: d = sum_l mean_hw sum_c w_lc (f0^ - f1^)^2, shape (N,)."""
    total = 0
    for m in lpips_maps(feats0, feats1, heads):
        total = total + m.mean(dim=(2, 3), keepdim=True)
    return total.reshape(-1)


def lpips_spatial(
    feats0: Sequence[Tensor],
    feats1: Sequence[Tensor],
    heads: Sequence[Tensor],
    size: tuple[int, int],
) -> Tensor:
    """LPIPS distance map (N, 1, H, W): each tap's map upsampled bilinearly, summed."""
    total = 0
    for m in lpips_maps(feats0, feats1, heads):
        total = total + F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return total


def dists_distance(
    feats0: Sequence[Tensor],
    feats1: Sequence[Tensor],
    alpha: Sequence[Tensor],
    beta: Sequence[Tensor],
) -> Tensor:
    """DISTS: D = 1 - sum_stages sum_c (a~ l + b~ s), shape (N,).

    Texture l = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1), structure
    s = (2 sigma_xy + c2) / (sigma_x^2 + sigma_y^2 + c2), with global spatial moments;
    `alpha` / `beta` are already divided by their joint sum.
    """
    texture = 0
    structure = 0
    for x, y, a, b in zip(feats0, feats1, alpha, beta, strict=True):
        mx = x.mean(dim=(2, 3), keepdim=True)
        my = y.mean(dim=(2, 3), keepdim=True)
        lum = (2 * mx * my + DISTS_C1) / (mx**2 + my**2 + DISTS_C1)
        vx = ((x - mx) ** 2).mean(dim=(2, 3), keepdim=True)
        vy = ((y - my) ** 2).mean(dim=(2, 3), keepdim=True)
        cov = (x * y).mean(dim=(2, 3), keepdim=True) - mx * my
        s = (2 * cov + DISTS_C2) / (vx + vy + DISTS_C2)
        texture = texture + (a.reshape(1, -1, 1, 1) * lum).sum(dim=1, keepdim=True)
        structure = structure + (b.reshape(1, -1, 1, 1) * s).sum(dim=1, keepdim=True)
    return (1 - (texture + structure)).reshape(-1)


def area_matrix(n_in, n_out) -> Tensor:
    """(n_out, n_in) averaging matrix of adaptive average pooling along one axis.

    Output cell i averages input cells floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out) - 1,
    the bins of `adaptive_avg_pool2d`; written with integer arithmetic on the sizes so
    that it exports with dynamic sizes.
    """
    i = torch.arange(n_out).reshape(-1, 1)
    j = torch.arange(n_in).reshape(1, -1)
    start = torch.div(i * n_in, n_out, rounding_mode="floor")
    end = torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
    inside = ((j >= start) & (j < end)).to(torch.float32)
    return inside / (end - start).to(torch.float32)


def mask_to_grid(mask: Tensor, size) -> Tensor:
    """A mask (N, 1, H, W) brought to a tap's grid (h, w) by area averaging."""
    rows = area_matrix(mask.shape[2], size[0])
    cols = area_matrix(mask.shape[3], size[1])
    return torch.matmul(torch.matmul(rows, mask), cols.transpose(0, 1))


def _weighted_mean(x: Tensor, weight: Tensor) -> Tensor:
    """Spatial mean of x (N, C, h, w) weighted by weight (N, 1, h, w), keepdim."""
    return (x * weight).sum(dim=(2, 3), keepdim=True) / weight.sum(dim=(2, 3), keepdim=True)


def lpips_distance_masked(
    feats0: Sequence[Tensor],
    feats1: Sequence[Tensor],
    heads: Sequence[Tensor],
    mask0: Tensor,
    mask1: Tensor,
) -> Tensor:
    """Masked LPIPS (docs/metrics.md): each tap's map averaged with the joint weight m0 m1.

    Each mask (N, 1, H, W, weights in [0, 1]) is brought to the tap's grid by area
    averaging; the per-position distances pair positions of both images, so they are
    weighted by the product of the two. All-ones masks give `lpips_distance`. An empty
    joint weight gives NaN (the scorers refuse such masks before they run).
    """
    total = 0
    for m, f in zip(lpips_maps(feats0, feats1, heads), feats0, strict=True):
        size = (f.shape[2], f.shape[3])
        joint = mask_to_grid(mask0, size) * mask_to_grid(mask1, size)
        total = total + _weighted_mean(m, joint)
    return total.reshape(-1)


def dists_distance_masked(
    feats0: Sequence[Tensor],
    feats1: Sequence[Tensor],
    alpha: Sequence[Tensor],
    beta: Sequence[Tensor],
    mask0: Tensor,
    mask1: Tensor,
) -> Tensor:
    """Masked DISTS (docs/metrics.md): own-mask moments, a joint-weight covariance.

    Means and variances describe one image: each under its own mask. The covariance
    pairs positions of both images: under the joint weight m0 m1. All-ones masks give
    `dists_distance`.
    """
    texture = 0
    structure = 0
    for x, y, a, b in zip(feats0, feats1, alpha, beta, strict=True):
        size = (x.shape[2], x.shape[3])
        wx, wy = mask_to_grid(mask0, size), mask_to_grid(mask1, size)
        mx, my = _weighted_mean(x, wx), _weighted_mean(y, wy)
        lum = (2 * mx * my + DISTS_C1) / (mx**2 + my**2 + DISTS_C1)
        vx = _weighted_mean((x - mx) ** 2, wx)
        vy = _weighted_mean((y - my) ** 2, wy)
        cov = _weighted_mean((x - mx) * (y - my), wx * wy)
        s = (2 * cov + DISTS_C2) / (vx + vy + DISTS_C2)
        texture = texture + (a.reshape(1, -1, 1, 1) * lum).sum(dim=1, keepdim=True)
        structure = structure + (b.reshape(1, -1, 1, 1) * s).sum(dim=1, keepdim=True)
    return (1 - (texture + structure)).reshape(-1)


# --------------------------------------------------------------------- modules


class LPIPS(nn.Module):
    """LPIPS on a dermsim backbone's taps; call with `(a, b)` NCHW in [0, 1].

    On VGG16 the input goes through lpips's own scaling (2x - 1, then shift / scale);
    on other backbones through the backbone's input contract.

    Args:
        backbone: A `torch_models.create_model` backbone (its taps are used).
        heads: One non-negative weight vector per tap (`bridge.core.metrics` loads them).
        taps: Tap names to use (default: the backbone's conv / grid taps).
    """

    def __init__(
        self, backbone: nn.Module, heads: Sequence[np.ndarray], taps: Sequence[str] | None = None
    ):
        super().__init__()
        self.backbone = backbone.eval()
        self.taps = list(taps or [t.name for t in backbone.spec.taps])
        if len(heads) != len(self.taps):
            raise ValueError(f"LPIPS needs one head per tap ({len(self.taps)}), got {len(heads)}")
        for i, w in enumerate(heads):
            self.register_buffer(f"head{i}", torch.as_tensor(np.asarray(w, np.float32)).reshape(-1))
        shift, scale = lpips_input(backbone.spec)
        self.register_buffer("input_shift", torch.tensor(shift).reshape(1, 3, 1, 1))
        self.register_buffer("input_scale", torch.tensor(scale).reshape(1, 3, 1, 1))

    @property
    def heads(self) -> list[Tensor]:
        """The per-tap weight vectors."""
        return [getattr(self, f"head{i}") for i in range(len(self.taps))]

    def features(self, x: Tensor) -> list[Tensor]:
        """The taps of images in [0, 1]."""
        taps = self.backbone.forward_features((x - self.input_shift) / self.input_scale)
        return [taps[name] for name in self.taps]

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Distances (N,) between two batches of images in [0, 1]."""
        return lpips_distance(self.features(a), self.features(b), self.heads)

    def spatial(self, a: Tensor, b: Tensor) -> Tensor:
        """Distance maps (N, 1, H, W) at the input resolution."""
        return lpips_spatial(self.features(a), self.features(b), self.heads, tuple(a.shape[2:]))

    def masked(self, a: Tensor, b: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
        """Masked distances (N,); masks (N, 1, H, W) in [0, 1] (`lpips_distance_masked`)."""
        return lpips_distance_masked(self.features(a), self.features(b), self.heads, mask_a, mask_b)


class DISTS(nn.Module):
    """DISTS on a dermsim backbone; call with `(a, b)` NCHW in [0, 1].

    Stage 0 is the raw image, then the taps. ImageNet normalisation (the backbone's
    contract) comes after stage 0. On VGG every max-pool is replaced by L2 pooling, as
    in DISTS_pytorch (on a copy, same weights).

    Args:
        backbone: A `torch_models.create_model` backbone.
        alpha: Texture weights, one per channel of [image, taps...] (3 + sum C).
        beta: Structure weights, same shape.
        taps: Tap names (default: the backbone's conv / grid taps).
    """

    def __init__(
        self,
        backbone: nn.Module,
        alpha: np.ndarray,
        beta: np.ndarray,
        taps: Sequence[str] | None = None,
    ):
        super().__init__()
        spec = backbone.spec
        self.taps = list(taps or [t.name for t in spec.taps])
        self.chns, alpha, beta = dists_stages(spec, self.taps, alpha, beta)
        if spec.family == "vgg":  # on a copy: the caller's backbone keeps its max-pools
            backbone = copy.deepcopy(backbone)
            for i, layer in enumerate(backbone.features):
                if isinstance(layer, nn.MaxPool2d):
                    backbone.features[i] = L2Pooling2D(_channels_before(backbone.features, i))
        self.backbone = backbone.eval()
        self.register_buffer("dists_alpha", torch.from_numpy(alpha))
        self.register_buffer("dists_beta", torch.from_numpy(beta))
        self.register_buffer("input_mean", torch.tensor(spec.contract.mean).reshape(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(spec.contract.std).reshape(1, 3, 1, 1))

    def weights(self) -> tuple[list[Tensor], list[Tensor]]:
        """Return alpha and beta divided by their joint sum, split per stage."""
        total = self.dists_alpha.sum() + self.dists_beta.sum()
        alpha = torch.split(self.dists_alpha / total, self.chns)
        return list(alpha), list(torch.split(self.dists_beta / total, self.chns))

    def features(self, x: Tensor) -> list[Tensor]:
        """Stage 0 (the raw image) and the taps."""
        taps = self.backbone.forward_features((x - self.input_mean) / self.input_std)
        return [x, *(taps[name] for name in self.taps)]

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Distances (N,) between two batches of images in [0, 1]."""
        alpha, beta = self.weights()
        return dists_distance(self.features(a), self.features(b), alpha, beta)

    def masked(self, a: Tensor, b: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
        """Masked distances (N,); masks (N, 1, H, W) in [0, 1] (`dists_distance_masked`)."""
        alpha, beta = self.weights()
        return dists_distance_masked(
            self.features(a), self.features(b), alpha, beta, mask_a, mask_b
        )


def _channels_before(features: nn.Sequential, index: int) -> int:
    for layer in reversed(features[:index]):
        if isinstance(layer, nn.Conv2d):
            return layer.out_channels
    raise ValueError("no convolution before the pooling layer")
