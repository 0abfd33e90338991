"""Inference on metrics' agreement with ratings: intervals, two metrics compared, the best.

`agreement` gives SRCC and KRCC of one metric with BCa bootstrap intervals, and its
cross-fitted PLCC and RMSE (`evaluation.stats.crossval.crossfit_plcc`) beside the in-sample
PLCC; `paired_difference` compares two metrics on the same resampled cases, with a p-value
read off the same bootstrap distribution as its interval; `compare_to_best` compares the
metric chosen on the data with each of the others, adjusting the p-values for the family
(single-step max-T over every pair). Every resample draws whole groups (lesions, patients)
when the cases have groups.

Missing data: all drop every case where any of their arrays is NaN (listwise), then need at
least 3 cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from evaluation.stats._checks import _complete_grouped, _Groups
from evaluation.stats.bootstrap import (
    Interval,
    _bootstrap,
    _distribution,
    _percentile_interval,
    _two_sided_p,
)
from evaluation.stats.correlation import (
    _VECTORISED,
    _check_statistic,
    _statistic_function,
    correlations,
    plcc,
)
from evaluation.stats.crossval import crossfit_plcc
from evaluation.stats.curves import FITS


def agreement(
    scores,
    ratings,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    fit: str = "logistic4",
    folds: int = 5,
    groups=None,
) -> dict[str, Interval]:
    """SRCC, KRCC, cross-fitted PLCC and RMSE of scores against ratings, with intervals.

    Cases where the score or the rating is NaN are dropped first. SRCC and KRCC get BCa
    intervals over the same resampled cases (same seed); PLCC and RMSE are cross-fitted
    (`crossfit_plcc`: the curve fitted on the other folds, the interval a bootstrap of the
    held-out predictions). The in-sample PLCC (curve fitted on all cases) is kept, without an
    interval, under `plcc_in_sample`.

    Args:
        scores: Metric scores, one per case.
        ratings: Ratings (e.g. mean opinion scores), one per case.
        n_resamples: Number of bootstrap resamples.
        level: Confidence level.
        seed: Seed of the resampling and of the folds.
        fit: Curve fitted before PLCC (`logistic4`, `logistic5`, `linear`; `none`: PLCC is
            Pearson's r on the raw scores, not cross-fitted).
        folds: Folds of the cross-fitting.
        groups: Optional group (lesion, patient) of each case: resamples and folds take
            whole groups.

    Returns:
        `{"srcc", "krcc", "plcc", "rmse", "plcc_in_sample"}` -> Interval (`rmse` is absent
        with `fit="none"`).

    Raises:
        ValueError: If fewer than 3 complete cases (or 4 groups) remain, or on an unknown
            fit kind.
    """
    if fit not in FITS:
        raise ValueError(f"unknown fit kind {fit!r}; expected one of {', '.join(FITS)}")
    (s, r), kept = _complete_grouped(groups, scores=scores, ratings=ratings)
    estimates = correlations(s, r, fit)
    out = {}
    for name in ("srcc", "krcc"):
        f = _statistic_function(name)
        out[name], _ = _bootstrap(
            f, [s, r], n_resamples=n_resamples, level=level, method="BCa", seed=seed,
            estimate=estimates[name], vectorised=_VECTORISED.get(f), groups=kept,
        )  # fmt: skip
    if fit == "none":
        f = _statistic_function("pearson")
        out["plcc"], _ = _bootstrap(
            f, [s, r], n_resamples=n_resamples, level=level, method="BCa", seed=seed,
            estimate=estimates["plcc"], vectorised=_VECTORISED.get(f), groups=kept,
        )  # fmt: skip
        out["plcc_in_sample"] = out["plcc"]
        return out
    cross = crossfit_plcc(
        s, r, fit, folds=folds, seed=seed, groups=kept, n_resamples=n_resamples, level=level
    )
    out["plcc"], out["rmse"] = cross.plcc, cross.rmse
    out["plcc_in_sample"] = Interval(
        estimates["plcc"], np.nan, np.nan, level, "none", "in-sample: fitted and scored on all"
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
    groups=None,
) -> tuple[Interval, float]:
    """Difference statistic(a, ratings) - statistic(b, ratings), with a paired bootstrap.

    Both metrics are evaluated on the same resampled cases (whole groups, with `groups`).
    Signed values are compared (a metric whose scores fall as ratings rise has a negative
    SRCC). Cases where any of the three values is NaN are dropped first. The interval is the
    percentile interval and the p-value is read off the same distribution, so p < 1 - level
    exactly when the interval excludes 0.

    Args:
        scores_a: Scores of metric a, one per case.
        scores_b: Scores of metric b on the same cases.
        ratings: Ratings of the cases.
        statistic: `srcc`, `krcc`, `plcc` (in-sample, logistic4 refitted per resample) or
            `pearson`.
        n_resamples: Number of bootstrap resamples.
        level: Confidence level.
        seed: Seed of the resampling.
        groups: Optional group (lesion, patient) of each case.

    Returns:
        The difference with its percentile interval, and the two-sided bootstrap p-value
        2 * min(share of resampled differences <= 0, share >= 0), capped at 1, over the
        resamples where the difference is defined.

    Raises:
        ValueError: If fewer than 3 complete cases remain, or on an unknown statistic.
    """
    f = _statistic_function(statistic)
    (a, b, r), kept = _complete_grouped(
        groups, scores_a=scores_a, scores_b=scores_b, ratings=ratings
    )
    fast = _VECTORISED.get(f)

    def difference(x, z, y):
        return f(x, y) - f(z, y)

    def vectorised(x, z, y, axis=-1):
        return fast(x, y, axis=axis) - fast(z, y, axis=axis)

    estimate = plcc(a, r) - plcc(b, r) if statistic == "plcc" else f(a, r) - f(b, r)
    interval, distribution = _bootstrap(
        difference, [a, b, r], n_resamples=n_resamples, level=level, method="percentile",
        seed=seed, estimate=estimate, vectorised=vectorised if fast is not None else None,
        groups=kept,
    )  # fmt: skip
    return interval, _two_sided_p(distribution)


@dataclass(frozen=True)
class Comparison:
    """The best metric minus one other, on the same resamples.

    Attributes:
        metric: The other metric.
        difference: Best minus this metric, with its percentile interval.
        p: Raw two-sided bootstrap p (read off the same distribution as the interval).
        p_adjusted: Familywise-adjusted p (single-step max-T over every pair of metrics).
        simultaneous: The difference with its simultaneous interval (max-T critical value):
            all such intervals of the family hold together with the stated level.
    """

    metric: str
    difference: Interval
    p: float
    p_adjusted: float
    simultaneous: Interval


@dataclass(frozen=True)
class BestComparison:
    """The metric with the highest statistic, chosen on the data, against each of the others.

    Attributes:
        best: The metric chosen (the highest statistic on these very cases: an optimistic
            pick, see docs/statistics.md).
        statistic: The statistic compared.
        comparisons: One per other metric, in the order given.
        critical: The max-T critical value of the simultaneous intervals.
        family: Number of pairs in the max-T family (K (K - 1) / 2).
        n_cases: Cases compared.
        n_groups: Groups the resamples drew.
    """

    best: str
    statistic: str
    comparisons: tuple[Comparison, ...]
    critical: float
    family: int
    n_cases: int
    n_groups: int


def compare_to_best(
    columns: Mapping[str, np.ndarray],
    ratings,
    statistic: str = "srcc",
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    groups=None,
) -> BestComparison:
    """Compare the metric chosen on the data (highest statistic) with every other metric.

    All metrics' statistics are computed on the same bootstrap resamples (whole groups with
    `groups`). For each other metric: the difference best - metric with its percentile
    interval and raw p, and a familywise-adjusted p from a single-step max-T over every pair
    of metrics: with d_ij the difference of metrics i and j, se_ij its bootstrap standard
    error and T* = max over pairs |d*_ij - d_ij| / se_ij over the resamples, the adjusted p
    of a pair is the share of T* >= |d_ij| / se_ij. Taking every pair into the family (not
    only those with the best) keeps the familywise error rate at the level although the best
    was picked by looking at the same data.

    Args:
        columns: Metric name -> scores, one per case (at least 2 metrics).
        ratings: Ratings of the cases.
        statistic: `srcc`, `krcc` or `pearson`.
        n_resamples: Number of bootstrap resamples.
        level: Confidence level of the intervals.
        seed: Seed of the resampling.
        groups: Optional group (lesion, patient) of each case.

    Returns:
        The best metric and its comparisons.

    Raises:
        ValueError: With fewer than 2 metrics or 3 complete cases, or an unknown statistic.
    """
    _check_statistic(statistic)
    if statistic == "plcc":
        raise ValueError("compare_to_best takes srcc, krcc or pearson (plcc refits per resample)")
    names = list(columns)
    if len(names) < 2:
        raise ValueError(f"expected at least 2 metrics to compare, got {len(names)}")
    arrays, kept = _complete_grouped(
        groups, ratings=ratings, **{f"scores of {k!r}": columns[k] for k in names}
    )
    r, x = arrays[0], np.vstack(arrays[1:])
    fast = _VECTORISED[_statistic_function(statistic)]
    values = np.asarray(fast(x, r[None, :]), dtype=float)
    best = int(np.argmax(np.where(np.isfinite(values), values, -np.inf)))
    draws = _distribution(
        lambda i: fast(x[:, i], r[None, i]), len(r), n_resamples=n_resamples, seed=seed,
        groups=kept,
    )  # fmt: skip
    i, j = np.triu_indices(len(names), 1)
    d, d_star = values[i] - values[j], draws[:, i] - draws[:, j]
    with np.errstate(all="ignore"):
        se = np.nanstd(d_star, axis=0)
        t_star = np.nanmax(np.abs(d_star - d) / np.where(se > 0, se, np.nan), axis=1)
    t_star = t_star[np.isfinite(t_star)]
    critical = float(np.quantile(t_star, level)) if len(t_star) else float("nan")
    pair = {(a, b): k for k, (a, b) in enumerate(zip(i, j, strict=True))}
    comparisons = []
    for m in range(len(names)):
        if m == best:
            continue
        k = pair[(min(best, m), max(best, m))]
        sign = 1.0 if best < m else -1.0  # pairs hold (lower index - higher index)
        diff, spread = sign * d[k], sign * d_star[:, k]
        with np.errstate(all="ignore"):
            t = abs(diff) / se[k] if se[k] > 0 else np.nan
        adjusted = float(np.mean(t_star >= t)) if np.isfinite(t) and len(t_star) else np.nan
        if se[k] == 0 and diff == 0:  # the two rank the items alike in every resample
            adjusted = 1.0
        half = critical * se[k]
        comparisons.append(Comparison(
            names[m], _percentile_interval(diff, spread, level), _two_sided_p(spread),
            adjusted, Interval(float(diff), diff - half, diff + half, level, "max-T"),
        ))  # fmt: skip
    n_groups = _Groups(kept, len(r)).count
    return BestComparison(
        names[best], statistic, tuple(comparisons), critical, len(d), len(r), n_groups
    )
