"""Rating prediction: ridge and RBF-SVR from per-layer distances to a case's mean rating.

They run in nested cross-validation grouped by case: the outer folds give every case a
prediction from a model that never saw it, and the hyper-parameters are chosen by an inner
grid search (mean absolute error) on the outer training part only. Beside them, on the same
folds, the naive `median_predictor` predicts every held-out case the median target of its
training part (the best constant for mean absolute error): a model that does not beat it has
learned nothing from the distances.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from bridge.core.data.splits import kfold
from evaluation import stats
from evaluation.baselines import _common as common

logger = logging.getLogger(__name__)


def _ridge(seed: int) -> Pipeline:
    """Standardised features, ridge regression (the seed matters to the sag solvers only)."""
    return Pipeline([("scale", StandardScaler()), (common.MODEL, Ridge(random_state=seed))])


def _svr(seed: int) -> Pipeline:
    """Standardised features, RBF support-vector regression (deterministic)."""
    del seed
    return Pipeline([("scale", StandardScaler()), (common.MODEL, SVR(kernel="rbf", gamma="scale"))])


def _median(seed: int) -> Pipeline:
    """The naive baseline: the training targets' median, whatever the features."""
    del seed
    return Pipeline([(common.MODEL, DummyRegressor(strategy="median"))])


NAIVE = "median_predictor"
"""The key of the naive baseline in `REGRESSORS`: nothing to tune, fitted on each training
part alone like every other regressor."""

REGRESSORS: dict[str, tuple[Callable[[int], Pipeline], dict[str, tuple]]] = {
    "ridge": (_ridge, {"model__alpha": tuple(float(a) for a in np.logspace(-3, 3, 7))}),
    "svr": (_svr, {"model__C": (0.1, 1.0, 10.0), "model__epsilon": (0.1, 0.5)}),
    NAIVE: (_median, {}),
}
"""Name -> (estimator factory taking a seed, parameter grid) of the rating regressors.

The SVR's `epsilon` (the width of the loss-free tube) is in rating units (the 1-7 scale).
`NAIVE` predicts a constant per fold, so its SRCC (ranked within folds) is NaN: it is there
for its MAE.
"""


@dataclass(frozen=True)
class RatingPrediction:
    """Cross-fitted predictions of the mean rating by one regressor.

    Attributes:
        name: Key of `REGRESSORS`.
        predictions: Held-out prediction of every item, in the input order, each from the model
            of the outer fold that left the item out; NaN for items without a target.
        chosen_params: The inner cross-validation's choice on each outer fold.
        srcc: Spearman correlation with the targets of the held-out predictions, ranked within
            each outer fold (`rating_baselines` says why).
        mae: Mean absolute error of the held-out predictions.
        folds: Number of outer folds.
    """

    name: str
    predictions: np.ndarray
    chosen_params: tuple[dict, ...]
    srcc: float
    mae: float
    folds: int


def rating_baselines(
    X,
    y,
    outer_folds: int = 5,
    inner_folds: int = 4,
    seed: int = 0,
    groups=None,
    names: Sequence[str] | None = None,
) -> list[RatingPrediction]:
    """Predict the mean rating from distances in nested cross-validation.

    Outer folds come from `bridge.core.data.splits.kfold`: shuffled `KFold`, or shuffled
    `GroupKFold` when groups (patients, lesions, cases) are given, so the items of one group are
    never split. On
    each outer training part, `GridSearchCV` (scoring: negative mean absolute error) picks the
    hyper-parameters over inner folds of the same kind, built from that part only; the refit
    model predicts the outer held-out part. Every item is thus predicted by a model that never
    saw it.

    The SRCC pools the held-out predictions after ranking them within each outer fold (as
    `evaluation.stats.cv_select` does): raw pooled predictions carry each fold's training mean,
    which is anti-correlated with the fold's held-out targets, so a model with no signal (large
    ridge penalty) would get a clearly negative SRCC instead of one near 0. The MAE uses the raw
    predictions.

    Items with a NaN target are dropped (their prediction is NaN); the features of the other
    items must be finite.

    Args:
        X: (N, D) features: per-layer distances, classical scores.
        y: Target of each item (the mean rating).
        outer_folds: Number of outer folds.
        inner_folds: Number of inner folds.
        seed: Seed of the fold assignments.
        groups: Optional group of each item (patient, lesion or case).
        names: Which `REGRESSORS` to run (default: all, in their order, the naive
            `NAIVE` last).

    Returns:
        One `RatingPrediction` per name, in the order of `names`.

    Raises:
        ValueError: On mismatched shapes, columns of X with NaN or infinite values (their count
            is named), infinite targets, too few items (or groups) for the folds, or an unknown
            name.
    """
    X = common.matrix("X", X)
    target = _rating_targets(y, len(X))
    outer = common.folds("outer_folds", outer_folds)
    inner = common.folds("inner_folds", inner_folds)
    chosen = common.names(names, REGRESSORS, "regressor")
    group_all = common.groups("group", groups, len(X))
    keep = ~np.isnan(target)
    if not keep.all():
        logger.info("rating baselines: %d item(s) without a target dropped", int((~keep).sum()))
    Xk, yk = X[keep], target[keep]
    _check_finite_columns(Xk)
    gk = None if group_all is None else group_all[keep]
    splits = common.outer_splits(len(yk), outer, seed, gk)
    inner_cv = kfold(inner, seed, gk is not None)
    _check_inner_units(splits, inner, gk)

    results = []
    for name in chosen:
        held_out, srcc, params = _nested_regression(name, Xk, yk, gk, splits, inner_cv, seed)
        mae = float(np.mean(np.abs(held_out - yk)))
        predictions = np.full(len(X), np.nan)
        predictions[keep] = held_out
        logger.info("%s: held-out SRCC %.3f, MAE %.3f", name, srcc, mae)
        results.append(RatingPrediction(name, predictions, params, srcc, mae, outer))
    return results


def _rating_targets(y, n: int) -> np.ndarray:
    """One target per row of X as floats: NaN (left out) allowed, infinite values not."""
    target = np.asarray(y, dtype=float)
    if target.shape != (n,):
        raise ValueError(f"expected one target per row of X ({n}), got shape {target.shape}")
    if np.isinf(target).any():
        raise ValueError("y holds infinite values; expected finite targets (NaN to leave out)")
    return target


def _check_finite_columns(X: np.ndarray) -> None:
    """Raise, naming the first columns, when any column of X holds NaN or infinite values."""
    bad = np.flatnonzero(~np.isfinite(X).all(axis=0))
    if len(bad):
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(
            f"X has {len(bad)} column(s) with NaN or infinite values (columns {shown}); "
            "expected finite features: drop or impute those columns"
        )


def _check_inner_units(splits, inner: int, groups: np.ndarray | None) -> None:
    """Raise unless every outer training part holds `inner` items (groups, when given)."""
    fewest = min(
        len(train) if groups is None else len(np.unique(groups[train])) for train, _ in splits
    )
    if fewest < inner:
        what = "items" if groups is None else "groups"
        raise ValueError(
            f"{inner} inner folds need at least {inner} {what} in every outer training part, "
            f"got {fewest}; use fewer folds"
        )


def _nested_regression(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    inner_cv,
    seed: int,
) -> tuple[np.ndarray, float, tuple[dict, ...]]:
    """One regressor of `REGRESSORS` in nested cross-validation: tuned per outer training part.

    Returns:
        The held-out prediction of every item, their SRCC with `y` after ranking within each
        outer fold (`rating_baselines` says why), and the hyper-parameters chosen on each fold.
    """
    factory, grid = REGRESSORS[name]
    held_out, normalised = np.full(len(y), np.nan), np.full(len(y), np.nan)
    params = []
    for train, test in splits:
        search = common.grid_search(factory(seed), grid, "neg_mean_absolute_error", inner_cv)
        search.fit(X[train], y[train], groups=None if groups is None else groups[train])
        held_out[test] = search.predict(X[test])
        normalised[test] = (sps.rankdata(held_out[test]) - 0.5) / len(test)
        params.append(common.plain_params(search.best_params_))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant predictions: SRCC is NaN
        srcc = float(stats.srcc(normalised, y))
    return held_out, srcc, tuple(params)
