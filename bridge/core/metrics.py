"""Metric metadata and head weights, framework-neutral (numpy).

The constants and heads that both frameworks' LPIPS / DISTS implementations use (the
formulas: docs/metrics.md). Heads for ImageNet VGG16 come from the installed reference
packages (or a file the user gives); every other backbone gets uniform heads or heads
the user fitted, and says which. Fitted heads (`python -m bridge.finetune_metric`) travel as
safetensors files with their fit record in the metadata (`write_fitted_heads`,
`read_fitted_heads`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.core.files import atomic_path
from bridge.core.spec import ArchSpec, get_arch

METRICS = ("lpips", "dists")  # the feature-distance metrics, as scorer kinds and CLI names
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10
DISTS_C1 = 1e-6
DISTS_C2 = 1e-6
L2POOL_EPS = 1e-12
FIT_METADATA_KEY = "dermsim_fit"  # safetensors metadata entry holding a fit record (JSON)


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
        fit: For heads fitted on rated data: the fit record (data, folds, epochs,
            config, held-out results); None otherwise.
    """

    metric: str
    weights: tuple[np.ndarray, ...]
    source: str
    fit: dict | None = None

    def manifest_entry(self) -> dict:
        """What an export manifest says about these heads."""
        entry = {"source": self.source, "fitted": self.fit is not None}
        if self.fit is not None:
            entry["fit"] = self.fit
        return entry


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


def write_fitted_heads(
    path: str | os.PathLike, heads: Heads, fit: dict, taps: list[str] | None = None
) -> Path:
    """Write fitted heads as safetensors, with `fit` as JSON in the metadata.

    Keys: `lpips.<tap>` (one vector per tap) or `dists.alpha` and `dists.beta`; the
    metadata entry `dermsim_fit` holds the fit record, written atomically.

    Args:
        path: Output file (`.safetensors`).
        heads: The fitted heads.
        fit: The fit record; must name the `metric` (same as the heads') and the
            `backbone`, and may list the LPIPS `taps`.
        taps: LPIPS tap names, one per head vector (default: `fit["taps"]`, else the
            backbone's taps).

    Raises:
        ValueError: On another suffix, a fit record that does not match the heads, or
            heads that are negative, non-finite or all zero.
    """
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise ValueError(f"{path}: fitted heads are written as .safetensors")
    if fit.get("metric") != heads.metric or "backbone" not in fit:
        raise ValueError(
            f"the fit record must name metric {heads.metric!r} and the backbone; "
            f"got metric {fit.get('metric')!r}, backbone {fit.get('backbone')!r}"
        )
    vectors = [np.asarray(w, np.float32).reshape(-1) for w in heads.weights]
    _check_values(vectors, str(path))
    if heads.metric == "lpips":
        names = taps or fit.get("taps") or [t.name for t in get_arch(fit["backbone"]).taps]
        if len(names) != len(vectors):
            raise ValueError(f"expected one LPIPS head per tap ({len(names)}), got {len(vectors)}")
        tensors = {f"lpips.{name}": w for name, w in zip(names, vectors, strict=True)}
    elif heads.metric == "dists":
        if len(vectors) != 2:
            raise ValueError(f"expected DISTS heads (alpha, beta), got {len(vectors)} vectors")
        tensors = {"dists.alpha": vectors[0], "dists.beta": vectors[1]}
    else:
        raise ValueError(f"unknown metric {heads.metric!r}; expected lpips or dists")
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={FIT_METADATA_KEY: json.dumps(fit)})
    return path


def is_fitted_heads(path: str | os.PathLike) -> bool:
    """Whether `path` is a fitted-heads file (safetensors carrying a fit record)."""
    path = Path(path)
    if not path.is_file() or not path.name.endswith(".safetensors"):
        return False
    try:
        return FIT_METADATA_KEY in (_safetensors_metadata(path) or {})
    except ValueError:
        return False


def read_fitted_heads(path: str | os.PathLike, metric: str, spec: str | ArchSpec) -> Heads:
    """Read fitted heads written by `write_fitted_heads`, checked against a backbone.

    Args:
        path: The `.safetensors` heads file.
        metric: `lpips` or `dists`.
        spec: The backbone the heads will run on (its taps fix the expected shapes).

    Returns:
        The heads, with `source` the file and `fit` its fit record.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a fitted-heads file, holds another metric's heads,
            or its shapes or values do not fit the backbone's taps.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such heads file")
    if not path.name.endswith(".safetensors"):
        raise ValueError(f"{path}: expected a fitted-heads .safetensors file")
    metadata = _safetensors_metadata(path) or {}
    if FIT_METADATA_KEY not in metadata:
        raise ValueError(
            f"{path}: not a fitted-heads file (no {FIT_METADATA_KEY!r} record in its metadata)"
        )
    try:
        fit = json.loads(metadata[FIT_METADATA_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: unreadable fit record ({err})") from None
    if not isinstance(fit, dict):
        raise ValueError(f"{path}: the fit record is not a JSON object")
    spec = get_arch(spec)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected lpips or dists")
    state = _read(path)
    prefix = f"{metric}."
    if not any(k.startswith(prefix) for k in state):
        found = sorted({k.split(".")[0] for k in state})
        raise ValueError(f"{path}: holds {', '.join(found)} heads, not {metric}")
    fitted_on = fit.get("backbone", "an unknown backbone")
    if metric == "lpips":
        expected = {f"lpips.{t.name}": t.channels for t in spec.taps}
        if set(state) != set(expected):
            raise ValueError(
                f"{path}: LPIPS heads for taps {', '.join(k[6:] for k in state)} "
                f"(fitted on {fitted_on}); {spec.name} has taps "
                f"{', '.join(k[6:] for k in expected)}"
            )
        weights = []
        for key, channels in expected.items():
            w = np.asarray(state[key], np.float32)
            if w.shape != (channels,):
                raise ValueError(
                    f"{path}: {key} has shape {w.shape} (fitted on {fitted_on}); "
                    f"{spec.name} needs ({channels},)"
                )
            weights.append(w)
    else:
        if set(state) != {"dists.alpha", "dists.beta"}:
            keys = ", ".join(sorted(state))
            raise ValueError(f"{path}: expected keys dists.alpha and dists.beta, got {keys}")
        alpha, beta = (np.asarray(state[k], np.float32) for k in ("dists.alpha", "dists.beta"))
        total = 3 + sum(t.channels for t in spec.taps)
        if alpha.shape != (total,) or beta.shape != (total,):
            raise ValueError(
                f"{path}: DISTS alpha / beta of shapes {alpha.shape}, {beta.shape} "
                f"(fitted on {fitted_on}); {spec.name} needs ({total},) each"
            )
        weights = [alpha, beta]
    _check_values(weights, str(path))
    return Heads(metric, tuple(weights), str(path), fit)


def _check_values(vectors: list[np.ndarray], where: str) -> None:
    """Fitted heads are finite, non-negative and not all zero."""
    for w in vectors:
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{where}: heads must be finite, found NaN or inf")
        if np.any(w < 0):
            raise ValueError(f"{where}: heads must be non-negative, found {float(w.min()):.3g}")
    if not any(np.any(w > 0) for w in vectors):
        raise ValueError(f"{where}: heads are all zero; expected some positive weight")


def _safetensors_metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return f.metadata()
    except Exception as err:  # safetensors raises its own error types on a bad header
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {package} package is not installed; pass the heads file instead"
        )
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _read(file: Path) -> dict[str, np.ndarray]:
    from bridge.core.weights import read_state_dict

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
