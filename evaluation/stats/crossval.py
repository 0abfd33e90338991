"""Choices and fits made by looking at the ratings, made inside cross-validation folds.

A choice among candidates (layer, epoch, head weights) is made on each fold's training cases
and reported on the held-out cases only (`cv_select`); the curve before PLCC is fitted on the
training folds and PLCC and RMSE taken on the held-out predictions (`crossfit_plcc`). The
folds come from the project's one splitter, `bridge.core.data.splits.kfold`, grouped when
the cases have groups (lesions, patients): no group is ever split between folds.

Missing data: both drop every case whose rating or any score is NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from bridge.core.data.splits import kfold
from evaluation.stats._checks import _complete_grouped, _Groups, _vectors
from evaluation.stats.bootstrap import Interval, _bootstrap
from evaluation.stats.correlation import _pearson_nd, _plcc, _statistic_function
from evaluation.stats.curves import FITS, _direction, _fit_curve


@dataclass(frozen=True)
class CVSelection:
    """A choice among candidates made inside cross-validation folds, scored on held-out folds.

    Attributes:
        chosen: The candidate picked on each fold's training cases.
        held_out: The statistic of the chosen candidate on each held-out fold.
        mean: Mean held-out statistic, weighted by fold size.
        pooled: The statistic over all cases of the held-out scores, each case scored by the
            candidate chosen without it, after rank-normalising within each fold.
        folds: Number of folds.
    """

    chosen: tuple[str, ...]
    held_out: tuple[float, ...]
    mean: float
    pooled: float
    folds: int


def _selection_plcc(x, y) -> float:
    """PLCC at full precision, without a fallback warning for every fold and candidate."""
    return _plcc(x, y, "logistic4", resample=False, quiet=True)


def cv_select(
    candidates: Mapping[str, np.ndarray],
    ratings,
    folds: int = 5,
    statistic: str = "srcc",
    seed: int = 0,
    groups=None,
) -> CVSelection:
    """Pick the best candidate (layer, epoch, head...) inside cross-validation folds.

    On each fold's training cases the candidate with the highest (signed) statistic against the
    ratings is chosen, and its statistic on the held-out cases is recorded. Folds come from
    `bridge.core.data.splits.kfold(folds, seed)`: shuffled `KFold`, or shuffled `GroupKFold`
    when groups (patients, lesions) are given. Cases whose rating or any candidate's score is
    NaN are dropped.

    Args:
        candidates: Name -> scores, one per case (the same cases as the ratings).
        ratings: Ratings of the cases.
        folds: Number of folds.
        statistic: `srcc`, `krcc`, `plcc` or `pearson`.
        seed: Seed of the fold assignment.
        groups: Optional group of each case; no group is split across folds.

    Returns:
        The choice on each fold and the held-out statistics.

    Raises:
        ValueError: On no candidates, candidates of unequal length, fewer than 2 folds, fewer
            than 2 * folds complete cases, or an unknown statistic.
    """
    f = _statistic_function(statistic)
    if statistic == "plcc":
        f = _selection_plcc
    if not candidates:
        raise ValueError("expected at least one candidate")
    if int(folds) < 2:
        raise ValueError(f"expected at least 2 folds, got {folds}")
    names = list(candidates)
    arrays = _vectors(ratings=ratings, **{f"candidate {k!r}": candidates[k] for k in names})
    r, scores = arrays[0], np.column_stack(arrays[1:])
    keep = ~np.isnan(r) & ~np.isnan(scores).any(axis=1)
    r, scores = r[keep], scores[keep]
    n = len(r)
    if n < 2 * folds:
        raise ValueError(
            f"{folds}-fold selection needs at least {2 * folds} complete cases, got {n}"
        )
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != keep.shape:
            raise ValueError(f"expected one group per case ({len(keep)}), got {groups.shape}")
        splits = kfold(folds, seed, grouped=True).split(scores, r, groups[keep])
    else:
        splits = kfold(folds, seed).split(scores)

    chosen, held_out, sizes = [], [], []
    normalised = np.empty(n)
    for train, test in splits:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = np.array([f(scores[train, c], r[train]) for c in range(len(names))])
            best = int(np.argmax(np.where(np.isnan(fitted), -np.inf, fitted)))
            held_out.append(float(f(scores[test, best], r[test])))
        chosen.append(names[best])
        sizes.append(len(test))
        normalised[test] = (sps.rankdata(scores[test, best]) - 0.5) / len(test)
    held, weights = np.array(held_out), np.array(sizes, dtype=float)
    finite = np.isfinite(held)
    mean = (
        float(np.sum(held[finite] * weights[finite]) / weights[finite].sum())
        if finite.any()
        else float("nan")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pooled = float(f(normalised, r))
    return CVSelection(tuple(chosen), tuple(held_out), mean, pooled, int(folds))


@dataclass(frozen=True)
class CrossFit:
    """A metric's ratings predicted by a curve fitted without them (cross-fitting).

    Attributes:
        plcc: PLCC of the held-out predictions with the ratings, signed like the SRCC, with
            its bootstrap interval.
        rmse: Root mean squared error of the held-out predictions, in rating units, with its
            bootstrap interval.
        in_sample: PLCC with the curve fitted on all cases (flattering; labelled so).
        predictions: The held-out prediction of every case (NaN where a value was missing).
        folds: Number of folds used.
        groups: Number of groups the folds split (cases when ungrouped).
    """

    plcc: Interval
    rmse: Interval
    in_sample: float
    predictions: np.ndarray
    folds: int
    groups: int


def _widened(interval: Interval, factor: float) -> Interval:
    """The interval's bounds moved `factor` times as far from its estimate."""
    if not np.isfinite([interval.low, interval.high]).all():
        return interval
    e = interval.estimate
    low, high = e + factor * (interval.low - e), e + factor * (interval.high - e)
    return Interval(e, max(low, -1.0), min(high, 1.0), interval.level, interval.method)


def _folds(n: int, folds: int, seed: int, groups=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, held-out) indices of `folds` folds of n cases, whole groups to one fold."""
    clusters = _Groups(groups, n)
    if clusters.trivial:
        return list(kfold(folds, seed).split(np.zeros(n)))
    return list(kfold(folds, seed, grouped=True).split(np.zeros(n), groups=clusters.codes))


def _held_out(
    x: np.ndarray, y: np.ndarray, fit: str, k: int, seed: int, groups, loose: bool = False
) -> tuple[float, np.ndarray, np.ndarray]:
    """The SRCC's sign, the held-out predictions, and those centred within each fold."""
    sign = _direction(x, y)
    predicted, centred = np.empty(len(x)), np.empty(len(x))
    for train, test in _folds(len(x), k, seed, groups):
        curve = _fit_curve(x[train], y[train], fit, resample=loose, quiet=True, direction=sign)
        predicted[test] = curve(x[test])
        centred[test] = predicted[test] - predicted[test].mean()
    return sign, predicted, centred


def _crossfit_folds(n_groups: int, folds: int) -> int:
    """The folds cross-fitting uses: `folds`, at most half the groups (2 per fold).

    Raises:
        ValueError: With fewer than 4 groups.
    """
    k = min(int(folds), n_groups // 2)
    if k < 2:
        raise ValueError(f"cross-fitting needs at least 4 groups of cases, got {n_groups}")
    return k


def crossfit_plcc(
    scores,
    ratings,
    fit: str = "logistic4",
    folds: int = 5,
    seed: int = 0,
    groups=None,
    n_resamples: int = 2000,
    level: float = 0.95,
    repeats: int = 4,
) -> CrossFit:
    """PLCC and RMSE of ratings predicted by a monotonic curve fitted on the other folds.

    The cases (whole groups, with `groups`) are split into `folds` folds (fewer if there are
    fewer than two groups per fold). On each fold the curve is fitted to the other folds'
    cases, in the direction of the SRCC over all cases (one bit, the metric's orientation),
    and predicts the fold's
    ratings. PLCC is the Pearson correlation of the held-out predictions with the ratings, each
    fold's predictions centred on their own mean (the folds' curves sit at slightly different
    levels, which would otherwise count against the metric: on noise, uncentred held-out
    predictions correlate negatively with the ratings), times the sign of the SRCC. RMSE is
    taken on the uncentred predictions. Both intervals are BCa bootstraps over the cases
    (groups) of the held-out predictions: the curves are not refitted per resample. Such a
    bootstrap holds the folds' curves fixed, so it misses part of the estimate's variance:
    the PLCC interval is widened about its estimate by sqrt(G / (G - folds)) (centring spends
    one degree of freedom per fold; G the number of groups, or cases) and by
    sqrt(1 + V_folds / V_boot), where V_folds is the variance of the PLCC over `repeats`
    other fold assignments and V_boot the bootstrap variance (the law of total variance:
    what changes with the folds comes on top of what changes with the cases). A curve that is
    flat on every fold predicts a constant: PLCC is then undefined (NaN, no interval).

    Args:
        scores: Metric scores, one per case.
        ratings: Ratings of the cases.
        fit: `logistic4`, `logistic5` or `linear`.
        folds: Number of folds (at most half the number of groups).
        seed: Seed of the folds and of the resampling.
        groups: Optional group (lesion, patient) of each case.
        n_resamples: Number of bootstrap resamples.
        level: Confidence level.
        repeats: Other fold assignments (seeds derived from `seed`) whose spread widens the
            PLCC interval; 0: none.

    Returns:
        The cross-fitted PLCC and RMSE with intervals, the in-sample PLCC and the predictions.

    Raises:
        ValueError: On an unknown fit, fewer than 3 complete cases, or fewer than 4 groups.
    """
    if fit not in FITS or fit == "none":
        raise ValueError(f"unknown fit kind {fit!r}; expected one of logistic4, logistic5, linear")
    keep = np.isfinite(np.asarray(scores, dtype=float)) & np.isfinite(
        np.asarray(ratings, dtype=float)
    )
    (x, y), kept_groups = _complete_grouped(groups, scores=scores, ratings=ratings)
    n = len(x)
    count = _Groups(kept_groups, n).count
    k = _crossfit_folds(count, folds)
    sign, predicted, centred = _held_out(x, y, fit, k, seed, kept_groups)

    def signed_r(p, t, axis=-1):
        return sign * _pearson_nd(p, t, axis=axis)

    def rmse(p, t, axis=-1):
        return np.sqrt(np.mean((np.asarray(p) - np.asarray(t)) ** 2, axis=axis))

    options = {"n_resamples": n_resamples, "level": level, "method": "BCa", "seed": seed}
    estimate = float(signed_r(centred, y))
    if np.ptp(centred) == 0:
        plcc_interval = Interval(np.nan, np.nan, np.nan, level, "none", "constant predictions")
    else:
        plcc_interval, draws = _bootstrap(
            signed_r, [centred, y], estimate=estimate, vectorised=signed_r,
            groups=kept_groups, **options,
        )  # fmt: skip
        others = [
            signed_r(_held_out(x, y, fit, k, seed * 1000 + r + 1, kept_groups, True)[2], y)
            for r in range(int(repeats))
        ]
        spread = np.nanvar([estimate, *others], ddof=1) if repeats else 0.0
        resampled = np.nanvar(draws)
        inflation = np.sqrt(1 + spread / resampled) if resampled > 0 else 1.0
        plcc_interval = _widened(plcc_interval, np.sqrt(count / (count - k)) * inflation)
    rmse_interval, _ = _bootstrap(
        rmse, [predicted, y], estimate=float(rmse(predicted, y)), vectorised=rmse,
        groups=kept_groups, **options,
    )  # fmt: skip
    full = np.full(len(keep), np.nan)
    full[keep] = predicted
    in_sample = _plcc(x, y, fit, resample=False, quiet=True)
    return CrossFit(plcc_interval, rmse_interval, float(in_sample), full, k, count)
