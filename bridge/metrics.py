"""Metric metadata and head weights, framework-neutral (numpy).

The constants and heads that both frameworks' LPIPS / DISTS implementations use
(DESIGN.md section 4). Heads for ImageNet VGG16 come from the installed reference
packages (or a file the user gives); every other backbone gets uniform heads or heads
the user fitted, and says which.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.spec import ArchSpec, get_arch

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10
DISTS_C1 = 1e-6
DISTS_C2 = 1e-6
L2POOL_EPS = 1e-12


@dataclass(frozen=True)
class MetricInfo:
    """What a score means (plain data, as in pyiqa's model configs).

    Attributes:
        name: Metric name.
        lower_better: True: 0 means identical.
        score_range: Typical range of scores (not a bound: values are never clipped).
        reference: The implementation reproduced on ImageNet VGG16.
    """

    name: str
    lower_better: bool
    score_range: tuple[float, float]
    reference: str


METRICS = {
    "lpips": MetricInfo("lpips", True, (0.0, 1.0), "lpips 0.1.4, net='vgg', version 0.1"),
    "dists": MetricInfo("dists", True, (0.0, 1.0), "DISTS_pytorch 0.1"),
}


def l2pool_filter() -> np.ndarray:
    """DISTS's 3x3 L2-pooling filter: the normalised outer product of [.5, 1, .5]."""
    a = np.array([0.5, 1.0, 0.5])
    g = np.outer(a, a)
    return g / g.sum()


@dataclass(frozen=True)
class Heads:
    """Head weights of one metric on one backbone, with their provenance.

    Attributes:
        metric: `lpips` or `dists`.
        weights: LPIPS: one vector per tap. DISTS: (alpha, beta), each 3 + sum C long.
        source: Where they come from (`lpips package`, `uniform`, a file path).
    """

    metric: str
    weights: tuple[np.ndarray, ...]
    source: str


def reference_heads(metric: str, arch: str | ArchSpec = "vgg16", path: str | None = None) -> Heads:
    """The published heads (VGG16 only), from the installed package or `path`.

    Raises:
        ValueError: For another backbone, or a file that does not fit.
        FileNotFoundError: If neither the package nor `path` provides them.
    """
    spec = get_arch(arch)
    if spec.family != "vgg" or spec.name != "vgg16":
        raise ValueError(
            f"published {metric} heads exist for ImageNet vgg16 only, not {spec.name}; "
            "use uniform heads or fit heads on rated data"
        )
    if metric == "lpips":
        file = Path(path) if path else _package_file("lpips", "weights/v0.1/vgg.pth")
        state = _read(file)
        try:
            weights = tuple(state[f"lin{k}.model.1.weight"].reshape(-1) for k in range(5))
        except KeyError as err:
            raise ValueError(f"{file}: not lpips v0.1 vgg heads (missing {err})") from None
        return Heads("lpips", weights, f"lpips package ({file})" if not path else str(file))
    if metric == "dists":
        file = Path(path) if path else Path(sys.prefix) / "weights.pt"
        if not file.is_file():
            raise FileNotFoundError(
                f"{file}: DISTS alpha/beta not found; install DISTS_pytorch (it puts weights.pt "
                "at sys.prefix) or pass the file"
            )
        state = _read(file)
        try:
            alpha, beta = state["alpha"].reshape(-1), state["beta"].reshape(-1)
        except KeyError as err:
            raise ValueError(f"{file}: not DISTS weights (missing {err})") from None
        return Heads("dists", (alpha, beta), f"DISTS_pytorch ({file})" if not path else str(file))
    raise ValueError(f"unknown metric {metric!r}; expected lpips or dists")


def uniform_heads(metric: str, arch: str | ArchSpec, taps: list[str] | None = None) -> Heads:
    """Uniform heads: every channel weighs the same.

    LPIPS: weight 1 per channel (lpips's `lpips=False` sum). DISTS: alpha = beta = 1
    (equal weight per channel after the joint normalisation).
    """
    spec = get_arch(arch)
    channels = {t.name: t.channels for t in spec.taps}
    names = taps or [t.name for t in spec.taps]
    if metric == "lpips":
        return Heads("lpips", tuple(np.ones(channels[n], np.float32) for n in names), "uniform")
    total = 3 + sum(channels[n] for n in names)
    ones = np.ones(total, np.float32)
    return Heads("dists", (ones, ones.copy()), "uniform")


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {package} package is not installed; pass the heads file instead"
        )
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _read(file: Path) -> dict[str, np.ndarray]:
    from bridge.weights import read_state_dict

    return read_state_dict(os.fspath(file))


def lpips_input(spec: ArchSpec) -> tuple[list[float], list[float]]:
    """Affine map from [0, 1] images to the backbone's input: (x - shift) / scale.

    On VGG, lpips's own: 2x - 1, then (. - shift) / scale, which equals
    (x - (1 + shift) / 2) / (scale / 2). Elsewhere the backbone's input contract.
    """
    if spec.family == "vgg":
        return [(1 + s) / 2 for s in LPIPS_SHIFT], [s / 2 for s in LPIPS_SCALE]
    return list(spec.contract.mean), list(spec.contract.std)


def dists_stages(
    spec: ArchSpec, taps: list[str], alpha: np.ndarray, beta: np.ndarray
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Channels per DISTS stage ([3, taps...]) and alpha / beta as flat float32.

    Raises:
        ValueError: If alpha or beta do not have 3 + sum(tap channels) values.
    """
    channels = {t.name: t.channels for t in spec.taps}
    chns = [3, *(channels[name] for name in taps)]
    alpha = np.asarray(alpha, np.float32).reshape(-1)
    beta = np.asarray(beta, np.float32).reshape(-1)
    if alpha.size != sum(chns) or beta.size != sum(chns):
        raise ValueError(
            f"DISTS needs alpha and beta of {sum(chns)} values (3 + tap channels), "
            f"got {alpha.size} and {beta.size}"
        )
    return chns, alpha, beta
