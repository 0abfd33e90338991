"""Ordinal severity: a proportional-odds model from one distance to the 1-7 rating category.

It replaces the thesis's KMeans bucketing of distances: its thresholds are learned from the
ratings and keep the categories' order. On each outer training part every candidate distance
gets its own model and the one with the best training-part quadratic weighted kappa is kept,
then it predicts the held-out cases. Accuracy, mean absolute error and quadratic weighted
kappa are given against the reference (the rounded mean rating) and against each rater, next
to the raters' own agreement on the same scale (`rater_agreement`), and next to the naive
baseline on the same folds: every held-out case gets the median category of its training part.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import cohen_kappa_score

from evaluation.baselines import _common as common

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrdinalResult:
    """Held-out severity categories predicted by an ordered logit model of one distance.

    Attributes:
        feature: The distance column chosen on each outer fold's training part; "" where no
            column could be fit (one category, or constant columns) and the most frequent
            training category was predicted.
        predictions: Held-out predicted category of every item, in the input order (float,
            NaN for the items left out: no rating or a NaN distance).
        accuracy: Fraction of items whose predicted category equals the reference category.
        mae: Mean absolute difference from the reference category, in categories.
        qwk: Quadratic weighted Cohen's kappa with the reference category.
        per_rater: Rater -> `accuracy`, `mae`, `qwk` of the predicted category against that
            rater's (rounded) score, over the items the rater scored.
        folds: Number of outer folds.
        naive: `accuracy`, `mae`, `qwk` against the reference of the naive baseline on the
            same folds: each held-out item gets the median reference category of its
            training part (rounded half up; the best constant for the MAE). Constant within
            each fold, its QWK is near 0; a model that does not beat its MAE learned nothing.
    """

    feature: tuple[str, ...]
    predictions: np.ndarray
    accuracy: float
    mae: float
    qwk: float
    per_rater: dict[str, dict[str, float]]
    folds: int
    naive: dict[str, float] = field(default_factory=dict)


def _check_categories(categories: Sequence[int]) -> np.ndarray:
    """Consecutive increasing integer categories, at least 2."""
    cats = np.asarray(categories)
    if (
        cats.ndim != 1
        or len(cats) < 2
        or not np.issubdtype(cats.dtype, np.integer)
        or (np.diff(cats) != 1).any()
    ):
        raise ValueError(
            f"expected at least 2 consecutive increasing integer categories, got {categories!r}"
        )
    return cats.astype(np.int64)


def _to_category(values: np.ndarray, cats: np.ndarray) -> np.ndarray:
    """Scores rounded half up and clipped to the categories (finite values only)."""
    rounded = np.floor(np.asarray(values, dtype=float) + 0.5)
    return np.clip(rounded, cats[0], cats[-1]).astype(np.int64)


def _qwk(truth: np.ndarray, predicted: np.ndarray, labels: np.ndarray) -> float:
    """Quadratic weighted kappa; NaN when undefined (e.g. one category on both sides)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(truth, predicted, weights="quadratic", labels=labels))


def _category_metrics(truth: np.ndarray, predicted: np.ndarray, cats: np.ndarray) -> dict:
    """Accuracy, mean absolute error and QWK of predicted categories; NaN on no items."""
    if len(truth) == 0:
        return {"accuracy": float("nan"), "mae": float("nan"), "qwk": float("nan")}
    return {
        "accuracy": float(np.mean(truth == predicted)),
        "mae": float(np.mean(np.abs(truth - predicted))),
        "qwk": _qwk(truth, predicted, cats),
    }


def _ratings(ratings_table, raters: Sequence[str], n: int | None = None) -> np.ndarray:
    """The (items, raters) float table, checked against the rater names."""
    table = np.asarray(ratings_table, dtype=float)
    names = list(raters)
    if table.ndim != 2 or table.shape[1] != len(names):
        raise ValueError(
            f"expected a (items, {len(names)} raters) ratings table, got shape {table.shape}"
        )
    if n is not None and len(table) != n:
        raise ValueError(f"expected one row of ratings per item ({n}), got {len(table)}")
    if len(set(names)) != len(names):
        raise ValueError(f"rater names must be unique, got {names}")
    if np.isinf(table).any():
        raise ValueError("the ratings table holds infinite values; expected ratings or NaN")
    return table


def _fit_ordinal(
    x_train: np.ndarray, codes: np.ndarray, x_test: np.ndarray, names: list[str], labels: np.ndarray
):
    """Pick the column whose ordered logit fits the training part best; predict the test part.

    `codes` are category codes 0..len(labels)-1; the model is fit on the codes present.

    Returns:
        (chosen column name or "", predicted category codes of the test rows).
    """
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    present, levels = np.unique(codes, return_inverse=True)
    majority = present[np.argmax(np.bincount(levels))]
    fallback = ("", np.full(len(x_test), majority))
    if len(present) < 2:
        return fallback
    best, best_qwk = fallback, -np.inf
    for c, name in enumerate(names):
        mean, sd = x_train[:, c].mean(), x_train[:, c].std()
        if not sd > 0:
            continue  # a constant column cannot order the categories
        z_train = ((x_train[:, c] - mean) / sd)[:, None]
        z_test = ((x_test[:, c] - mean) / sd)[:, None]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            # separable categories (a distance that orders them perfectly) do not converge:
            # the slope grows until the optimiser stops, and the predictions stay right
            warnings.simplefilter("ignore")
            model = OrderedModel(levels, z_train, distr="logit")
            fitted = model.fit(method="bfgs", disp=False, maxiter=200, skip_hessian=True)
            fit_levels = model.predict(fitted.params, exog=z_train).argmax(axis=1)
            test_levels = model.predict(fitted.params, exog=z_test).argmax(axis=1)
        score = _qwk(codes, present[fit_levels], labels)
        if np.isfinite(score) and score > best_qwk:
            best, best_qwk = (name, present[test_levels]), score
    return best


def _distance_columns(columns: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """The candidate names and their distances as an (items, candidates) float matrix."""
    names = list(columns)
    if not names:
        raise ValueError("expected at least one candidate distance column")
    arrays = [np.asarray(columns[name], dtype=float) for name in names]
    n = len(arrays[0])
    for name, array in zip(names, arrays, strict=True):
        if array.shape != (n,):
            raise ValueError(
                f"column {name!r}: expected one distance per item ({n}), got shape {array.shape}"
            )
    return names, np.column_stack(arrays)


def _reference_categories(
    table: np.ndarray, x: np.ndarray, cats: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The items kept (a rating and finite distances) and their reference category.

    The reference is the mean of an item's available ratings, rounded half up and clipped.
    """
    rated = ~np.isnan(table).all(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without a rating
        mean_rating = np.nanmean(table, axis=1)
    keep = rated & np.isfinite(x).all(axis=1)
    if not keep.all():
        logger.info(
            "ordinal baseline: %d item(s) without a rating or with a NaN distance left out",
            int((~keep).sum()),
        )
    return keep, _to_category(mean_rating[keep], cats)


def _cross_fit_ordinal(
    x: np.ndarray,
    reference: np.ndarray,
    names: list[str],
    cats: np.ndarray,
    folds: int,
    seed: int,
    groups: np.ndarray | None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per outer fold the chosen column; per item the held-out and the naive category.

    The naive category is the median category of the item's training part.
    """
    codes = reference - cats[0]
    chosen, held_out = [], np.zeros(len(codes), dtype=np.int64)
    naive = np.zeros(len(codes), dtype=np.int64)
    for train, test in common.outer_splits(len(codes), folds, seed, groups):
        name, predicted = _fit_ordinal(x[train], codes[train], x[test], names, np.arange(len(cats)))
        chosen.append(name)
        held_out[test] = predicted
        naive[test] = np.floor(np.median(codes[train]) + 0.5)
    return chosen, held_out + cats[0], naive + cats[0]


def _per_rater_metrics(
    table: np.ndarray, raters: Sequence[str], predicted: np.ndarray, cats: np.ndarray
) -> dict[str, dict[str, float]]:
    """Accuracy, MAE and QWK of the predicted categories against each rater's own scores."""
    per_rater = {}
    for j, rater in enumerate(raters):
        scored = ~np.isnan(table[:, j])
        own = _to_category(table[:, j][scored], cats)
        per_rater[str(rater)] = _category_metrics(own, predicted[scored], cats)
    return per_rater


def ordinal_baseline(
    columns: Mapping[str, np.ndarray],
    ratings_table: np.ndarray,
    raters: Sequence[str],
    categories: Sequence[int] = tuple(range(1, 8)),
    outer_folds: int = 5,
    seed: int = 0,
    groups=None,
) -> OrdinalResult:
    """Predict the severity category from one distance with an ordered logit, cross-fitted.

    This replaces the thesis's KMeans bucketing of distances: instead of clustering the
    distances without the ratings, the ordered logit (statsmodels `OrderedModel`,
    `distr="logit"`) learns ordered thresholds from the ratings, and is scored on held-out folds.

    The reference category of an item is the mean of its available ratings rounded half up and
    clipped to `categories`. Outer folds come from `bridge.core.data.splits.kfold`: shuffled
    `KFold`, or shuffled `GroupKFold` over `groups`. On each outer training part every candidate
    column (standardised on that part) gets an ordered logit fit on the categories present
    there; the column whose model has the best quadratic weighted kappa on the training part
    itself is kept (every candidate has the same number of parameters, one slope and the
    thresholds, so the in-sample comparison is fair, and the held-out part is never looked at).
    The held-out items get the category of highest predicted probability. QWK is
    `cohen_kappa_score(weights="quadratic", labels=categories)`. The naive baseline (`naive`)
    predicts each held-out item its training part's median category, on the same folds.

    Items without any rating, or with a NaN in any column, are left out.

    Args:
        columns: Candidate name -> distance of each item.
        ratings_table: (items, raters) ratings on the category scale, NaN where missing.
        raters: Rater names, one per column of the table.
        categories: The consecutive integer categories (1..7).
        outer_folds: Number of outer folds.
        seed: Seed of the fold assignment.
        groups: Optional group of each item (patient, lesion or case); no group is split
            across folds.

    Returns:
        The chosen column per fold, held-out predictions, and their agreement with the
        reference and with each rater.

    Raises:
        ValueError: On no candidates, mismatched lengths, a ratings table that does not match
            the raters, categories that are not consecutive integers, or too few items (or
            groups) for the folds.
    """
    names, x = _distance_columns(columns)
    n = len(x)
    table = _ratings(ratings_table, raters, n)
    cats = _check_categories(categories)
    folds = common.folds("outer_folds", outer_folds)
    group_all = common.groups("group", groups, n)
    keep, reference = _reference_categories(table, x, cats)
    gk = None if group_all is None else group_all[keep]
    chosen, predicted_cats, naive_cats = _cross_fit_ordinal(
        x[keep], reference, names, cats, folds, seed, gk
    )
    overall = _category_metrics(reference, predicted_cats, cats)
    naive = _category_metrics(reference, naive_cats, cats)
    per_rater = _per_rater_metrics(table[keep], raters, predicted_cats, cats)
    predictions = np.full(n, np.nan)
    predictions[keep] = predicted_cats
    logger.info(
        "ordinal baseline: accuracy %.3f, MAE %.3f, QWK %.3f (columns %s); naive median "
        "category: accuracy %.3f, MAE %.3f",
        overall["accuracy"],
        overall["mae"],
        overall["qwk"],
        ", ".join(chosen),
        naive["accuracy"],
        naive["mae"],
    )
    return OrdinalResult(
        tuple(chosen),
        predictions,
        overall["accuracy"],
        overall["mae"],
        overall["qwk"],
        per_rater,
        folds,
        naive,
    )


def rater_agreement(
    ratings_table: np.ndarray,
    raters: Sequence[str],
    categories: Sequence[int] = tuple(range(1, 8)),
) -> dict[str, dict[str, float]]:
    """The raters' own agreement on the category scale, comparable with `ordinal_baseline`.

    Each rater's score (rounded half up, clipped to the categories) is compared with the mean of
    the other raters' available scores, rounded and clipped alike, over the items the rater
    scored and at least one other rater scored.

    Args:
        ratings_table: (items, raters) ratings, NaN where missing.
        raters: Rater names, one per column.
        categories: The consecutive integer categories.

    Returns:
        Rater -> `accuracy`, `mae`, `qwk` (NaN when the rater shares no item with the others),
        plus `mean`: each statistic averaged over the raters where it is defined.

    Raises:
        ValueError: On fewer than 2 raters, a table that does not match them, a rater named
            `mean`, or categories that are not consecutive integers.
    """
    table = _ratings(ratings_table, raters)
    cats = _check_categories(categories)
    if len(raters) < 2:
        raise ValueError(f"agreement needs at least 2 raters, got {len(raters)}")
    if "mean" in raters:
        raise ValueError("a rater may not be named 'mean' (the key of the average)")
    out: dict[str, dict[str, float]] = {}
    for j, rater in enumerate(raters):
        others = np.delete(table, j, axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # items no other rater scored
            others_mean = np.nanmean(others, axis=1)
        both = ~np.isnan(table[:, j]) & ~np.isnan(others_mean)
        out[str(rater)] = _category_metrics(
            _to_category(table[both, j], cats), _to_category(others_mean[both], cats), cats
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a statistic NaN for every rater
        out["mean"] = {
            key: float(np.nanmean([out[str(r)][key] for r in raters]))
            for key in ("accuracy", "mae", "qwk")
        }
    return out
