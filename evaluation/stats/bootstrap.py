"""Confidence intervals by bootstrap over cases, and the resampling engine of the other modules.

Cases (the entries along axis 0 of every array) are resampled jointly across all arrays with
`scipy.stats.bootstrap`, BCa by default; with groups (lesions, patients) whole groups are
resampled, and BCa's jackknife leaves out one group at a time. `_bootstrap` is the engine of
every BCa interval of the package (`bootstrap_ci` here, the correlation intervals of
`evaluation.stats.inference`, the cross-fitted PLCC of `evaluation.stats.crossval`);
`_distribution` draws the same kind of grouped resamples for a family of statistics at once
(paired differences, the human ceiling), whose intervals are percentile intervals.

No interval is returned that excludes its own estimate: such an interval (a sign of a
degenerate or unstable bootstrap distribution) has NaN bounds, method "none" and a note.

Missing data: `bootstrap_ci` keeps the data as given. When the BCa (or basic) bounds are NaN,
e.g. for constant data or resamples where the statistic is undefined, the interval is the
percentile interval over the resamples whose statistic is finite (at least half of them must
be), and otherwise has NaN bounds with method "none".
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from evaluation.stats._checks import _CHUNK, _check_level, _Groups
from evaluation.stats.correlation import _VECTORISED

# scipy >= 1.15 names the generator `rng`; older releases call it `random_state`
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(sps.bootstrap).parameters else "random_state"


@dataclass(frozen=True)
class Interval:
    """An estimate with a confidence interval.

    Attributes:
        estimate: The statistic on the original data.
        low: Lower bound (NaN when it could not be computed).
        high: Upper bound (NaN when it could not be computed).
        level: Confidence level.
        method: `BCa`, `percentile`, `basic`, or `none` when no interval could be computed.
        note: Why there is no interval (method `none`), or empty.
    """

    estimate: float
    low: float
    high: float
    level: float = 0.95
    method: str = "BCa"
    note: str = ""


EXCLUDES_ESTIMATE = "the bootstrap interval excluded its own estimate (unstable resamples)"


def _checked(interval: Interval) -> Interval:
    """The interval, or NaN bounds with a note when it excludes its own estimate."""
    e, low, high = interval.estimate, interval.low, interval.high
    if np.isfinite([e, low, high]).all() and not low - 1e-12 <= e <= high + 1e-12:
        return Interval(e, np.nan, np.nan, interval.level, "none", EXCLUDES_ESTIMATE)
    return interval


_METHODS = {"bca": "BCa", "percentile": "percentile", "basic": "basic"}


def _percentile(distribution: np.ndarray, level: float) -> tuple[float, float] | None:
    """Percentile bounds over the finite resamples, or None if fewer than half are finite."""
    finite = distribution[np.isfinite(distribution)]
    if len(finite) == 0 or len(finite) < 0.5 * len(distribution):
        return None
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _bootstrap(
    statistic: Callable,
    arrays: Sequence[np.ndarray],
    *,
    n_resamples: int,
    level: float,
    method: str,
    seed: int,
    estimate: float,
    vectorised: Callable | None = None,
    groups=None,
) -> tuple[Interval, np.ndarray]:
    """Bootstrap over cases (axis 0 of every array, jointly) with scipy; NaN-safe fallbacks.

    The cases are resampled as indices, exactly as `scipy.stats.bootstrap(arrays, ...,
    paired=True)` does, so arrays of any shape work; with `groups`, the group indices are
    resampled and each drawn group brings all its cases. `vectorised`, if given, computes the
    statistic of one-dimensional arrays along their last axis (resamples on the others); it
    is used unless the groups differ in size.

    Returns:
        The interval and the bootstrap distribution.
    """
    _check_level(level)
    if method.lower() not in _METHODS:
        raise ValueError(f"unknown bootstrap method {method!r}; expected BCa, percentile or basic")
    if int(n_resamples) < 1:
        raise ValueError(f"expected a positive number of resamples, got {n_resamples}")
    method = _METHODS[method.lower()]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        lengths = ", ".join(str(len(a)) for a in arrays)
        raise ValueError(f"expected the same number of cases in every sample, got {lengths}")
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 cases, got {n}")
    clusters = _Groups(groups, n)
    if clusters.count < 2:
        raise ValueError(f"a bootstrap needs at least 2 groups, got {clusters.count}")
    if vectorised is not None and clusters.size is not None and all(a.ndim == 1 for a in arrays):

        def resampled(g, axis=-1):
            i = clusters.cases(g)
            return vectorised(*(a[i] for a in arrays), axis=-1)

        vectorized, batch = True, max(1, min(int(n_resamples), _CHUNK // n))
    else:

        def resampled(g):
            i = clusters.cases(g)
            return statistic(*(a[i] for a in arrays))

        vectorized, batch = False, None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sps.bootstrap(
            (np.arange(clusters.count),),
            resampled,
            n_resamples=int(n_resamples),
            batch=batch,
            vectorized=vectorized,
            confidence_level=level,
            method=method,
            **{_RNG_KEYWORD: np.random.default_rng(seed)},
        )
    distribution = np.asarray(result.bootstrap_distribution, dtype=float)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if np.isnan(low) or np.isnan(high):
        bounds = _percentile(distribution, level)
        method, (low, high) = ("percentile", bounds) if bounds else ("none", (np.nan, np.nan))
    return _checked(Interval(float(estimate), low, high, level, method)), distribution


def _distribution(
    statistics: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_resamples: int,
    seed: int,
    groups=None,
    batched: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Bootstrap distribution of a family of statistics on shared resamples of (grouped) cases.

    Args:
        statistics: Case indices of one resample -> the family's values (a vector).
        batched: Optionally the same for many resamples at once (resamples x cases indices ->
            resamples x values); used when every group has the same size.
        n: Number of cases.
        n_resamples: Number of resamples.
        seed: Seed of the resampling.
        groups: Optional group of each case; whole groups are resampled.

    Returns:
        Resamples x statistics.
    """
    if int(n_resamples) < 1:
        raise ValueError(f"expected a positive number of resamples, got {n_resamples}")
    clusters = _Groups(groups, n)
    if clusters.count < 2:
        raise ValueError(f"a bootstrap needs at least 2 groups, got {clusters.count}")
    rng = np.random.default_rng(seed)
    rows = []
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if batched is not None and clusters.size is not None:
            step = max(1, min(int(n_resamples), _CHUNK // (50 * n)))
            for start in range(0, int(n_resamples), step):
                size = min(step, int(n_resamples) - start)
                picked = rng.integers(0, clusters.count, (size, clusters.count))
                rows.append(np.asarray(batched(clusters.cases(picked)), float).reshape(size, -1))
            return np.vstack(rows)
        for _ in range(int(n_resamples)):
            picked = rng.integers(0, clusters.count, clusters.count)
            rows.append(np.atleast_1d(np.asarray(statistics(clusters.cases(picked)), float)))
    return np.vstack(rows)


def _percentile_interval(estimate: float, distribution: np.ndarray, level: float) -> Interval:
    """Percentile interval over the finite resamples (checked against its estimate)."""
    _check_level(level)
    bounds = _percentile(np.asarray(distribution, dtype=float), level)
    if bounds is None or not np.isfinite(estimate):
        return Interval(float(estimate), np.nan, np.nan, level, "none")
    return _checked(Interval(float(estimate), *bounds, level, "percentile"))


def _two_sided_p(distribution: np.ndarray) -> float:
    """Bootstrap p of "the value is 0": 2 min(share <= 0, share >= 0), capped at 1.

    The percentile interval at level 1 - p just reaches 0, so p < 1 - level exactly when
    that interval excludes 0.
    """
    finite = distribution[np.isfinite(distribution)]
    if len(finite) == 0:
        return float("nan")
    return float(min(1.0, 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))))


def bootstrap_ci(
    statistic: Callable[..., float],
    *samples,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "BCa",
    seed: int = 0,
    groups=None,
) -> Interval:
    """Bootstrap confidence interval of a statistic, resampling cases jointly over all samples.

    Cases are the entries along axis 0 of every sample; each resample draws the same cases from
    all of them (paired), with `scipy.stats.bootstrap` seeded by `seed`; with `groups`, whole
    groups of cases (lesions, patients) are drawn. `srcc`, `krcc` and
    `pearson` on one-dimensional samples are evaluated vectorised over the resamples. When the
    BCa bounds are NaN (degenerate data), the interval falls back to the percentile interval over
    the finite resamples, else to NaN bounds with method `none`.

    Args:
        statistic: Function of the samples returning a number.
        *samples: Arrays with one entry per case along axis 0.
        n_resamples: Number of bootstrap resamples.
        level: Confidence level.
        method: `BCa`, `percentile` or `basic`.
        seed: Seed of the resampling.
        groups: Optional group of each case (None: every case its own group).

    Returns:
        The statistic on the original data with its interval (NaN bounds, with a note, if the
        interval would exclude the estimate).

    Raises:
        ValueError: On no samples, samples of different lengths, fewer than 2 cases or
            groups, or an unknown method or level.
    """
    if not samples:
        raise ValueError("expected at least one sample")
    arrays = [np.asarray(s) for s in samples]
    if any(a.ndim == 0 for a in arrays):
        raise ValueError("expected samples with one entry per case, got a scalar")
    estimate = float(statistic(*arrays)) if len({len(a) for a in arrays}) == 1 else np.nan
    interval, _ = _bootstrap(
        statistic,
        arrays,
        n_resamples=n_resamples,
        level=level,
        method=method,
        seed=seed,
        estimate=estimate,
        vectorised=_VECTORISED.get(statistic),
        groups=groups,
    )
    return interval
