"""Inference on a metric's agreement with ratings: intervals, and two metrics compared.

`agreement` gives SRCC, KRCC and PLCC of one metric with bootstrap intervals over cases;
`paired_difference` compares two metrics on the same resampled cases, with a bootstrap p-value.

Missing data: both drop every case where any of their arrays is NaN (listwise), then need at
least 3 cases.
"""

from __future__ import annotations

import numpy as np

from evaluation.stats._checks import _complete
from evaluation.stats.bootstrap import Interval, _bootstrap
from evaluation.stats.correlation import _VECTORISED, _statistic_function, correlations, plcc
from evaluation.stats.curves import FITS


def agreement(
    scores,
    ratings,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    fit: str = "logistic4",
    plcc_resamples: int | None = None,
) -> dict[str, Interval]:
    """SRCC, KRCC and PLCC of scores against ratings, each with a bootstrap CI over cases.

    Cases where the score or the rating is NaN are dropped first. All three statistics see the
    same resampled cases (same seed). PLCC refits the curve on every resample.

    Args:
        scores: Metric scores, one per case.
        ratings: Ratings (e.g. mean opinion scores), one per case.
        n_resamples: Number of bootstrap resamples.
        level: Confidence level.
        seed: Seed of the resampling.
        fit: Curve fitted before PLCC (see `plcc`).
        plcc_resamples: Resamples of the PLCC interval (default `n_resamples`); each one
            refits the curve, which costs far more than the rank statistics.

    Returns:
        `{"srcc", "krcc", "plcc"}` -> Interval.

    Raises:
        ValueError: If fewer than 3 complete cases remain, or on an unknown fit kind.
    """
    if fit not in FITS:
        raise ValueError(f"unknown fit kind {fit!r}; expected one of {', '.join(FITS)}")
    s, r = _complete(scores=scores, ratings=ratings)
    estimates = correlations(s, r, fit)
    out = {}
    for name in ("srcc", "krcc", "plcc"):
        out[name], _ = _bootstrap(
            _statistic_function(name, fit),
            [s, r],
            n_resamples=plcc_resamples or n_resamples if name == "plcc" else n_resamples,
            level=level,
            method="BCa",
            seed=seed,
            estimate=estimates[name],
            vectorised=_VECTORISED.get(_statistic_function(name, fit)),
        )
    return out


def paired_difference(
    scores_a,
    scores_b,
    ratings,
    statistic: str = "srcc",
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[Interval, float]:
    """Difference statistic(a, ratings) - statistic(b, ratings), with a paired bootstrap.

    Both metrics are evaluated on the same resampled cases. Signed values are compared (a metric
    whose scores fall as ratings rise has a negative SRCC). Cases where any of the three values
    is NaN are dropped first.

    Args:
        scores_a: Scores of metric a, one per case.
        scores_b: Scores of metric b on the same cases.
        ratings: Ratings of the cases.
        statistic: `srcc`, `krcc`, `plcc` (logistic4 fit) or `pearson`.
        n_resamples: Number of bootstrap resamples.
        level: Confidence level.
        seed: Seed of the resampling.

    Returns:
        The difference with its BCa interval, and the two-sided bootstrap p-value
        2 * min(share of resampled differences <= 0, share >= 0), capped at 1, over the
        resamples where the difference is defined.

    Raises:
        ValueError: If fewer than 3 complete cases remain, or on an unknown statistic.
    """
    f = _statistic_function(statistic)
    a, b, r = _complete(scores_a=scores_a, scores_b=scores_b, ratings=ratings)
    fast = _VECTORISED.get(f)

    def difference(x, z, y):
        return f(x, y) - f(z, y)

    def vectorised(x, z, y, axis=-1):
        return fast(x, y, axis=axis) - fast(z, y, axis=axis)

    estimate = plcc(a, r) - plcc(b, r) if statistic == "plcc" else f(a, r) - f(b, r)
    interval, distribution = _bootstrap(
        difference,
        [a, b, r],
        n_resamples=n_resamples,
        level=level,
        method="BCa",
        seed=seed,
        estimate=estimate,
        vectorised=vectorised if fast is not None else None,
    )
    finite = distribution[np.isfinite(distribution)]
    if len(finite) == 0:
        return interval, float("nan")
    p = 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))
    return interval, float(min(p, 1.0))
