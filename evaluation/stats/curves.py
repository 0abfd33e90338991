"""Monotonic curves fitted from metric scores to ratings, before PLCC.

The 4-parameter logistic (the default), VQEG's 5-parameter logistic, or a line (docs/statistics.md
gives the formulas). Every curve is monotonic by construction, in the direction of the SRCC
(or one given), with its centre inside the scores' range and its width bounded below (so it
cannot become a step); the logistic fits run on standardised data with analytic Jacobians,
bounded (scipy's trust-region reflective least squares), from several starting points, keeping
the least squared error. `fit_logistic` falls back to a linear fit, with a logged warning,
when no logistic fit converges.

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


def _linear_curve(x: np.ndarray, y: np.ndarray, sign: float | None = None) -> _FittedCurve:
    """Least-squares line; a constant (the mean rating) if flat or against `sign`.

    The constant is used when the scores do not vary, or when the best line runs against the
    required direction `sign`.
    """
    if len(x) == 0:
        return _FittedCurve("linear", (0.0, np.nan))
    if len(x) < 2 or np.ptp(x) == 0:
        return _FittedCurve("linear", (0.0, float(np.mean(y))))
    slope, intercept = np.polyfit(x, y, 1)
    if sign is not None and slope * sign < 0:
        return _FittedCurve("linear", (0.0, float(np.mean(y))))
    return _FittedCurve("linear", (slope, intercept))


# Bounds of the logistic fits on standardised data (x and y with mean 0, sd 1); see _bounds.
_WIDTH_RANGE = (1 / 20, 10.0)  # the logistic's width b4 as a share of the scores' range
_STARTS = ((0.5, 1.0), (0.5, 4.0), (0.25, 0.5), (0.75, 0.5))  # (centre quantile, width)


def _direction(x: np.ndarray, y: np.ndarray) -> float:
    """+1 for an increasing relation, -1 for a decreasing one: the sign of the SRCC."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = sps.spearmanr(x, y).statistic
    return -1.0 if rho < 0 else 1.0


def _bounds(kind: str, xs: np.ndarray, ys: np.ndarray, sign: float):
    """Box bounds of the fit's parameters on standardised data.

    They keep the curve monotonic in direction `sign`, centred in the data's range, and no
    steeper than a step over a twentieth of the range.
    """
    span = float(np.ptp(xs))
    w_low, w_high = _WIDTH_RANGE[0] * span, _WIDTH_RANGE[1] * span
    amp = 4.0 * w_high  # lets the curve's linear limit reach slope 1 (sd units)
    y_low, y_high = float(ys.min()), float(ys.max())
    x_low, x_high = float(xs.min()), float(xs.max())
    if kind == "logistic4":  # (lo, amplitude, centre, width)
        return [y_low - amp, 0.0, x_low, w_low], [y_high, amp, x_high, w_high]
    # logistic5 (b1, b2, b3, b4, b5): b1 b2 >= 0 and b4 of the sign of the relation
    b1 = (0.0, amp) if sign > 0 else (-amp, 0.0)
    b4 = (0.0, 1.0) if sign > 0 else (-1.0, 0.0)
    low = [b1[0], 1 / w_high, x_low, b4[0], y_low - 2 * amp]
    high = [b1[1], 1 / w_low, x_high, b4[1], y_high + 2 * amp]
    return low, high


def _starts(kind: str, xs: np.ndarray, ys: np.ndarray, sign: float, low, high):
    """Starting points spread over centres and widths, each inside the bounds."""
    span = float(np.ptp(xs))
    spread = float(np.ptp(ys))
    out = []
    for quantile, width in _STARTS:
        centre = float(np.quantile(xs, quantile))
        w = min(max(width, low[3] if kind == "logistic4" else 1 / high[1]), span * 10)
        if kind == "logistic4":
            start = [float(ys.min()), spread, centre, w]
        else:
            start = [sign * spread, 1 / w, centre, 0.0, float(ys.mean())]
        out.append(np.clip(start, np.nextafter(low, high), np.nextafter(high, low)))
    return out


def _logistic4_directed(sign: float):
    """Lo + amplitude * expit(sign (x - centre) / width), with its Jacobian."""

    def model(x, lo, amp, centre, width):
        return lo + amp * special.expit(sign * (x - centre) / width)

    def jacobian(x, lo, amp, centre, width):
        z = sign * (x - centre) / width
        e = special.expit(z)
        d = amp * e * (1 - e)
        out = np.empty((len(x), 4))
        out[:, 0] = 1.0
        out[:, 1] = e
        out[:, 2] = -d * sign / width
        out[:, 3] = -d * z / width
        return out

    return model, jacobian


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


RESAMPLE_TOLERANCE = 1e-6  # curve-fit tolerance inside bootstrap resamples (speed; PLCC to ~1e-4)


def _fit_curve(
    x, y, kind: str, resample: bool = False, quiet: bool = False, direction: float | None = None
) -> _FittedCurve:
    """Fit `kind` to the finite pairs; linear fallback (logged unless quiet) on failure.

    The curve is monotonic in `direction` (+1 increasing, -1 decreasing; default the sign of
    the SRCC of the pairs), its centre lies within the scores' range and its width is bounded
    below, so it cannot turn into a step. Every start of `_STARTS` is fitted and the least
    squared error kept. In a bootstrap resample or a noise draw (`resample=True`) the fit is
    quiet, tries the first two starts only and stops at a looser tolerance.
    """
    if kind not in FITS or kind == "none":
        raise ValueError(f"unknown fit kind {kind!r}; expected one of logistic4, logistic5, linear")
    x, y = _vectors(x=x, y=y)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    sign = float(direction) if direction is not None else _direction(x, y)
    if kind == "linear":
        return _linear_curve(x, y, sign)
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
        if kind == "logistic4":
            model, jacobian = _logistic4_directed(sign)
        else:
            model, jacobian = logistic5, _logistic5_jacobian
        low, high = _bounds(kind, xs, ys, sign)
        best, best_sse = None, np.inf
        starts = _starts(kind, xs, ys, sign, low, high)
        for start in starts[:2] if resample else starts:
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p, _ = optimize.curve_fit(
                        model, xs, ys, p0=start, jac=jacobian, bounds=(low, high),
                        method="trf", max_nfev=2000, **options,
                    )  # fmt: skip
            except (RuntimeError, ValueError, TypeError) as error:
                reason = str(error).replace("\n", " ")
                continue
            fitted = model(xs, *p)
            sse = float(np.sum((fitted - ys) ** 2))
            if np.isfinite(p).all() and np.isfinite(sse) and sse < best_sse:
                best, best_sse = p, sse
        if best is not None:
            if kind == "logistic4":
                lo, amp, centre, width = best
                top, bottom = (lo + amp, lo) if sign > 0 else (lo, lo + amp)
                best = (top, bottom, centre, width)
            return _FittedCurve(kind, _unstandardise(kind, best, mx, sx, my, sy))
        reason = reason or "the fit gave non-finite parameters"
    if not (resample or quiet):
        logger.warning("%s fit failed (%s); falling back to a linear fit", kind, reason)
    return _linear_curve(x, y, sign)


def _unstandardise(kind: str, p, mx: float, sx: float, my: float, sy: float) -> tuple:
    """Parameters fitted on standardised x, y expressed in the data's own units."""
    if kind == "logistic4":
        b1, b2, b3, b4 = p
        return sy * b1 + my, sy * b2 + my, mx + sx * b3, sx * b4
    b1, b2, b3, b4, b5 = p
    return sy * b1, b2 / sx, mx + sx * b3, sy * b4 / sx, sy * (b5 - b4 * mx / sx) + my


def fit_logistic(
    x, y, kind: str = "logistic4", direction: float | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """Fit ratings `y` as a monotonic logistic function of scores `x`.

    The curve rises when the SRCC of x and y is positive and falls when it is negative (or as
    `direction` says), by construction: logistic4 with b4 > 0 and b1 >= b2 (rising) or
    b1 <= b2 (falling); logistic5 with b1 b2 >= 0 and b4 of the direction's sign. Its centre b3
    lies within the range of x and its width (b4, 1 / b2) is at least a twentieth of that
    range. The fit runs on standardised data from several starting points (centres at the
    quartiles and median of x, several widths) and keeps the least squared error. When no start
    converges (or there are too few cases, or constant data), it falls back to a linear fit and
    logs a warning. Cases where either value is NaN are left out of the fit.

    Args:
        x: Metric scores, one per case.
        y: Ratings, one per case.
        kind: `logistic4` (the default of docs/statistics.md), `logistic5` (VQEG) or
            `linear`.
        direction: +1 (rising) or -1 (falling); default the sign of the SRCC.

    Returns:
        A callable mapping scores to fitted ratings; its `kind` and `params` attributes say
        which curve was fitted (in the data's own units).

    Raises:
        ValueError: On an unknown kind, or arrays that are not one value per case.
    """
    if direction is not None and direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    return _fit_curve(x, y, kind, direction=direction)
