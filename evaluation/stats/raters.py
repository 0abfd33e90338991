"""Agreement among raters: ICC(2,1), Krippendorff's alpha and the leave-one-rater-out ceiling.

ICC(2,1) is Shrout & Fleiss's two-way random effects, absolute agreement, single rater;
Krippendorff's alpha takes the nominal, ordinal, interval or ratio metric; the mean
leave-one-rater-out correlation is the human ceiling (`leave_one_rater_out`), with a bootstrap
interval over cases (`ceiling_interval`).

Missing data:

* `icc_2_1` drops every case (row) with a NaN (listwise: the two-way ANOVA needs a full table).
* `krippendorff_alpha` treats NaN as a missing value; units with fewer than 2 values are not
  pairable and do not count.
* `leave_one_rater_out` compares rater j with the mean of the other raters' available scores,
  over the cases where rater j and at least one other rater scored; a rater with fewer than 3
  such cases gets NaN and is left out of the mean (the ceiling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evaluation.stats._checks import MIN_CASES, _table
from evaluation.stats.bootstrap import Interval, _bootstrap
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


def ceiling_interval(
    table,
    statistic: str = "srcc",
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Bootstrap (over cases) confidence interval of the leave-one-rater-out mean.

    Args:
        table: Cases x raters scores, NaN where a rater did not score a case.
        statistic: As in `leave_one_rater_out`.
        n_resamples: Number of bootstrap resamples.
        level: Confidence level.
        seed: Seed of the resampling.

    Raises:
        ValueError: With fewer than 2 raters or 2 cases, or on an unknown statistic.
    """
    estimate = leave_one_rater_out(table, statistic).mean
    table = _table(table)
    f = _statistic_function(statistic)
    correlate = _VECTORISED.get(f, f)

    def ceiling(resampled):
        return _leave_one_out(resampled, correlate).mean

    interval, _ = _bootstrap(
        ceiling,
        [table],
        n_resamples=n_resamples,
        level=level,
        method="BCa",
        seed=seed,
        estimate=estimate,
    )
    return interval
