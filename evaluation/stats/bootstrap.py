"""Confidence intervals by bootstrap over cases, and the resampling engine of the other modules.

Cases (the entries along axis 0 of every array) are resampled jointly across all arrays with
`scipy.stats.bootstrap`, BCa by default. `_bootstrap` is the one engine every interval of the
package goes through (`bootstrap_ci` here, the correlation intervals and paired differences of
`evaluation.stats.inference`, the human ceiling of `evaluation.stats.raters`).

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

from evaluation.stats._checks import _CHUNK, _check_level
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
    """

    estimate: float
    low: float
    high: float
    level: float = 0.95
    method: str = "BCa"


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
) -> tuple[Interval, np.ndarray]:
    """Bootstrap over cases (axis 0 of every array, jointly) with scipy; NaN-safe fallbacks.

    The cases are resampled as indices, exactly as `scipy.stats.bootstrap(arrays, ...,
    paired=True)` does, so arrays of any shape work. `vectorised`, if given, computes the
    statistic of one-dimensional arrays along their last axis (resamples on the others).

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
    if vectorised is not None and all(a.ndim == 1 for a in arrays):

        def resampled(i, axis=-1):
            return vectorised(*(a[i] for a in arrays), axis=-1)

        vectorized, batch = True, max(1, min(int(n_resamples), _CHUNK // n))
    else:

        def resampled(i):
            return statistic(*(a[i] for a in arrays))

        vectorized, batch = False, None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sps.bootstrap(
            (np.arange(n),),
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
    return Interval(float(estimate), low, high, level, method), distribution


def bootstrap_ci(
    statistic: Callable[..., float],
    *samples,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "BCa",
    seed: int = 0,
) -> Interval:
    """Bootstrap confidence interval of a statistic, resampling cases jointly over all samples.

    Cases are the entries along axis 0 of every sample; each resample draws the same cases from
    all of them (paired), with `scipy.stats.bootstrap` seeded by `seed`. `srcc`, `krcc` and
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

    Returns:
        The statistic on the original data with its interval.

    Raises:
        ValueError: On no samples, samples of different lengths, fewer than 2 cases, or an
            unknown method or level.
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
    )
    return interval
