"""The protocol of fitting metric heads to ratings: choices inside folds, scores outside.

1. outer K-fold over the rated cases (`bridge.core.fitting.outer_folds`), grouped by
   patient or lesion (`RatedCase.group`) when the groups are given: no group is in two
   folds, nor in both the fitting and the validation part below;
2. in each outer fold, a seeded 20% of the training cases is held back for validation;
   the heads are trained on the rest (full-batch Adam on -Pearson(case distance, mean
   rating), clamped at 0 after every step, from the source's default heads) and the
   epoch with the best validation SRCC (checked every `check_every` epochs, epoch 0 =
   the starting heads included) gives that fold's heads; the held-out fold is only
   scored;
3. every case gets a distance from the fold model that never saw it, z-scored within
   its fold; the pooled SRCC of these and of the unfitted scorer's distances (the
   starting heads, z-scored the same way) get BCa bootstrap CIs and a paired bootstrap
   difference (the unfitted scorer's SRCC on raw distances is given too);
4. a final fit on all cases, with the same validation rule for the epoch, gives the
   heads that are written and exported.

A case's terms (`case_terms`) are the mean over its comparison regions, so its
distance is the mean of its regions' distances. The heads are trained by the chosen
framework's `fit_heads` (`torch_models.finetune` / `tf_models.finetune`, mirrored).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from tqdm import tqdm

from bridge.core.data.image import DEFAULT_POLICY, decode_image, model_input
from bridge.core.data.ratings import RatedCase
from bridge.core.fitting import (
    FitConfig,
    FitFunction,
    check_enough_cases,
    flatten_heads,
    outer_folds,
    term_distances,
    validation_split,
    varying_channels,
)
from bridge.core.metrics import Heads, uniform_heads
from bridge.core.spec import ArchSpec
from evaluation import stats
from evaluation.formatting import interval_record

log = logging.getLogger(__name__)

TERM_BOUND = 1e-5  # term-based vs the module's own distance, relative to max(1, |d|)


@dataclass(frozen=True)
class EpochChoice:
    """Heads fitted on part of some cases, at the epoch chosen on the rest.

    Attributes:
        heads: Flat heads (T,) of the chosen epoch, float64.
        epoch: The chosen epoch (0: the starting heads).
        fit_cases: Indices of the cases the heads were trained on.
        validation_cases: Indices of the cases that chose the epoch.
        validation_srcc: Validation SRCC per checked epoch.
        validation_pearson: Validation Pearson correlation per checked epoch (breaks
            ties of SRCC).
        fit_pearson: Pearson correlation on the fitting cases per checked epoch
            (recorded, never used to choose).
        frozen: Heads left at their start (terms constant over the fitting cases).
    """

    heads: np.ndarray
    epoch: int
    fit_cases: np.ndarray
    validation_cases: np.ndarray
    validation_srcc: dict[int, float]
    validation_pearson: dict[int, float]
    fit_pearson: dict[int, float]
    frozen: int = 0


@dataclass(frozen=True)
class CrossValidation:
    """Outer-fold results.

    Attributes:
        folds: (training indices, held-out indices) per outer fold.
        choices: The epoch choice made on each fold's training cases.
        fitted: Every case's distance from the fold model that never saw it.
        fitted_z: The same, z-scored within each fold.
        unfitted: Every case's distance with the starting heads.
        unfitted_z: The same, z-scored within each fold (pooled as the fitted ones).
        fold_of: Each case's outer fold (0-based).
        grouped: Whether the folds and validation parts were made of whole groups.
    """

    folds: list[tuple[np.ndarray, np.ndarray]]
    choices: list[EpochChoice]
    fitted: np.ndarray
    fitted_z: np.ndarray
    unfitted: np.ndarray
    unfitted_z: np.ndarray
    fold_of: np.ndarray
    grouped: bool = False


def framework_module(framework: str) -> ModuleType:
    """`torch_models.finetune` or `tf_models.finetune` (imported on demand).

    Raises:
        ValueError: On another name.
    """
    if framework == "torch":
        from torch_models import finetune
    elif framework == "keras":
        from tf_models import finetune
    else:
        raise ValueError(f"unknown framework {framework!r}; expected torch or keras")
    return finetune


def start_heads(metric: str, spec: ArchSpec, choice: str | None = None) -> Heads:
    """Starting heads: `export.default_heads` (published on vgg16), uniform if not installed.

    Raises:
        ValueError: If the heads are negative or all zero (fitted heads stay >= 0).
    """
    from bridge.export import default_heads

    try:
        heads = default_heads(metric, spec, choice)
    except FileNotFoundError:
        if choice is not None:
            raise
        log.info("published %s heads not installed; starting from uniform heads", metric)
        heads = uniform_heads(metric, spec)
    theta = flatten_heads(heads)
    if np.any(theta < 0) or not np.any(theta > 0):
        raise ValueError(f"starting {metric} heads ({heads.source}) must be >= 0, not all zero")
    return heads


# ------------------------------------------------------------------ terms


def case_terms(
    framework: ModuleType,
    module,
    cases: Sequence[RatedCase],
    size: int,
    policy: str = DEFAULT_POLICY,
    interpolation: str = "bilinear",
    check: Heads | None = None,
    batch: int = 16,
    progress: bool = True,
) -> np.ndarray:
    """Per-case terms (cases, T): each case's pair terms averaged over its comparisons.

    Images are decoded and fitted (`bridge.core.data.image.fit`) to `size`. Whole cases go
    through the backbone together, about `batch` images at a time, each image once (a
    reference is shared by its comparisons).

    Args:
        framework: `framework_module(...)`.
        module: Its `build_metric(...)` module.
        cases: The rated cases.
        size: Side the images are fitted to.
        policy: Resize policy.
        interpolation: Resize interpolation.
        check: The module's heads: the first case's term-based distances are checked
            against the module's own (within 1e-5 relative to max(1, |d|)).
        batch: Images per backbone call (a case is never split).
        progress: Show a progress bar.

    Raises:
        RuntimeError: If the check fails (a bug, not a user error).
    """

    def load(path: Path) -> np.ndarray:
        return model_input(decode_image(path), size, policy, interpolation).transpose(2, 0, 1)

    chunks: list[list[RatedCase]] = [[]]
    for case in cases:
        if (
            chunks[-1]
            and sum(1 + len(c.comparisons) for c in chunks[-1]) + 1 + len(case.comparisons) > batch
        ):
            chunks.append([])
        chunks[-1].append(case)
    rows = []
    with tqdm(
        total=len(cases), desc="case terms", unit="case", leave=False, disable=not progress
    ) as bar:
        for chunk in chunks:
            refs = np.stack([load(c.reference) for c in chunk])
            comps = np.stack([load(p) for c in chunk for p in c.comparisons])
            index = np.repeat(np.arange(len(chunk)), [len(c.comparisons) for c in chunk])
            terms = framework.pair_terms(module, refs, comps, index)
            if not rows and check is not None:
                _check_terms(
                    framework, module, check, refs[:1], comps[index == 0], terms[index == 0]
                )
            rows.extend(terms[index == k].mean(axis=0) for k in range(len(chunk)))
            bar.update(len(chunk))
    return np.stack(rows)


def _check_terms(
    framework: ModuleType, module, heads: Heads, ref: np.ndarray, comps: np.ndarray, terms
) -> None:
    """Term-based distances of one case's pairs equal the module's own distances."""
    expected = framework.pair_distances(module, ref, comps).astype(np.float64)
    got = term_distances(heads.metric, terms, flatten_heads(heads))
    error = float(np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected))))
    if not error <= TERM_BOUND:
        raise RuntimeError(
            f"{heads.metric} term-based distances differ from the module's by {error:.2e} "
            f"(bound {TERM_BOUND:.0e})"
        )


# --------------------------------------------------------------- protocol


def choose_epoch(
    fit_heads: FitFunction,
    metric: str,
    terms: np.ndarray,
    target: np.ndarray,
    train: np.ndarray,
    start: np.ndarray,
    config: FitConfig,
    key: int,
    groups: Sequence[str] | None = None,
) -> EpochChoice:
    """Fit on part of `train`, pick the epoch with the best SRCC on the rest.

    The heads are optimised divided by the starting heads' mean (`FitConfig.lr` is in
    those units) and scaled back. On a few validation cases SRCC takes few values and
    ties are common: they go to the higher validation Pearson correlation, then to the
    earliest epoch. An undefined correlation never wins. With `groups` (one per case)
    the validation part is made of whole groups (`validation_split`).
    """
    fit_idx, val_idx = validation_split(train, config.validation, config.seed, key, groups)
    scale = float(np.mean(start))
    trainable = varying_channels(terms[fit_idx])
    snapshots, _ = fit_heads(
        metric, terms[fit_idx], target[fit_idx], start / scale, config, config.checkpoints(),
        trainable,
    )  # fmt: skip
    val_srcc, val_pearson, fit_pearson = {}, {}, {}
    for epoch in sorted(snapshots):
        theta = snapshots[epoch] * scale
        d = term_distances(metric, terms[val_idx], theta)
        val_srcc[epoch] = _quiet(stats.srcc, d, target[val_idx])
        val_pearson[epoch] = _quiet(stats.pearson, d, target[val_idx])
        fit_pearson[epoch] = _quiet(
            stats.pearson, term_distances(metric, terms[fit_idx], theta), target[fit_idx]
        )
    best = max(val_srcc, key=lambda e: (_finite(val_srcc[e]), _finite(val_pearson[e]), -e))
    return EpochChoice(
        snapshots[best] * scale, best, fit_idx, val_idx, val_srcc, val_pearson, fit_pearson,
        int((~trainable).sum()),
    )  # fmt: skip


def cross_validate(
    fit_heads: FitFunction,
    metric: str,
    terms: np.ndarray,
    target: np.ndarray,
    start: np.ndarray,
    config: FitConfig,
    progress: bool = True,
    groups: Sequence[str] | None = None,
) -> CrossValidation:
    """Outer K-fold: choose and fit on each training part, score its held-out fold only.

    With `groups` (one per case: patient or lesion) the outer folds and every validation
    part are made of whole groups, so no group is on both sides of any split.
    """
    check_enough_cases(len(target), config, groups)
    folds = outer_folds(len(target), config.folds, config.seed, groups)
    n = len(target)
    fitted, fitted_z = np.empty(n), np.empty(n)
    fold_of = np.empty(n, int)
    choices = []
    for k, (train, test) in enumerate(
        tqdm(folds, desc=f"{metric} folds", unit="fold", disable=not progress)
    ):
        choice = choose_epoch(
            fit_heads, metric, terms, target, train, start, config, key=k, groups=groups
        )
        choices.append(choice)
        fitted[test] = term_distances(metric, terms[test], choice.heads)
        fold_of[test] = k
    unfitted = term_distances(metric, terms, start)
    fitted_z, unfitted_z = _zscore(fitted, folds), _zscore(unfitted, folds)
    return CrossValidation(
        folds, choices, fitted, fitted_z, unfitted, unfitted_z, fold_of, groups is not None
    )


def _zscore(values: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Values z-scored within each held-out fold (0 where a fold's values are all equal)."""
    out = np.zeros_like(values)
    for _, test in folds:
        v = values[test]
        sd = v.std()
        out[test] = (v - v.mean()) / sd if sd > 0 else 0.0
    return out


def summarise(cv: CrossValidation, target: np.ndarray, config: FitConfig) -> dict[str, Any]:
    """Held-out SRCC per fold and pooled (BCa CIs), fitted vs unfitted, and their difference.

    Pooled, both scorers get the same treatment (distances z-scored within each fold,
    which removes the fold models' scale and, on a few cases per fold, also some real
    between-fold differences); the paired difference compares those. The unfitted
    scorer's SRCC on its raw distances (one fixed scorer) is given beside them.
    """
    per_fold = []
    for k, (choice, (_, test)) in enumerate(zip(cv.choices, cv.folds, strict=True)):
        per_fold.append({
            "fold": k + 1,
            "cases": len(test),
            "epoch": choice.epoch,
            "srcc_fitted": num(_quiet(stats.srcc, cv.fitted[test], target[test])),
            "srcc_unfitted": num(_quiet(stats.srcc, cv.unfitted[test], target[test])),
        })  # fmt: skip
    options = {"n_resamples": config.bootstrap, "seed": config.seed}
    fitted = stats.bootstrap_ci(stats.srcc, cv.fitted_z, target, **options)
    unfitted = stats.bootstrap_ci(stats.srcc, cv.unfitted_z, target, **options)
    raw = stats.bootstrap_ci(stats.srcc, cv.unfitted, target, **options)
    difference, p = stats.paired_difference(cv.fitted_z, cv.unfitted_z, target, "srcc", **options)
    weights = np.array([f["cases"] for f in per_fold], float)

    def mean(key: str) -> float | None:
        values = np.array([np.nan if f[key] is None else f[key] for f in per_fold])
        ok = np.isfinite(values)
        return num(np.sum(values[ok] * weights[ok]) / weights[ok].sum()) if ok.any() else None

    return {
        "per_fold": per_fold,
        "mean_fold_srcc": {"fitted": mean("srcc_fitted"), "unfitted": mean("srcc_unfitted")},
        "pooled": {
            "fitted": _interval(fitted),
            "unfitted": _interval(unfitted),
            "difference": {**_interval(difference), "p": num(p)},
            "unfitted_raw": _interval(raw),
            "cases": len(target),
            "how": (
                "fitted: each case's distance from the fold model that never saw it; "
                "unfitted: the starting heads' distance; both z-scored within each outer "
                "fold, then SRCC against the mean rating over all cases, BCa bootstrap "
                "over cases, paired bootstrap difference fitted - unfitted; unfitted_raw: "
                "the unfitted scorer's SRCC on its raw distances"
            ),
        },
    }


def _quiet(f: Callable[..., float], *args) -> float:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f(*args))


def _finite(x: float) -> float:
    return x if np.isfinite(x) else -np.inf


def num(x) -> float | None:
    """`x` as a float, None where it is not finite (JSON has no NaN)."""
    x = float(x)
    return x if np.isfinite(x) else None


def _interval(interval) -> dict[str, Any]:
    """`formatting.interval_record` as the fit record keeps it: `srcc`, no NaN (JSON)."""
    record = interval_record(interval)
    return {"srcc": num(record.pop("estimate")), **{k: _json(v) for k, v in record.items()}}


def _json(value: Any) -> Any:
    return num(value) if isinstance(value, float) else value
