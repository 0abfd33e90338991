"""Classical (non-learned) baselines between two image regions: SSIM, PSNR, colour, texture.

Regions are HxWx3 float32 RGB in [0, 1], as `bridge.core.data.image.decode_image` and
`crop` give them. Every metric except `delta_e` first brings both regions to a
common `size` x `size` with the project's one resize (`bridge.core.data.image.fit`);
`delta_e` compares mean colours and takes the regions as given. scikit-image,
OpenCV and numpy compute the statistics; the maths is float64.

    scores = classical_scores(region_a, region_b)            # every metric
    scores = classical_scores(region_a, region_b, metrics=["ssim", "delta_e"])
    many = classical_many(lesion, [region_1, region_2])      # {metric: (K,) array}

`CLASSICAL` describes each metric (direction, range, whether it resizes) as plain
data, in the manner of pyiqa's `default_model_configs`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.feature import graycomatrix, graycoprops
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bridge.core.data.image import DEFAULT_POLICY, INTERPOLATIONS, RESIZE_POLICIES, fit

PSNR_CAP = 100.0
"""PSNR (dB) reported for identical regions, whose true PSNR is infinite."""

MIN_SIZE = 11
"""Smallest common side: SSIM's Gaussian window (sigma 1.5) spans 11 x 11 pixels."""

SSIM_OPTIONS = {
    "channel_axis": -1,
    "data_range": 1.0,
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
}
"""Keyword arguments of `skimage.metrics.structural_similarity` (Wang et al. 2004)."""

HIST_BINS = 8
"""Bins per CIELAB channel of the joint colour histogram (8^3 = 512 cells)."""
HIST_RANGE = ((0.0, 100.0), (-128.0, 127.0), (-128.0, 127.0))
"""Histogram range of L*, a*, b*; values outside are clipped into the edge bins."""

GLCM_LEVELS = 32
"""Grey levels the BT.601 luma is quantised to before the co-occurrence matrix."""
GLCM_DISTANCES = (1, 2, 4)
"""Pixel offsets of the co-occurrence matrices."""
GLCM_ANGLES = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)
"""Offset directions; the properties are averaged over them."""
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
"""`skimage.feature.graycoprops` properties of the texture vector."""
LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G, B."""


@dataclass(frozen=True)
class ClassicalInfo:
    """What a classical metric measures and how to read its score.

    Attributes:
        name: Key in `CLASSICAL` and in the score dictionaries.
        lower_better: True for a distance (0 = identical), False for a similarity.
        score_range: Smallest and largest possible score (`math.inf` when unbounded).
        description: One line on what is compared.
        needs_resize: Whether both regions are first fitted to `size` x `size`.
    """

    name: str
    lower_better: bool
    score_range: tuple[float, float]
    description: str
    needs_resize: bool


CLASSICAL: dict[str, ClassicalInfo] = {
    info.name: info
    for info in (
        ClassicalInfo(
            "ssim",
            True,
            (0.0, 2.0),
            "1 - SSIM (Gaussian 11x11 window, sigma 1.5, per RGB channel, averaged)",
            True,
        ),
        ClassicalInfo(
            "psnr",
            False,
            (0.0, PSNR_CAP),
            f"peak signal-to-noise ratio in dB (data range 1; identical regions: {PSNR_CAP:g})",
            True,
        ),
        ClassicalInfo(
            "delta_e",
            True,
            (0.0, math.inf),
            "CIEDE2000 colour difference of the regions' mean CIELAB colours (no resize)",
            False,
        ),
        ClassicalInfo(
            "histogram",
            True,
            (0.0, 1.0),
            "Bhattacharyya distance of joint 8x8x8-bin CIELAB colour histograms",
            True,
        ),
        ClassicalInfo(
            "glcm",
            True,
            (0.0, 1.0),
            "mean relative difference of grey-level co-occurrence texture properties",
            True,
        ),
    )
}
"""The classical metrics by name, in the order `classical_scores` reports them."""


@dataclass
class _Prepared:
    """The forms of one region that the requested metrics compare (None: not needed)."""

    fitted: np.ndarray | None = None  # size x size x 3 float64 RGB
    mean_lab: np.ndarray | None = None  # (3,) mean CIELAB of the region as given
    hist: np.ndarray | None = None  # (8, 8, 8) joint CIELAB histogram counts
    texture: np.ndarray | None = None  # (len(GLCM_PROPS) * len(GLCM_DISTANCES),)


def classical_scores(
    a: np.ndarray,
    b: np.ndarray,
    size: int = 128,
    policy: str = DEFAULT_POLICY,
    metrics: Sequence[str] | None = None,
    interpolation: str = "bilinear",
) -> dict[str, float]:
    """Classical scores between two regions.

    Args:
        a: First region, HxWx3 RGB in [0, 1].
        b: Second region, HxWx3 RGB in [0, 1]; its size may differ from `a`'s.
        size: Common side both regions are fitted to (all metrics but `delta_e`).
        policy: Resize policy of `bridge.core.data.image.fit`.
        metrics: Names from `CLASSICAL` (default: all of them).
        interpolation: Resampling filter of the fit.

    Returns:
        {metric: score}, in `CLASSICAL` order; see `CLASSICAL` for each direction.

    Raises:
        ValueError: On an unknown metric, policy or interpolation, a size below
            `MIN_SIZE`, or a region that is not HxWx3, holds NaN / inf, or lies
            outside [0, 1].
    """
    names = _metric_names(metrics)
    _check_options(size, policy, interpolation)
    pa = _prepare(a, "a", names, size, policy, interpolation)
    pb = _prepare(b, "b", names, size, policy, interpolation)
    return {name: _compare(name, pa, pb) for name in names}


def classical_many(
    reference: np.ndarray,
    others: Sequence[np.ndarray],
    size: int = 128,
    policy: str = DEFAULT_POLICY,
    metrics: Sequence[str] | None = None,
    interpolation: str = "bilinear",
) -> dict[str, np.ndarray]:
    """Classical scores of one reference region (a lesion) against K other regions.

    The reference is fitted, converted and described once, not K times.

    Args:
        reference: Reference region, HxWx3 RGB in [0, 1].
        others: The K regions compared with it (any sizes).
        size: Common side the regions are fitted to (all metrics but `delta_e`).
        policy: Resize policy of `bridge.core.data.image.fit`.
        metrics: Names from `CLASSICAL` (default: all of them).
        interpolation: Resampling filter of the fit.

    Returns:
        {metric: (K,) float64 scores}, in `CLASSICAL` order.

    Raises:
        ValueError: As `classical_scores`; the message names the bad region.
    """
    names = _metric_names(metrics)
    _check_options(size, policy, interpolation)
    ref = _prepare(reference, "reference", names, size, policy, interpolation)
    out = {name: np.empty(len(others), dtype=np.float64) for name in names}
    for k, other in enumerate(others):
        prepared = _prepare(other, f"others[{k}]", names, size, policy, interpolation)
        for name in names:
            out[name][k] = _compare(name, ref, prepared)
    return out


# ------------------------------------------------------------------ checks


def _metric_names(metrics: Sequence[str] | str | None) -> list[str]:
    """The requested metric names, checked, without repeats, in `CLASSICAL` order."""
    if metrics is None:
        return list(CLASSICAL)
    requested = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in requested if m not in CLASSICAL]
    if unknown:
        raise ValueError(
            f"unknown classical metric(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(CLASSICAL)}"
        )
    if not requested:
        raise ValueError(f"no metrics requested; expected some of {', '.join(CLASSICAL)}")
    return [m for m in CLASSICAL if m in requested]


def _check_options(size: int, policy: str, interpolation: str) -> None:
    if int(size) != size or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE} (SSIM's window), got {size}")
    if policy not in RESIZE_POLICIES:
        raise ValueError(
            f"unknown resize policy {policy!r}; expected one of {', '.join(RESIZE_POLICIES)}"
        )
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"unknown interpolation {interpolation!r}; expected one of {', '.join(INTERPOLATIONS)}"
        )


def _check_region(image: np.ndarray, name: str) -> np.ndarray:
    """The region as float32 HxWx3, or a ValueError saying what is wrong with it."""
    x = np.asarray(image)
    if x.ndim != 3 or x.shape[2] != 3 or min(x.shape[:2]) < 1:
        raise ValueError(f"region {name}: expected an H x W x 3 RGB image, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"region {name}: expected float RGB in [0, 1], got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"region {name}: holds NaN or infinite pixels")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(
            f"region {name}: expected values in [0, 1], got {x.min():.3g} .. {x.max():.3g}"
        )
    return np.asarray(x, dtype=np.float32)


# ------------------------------------------------------------------ prepared forms


def _prepare(
    image: np.ndarray, name: str, metrics: Sequence[str], size: int, policy: str, interpolation: str
) -> _Prepared:
    """Check a region and compute the forms `metrics` compare."""
    region = _check_region(image, name)
    out = _Prepared()
    if "delta_e" in metrics:
        out.mean_lab = rgb2lab(region.astype(np.float64)).reshape(-1, 3).mean(axis=0)
    if any(CLASSICAL[m].needs_resize for m in metrics):
        # bicubic may overshoot [0, 1] a little; CIELAB and data_range=1 assume it does not
        fitted = fit(region, int(size), policy, interpolation).astype(np.float64)
        out.fitted = np.clip(fitted, 0.0, 1.0)
        if "histogram" in metrics:
            out.hist = lab_histogram(out.fitted)
        if "glcm" in metrics:
            out.texture = glcm_vector(out.fitted)
    return out


def lab_histogram(rgb: np.ndarray) -> np.ndarray:
    """Joint CIELAB histogram counts of an HxWx3 RGB image in [0, 1].

    `HIST_BINS` bins per channel over `HIST_RANGE` (values outside it are clipped
    into the edge bins).

    Returns:
        A (HIST_BINS, HIST_BINS, HIST_BINS) float64 array of pixel counts.
    """
    lab = rgb2lab(np.asarray(rgb, dtype=np.float64)).reshape(-1, 3)
    low, high = np.array(HIST_RANGE).T
    counts, _ = np.histogramdd(np.clip(lab, low, high), bins=HIST_BINS, range=HIST_RANGE)
    return counts


def glcm_vector(rgb: np.ndarray) -> np.ndarray:
    """Texture descriptor of an HxWx3 RGB image in [0, 1].

    BT.601 luma quantised to `GLCM_LEVELS` grey levels; symmetric, normalised
    co-occurrence matrices at `GLCM_DISTANCES` x `GLCM_ANGLES`; each of
    `GLCM_PROPS` averaged over the angles. A constant image has an undefined
    correlation, taken as 1.

    Returns:
        A float64 vector of `len(GLCM_PROPS) * len(GLCM_DISTANCES)` values, property
        major.
    """
    luma = np.asarray(rgb, dtype=np.float64) @ np.array(LUMA)
    grey = np.clip(np.floor(luma * GLCM_LEVELS), 0, GLCM_LEVELS - 1).astype(np.uint8)
    matrices = graycomatrix(
        grey, GLCM_DISTANCES, GLCM_ANGLES, levels=GLCM_LEVELS, symmetric=True, normed=True
    )
    props = [graycoprops(matrices, prop).mean(axis=1) for prop in GLCM_PROPS]
    return np.nan_to_num(np.concatenate(props), nan=1.0)


# ------------------------------------------------------------------ comparisons


def _compare(metric: str, a: _Prepared, b: _Prepared) -> float:
    """One metric between two prepared regions."""
    if metric == "ssim":
        return 1.0 - float(structural_similarity(a.fitted, b.fitted, **SSIM_OPTIONS))
    if metric == "psnr":
        with np.errstate(divide="ignore"):  # identical regions: 10 log10(1 / 0) = inf
            value = float(peak_signal_noise_ratio(a.fitted, b.fitted, data_range=1.0))
        return min(value, PSNR_CAP)
    if metric == "delta_e":
        return float(deltaE_ciede2000(a.mean_lab, b.mean_lab))
    if metric == "histogram":
        return bhattacharyya(a.hist, b.hist)
    if metric == "glcm":
        return relative_difference(a.texture, b.texture)
    raise ValueError(f"unknown classical metric {metric!r}; expected one of {', '.join(CLASSICAL)}")


def bhattacharyya(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """Bhattacharyya distance of two histograms, as OpenCV's `HISTCMP_BHATTACHARYYA`.

    `sqrt(1 - sum(sqrt(p * q)))` of the histograms normalised to sum 1, computed
    from the counts (the same value) so that identical histograms give exactly 0.

    Raises:
        ValueError: If the shapes differ or a histogram is empty.
    """
    p = np.asarray(counts_a, dtype=np.float64)
    q = np.asarray(counts_b, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms of the same shape expected, got {p.shape} and {q.shape}")
    total = math.sqrt(float(p.sum()) * float(q.sum()))
    if total <= 0:
        raise ValueError("expected non-empty histograms")
    coefficient = float(np.sqrt(p * q).sum()) / total
    return math.sqrt(max(0.0, 1.0 - coefficient))


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of `|a - b| / (|a| + |b| + 1e-12)` over two vectors: in [0, 1], 0 if equal."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.mean(np.abs(a - b) / (np.abs(a) + np.abs(b) + 1e-12)))
