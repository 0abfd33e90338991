"""Agreement among raters: ICC(2,1), Krippendorff's alpha and the leave-one-rater-out ceiling.

ICC(2,1) is Shrout & Fleiss's two-way random effects, absolute agreement, single rater;
Krippendorff's alpha takes the nominal, ordinal, interval or ratio metric; the mean
leave-one-rater-out correlation is the human ceiling (`leave_one_rater_out`). `human_ceiling`
gives it with its interval, the upper bound (each rater against the all-rater mean), and
metrics scored like one more rater (against the leave-one-rater-out means), so that a metric
and the ceiling are compared like for like.

Missing data:

* `icc_2_1` drops every case (row) with a NaN (listwise: the two-way ANOVA needs a full table).
* `krippendorff_alpha` treats NaN as a missing value; units with fewer than 2 values are not
  pairable and do not count.
* `leave_one_rater_out` compares rater j with the mean of the other raters' available scores,
  over the cases where rater j and at least one other rater scored; a rater with fewer than 3
  such cases gets NaN and is left out of the mean (the ceiling).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from evaluation.stats._checks import MIN_CASES, _Groups, _table
from evaluation.stats.bootstrap import (
    Interval,
    _distribution,
    _percentile_interval,
    _two_sided_p,
)
from evaluation.stats.correlation import _VECTORISED, _check_statistic, _statistic_function, plcc

KRIPPENDORFF_LEVELS = ("nominal", "ordinal", "interval", "ratio")


@dataclass(frozen=True)
class Ceiling:
    """Leave-one-rater-out correlations: each rater against the mean of the others.

    Attributes:
        per_rater: The correlation of each rater (column) with the others' mean; NaN where
            undefined.
        mean: Mean over the raters with a defined correlation: the human ceiling.
    """

    per_rater: tuple[float, ...]
    mean: float


def icc_2_1(table) -> float:
    """ICC(2,1): two-way random effects, absolute agreement, single rater (Shrout & Fleiss).

    (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n) from the two-way ANOVA of a
    cases x raters table without replication. Cases (rows) with any NaN are dropped.

    Args:
        table: Cases x raters scores.

    Returns:
        The ICC; NaN when every score is the same (0 / 0).

    Raises:
        ValueError: With fewer than 2 raters or fewer than 2 complete cases.
    """
    table = _table(table)
    k = table.shape[1]
    if k < 2:
        raise ValueError(f"ICC(2,1) needs at least 2 raters (columns), got {k}")
    complete = table[~np.isnan(table).any(axis=1)]
    n = len(complete)
    if n < 2:
        raise ValueError(
            f"ICC(2,1) needs at least 2 cases rated by every rater, got {n} of {len(table)}"
        )
    grand = complete.mean()
    ss_rows = k * ((complete.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((complete.mean(axis=0) - grand) ** 2).sum()
    ss_error = ((complete - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = ss_error / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    return float((msr - mse) / denominator) if denominator != 0 else float("nan")


def krippendorff_alpha(table, level: str = "interval") -> float:
    """Krippendorff's alpha of a cases x raters (units x coders) table; NaN marks a missing value.

    Computed from the coincidence matrix of the pairable values (units with at least 2 values):
    alpha = 1 - D_o / D_e. The ordinal metric is rank-based over the observed values
    (Krippendorff 2011): the squared distance between the values' mid-ranks in the pairable
    value counts.

    Args:
        table: Cases x raters values.
        level: `nominal`, `ordinal`, `interval` or `ratio`.

    Returns:
        Alpha; NaN when the pairable values hold a single distinct value (no expected disagreement).

    Raises:
        ValueError: On an unknown level, or when no case has 2 or more values.
    """
    if level not in KRIPPENDORFF_LEVELS:
        raise ValueError(
            f"unknown level of measurement {level!r}; expected one of "
            f"{', '.join(KRIPPENDORFF_LEVELS)}"
        )
    table = _table(table)
    present = ~np.isnan(table)
    pairable = present.sum(axis=1) >= 2
    if not pairable.any():
        raise ValueError("Krippendorff's alpha needs at least one case with 2 or more values")
    values, mask = table[pairable], present[pairable]
    domain, codes = np.unique(values[mask], return_inverse=True)
    counts = np.zeros((len(values), len(domain)))
    np.add.at(counts, (np.nonzero(mask)[0], codes), 1.0)
    weighted = counts / (counts.sum(axis=1, keepdims=True) - 1)
    observed = weighted.T @ counts - np.diag(weighted.sum(axis=0))
    n_c = counts.sum(axis=0)
    expected = (np.outer(n_c, n_c) - np.diag(n_c)) / (n_c.sum() - 1)
    if level == "nominal":
        delta = 1.0 - np.eye(len(domain))
    elif level == "ordinal":
        mid = np.cumsum(n_c) - n_c / 2
        delta = (mid[:, None] - mid[None, :]) ** 2
    elif level == "interval":
        delta = (domain[:, None] - domain[None, :]) ** 2
    else:
        total = domain[:, None] + domain[None, :]
        difference = domain[:, None] - domain[None, :]
        ratio = np.divide(difference, total, out=np.zeros_like(total), where=total != 0)
        delta = ratio**2
    disagreement = (expected * delta).sum()
    if disagreement == 0:
        return float("nan")
    return float(1.0 - (observed * delta).sum() / disagreement)


def _leave_one_out(table: np.ndarray, correlate: Callable) -> Ceiling:
    present = ~np.isnan(table)
    values = np.where(present, table, 0.0)
    total, count = values.sum(axis=1), present.sum(axis=1)
    per_rater = []
    for j in range(table.shape[1]):
        others = count - present[:, j]
        cases = present[:, j] & (others > 0)
        if cases.sum() < MIN_CASES:
            per_rater.append(float("nan"))
            continue
        others_mean = (total[cases] - values[cases, j]) / others[cases]
        per_rater.append(float(correlate(table[cases, j], others_mean)))
    finite = [c for c in per_rater if np.isfinite(c)]
    return Ceiling(tuple(per_rater), float(np.mean(finite)) if finite else float("nan"))


def leave_one_rater_out(table, statistic: str = "srcc") -> Ceiling:
    """Each rater's correlation with the mean of the other raters: the human ceiling.

    For rater (column) j, over the cases where j and at least one other rater scored, the
    statistic of j's scores against the mean of the others' available scores. A rater with
    fewer than 3 such cases gets NaN; the mean is over the raters with a defined value.

    Args:
        table: Cases x raters scores, NaN where a rater did not score a case.
        statistic: `srcc`, `krcc`, `plcc` (rater j's scores fitted to the others' mean) or
            `pearson`.

    Raises:
        ValueError: With fewer than 2 raters, or on an unknown statistic.
    """
    _check_statistic(statistic)
    table = _table(table)
    if table.shape[1] < 2:
        raise ValueError(f"leave-one-rater-out needs at least 2 raters, got {table.shape[1]}")
    correlate = plcc if statistic == "plcc" else _statistic_function(statistic)
    return _leave_one_out(table, correlate)


@dataclass(frozen=True)
class MetricVsRaters:
    """One metric scored like a rater: against the mean of the other raters.

    Attributes:
        metric: The metric.
        vs_others: For each rater j, the statistic of the metric against the mean of the raters
            other than j, on the cases of j's own leave-one-out comparison, averaged over j:
            directly comparable with the ceiling.
        minus_ceiling: `vs_others` minus the ceiling, on the same resamples (percentile
            interval).
        p: Two-sided bootstrap p of "no difference from the ceiling" (same distribution).
    """

    metric: str
    vs_others: Interval
    minus_ceiling: Interval
    p: float


@dataclass(frozen=True)
class HumanCeiling:
    """The human ceiling, its upper bound, and metrics set against it like for like.

    Attributes:
        ceiling: Each rater against the mean of the others, averaged over the raters: how well
            one more rater would agree with the rest.
        upper_bound: Each rater against the mean of all raters (itself included), averaged: the
            agreement of one rater with a mean it is part of, an upper bound.
        per_rater: The leave-one-rater-out statistic of each rater (NaN where undefined).
        metrics: Each metric scored like a rater, in the order given.
        statistic: The statistic.
        n_cases: Cases used.
        n_groups: Groups the resamples drew.
    """

    ceiling: Interval
    upper_bound: Interval
    per_rater: tuple[float, ...]
    metrics: tuple[MetricVsRaters, ...]
    statistic: str
    n_cases: int
    n_groups: int


def _like_for_like(table: np.ndarray, metrics: np.ndarray, correlate: Callable) -> np.ndarray:
    """[ceiling, upper bound, metric 1 vs others, ...] over the cases given; per rater too.

    Returns:
        Raters x (2 + metrics) values (NaN where a rater has fewer than 3 cases).
    """
    present = ~np.isnan(table)
    values = np.where(present, table, 0.0)
    total, count = values.sum(axis=1), present.sum(axis=1)
    out = np.full((table.shape[1], 2 + len(metrics)), np.nan)
    for j in range(table.shape[1]):
        others = count - present[:, j]
        cases = present[:, j] & (others > 0)
        if cases.sum() < MIN_CASES:
            continue
        others_mean = (total[cases] - values[cases, j]) / others[cases]
        all_mean = total[cases] / count[cases]
        rater = table[cases, j]
        stacked = np.vstack([rater, metrics[:, cases]]) if len(metrics) else rater[None, :]
        against_others = np.atleast_1d(correlate(stacked, others_mean[None, :]))
        out[j, 0] = against_others[0]
        out[j, 1] = float(correlate(rater, all_mean))
        out[j, 2:] = against_others[1:]
    return out


def human_ceiling(
    table,
    columns: Mapping[str, np.ndarray] | None = None,
    statistic: str = "srcc",
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    groups=None,
) -> HumanCeiling:
    """The leave-one-rater-out ceiling, its upper bound, and metrics scored like a rater.

    A metric's usual agreement (with the mean of all raters) and the ceiling (one rater with the
    mean of the others) are not comparable: the all-rater mean is less noisy than a mean of
    one rater fewer. Here each metric is correlated, for every left-out rater j, with the mean
    of the raters other than j on the cases of j's comparison, and the results averaged over j:
    an extra rater scored this way lands on the ceiling on average. Cases where a metric's score
    is NaN are dropped for all (listwise). All intervals are percentile intervals over the same
    resamples of cases (whole groups with `groups`); a metric's difference from the ceiling is
    paired, with its p read off the same distribution.

    Args:
        table: Cases x raters scores, NaN where a rater did not score a case.
        columns: Metric name -> scores, one per case (none: the ceiling alone).
        statistic: `srcc`, `krcc` or `pearson`.
        n_resamples: Number of bootstrap resamples.
        level: Confidence level.
        seed: Seed of the resampling.
        groups: Optional group (lesion, patient) of each case.

    Raises:
        ValueError: With fewer than 2 raters or 2 groups, metrics of the wrong length, or an
            unknown statistic (plcc refits per resample and is not offered).
    """
    _check_statistic(statistic)
    if statistic == "plcc":
        raise ValueError("human_ceiling takes srcc, krcc or pearson")
    table = _table(table)
    if table.shape[1] < 2:
        raise ValueError(f"the human ceiling needs at least 2 raters, got {table.shape[1]}")
    columns = dict(columns or {})
    names = list(columns)
    metrics = (
        np.array([np.asarray(columns[k], dtype=float) for k in names])
        if names
        else np.empty((0, len(table)))
    )
    if len(names) and metrics.shape[1] != len(table):
        raise ValueError(
            f"expected one score per case ({len(table)}) for every metric, got {metrics.shape[1]}"
        )
    keep = np.isfinite(metrics).all(axis=0) if len(names) else np.ones(len(table), bool)
    table, metrics = table[keep], metrics[:, keep]
    kept = None if groups is None else np.asarray(list(groups), dtype=object)[keep]
    correlate = _VECTORISED[_statistic_function(statistic)]

    def summary(i):
        per = _like_for_like(table[i], metrics[:, i], correlate)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            means = np.nanmean(per, axis=0)
        return np.concatenate([means, means[2:] - means[0]])

    def batched(i):  # resamples x cases; a complete table only
        t, x = table[i], metrics[:, i].transpose(1, 0, 2)  # (B, n, R), (B, M, n)
        k = t.shape[2]
        others = ((t.sum(axis=2, keepdims=True) - t) / (k - 1)).transpose(0, 2, 1)  # (B, R, n)
        raters = t.transpose(0, 2, 1)
        series = np.concatenate(
            [raters[:, :, None, :], np.broadcast_to(x[:, None], (len(t), k, *x.shape[1:]))],
            axis=2,
        )  # (B, R, 1 + M, n)
        against = correlate(series, others[:, :, None, :])  # (B, R, 1 + M)
        upper = correlate(raters, np.broadcast_to(t.mean(axis=2)[:, None, :], raters.shape))
        means = np.concatenate([against[:, :, :1], upper[:, :, None], against[:, :, 1:]], axis=2)
        means = means.mean(axis=1)
        return np.concatenate([means, means[:, 2:] - means[:, :1]], axis=1)

    everything = np.arange(len(table))
    estimate = summary(everything)
    per_rater = _like_for_like(table, metrics, correlate)[:, 0]
    complete = not np.isnan(table).any() and len(table) >= MIN_CASES
    draws = _distribution(
        summary, len(table), n_resamples=n_resamples, seed=seed, groups=kept,
        batched=batched if complete else None,
    )  # fmt: skip
    m = len(names)
    out = tuple(
        MetricVsRaters(
            name,
            _percentile_interval(estimate[2 + k], draws[:, 2 + k], level),
            _percentile_interval(estimate[2 + m + k], draws[:, 2 + m + k], level),
            _two_sided_p(draws[:, 2 + m + k]),
        )
        for k, name in enumerate(names)
    )
    return HumanCeiling(
        _percentile_interval(estimate[0], draws[:, 0], level),
        _percentile_interval(estimate[1], draws[:, 1], level),
        tuple(float(v) for v in per_rater), out, statistic, len(table),
        _Groups(kept, len(table)).count,
    )  # fmt: skip
