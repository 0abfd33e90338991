"""evaluation.classical: SSIM, PSNR, CIEDE2000, colour histogram and GLCM baselines."""

import math

import cv2
import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.feature import graycomatrix, graycoprops
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bridge.core.data.image import fit
from evaluation.classical import (
    CLASSICAL,
    PSNR_CAP,
    ClassicalInfo,
    classical_many,
    classical_scores,
)

DISTANCES = [name for name, info in CLASSICAL.items() if info.lower_better]


def skin(height=96, width=120, seed=0):
    """A smooth skin-like region with blobs and mild texture, well inside [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([0.55 + 0.1 * xx, 0.4 + 0.05 * yy, 0.35 + 0.05 * xx * yy], axis=-1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.15)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        base = base - 0.15 * blob * np.array([1.0, 1.2, 1.0])
    base = base + rng.normal(0, 0.01, base.shape)
    return np.clip(base, 0, 1).astype(np.float32)


def shifted(image, amount):
    """A colour cast: redder, less blue."""
    out = image + np.array([amount, 0.0, -amount / 2], np.float32)
    return np.clip(out, 0, 1).astype(np.float32)


def striped(image, amplitude, period=4):
    stripes = amplitude * np.sin(2 * np.pi * np.arange(image.shape[1]) / period)
    return np.clip(image + stripes[None, :, None], 0, 1).astype(np.float32)


def noisy(image, sigma, seed=1):
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 1).astype(np.float32)


def prepared(image, size=128, policy="shorter_center_crop"):
    return fit(image, size, policy, "bilinear").astype(np.float64)


def bhattacharyya_reference(a, b):
    """Normalised joint CIELAB histograms and the Bhattacharyya distance, plainly."""
    hists = []
    for image in (a, b):
        lab = rgb2lab(image).reshape(-1, 3)
        hist, _ = np.histogramdd(lab, bins=8, range=[(0, 100), (-128, 127), (-128, 127)])
        hists.append(hist / hist.sum())
    return math.sqrt(max(0.0, 1 - np.sqrt(hists[0] * hists[1]).sum())), hists


def glcm_reference(image):
    luma = 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]
    grey = np.minimum(np.floor(luma * 32), 31).astype(np.uint8)
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    p = graycomatrix(grey, [1, 2, 4], angles, levels=32, symmetric=True, normed=True)
    props = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
    return np.concatenate([graycoprops(p, prop).mean(axis=1) for prop in props])


def test_metadata_describes_every_metric():
    assert list(CLASSICAL) == ["ssim", "psnr", "delta_e", "histogram", "glcm"]
    for name, info in CLASSICAL.items():
        assert isinstance(info, ClassicalInfo) and info.name == name and info.description
        assert info.score_range[0] < info.score_range[1]
    assert not CLASSICAL["psnr"].lower_better and CLASSICAL["psnr"].score_range[1] == PSNR_CAP
    assert [n for n, i in CLASSICAL.items() if not i.needs_resize] == ["delta_e"]
    with pytest.raises(AttributeError):
        CLASSICAL["ssim"].lower_better = False  # frozen


def test_identical_regions():
    x = skin()
    scores = classical_scores(x, x)
    assert scores == {"ssim": 0.0, "psnr": PSNR_CAP, "delta_e": 0.0, "histogram": 0.0, "glcm": 0.0}
    many = classical_many(x, [x, x.copy()])
    for name, value in scores.items():
        assert many[name].tolist() == [value, value]


def test_scores_are_symmetric_and_in_range():
    a, b = skin(seed=0), noisy(shifted(skin(seed=3), 0.1), 0.05)
    ab, ba = classical_scores(a, b), classical_scores(b, a)
    for name, info in CLASSICAL.items():
        assert ab[name] == pytest.approx(ba[name], rel=1e-9, abs=1e-12), name
        low, high = info.score_range
        assert low <= ab[name] <= high, name
        assert ab[name] != (PSNR_CAP if name == "psnr" else 0.0), name


def test_colour_distances_grow_with_the_shift():
    x = skin()
    scores = [
        classical_scores(x, shifted(x, s), metrics=["delta_e", "histogram"])
        for s in (0.03, 0.1, 0.25)
    ]
    for name in ("delta_e", "histogram"):
        values = [s[name] for s in scores]
        assert 0 < values[0] < values[1] < values[2], (name, values)


@pytest.mark.parametrize(
    "perturb",
    [lambda x, k: striped(x, 0.03 * k), lambda x, k: noisy(x, 0.02 * k)],
    ids=["stripes", "noise"],
)
def test_structure_distances_grow_with_the_perturbation(perturb):
    x = skin()
    scores = [
        classical_scores(x, perturb(x, k), metrics=["ssim", "psnr", "glcm"]) for k in (1, 3, 8)
    ]
    for name in ("ssim", "glcm"):
        values = [s[name] for s in scores]
        assert 0 < values[0] < values[1] < values[2], (name, values)
    psnr = [s["psnr"] for s in scores]
    assert PSNR_CAP > psnr[0] > psnr[1] > psnr[2], psnr


def test_agrees_with_the_libraries_on_the_prepared_arrays():
    a, b = skin(90, 140, seed=0), noisy(shifted(skin(110, 100, seed=5), 0.08), 0.04)
    fa, fb = prepared(a), prepared(b)
    scores = classical_scores(a, b)
    ssim = structural_similarity(
        fa, fb, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )  # fmt: skip
    assert abs(scores["ssim"] - (1 - ssim)) <= 1e-9
    assert abs(scores["psnr"] - peak_signal_noise_ratio(fa, fb, data_range=1)) <= 1e-9
    mean_a = rgb2lab(a.astype(np.float64)).reshape(-1, 3).mean(axis=0)
    mean_b = rgb2lab(b.astype(np.float64)).reshape(-1, 3).mean(axis=0)
    assert abs(scores["delta_e"] - float(deltaE_ciede2000(mean_a, mean_b))) <= 1e-9
    expected, hists = bhattacharyya_reference(fa, fb)
    assert abs(scores["histogram"] - expected) <= 1e-9
    h32 = [h.astype(np.float32) for h in hists]  # OpenCV compares float32 histograms
    opencv = cv2.compareHist(h32[0], h32[1], cv2.HISTCMP_BHATTACHARYYA)
    assert abs(scores["histogram"] - opencv) <= 1e-5
    va, vb = glcm_reference(fa), glcm_reference(fb)
    expected = np.mean(np.abs(va - vb) / (np.abs(va) + np.abs(vb) + 1e-12))
    assert abs(scores["glcm"] - expected) <= 1e-9


@pytest.mark.parametrize("policy", ["shorter_center_crop", "stretch", "pad"])
def test_regions_of_different_sizes_are_fitted(policy):
    a, b = skin(96, 150, seed=1), skin(70, 60, seed=2)
    scores = classical_scores(a, b, size=64, policy=policy)
    fitted = classical_scores(prepared(a, 64, policy), prepared(b, 64, policy), size=64)
    for name, info in CLASSICAL.items():
        if info.needs_resize:
            assert scores[name] == fitted[name], name
    only = classical_scores(a, b, metrics=["delta_e"])
    assert only == {"delta_e": scores["delta_e"]}  # the raw regions, whatever the size


def test_constant_regions_have_a_texture():
    grey = np.full((64, 64, 3), 0.5, np.float32)
    assert classical_scores(grey, grey, metrics="glcm") == {"glcm": 0.0}
    d = classical_scores(grey, striped(grey, 0.2), metrics=["glcm"])["glcm"]
    assert 0 < d <= 1


def test_many_equals_pairwise_and_keeps_order():
    ref = skin(seed=0)
    others = [skin(80, 80, seed=1), shifted(ref, 0.1), striped(ref, 0.1)]
    metrics = ["glcm", "ssim"]
    many = classical_many(ref, others, size=96, metrics=metrics)
    assert list(many) == ["ssim", "glcm"]  # CLASSICAL order
    for k, other in enumerate(others):
        pair = classical_scores(ref, other, size=96, metrics=metrics)
        for name in metrics:
            assert many[name].shape == (3,) and many[name][k] == pair[name]
    assert classical_many(ref, [], metrics=["psnr"])["psnr"].shape == (0,)


def test_unknown_metric_lists_the_known_ones():
    x = skin()
    with pytest.raises(ValueError, match=r"unknown classical metric\(s\) 'lpips'.*ssim, psnr"):
        classical_scores(x, x, metrics=["ssim", "lpips"])
    with pytest.raises(ValueError, match="no metrics requested"):
        classical_scores(x, x, metrics=[])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((32, 32), np.float32), r"region b: expected an H x W x 3 RGB image"),
        (np.zeros((32, 32, 4), np.float32), r"got shape \(32, 32, 4\)"),
        (np.full((32, 32, 3), np.nan, np.float32), "region b: holds NaN or infinite"),
        (np.full((32, 32, 3), 2.0, np.float32), r"expected values in \[0, 1\]"),
        (np.zeros((32, 32, 3), np.uint8), "expected float RGB"),
    ],
)
def test_bad_regions_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        classical_scores(skin(), bad)
    with pytest.raises(ValueError, match=match.replace("region b", r"region others\[1\]")):
        classical_many(skin(), [skin(), bad])


def test_bad_options_are_refused():
    x = skin()
    with pytest.raises(ValueError, match="size must be an integer >= 11"):
        classical_scores(x, x, size=8)
    with pytest.raises(ValueError, match="unknown resize policy 'squash'"):
        classical_scores(x, x, policy="squash")
    with pytest.raises(ValueError, match="unknown interpolation 'lanczos'"):
        classical_scores(x, x, interpolation="lanczos")
