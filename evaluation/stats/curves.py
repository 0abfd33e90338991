"""Monotonic curves fitted from metric scores to ratings, before PLCC.

The 4-parameter logistic (the default), VQEG's 5-parameter logistic, or a line (docs/statistics.md
gives the formulas). The fit runs on standardised data with analytic Jacobians; `fit_logistic`
falls back to a linear fit, with a logged warning, when the logistic fit does not converge.

Missing data: `fit_logistic` fits on the cases where both values are finite.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

from evaluation.stats._checks import _vectors

logger = logging.getLogger(__name__)

FITS = ("logistic4", "logistic5", "linear", "none")


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
        kind: `logistic4` (the default of docs/statistics.md), `logistic5` (VQEG) or
            `linear`.

    Returns:
        A callable mapping scores to fitted ratings; its `kind` and `params` attributes say
        which curve was fitted (in the data's own units).

    Raises:
        ValueError: On an unknown kind, or arrays that are not one value per case.
    """
    return _fit_curve(x, y, kind)
