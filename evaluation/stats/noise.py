"""What pure-noise scores reach against the ratings: a band over many seeded draws.

One noise draw shown with its own interval says little (it is one draw); the band is the spread
of SRCC, KRCC and cross-fitted PLCC over many independent uniform-noise "metrics" scored on the
same items, the same groups and the same folds as the real metrics. A metric whose value lies
inside the band does no better than chance on these ratings.

Missing data: the cases whose rating is NaN are dropped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from evaluation.stats._checks import _check_level, _complete_grouped, _Groups
from evaluation.stats.correlation import _krcc_nd, _pearson_nd, _srcc_nd
from evaluation.stats.crossval import _crossfit_folds, _held_out
from evaluation.stats.curves import FITS


@dataclass(frozen=True)
class NoiseBand:
    """The spread of each statistic over pure-noise scores.

    Attributes:
        bands: Statistic (`srcc`, `krcc`, `plcc`) -> (low, median, high): the quantiles
            (1 - level) / 2, 0.5 and (1 + level) / 2 over the draws.
        draws: Number of noise draws.
        level: Share of the draws between low and high.
        plcc_draws: Number of draws behind the PLCC band (the first ones).
    """

    bands: dict[str, tuple[float, float, float]]
    draws: int
    level: float
    plcc_draws: int


def noise_band(
    ratings,
    n_draws: int = 200,
    level: float = 0.95,
    seed: int = 0,
    fit: str = "logistic4",
    folds: int = 5,
    groups=None,
    plcc_draws: int | None = None,
) -> NoiseBand:
    """SRCC, KRCC and cross-fitted PLCC of `n_draws` uniform-noise scores against the ratings.

    Each draw is scored exactly as a metric is (PLCC cross-fitted over the same grouped folds,
    with the looser curve-fit tolerance of bootstrap resamples, for speed).

    Args:
        ratings: Ratings of the cases.
        n_draws: Number of noise draws.
        level: Share of the draws the band spans.
        seed: Seed of the draws (draw k uses the generator seeded with (seed, k)).
        fit: Curve before PLCC (`none`: Pearson on the raw noise).
        folds: Folds of the cross-fitting.
        groups: Optional group (lesion, patient) of each case.
        plcc_draws: How many of the draws the cross-fitted PLCC band uses (default all; each
            costs a curve fit per fold, the rank statistics almost nothing).

    Raises:
        ValueError: On fewer than 3 rated cases (4 groups), an unknown fit, or a bad level.
    """
    _check_level(level)
    if fit not in FITS:
        raise ValueError(f"unknown fit kind {fit!r}; expected one of {', '.join(FITS)}")
    if int(n_draws) < 2:
        raise ValueError(f"expected at least 2 noise draws, got {n_draws}")
    (r,), kept = _complete_grouped(groups, ratings=ratings)
    noise = np.stack(
        [np.random.default_rng((seed, k)).uniform(size=len(r)) for k in range(n_draws)]
    )
    values = {
        "srcc": _srcc_nd(noise, r[None, :]),
        "krcc": _krcc_nd(noise, np.broadcast_to(r, noise.shape)),
    }
    if fit == "none":
        values["plcc"] = _pearson_nd(noise, r[None, :])
    else:
        k = _crossfit_folds(_Groups(kept, len(r)).count, folds)
        plcc = np.empty(min(len(noise), int(plcc_draws or len(noise))))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for d, x in enumerate(noise[: len(plcc)]):
                sign, _, centred = _held_out(x, r, fit, k, seed, kept, loose=True)
                plcc[d] = sign * _pearson_nd(centred, r) if np.ptp(centred) > 0 else np.nan
        values["plcc"] = plcc
    q = [(1 - level) / 2, 0.5, (1 + level) / 2]
    bands = {}
    for name, v in values.items():
        finite = np.asarray(v, dtype=float)[np.isfinite(v)]
        bands[name] = (
            tuple(float(b) for b in np.quantile(finite, q)) if len(finite) else ((np.nan,) * 3)
        )
    plcc_count = len(noise) if fit == "none" else len(values["plcc"])
    return NoiseBand(bands, int(n_draws), float(level), plcc_count)
