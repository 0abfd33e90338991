"""LPIPS and DISTS on dermsim Keras backbones: a pure functional core, thin models around it.

The formulas (docs/metrics.md) reproduce lpips 0.1.4 (`net="vgg"`, v0.1 linear
heads) and DISTS_pytorch 0.1 to float32 rounding when the backbone is ImageNet VGG16;
on other backbones (ResNet50, ViT-B/16, fine-tuned weights) they run with uniform heads
or heads the user fitted. Both take images in [0, 1], NHWC, and return one distance per
pair (0 = identical, lower = more similar). Written with `keras.ops`;
torch_models/metrics.py mirrors this file.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from bridge.core.metrics import DISTS_C1, DISTS_C2, LPIPS_EPS, dists_stages, lpips_input
from tf_models.backbones import features_model, set_torch_state_dict, torch_state_dict, vgg

# ------------------------------------------------------------- functional core


def normalize_channels(features, eps: float = LPIPS_EPS):
    """Unit-normalise every position's feature vector: f / (||f||_2 over channels + eps)."""
    return features / (ops.sqrt(ops.sum(features**2, axis=-1, keepdims=True)) + eps)


def lpips_maps(feats0: Sequence, feats1: Sequence, heads: Sequence) -> list:
    """Per-tap LPIPS maps: sum_c w_c (f0^ - f1^)^2, each (N, H_l, W_l, 1).

    Args:
        feats0: Taps of the first images (NHWC).
        feats1: Taps of the second images.
        heads: One weight vector (C_l,) per tap.
    """
    maps = []
    for f0, f1, w in zip(feats0, feats1, heads, strict=True):
        diff = (normalize_channels(f0) - normalize_channels(f1)) ** 2
        maps.append(ops.sum(diff * ops.reshape(w, (1, 1, 1, -1)), axis=-1, keepdims=True))
    return maps


def lpips_distance(feats0: Sequence, feats1: Sequence, heads: Sequence):
    """LPIPS: d = sum_l mean_hw sum_c w_lc (f0^ - f1^)^2, shape (N,)."""
    total = 0
    for m in lpips_maps(feats0, feats1, heads):
        total = total + ops.mean(m, axis=(1, 2, 3))
    return total


def lpips_spatial(feats0: Sequence, feats1: Sequence, heads: Sequence, size: tuple[int, int]):
    """LPIPS distance map (N, H, W, 1): each tap's map upsampled bilinearly, summed."""
    total = 0
    for m in lpips_maps(feats0, feats1, heads):
        total = total + ops.image.resize(m, size, interpolation="bilinear", antialias=False)
    return total


def dists_distance(feats0: Sequence, feats1: Sequence, alpha: Sequence, beta: Sequence):
    """DISTS: D = 1 - sum_stages sum_c (a~ l + b~ s), shape (N,).

    Texture l = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1), structure
    s = (2 sigma_xy + c2) / (sigma_x^2 + sigma_y^2 + c2), with global spatial moments;
    `alpha` / `beta` are already divided by their joint sum.
    """
    texture = 0
    structure = 0
    for x, y, a, b in zip(feats0, feats1, alpha, beta, strict=True):
        mx = ops.mean(x, axis=(1, 2), keepdims=True)
        my = ops.mean(y, axis=(1, 2), keepdims=True)
        lum = (2 * mx * my + DISTS_C1) / (mx**2 + my**2 + DISTS_C1)
        vx = ops.mean((x - mx) ** 2, axis=(1, 2), keepdims=True)
        vy = ops.mean((y - my) ** 2, axis=(1, 2), keepdims=True)
        cov = ops.mean(x * y, axis=(1, 2), keepdims=True) - mx * my
        s = (2 * cov + DISTS_C2) / (vx + vy + DISTS_C2)
        texture = texture + ops.sum(ops.reshape(a, (1, 1, 1, -1)) * lum, axis=(1, 2, 3))
        structure = structure + ops.sum(ops.reshape(b, (1, 1, 1, -1)) * s, axis=(1, 2, 3))
    return 1 - (texture + structure)


def area_matrix(n_in, n_out):
    """(n_out, n_in) averaging matrix of adaptive average pooling along one axis.

    Output cell i averages input cells floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out) - 1,
    the bins of torch's `adaptive_avg_pool2d`; written with integer arithmetic on the
    sizes so that it converts with dynamic sizes.
    """
    i = ops.reshape(ops.arange(n_out), (-1, 1))
    j = ops.reshape(ops.arange(n_in), (1, -1))
    start = ops.floor_divide(i * n_in, n_out)
    end = ops.floor_divide((i + 1) * n_in + n_out - 1, n_out)
    inside = ops.cast(ops.logical_and(j >= start, j < end), "float32")
    return inside / ops.cast(end - start, "float32")


def mask_to_grid(mask, size):
    """A mask (N, H, W, 1) brought to a tap's grid (h, w) by area averaging."""
    shape = ops.shape(mask)
    rows = area_matrix(shape[1], size[0])
    cols = area_matrix(shape[2], size[1])
    return ops.einsum("hH,nHWc,wW->nhwc", rows, mask, cols)


def _weighted_mean(x, weight):
    """Spatial mean of x (N, h, w, C) weighted by weight (N, h, w, 1), keepdims."""
    total = ops.sum(x * weight, axis=(1, 2), keepdims=True)
    return total / ops.sum(weight, axis=(1, 2), keepdims=True)


def lpips_distance_masked(feats0: Sequence, feats1: Sequence, heads: Sequence, mask0, mask1):
    """Masked LPIPS (docs/metrics.md): each tap's map averaged with the joint weight m0 m1.

    Each mask (N, H, W, 1, weights in [0, 1]) is brought to the tap's grid by area
    averaging; the per-position distances pair positions of both images, so they are
    weighted by the product of the two. All-ones masks give `lpips_distance`. An empty
    joint weight gives NaN (the scorers refuse such masks before they run).
    """
    total = 0
    for m, f in zip(lpips_maps(feats0, feats1, heads), feats0, strict=True):
        size = ops.shape(f)[1:3]
        joint = mask_to_grid(mask0, size) * mask_to_grid(mask1, size)
        total = total + _weighted_mean(m, joint)
    return ops.reshape(total, (-1,))


def dists_distance_masked(
    feats0: Sequence, feats1: Sequence, alpha: Sequence, beta: Sequence, mask0, mask1
):
    """Masked DISTS (docs/metrics.md): own-mask moments, a joint-weight covariance.

    Means and variances describe one image: each under its own mask. The covariance
    pairs positions of both images: under the joint weight m0 m1. All-ones masks give
    `dists_distance`.
    """
    texture = 0
    structure = 0
    for x, y, a, b in zip(feats0, feats1, alpha, beta, strict=True):
        size = ops.shape(x)[1:3]
        wx, wy = mask_to_grid(mask0, size), mask_to_grid(mask1, size)
        mx, my = _weighted_mean(x, wx), _weighted_mean(y, wy)
        lum = (2 * mx * my + DISTS_C1) / (mx**2 + my**2 + DISTS_C1)
        vx = _weighted_mean((x - mx) ** 2, wx)
        vy = _weighted_mean((y - my) ** 2, wy)
        cov = _weighted_mean((x - mx) * (y - my), wx * wy)
        s = (2 * cov + DISTS_C2) / (vx + vy + DISTS_C2)
        texture = texture + ops.sum(ops.reshape(a, (1, 1, 1, -1)) * lum, axis=(1, 2, 3))
        structure = structure + ops.sum(ops.reshape(b, (1, 1, 1, -1)) * s, axis=(1, 2, 3))
    return 1 - (texture + structure)


# --------------------------------------------------------------------- modules


class LPIPS(keras.Model):
    """LPIPS on a dermsim Keras backbone's taps; call with `(a, b)` NHWC in [0, 1].

    On VGG16 the input goes through lpips's own scaling (2x - 1, then shift / scale);
    on other backbones through the backbone's input contract.

    Args:
        backbone: A `tf_models.create_model` backbone (its taps are used).
        heads: One non-negative weight vector per tap (`bridge.core.metrics` loads them).
        taps: Tap names to use (default: the backbone's conv / grid taps).
    """

    def __init__(
        self, backbone: keras.Model, heads: Sequence[np.ndarray], taps: Sequence[str] | None = None
    ):
        super().__init__()
        self.spec = backbone.spec
        self.taps = list(taps or [t.name for t in backbone.spec.taps])
        if len(heads) != len(self.taps):
            raise ValueError(f"LPIPS needs one head per tap ({len(self.taps)}), got {len(heads)}")
        self.extractor = features_model(backbone)
        self.heads = [np.asarray(w, np.float32).reshape(-1) for w in heads]
        shift, scale = lpips_input(backbone.spec)
        self.shift = np.asarray(shift, np.float32).reshape(1, 1, 1, 3)
        self.scale = np.asarray(scale, np.float32).reshape(1, 1, 1, 3)

    def features(self, x) -> list:
        """The taps of images in [0, 1]."""
        taps = self.extractor((x - self.shift) / self.scale, training=False)
        return [taps[name] for name in self.taps]

    def call(self, inputs):
        a, b = inputs
        return lpips_distance(self.features(a), self.features(b), self.heads)

    def spatial(self, a, b):
        """Distance maps (N, H, W, 1) at the input resolution."""
        size = (a.shape[1], a.shape[2])
        return lpips_spatial(self.features(a), self.features(b), self.heads, size)

    def masked(self, a, b, mask_a, mask_b):
        """Masked distances (N,); masks (N, H, W, 1) in [0, 1] (`lpips_distance_masked`)."""
        return lpips_distance_masked(self.features(a), self.features(b), self.heads, mask_a, mask_b)


class DISTS(keras.Model):
    """DISTS on a dermsim Keras backbone; call with `(a, b)` NHWC in [0, 1].

    Stage 0 is the raw image, then the taps. ImageNet normalisation (the backbone's
    contract) comes after stage 0. On VGG every max-pool is replaced by L2 pooling, as
    in DISTS_pytorch (a rebuilt VGG, same weights).

    Args:
        backbone: A `tf_models.create_model` backbone.
        alpha: Texture weights, one per channel of [image, taps...] (3 + sum C).
        beta: Structure weights, same shape.
        taps: Tap names (default: the backbone's conv / grid taps).
    """

    def __init__(
        self,
        backbone: keras.Model,
        alpha: np.ndarray,
        beta: np.ndarray,
        taps: Sequence[str] | None = None,
    ):
        super().__init__()
        spec = backbone.spec
        self.spec = spec
        self.taps = list(taps or [t.name for t in spec.taps])
        self.chns, alpha, beta = dists_stages(spec, self.taps, alpha, beta)
        if spec.family == "vgg":
            pooled = vgg(spec, int(backbone.get_layer(spec.head).units), pooling="l2")
            pooled.spec = spec
            set_torch_state_dict(pooled, torch_state_dict(backbone))
            backbone = pooled
        self.extractor = features_model(backbone)
        total = alpha.sum() + beta.sum()
        bounds = np.cumsum(self.chns)[:-1]
        self.alpha = np.split(alpha / total, bounds)
        self.beta = np.split(beta / total, bounds)
        self.mean = np.asarray(spec.contract.mean, np.float32).reshape(1, 1, 1, 3)
        self.std = np.asarray(spec.contract.std, np.float32).reshape(1, 1, 1, 3)

    def features(self, x) -> list:
        """Stage 0 (the raw image) and the taps."""
        taps = self.extractor((x - self.mean) / self.std, training=False)
        return [x, *(taps[name] for name in self.taps)]

    def call(self, inputs):
        a, b = inputs
        return dists_distance(self.features(a), self.features(b), self.alpha, self.beta)

    def masked(self, a, b, mask_a, mask_b):
        """Masked distances (N,); masks (N, H, W, 1) in [0, 1] (`dists_distance_masked`)."""
        return dists_distance_masked(
            self.features(a), self.features(b), self.alpha, self.beta, mask_a, mask_b
        )
