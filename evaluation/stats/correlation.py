"""Correlation of metric scores with ratings: SRCC, KRCC, PLCC and Pearson.

SRCC (Spearman) and KRCC (Kendall tau-b) are computed on the raw scores, PLCC (Pearson) after a
monotonic curve of the scores to the ratings (`evaluation.stats.curves`: 4-parameter logistic by
default, VQEG 5-parameter, linear or none), signed like the SRCC. `plcc` here is in-sample
(curve fitted on the cases it is scored on); the reported PLCC is cross-fitted
(`evaluation.stats.crossval.crossfit_plcc`). Vectorised forms along the last axis serve the
bootstrap resamples, and `_statistic_function` gives each named statistic as f(x, y) to the
modules that resample or select by it.

Missing data:

* `srcc`, `krcc`, `pearson`, `plcc` follow scipy: a NaN anywhere gives NaN.
* `correlations` drops every case where the score or the rating is NaN (listwise), then needs
  at least 3 cases.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats as sps

from evaluation.stats._checks import _CHUNK, _complete, _vectors
from evaluation.stats.curves import FITS, _direction, _fit_curve

STATISTICS = ("srcc", "krcc", "plcc", "pearson")

_KENDALL_VECTOR_MAX = 256  # above this many cases, Kendall resamples go through scipy one by one


def srcc(x, y) -> float:
    """Spearman rank correlation (`scipy.stats.spearmanr`)."""
    x, y = _vectors(x=x, y=y)
    return float(sps.spearmanr(x, y).statistic)


def krcc(x, y) -> float:
    """Kendall rank correlation, tau-b (`scipy.stats.kendalltau`)."""
    x, y = _vectors(x=x, y=y)
    return float(sps.kendalltau(x, y).statistic)


def pearson(x, y) -> float:
    """Pearson linear correlation (`scipy.stats.pearsonr`)."""
    x, y = _vectors(x=x, y=y)
    return float(sps.pearsonr(x, y).statistic)


def _plcc(x, y, fit: str, resample: bool, quiet: bool = False) -> float:
    if fit not in FITS:
        raise ValueError(f"unknown fit kind {fit!r}; expected one of {', '.join(FITS)}")
    x, y = _vectors(x=x, y=y)
    if fit == "none":
        return pearson(x, y)
    sign = _direction(x, y)
    predicted = _fit_curve(x, y, fit, resample=resample, quiet=quiet, direction=sign)(x)
    return sign * float(_pearson_nd(predicted, y))


def plcc(x, y, fit: str = "logistic4") -> float:
    """Pearson correlation of the fitted scores with the ratings, with the sign of the SRCC.

    In-sample: the curve is fitted and the correlation taken on the same cases, which
    flatters it (a pure-noise metric gets a positive PLCC); `evaluation.stats.crossfit_plcc`
    is the held-out form reported beside SRCC. The fitted curve is monotonic in the direction
    of the SRCC, so the Pearson correlation of its predictions with the ratings is >= 0 and
    takes the SRCC's sign: a metric that falls as ratings rise has a negative PLCC.

    Args:
        x: Metric scores, one per case.
        y: Ratings, one per case.
        fit: `logistic4`, `logistic5`, `linear`, or `none` (Pearson on raw scores).

    Raises:
        ValueError: On an unknown fit kind.
    """
    return _plcc(x, y, fit, resample=False)


def correlations(scores, ratings, fit: str = "logistic4") -> dict[str, float]:
    """SRCC, KRCC and PLCC of scores against ratings, over the cases with no NaN.

    Raises:
        ValueError: If fewer than 3 complete cases remain, or on an unknown fit kind.
    """
    s, r = _complete(scores=scores, ratings=ratings)
    return {"srcc": srcc(s, r), "krcc": krcc(s, r), "plcc": plcc(s, r, fit)}


# vectorised forms over resamples (last axis: cases), for the bootstrap


def _pearson_nd(x, y, axis: int = -1) -> np.ndarray:
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    xm = x - x.mean(axis=-1, keepdims=True)
    ym = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(all="ignore"):
        r = (xm * ym).sum(-1) / np.sqrt((xm * xm).sum(-1) * (ym * ym).sum(-1))
    return np.clip(r, -1.0, 1.0)


def _srcc_nd(x, y, axis: int = -1) -> np.ndarray:
    return _pearson_nd(sps.rankdata(x, axis=axis), sps.rankdata(y, axis=axis), axis=axis)


def _krcc_nd(x, y, axis: int = -1) -> np.ndarray:
    """Kendall tau-b along an axis: O(n^2) pairs in blocks, or scipy per row for large n."""
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    shape, n = x.shape[:-1], x.shape[-1]
    x, y = x.reshape(-1, n), y.reshape(-1, n)
    out = np.empty(len(x))
    if n > _KENDALL_VECTOR_MAX:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k in range(len(x)):
                out[k] = sps.kendalltau(x[k], y[k]).statistic
        return out.reshape(shape)
    i, j = np.triu_indices(n, 1)
    pairs = max(len(i), 1)
    step = max(1, _CHUNK // pairs)
    for start in range(0, len(x), step):
        sx = np.sign(x[start : start + step, i] - x[start : start + step, j])
        sy = np.sign(y[start : start + step, i] - y[start : start + step, j])
        with np.errstate(all="ignore"):
            out[start : start + step] = (sx * sy).sum(-1) / np.sqrt(
                (sx != 0).sum(-1) * (sy != 0).sum(-1)
            )
    return out.reshape(shape)


_VECTORISED: dict[Callable, Callable] = {srcc: _srcc_nd, krcc: _krcc_nd, pearson: _pearson_nd}


def _check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(
            f"unknown statistic {statistic!r}; expected one of {', '.join(STATISTICS)}"
        )


def _statistic_function(statistic: str, fit: str = "logistic4") -> Callable[..., float]:
    """The named statistic as f(x, y), for resamples (plcc: quiet, looser fit tolerance)."""
    _check_statistic(statistic)
    if statistic == "plcc":
        if fit == "none":
            return pearson

        def resample_plcc(x, y):
            return _plcc(x, y, fit, resample=True)

        return resample_plcc
    return {"srcc": srcc, "krcc": krcc, "pearson": pearson}[statistic]
