"""Statistics of agreement (metric scores vs raters, raters among themselves) and classification.

What is computed:

* Correlation with ratings: SRCC (Spearman), KRCC (Kendall tau-b) on raw scores, and PLCC
  (Pearson) after a monotonic logistic fit of the scores to the ratings (4-parameter by default,
  VQEG 5-parameter, linear or none as options). `fit_logistic` falls back to a linear fit, with
  a logged warning, when the logistic fit does not converge.
* Confidence intervals by bootstrap over cases (`scipy.stats.bootstrap`, BCa by default, cases
  resampled jointly across all arrays), for one metric (`agreement`), for the difference of two
  metrics on the same cases with a bootstrap p-value (`paired_difference`), and for any
  statistic (`bootstrap_ci`).
* Agreement among raters: ICC(2,1) (Shrout & Fleiss: two-way random effects, absolute agreement,
  single rater), Krippendorff's alpha (nominal, ordinal, interval, ratio), and the
  leave-one-rater-out correlation whose mean is the human ceiling (`leave_one_rater_out`,
  `ceiling_interval`).
* Classification: accuracy, balanced accuracy, macro F1 and one-vs-rest AUC per class with
  bootstrap intervals, McNemar's test between two classifiers, prediction agreement and the
  correlation of two models' logits.
* Choices made by looking at the data (layer, epoch, head weights) are made inside
  cross-validation folds and reported on the held-out folds (`cv_select`).

Missing data (NaN) rules:

* `srcc`, `krcc`, `pearson`, `plcc` follow scipy: a NaN anywhere gives NaN. `fit_logistic`
  fits on the cases where both values are finite.
* `correlations`, `agreement` and `paired_difference` drop every case where any of their arrays
  is NaN (listwise), then need at least 3 cases.
* `bootstrap_ci` keeps the data as given. When the BCa (or basic) bounds are NaN, e.g. for
  constant data or resamples where the statistic is undefined, the interval is the percentile
  interval over the resamples whose statistic is finite (at least half of them must be), and
  otherwise has NaN bounds with method "none".
* `icc_2_1` drops every case (row) with a NaN (listwise: the two-way ANOVA needs a full table).
* `krippendorff_alpha` treats NaN as a missing value; units with fewer than 2 values are not
  pairable and do not count.
* `leave_one_rater_out` compares rater j with the mean of the other raters' available scores,
  over the cases where rater j and at least one other rater scored; a rater with fewer than 3
  such cases gets NaN and is left out of the mean (the ceiling).
* `cv_select` drops every case whose rating or any candidate's score is NaN.
* Classification inputs may not hold NaN; resamples that lack a class's positives or negatives
  are skipped for that class's AUC.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

from bridge.core.data.splits import kfold

logger = logging.getLogger(__name__)

FITS = ("logistic4", "logistic5", "linear", "none")
STATISTICS = ("srcc", "krcc", "plcc", "pearson")
KRIPPENDORFF_LEVELS = ("nominal", "ordinal", "interval", "ratio")
MIN_CASES = 3  # correlations over fewer cases are meaningless
_KENDALL_VECTOR_MAX = 256  # above this many cases, Kendall resamples go through scipy one by one
_CHUNK = 2_000_000  # elements per vectorised block
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


# ---------------------------------------------------------------------------------------------
# input checks


def _vector(name: str, values) -> np.ndarray:
    """A one-dimensional float array, or a ValueError naming the argument."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be one-dimensional (one value per case), got shape {array.shape}"
        )
    return array


def _vectors(**named) -> list[np.ndarray]:
    """One-dimensional float arrays of equal length."""
    arrays = [_vector(name, values) for name, values in named.items()]
    lengths = {name: len(a) for name, a in zip(named, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise ValueError(f"expected one value per case in every array, got lengths {shown}")
    return arrays


def _complete(min_cases: int = MIN_CASES, **named) -> list[np.ndarray]:
    """Equal-length arrays with the cases holding any NaN dropped; at least `min_cases` left."""
    arrays = _vectors(**named)
    keep = np.logical_and.reduce([~np.isnan(a) for a in arrays])
    if keep.sum() < min_cases:
        raise ValueError(
            f"expected at least {min_cases} cases with no NaN in {', '.join(named)}, "
            f"got {int(keep.sum())} of {len(keep)}"
        )
    return [a[keep] for a in arrays]


def _table(values) -> np.ndarray:
    """A cases x raters float table."""
    table = np.asarray(values, dtype=float)
    if table.ndim != 2:
        raise ValueError(f"expected a cases x raters table, got shape {table.shape}")
    return table


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie strictly between 0 and 1, got {level}")


def _check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(
            f"unknown statistic {statistic!r}; expected one of {', '.join(STATISTICS)}"
        )


# ---------------------------------------------------------------------------------------------
# correlations


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


def logistic4(x, b1, b2, b3, b4):
    """Four-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2."""
    return (b1 - b2) * special.expit((np.asarray(x, dtype=float) - b3) / b4) + b2


def logistic5(x, b1, b2, b3, b4, b5):
    """VQEG five-parameter logistic: b1 (0.5 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5."""
    x = np.asarray(x, dtype=float)
    return b1 * (0.5 - special.expit(-b2 * (x - b3))) + b4 * x + b5


class _FittedCurve:
    """A fitted curve: call it on scores to get predicted ratings.

    Attributes:
        kind: `logistic4`, `logistic5` or `linear`.
        params: The parameters in the data's own units (`linear`: slope, intercept).
    """

    def __init__(self, kind: str, params: Sequence[float]):
        self.kind = kind
        self.params = tuple(float(p) for p in params)

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.kind == "logistic4":
            return logistic4(x, *self.params)
        if self.kind == "logistic5":
            return logistic5(x, *self.params)
        slope, intercept = self.params
        return slope * x + intercept

    def __repr__(self) -> str:
        shown = ", ".join(f"{p:.6g}" for p in self.params)
        return f"FittedCurve({self.kind}: {shown})"


def _linear_curve(x: np.ndarray, y: np.ndarray) -> _FittedCurve:
    """Least-squares line; a constant (the mean rating) when the scores do not vary."""
    if len(x) == 0:
        return _FittedCurve("linear", (0.0, np.nan))
    if len(x) < 2 or np.ptp(x) == 0:
        return _FittedCurve("linear", (0.0, float(np.mean(y))))
    slope, intercept = np.polyfit(x, y, 1)
    return _FittedCurve("linear", (slope, intercept))


def _logistic_starts(kind: str, xs: np.ndarray, ys: np.ndarray) -> list[list[float]]:
    """Starting values on standardised data; the sign follows the rank correlation."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = sps.spearmanr(xs, ys).statistic
    sign = -1.0 if rho < 0 else 1.0
    centre = float(np.median(xs))
    if kind == "logistic4":
        top, bottom = float(ys.max()), float(ys.min())
        return [[top, bottom, centre, sign], [top, bottom, centre, 0.3 * sign]]
    span = float(ys.max() - ys.min())
    return [[sign * span, 1.0, centre, 0.0, 0.0], [sign * span, 3.0, centre, 0.0, 0.0]]


def _logistic4_jacobian(x, b1, b2, b3, b4) -> np.ndarray:
    z = (x - b3) / b4
    out = np.empty((len(x), 4))
    s = out[:, 0] = special.expit(z)
    out[:, 1] = 1 - s
    d = (b2 - b1) / b4 * s * (1 - s)
    out[:, 2] = d
    out[:, 3] = d * z
    return out


def _logistic5_jacobian(x, b1, b2, b3, b4, b5) -> np.ndarray:
    u = special.expit(-b2 * (x - b3))
    d = b1 * u * (1 - u)
    out = np.empty((len(x), 5))
    out[:, 0] = 0.5 - u
    out[:, 1] = d * (x - b3)
    out[:, 2] = -d * b2
    out[:, 3] = x
    out[:, 4] = 1.0
    return out


_MODELS = {
    "logistic4": (logistic4, _logistic4_jacobian),
    "logistic5": (logistic5, _logistic5_jacobian),
}
RESAMPLE_TOLERANCE = 1e-6  # curve-fit tolerance inside bootstrap resamples (speed; PLCC to ~1e-4)


def _fit_curve(x, y, kind: str, resample: bool = False, quiet: bool = False) -> _FittedCurve:
    """Fit `kind` to the finite pairs; linear fallback (logged unless quiet) on failure.

    In a bootstrap resample (`resample=True`) the fit is quiet and stops at a looser tolerance:
    noisy, near-linear relations push the logistic towards its linear limit, which the optimiser
    approaches slowly.
    """
    if kind not in FITS or kind == "none":
        raise ValueError(f"unknown fit kind {kind!r}; expected one of logistic4, logistic5, linear")
    x, y = _vectors(x=x, y=y)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if kind == "linear":
        return _linear_curve(x, y)
    model, jacobian = _MODELS[kind]
    n_params = 4 if kind == "logistic4" else 5
    options = {"ftol": RESAMPLE_TOLERANCE, "xtol": RESAMPLE_TOLERANCE} if resample else {}
    reason = None
    if len(x) <= n_params:
        reason = f"{len(x)} cases are too few for {n_params} parameters"
    elif np.ptp(x) == 0 or np.ptp(y) == 0:
        reason = "the scores or the ratings are constant"
    else:
        mx, sx, my, sy = x.mean(), x.std(), y.mean(), y.std()
        xs, ys = (x - mx) / sx, (y - my) / sy
        for start in _logistic_starts(kind, xs, ys):
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p, _ = optimize.curve_fit(
                        model, xs, ys, p0=start, jac=jacobian, maxfev=10000, **options
                    )
            except (RuntimeError, ValueError, TypeError) as error:
                reason = str(error).replace("\n", " ")
                continue
            if np.isfinite(p).all() and np.isfinite(model(xs, *p)).all():
                return _FittedCurve(kind, _unstandardise(kind, p, mx, sx, my, sy))
            reason = "the fit gave non-finite parameters"
    if not (resample or quiet):
        logger.warning("%s fit failed (%s); falling back to a linear fit", kind, reason)
    return _linear_curve(x, y)


def _unstandardise(kind: str, p, mx: float, sx: float, my: float, sy: float) -> tuple:
    """Parameters fitted on standardised x, y expressed in the data's own units."""
    if kind == "logistic4":
        b1, b2, b3, b4 = p
        return sy * b1 + my, sy * b2 + my, mx + sx * b3, sx * b4
    b1, b2, b3, b4, b5 = p
    return sy * b1, b2 / sx, mx + sx * b3, sy * b4 / sx, sy * (b5 - b4 * mx / sx) + my


def fit_logistic(x, y, kind: str = "logistic4") -> Callable[[np.ndarray], np.ndarray]:
    """Fit ratings `y` as a monotonic logistic function of scores `x`.

    The fit runs on standardised data (so the starting values suit any scale), starting from
    the observed range of `y`, the median of `x` and a slope whose sign follows the rank
    correlation (decreasing relations fit with a negative b4). When it does not converge (or
    there are too few cases, or constant data), it falls back to a linear fit and logs a
    warning. Cases where either value is NaN are left out of the fit.

    Args:
        x: Metric scores, one per case.
        y: Ratings, one per case.
        kind: `logistic4` (DESIGN section 5), `logistic5` (VQEG) or `linear`.

    Returns:
        A callable mapping scores to fitted ratings; its `kind` and `params` attributes say
        which curve was fitted (in the data's own units).

    Raises:
        ValueError: On an unknown kind, or arrays that are not one value per case.
    """
    return _fit_curve(x, y, kind)


def _plcc(x, y, fit: str, resample: bool, quiet: bool = False) -> float:
    if fit not in FITS:
        raise ValueError(f"unknown fit kind {fit!r}; expected one of {', '.join(FITS)}")
    x, y = _vectors(x=x, y=y)
    if fit == "none":
        return pearson(x, y)
    predicted = _fit_curve(x, y, fit, resample=resample, quiet=quiet)(x)
    if resample or quiet:
        return float(_pearson_nd(predicted, y))
    return pearson(predicted, y)


def plcc(x, y, fit: str = "logistic4") -> float:
    """Pearson correlation of the fitted scores with the ratings.

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


# ---------------------------------------------------------------------------------------------
# bootstrap

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


# ---------------------------------------------------------------------------------------------
# agreement among raters


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


# ---------------------------------------------------------------------------------------------
# classification


def _labels(name: str, values) -> np.ndarray:
    """Integer class indices (0..K-1) as a one-dimensional int array."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional class indices, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise ValueError(f"{name} must hold integer class indices 0..K-1")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class indices 0..K-1, got {array.dtype}")
    array = array.astype(np.int64)
    if len(array) and array.min() < 0:
        raise ValueError(f"{name} must hold class indices 0..K-1, got {array.min()}")
    return array


def _classification_resamples(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, k: int, idx: np.ndarray
) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro F1 and per-class AUC of each resample (rows of idx).

    Same definitions as scikit-learn: balanced accuracy averages recall over the classes present
    in y_true; macro F1 averages 2 TP / (2 TP + FP + FN) over the classes present in y_true or
    y_pred; AUC is the Mann-Whitney form (mid-ranks) of the ROC area, NaN without positives or
    negatives.
    """
    r, n = idx.shape
    t, p = y_true[idx], y_pred[idx]
    flat = (np.arange(r)[:, None] * k * k + t * k + p).ravel()
    confusion = np.bincount(flat, minlength=r * k * k).reshape(r, k, k).astype(float)
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    support, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    with np.errstate(all="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
        present = (support + predicted) > 0
        f1 = np.where(present, 2 * hits / (support + predicted), np.nan)
        out = {
            "accuracy": hits.sum(axis=1) / n,
            "balanced_accuracy": np.nanmean(recall, axis=1),
            "macro_f1": np.nanmean(f1, axis=1),
        }
        if proba is not None:
            for c in range(k):
                positive = t == c
                ranks = sps.rankdata(proba[idx, c], axis=-1)
                n_pos = positive.sum(axis=1)
                n_neg = n - n_pos
                u = (ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2
                out[f"auc:{c}"] = np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)
    return out


def classification_metrics(
    y_true,
    y_pred,
    proba=None,
    classes: Sequence[str] | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Accuracy, balanced accuracy, macro F1 and one-vs-rest AUCs, with bootstrap intervals.

    Estimates come from scikit-learn (`accuracy_score`, `balanced_accuracy_score`,
    `f1_score(average="macro")`, `roc_auc_score` per class one-vs-rest). Intervals are percentile
    bootstrap intervals over samples, computed vectorised with the same definitions; resamples
    that lack a class's positives or negatives are skipped for its AUC (no interval if more
    than half are skipped).

    Args:
        y_true: True class indices 0..K-1.
        y_pred: Predicted class indices 0..K-1.
        proba: Optional (N, K) class probabilities (or any per-class scores).
        classes: Class names for the `auc_<class>` keys (default: the indices).
        n_resamples: Number of bootstrap resamples.
        level: Confidence level.
        seed: Seed of the resampling.

    Returns:
        `accuracy`, `balanced_accuracy`, `macro_f1`, and `auc_<class>` per class when `proba`
        is given -> Interval.

    Raises:
        ValueError: On mismatched lengths, labels outside 0..K-1, fewer than 2 samples, or
            probabilities that are not (N, K) finite values.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        f1_score,
        roc_auc_score,
    )

    _check_level(level)
    if int(n_resamples) < 1:
        raise ValueError(f"expected a positive number of resamples, got {n_resamples}")
    y_true, y_pred = _labels("y_true", y_true), _labels("y_pred", y_pred)
    n = len(y_true)
    if len(y_pred) != n:
        raise ValueError(f"expected one prediction per sample, got {len(y_pred)} for {n}")
    if n < 2:
        raise ValueError(f"classification metrics need at least 2 samples, got {n}")
    if proba is not None:
        proba = np.asarray(proba, dtype=float)
        if proba.ndim != 2 or len(proba) != n:
            raise ValueError(f"expected proba of shape ({n}, K), got {proba.shape}")
        if not np.isfinite(proba).all():
            raise ValueError("proba holds NaN or infinite values")
        k = proba.shape[1]
    else:
        k = len(classes) if classes is not None else int(max(y_true.max(), y_pred.max())) + 1
    names = [str(c) for c in classes] if classes is not None else [str(c) for c in range(k)]
    if len(names) != k:
        raise ValueError(f"expected {k} class names, got {len(names)}")
    if max(y_true.max(), y_pred.max()) >= k:
        raise ValueError(f"class indices must lie in 0..{k - 1} for {k} classes")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimates = {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0.0)),
        }
    if proba is not None:
        for c in range(k):
            positive = y_true == c
            both = 0 < positive.sum() < n
            auc = roc_auc_score(positive, proba[:, c]) if both else float("nan")
            estimates[f"auc:{c}"] = float(auc)

    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // n)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in estimates}
    for start in range(0, int(n_resamples), rows):
        idx = rng.integers(0, n, size=(min(rows, int(n_resamples) - start), n))
        for key, values in _classification_resamples(y_true, y_pred, proba, k, idx).items():
            parts[key].append(values)

    out = {}
    for key, estimate in estimates.items():
        distribution = np.concatenate(parts[key]) if parts[key] else np.array([])
        bounds = _percentile(distribution, level) if np.isfinite(estimate) else None
        name = f"auc_{names[int(key[4:])]}" if key.startswith("auc:") else key
        out[name] = (
            Interval(estimate, *bounds, level, "percentile")
            if bounds
            else Interval(estimate, float("nan"), float("nan"), level, "none")
        )
    return out


def mcnemar_test(y_true, pred_a, pred_b) -> tuple[float, float]:
    """McNemar's test of two classifiers on the same samples (statsmodels).

    The 2x2 table counts samples both get right, only a, only b, neither. The exact binomial
    test is used when there are fewer than 25 discordant samples, else the chi-square test with
    continuity correction.

    Returns:
        (statistic, p-value).

    Raises:
        ValueError: On arrays of different lengths or no samples.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    y_true, pred_a, pred_b = (np.asarray(v).ravel() for v in (y_true, pred_a, pred_b))
    if not len(y_true) == len(pred_a) == len(pred_b) or len(y_true) == 0:
        raise ValueError(
            "expected the same, non-zero number of labels and predictions, got "
            f"{len(y_true)}, {len(pred_a)}, {len(pred_b)}"
        )
    a, b = pred_a == y_true, pred_b == y_true
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    discordant = table[0, 1] + table[1, 0]
    result = mcnemar(table, exact=bool(discordant < 25), correction=True)
    return float(result.statistic), float(result.pvalue)


def prediction_agreement(pred_a, pred_b) -> float:
    """Share of samples on which two classifiers predict the same class."""
    pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
    if pred_a.shape != pred_b.shape or pred_a.size == 0:
        raise ValueError(
            f"expected two non-empty prediction arrays of one shape, got {pred_a.shape} "
            f"and {pred_b.shape}"
        )
    return float(np.mean(pred_a == pred_b))


def logit_correlation(logits_a, logits_b) -> float:
    """Pearson correlation of two models' logits, flattened (samples x classes)."""
    logits_a, logits_b = np.asarray(logits_a, dtype=float), np.asarray(logits_b, dtype=float)
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"expected logits of one shape, got {logits_a.shape} and {logits_b.shape}")
    return pearson(logits_a.ravel(), logits_b.ravel())


# ---------------------------------------------------------------------------------------------
# choices made inside cross-validation


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
    `KFold(shuffle=True, random_state=seed)`, or `GroupKFold(shuffle=True, random_state=seed)`
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
