"""Learned baselines on features and distances: classifiers, rating regressors, an ordinal model.

The baselines:

* Classification baselines (`classification_baselines`): logistic regression, a linear SVM,
  a random forest and k-nearest neighbours are trained with scikit-learn on pooled deep
  features (`pooled_features`: the global average of every tap of an exported feature
  extractor). Each model's hyper-parameters are chosen by an inner grid search that maximises
  balanced accuracy over stratified folds that never split a lesion; the chosen model is refit
  on the whole training split and predicts the same test split as the fine-tuned networks.
* Rating prediction (`rating_baselines`): ridge regression and an RBF support-vector
  regression map per-layer distances (and classical features) to the mean rating of a case.
  They run in nested cross-validation grouped by case: the outer folds give every case a
  prediction from a model that never saw it, and the hyper-parameters are chosen by an inner
  grid search (mean absolute error) on the outer training part only.
* Ordinal severity (`ordinal_baseline`): a proportional-odds (ordered logit) model maps one
  distance to the 1-7 category, replacing the thesis's KMeans bucketing of distances: its
  thresholds are learned from the ratings and keep the categories' order. On each outer
  training part every candidate distance gets its own model and the one with the best
  training-part quadratic weighted kappa is kept, then it predicts the held-out cases.
  Accuracy, mean absolute error and quadratic weighted kappa are given against the reference
  (the rounded mean rating) and against each rater, next to the raters' own agreement on the
  same scale (`rater_agreement`).

Conventions: the reference category of a case is the mean of the available ratings rounded
half up and clipped to the categories. Inputs with NaN follow the rules in each function's
docstring; cross-fitted outputs keep the input's order, with NaN for the cases left out.
scikit-learn and statsmodels do the fitting; nothing here imports torch or tensorflow.

    X = pooled_features(extractor, images)                    # (N, D) pooled tap features
    fitted = classification_baselines(X[train], y[train], X[test], groups_train=lesions[train])
    rated = rating_baselines(distance_table, mean_ratings, groups=cases)
    ordinal = ordinal_baseline({"layer3/gap": d3, "layer4/gap": d4}, ratings, raters)
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import cohen_kappa_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from bridge.core.data.splits import kfold
from evaluation import stats

logger = logging.getLogger(__name__)

_MODEL = "model"
"""Name of the estimator step in every pipeline; grids address its parameters `model__...`."""


def _logistic_regression(seed: int) -> Pipeline:
    """Standardised features, multinomial logistic regression with balanced class weights."""
    model = LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)
    return Pipeline([("scale", StandardScaler()), (_MODEL, model)])


def _linear_svm(seed: int) -> Pipeline:
    """Standardised features, a linear-kernel SVM (libsvm, one-vs-one) with balanced class weights.

    libsvm works on the N x N kernel, so a few hundred images cost well under a second
    whatever the feature width. liblinear (`LinearSVC`) crawled on these wide, nearly
    separable features: its dual solver ran ~80 s per grid point without converging on a
    ViT's 1536 pooled channels, its primal one ~100 s on a ResNet's 2048.
    """
    model = SVC(kernel="linear", class_weight="balanced", random_state=seed)
    return Pipeline([("scale", StandardScaler()), (_MODEL, model)])


def _random_forest(seed: int) -> Pipeline:
    """A random forest (trees need no scaling) with balanced class weights."""
    model = RandomForestClassifier(n_estimators=100, class_weight="balanced", random_state=seed)
    return Pipeline([(_MODEL, model)])


def _knn(seed: int) -> Pipeline:
    """Standardised features, k-nearest neighbours (deterministic: `seed` is unused)."""
    del seed
    return Pipeline([("scale", StandardScaler()), (_MODEL, KNeighborsClassifier())])


def _ridge(seed: int) -> Pipeline:
    """Standardised features, ridge regression (the seed matters to the sag solvers only)."""
    return Pipeline([("scale", StandardScaler()), (_MODEL, Ridge(random_state=seed))])


def _svr(seed: int) -> Pipeline:
    """Standardised features, RBF support-vector regression (deterministic)."""
    del seed
    return Pipeline([("scale", StandardScaler()), (_MODEL, SVR(kernel="rbf", gamma="scale"))])


CLASSIFIERS: dict[str, tuple[Callable[[int], Pipeline], dict[str, tuple]]] = {
    "logistic_regression": (_logistic_regression, {"model__C": (0.01, 0.1, 1.0)}),
    "linear_svm": (_linear_svm, {"model__C": (0.01, 0.1, 1.0)}),
    "random_forest": (
        _random_forest,
        {"model__max_depth": (None, 8)},
    ),
    "knn": (
        _knn,
        {"model__n_neighbors": (3, 5, 9, 15), "model__weights": ("uniform", "distance")},
    ),
}
"""Name -> (estimator factory taking a seed, parameter grid) of the classification baselines."""

REGRESSORS: dict[str, tuple[Callable[[int], Pipeline], dict[str, tuple]]] = {
    "ridge": (_ridge, {"model__alpha": tuple(float(a) for a in np.logspace(-3, 3, 7))}),
    "svr": (_svr, {"model__C": (0.1, 1.0, 10.0), "model__epsilon": (0.1, 0.5)}),
}
"""Name -> (estimator factory taking a seed, parameter grid) of the rating regressors.

The SVR's `epsilon` (the width of the loss-free tube) is in rating units (the 1-7 scale).
"""


@dataclass(frozen=True)
class FittedClassifier:
    """A classification baseline tuned on the training split and applied to the test split.

    Attributes:
        name: Key of `CLASSIFIERS`.
        best_params: The hyper-parameters chosen by the inner cross-validation (without the
            pipeline's `model__` prefix).
        inner_score: Mean inner-fold balanced accuracy of the chosen hyper-parameters.
        predictions: Predicted class index of every test sample.
        proba: (N, K) test class probabilities, K = the largest training label + 1, or None for
            a model without `predict_proba` (the linear SVM).
    """

    name: str
    best_params: dict
    inner_score: float
    predictions: np.ndarray
    proba: np.ndarray | None


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
    """

    feature: tuple[str, ...]
    predictions: np.ndarray
    accuracy: float
    mae: float
    qwk: float
    per_rater: dict[str, dict[str, float]]
    folds: int


# ---------------------------------------------------------------------------------------------
# input checks


def _matrix(name: str, values) -> np.ndarray:
    """A two-dimensional float array (samples x features), or a ValueError naming it."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty (samples, features) matrix, got shape {array.shape}"
        )
    return array


def _finite_matrix(name: str, values) -> np.ndarray:
    """`_matrix` without NaN or infinite values."""
    array = _matrix(name, values)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values; expected finite features")
    return array


def _groups(name: str, groups, n: int) -> np.ndarray | None:
    """One group label per sample, or None."""
    if groups is None:
        return None
    array = np.asarray(groups)
    if array.shape != (n,):
        raise ValueError(f"expected one {name} label per sample ({n}), got shape {array.shape}")
    return array


def _names(names: Sequence[str] | None, known: Mapping, what: str) -> list[str]:
    """The requested model names (all by default), checked against `known`."""
    chosen = list(known) if names is None else list(names)
    if not chosen:
        raise ValueError(f"expected at least one {what} name")
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise ValueError(
            f"unknown {what} {', '.join(map(repr, unknown))}; expected some of {', '.join(known)}"
        )
    return chosen


def _folds(name: str, folds: int) -> int:
    """A fold count of at least 2."""
    if int(folds) != folds or folds < 2:
        raise ValueError(f"{name} must be an integer of at least 2, got {folds}")
    return int(folds)


def _outer_splits(n: int, folds: int, seed: int, groups: np.ndarray | None):
    """Outer train / held-out index pairs over `n` items, with enough units to split."""
    units = n if groups is None else len(np.unique(groups))
    what = "items" if groups is None else "groups"
    if units < folds:
        raise ValueError(f"{folds} outer folds need at least {folds} {what}, got {units}")
    return list(kfold(folds, seed, groups is not None).split(np.zeros(n), groups=groups))


def _plain_params(params: Mapping) -> dict:
    """Grid-search parameters without the pipeline's step prefix, as plain Python values."""
    out = {}
    for key, value in params.items():
        plain = value.item() if isinstance(value, np.generic) else value
        out[key.split("__", 1)[1] if key.startswith(f"{_MODEL}__") else key] = plain
    return out


# ---------------------------------------------------------------------------------------------
# pooled deep features


def pooled_features(
    extractor, images: np.ndarray, batch: int = 32, taps: Sequence[str] | None = None
) -> np.ndarray:
    """Global-average-pooled tap outputs of a feature extractor: one feature vector per image.

    Every grid tap (N, C, h, w) is averaged over its positions to (N, C); a ViT's class-token
    outputs `<tap>_cls` (N, C), listed in the taps beside their grid taps, are taken as they
    are. The blocks are concatenated in `extractor.taps` order.

    Args:
        extractor: An `evaluation.features.FeatureExtractor` (or anything with `taps` and
            `features(batch) -> {name: array}`).
        images: Prepared images (N, 3, S, S) in [0, 1] (`FeatureExtractor.prepare`).
        batch: Images per onnxruntime run.
        taps: The outputs to pool (default: every tap, in `extractor.taps` order).

    Returns:
        (N, D) float64 features, D the sum of the taps' channel counts.

    Raises:
        ValueError: On a wrong image shape, a batch size below 1, or an output that is missing
            or neither a grid nor a vector per image.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3 or len(x) == 0:
        raise ValueError(f"expected prepared images of shape (N, 3, S, S), got shape {x.shape}")
    if int(batch) < 1:
        raise ValueError(f"expected a batch size of at least 1, got {batch}")
    taps = list(extractor.taps if taps is None else taps)
    if not taps:
        raise ValueError("the extractor has no taps; expected at least one")
    blocks = []
    for start in range(0, len(x), int(batch)):
        outputs = extractor.features(x[start : start + int(batch)])
        pooled = []
        for tap in taps:
            if tap not in outputs:
                raise ValueError(f"the extractor gave no output {tap!r}; it gave {list(outputs)}")
            values = np.asarray(outputs[tap], dtype=np.float64)
            if values.ndim == 4:
                pooled.append(values.mean(axis=(2, 3)))
            elif values.ndim == 2:
                pooled.append(values)
            else:
                raise ValueError(
                    f"output {tap!r}: expected an (N, C, h, w) grid or an (N, C) vector, "
                    f"got shape {values.shape}"
                )
        blocks.append(np.concatenate(pooled, axis=1))
    return np.concatenate(blocks, axis=0)


# ---------------------------------------------------------------------------------------------
# classification


def classification_baselines(
    X_train,
    y_train,
    X_test,
    groups_train=None,
    inner_folds: int = 5,
    seed: int = 0,
    names: Sequence[str] | None = None,
    n_jobs: int | None = None,
) -> list[FittedClassifier]:
    """Tune each classification baseline on the training split and predict the test split.

    Each model of `CLASSIFIERS` goes through `GridSearchCV(scoring="balanced_accuracy")` over
    shuffled `StratifiedGroupKFold` inner folds (groups: lesion ids, so no lesion is split
    between inner training and validation folds), or `StratifiedKFold` when no groups are
    given; the best hyper-parameters are refit on the whole training split. Intervals for the
    test metrics come from `evaluation.stats.classification_metrics`.

    Args:
        X_train: (N, D) training features, e.g. from `pooled_features`.
        y_train: Training class indices 0..K-1.
        X_test: (M, D) test features.
        groups_train: Optional group (lesion, patient) of each training sample.
        inner_folds: Number of inner folds.
        seed: Seed of the inner folds and of the seeded models.
        names: Which `CLASSIFIERS` to run (default: all, in their order).
        n_jobs: Parallel grid-search fits (joblib; None: one).

    Returns:
        One `FittedClassifier` per name, in the order of `names`.

    Raises:
        ValueError: On mismatched shapes, NaN / infinite features, labels that are not
            non-negative integers, fewer than 2 classes, fewer than `inner_folds` samples
            (or groups) of a class, or an unknown name.
    """
    X_train = _finite_matrix("X_train", X_train)
    X_test = _finite_matrix("X_test", X_test)
    if X_test.shape[1] != X_train.shape[1]:
        raise ValueError(
            f"X_test has {X_test.shape[1]} features but X_train has {X_train.shape[1]}; "
            "expected the same features"
        )
    y = _class_labels(y_train, len(X_train))
    folds = _folds("inner_folds", inner_folds)
    chosen = _names(names, CLASSIFIERS, "classifier")
    groups = _groups("group", groups_train, len(X_train))
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"expected at least 2 classes in y_train, got only class {classes[0]}")
    if groups is None:
        support = dict(zip(classes.tolist(), counts.tolist(), strict=True))
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        support = {int(c): len(np.unique(groups[y == c])) for c in classes}
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    scarce = {c: n for c, n in support.items() if n < folds}
    if scarce:
        what = "samples" if groups is None else "groups"
        raise ValueError(
            f"{folds} inner folds need at least {folds} {what} of every class; "
            f"class(es) {scarce} have fewer"
        )
    k = int(y.max()) + 1
    results = []
    for name in chosen:
        factory, grid = CLASSIFIERS[name]
        search = _grid_search(factory(seed), grid, "balanced_accuracy", cv, n_jobs)
        search.fit(X_train, y, groups=groups)
        predictions = search.predict(X_test).astype(np.int64)
        proba = None
        if hasattr(search.best_estimator_, "predict_proba"):
            proba = np.zeros((len(X_test), k))
            proba[:, search.classes_.astype(np.int64)] = search.predict_proba(X_test)
        params = _plain_params(search.best_params_)
        logger.info("%s: inner balanced accuracy %.3f with %s", name, search.best_score_, params)
        results.append(
            FittedClassifier(name, params, float(search.best_score_), predictions, proba)
        )
    return results


def _class_labels(values, n: int) -> np.ndarray:
    """Non-negative integer class indices, one per training sample."""
    array = np.asarray(values)
    if array.shape != (n,):
        raise ValueError(f"expected one label per training sample ({n}), got shape {array.shape}")
    as_float = array.astype(float)
    if not np.isfinite(as_float).all() or (as_float != np.round(as_float)).any():
        raise ValueError("y_train must hold integer class indices 0..K-1")
    labels = as_float.astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"y_train must hold class indices 0..K-1, got {labels.min()}")
    return labels


# ---------------------------------------------------------------------------------------------
# rating regression


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
    `GroupKFold` when groups (cases) are given, so the items of one case are never split. On
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
        groups: Optional case of each item.
        names: Which `REGRESSORS` to run (default: all, in their order).

    Returns:
        One `RatingPrediction` per name, in the order of `names`.

    Raises:
        ValueError: On mismatched shapes, columns of X with NaN or infinite values (their count
            is named), infinite targets, too few items (or groups) for the folds, or an unknown
            name.
    """
    X = _matrix("X", X)
    target = _rating_targets(y, len(X))
    outer = _folds("outer_folds", outer_folds)
    inner = _folds("inner_folds", inner_folds)
    chosen = _names(names, REGRESSORS, "regressor")
    group_all = _groups("group", groups, len(X))
    keep = ~np.isnan(target)
    if not keep.all():
        logger.info("rating baselines: %d item(s) without a target dropped", int((~keep).sum()))
    Xk, yk = X[keep], target[keep]
    _check_finite_columns(Xk)
    gk = None if group_all is None else group_all[keep]
    splits = _outer_splits(len(yk), outer, seed, gk)
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
        search = _grid_search(factory(seed), grid, "neg_mean_absolute_error", inner_cv)
        search.fit(X[train], y[train], groups=None if groups is None else groups[train])
        held_out[test] = search.predict(X[test])
        normalised[test] = (sps.rankdata(held_out[test]) - 0.5) / len(test)
        params.append(_plain_params(search.best_params_))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant predictions: SRCC is NaN
        srcc = float(stats.srcc(normalised, y))
    return held_out, srcc, tuple(params)


# ---------------------------------------------------------------------------------------------
# ordinal severity


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
) -> tuple[list[str], np.ndarray]:
    """The column chosen on each outer fold, and every item's held-out predicted category."""
    codes = reference - cats[0]
    chosen, held_out = [], np.zeros(len(codes), dtype=np.int64)
    for train, test in _outer_splits(len(codes), folds, seed, groups):
        name, predicted = _fit_ordinal(x[train], codes[train], x[test], names, np.arange(len(cats)))
        chosen.append(name)
        held_out[test] = predicted
    return chosen, held_out + cats[0]


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
    `cohen_kappa_score(weights="quadratic", labels=categories)`.

    Items without any rating, or with a NaN in any column, are left out.

    Args:
        columns: Candidate name -> distance of each item.
        ratings_table: (items, raters) ratings on the category scale, NaN where missing.
        raters: Rater names, one per column of the table.
        categories: The consecutive integer categories (1..7).
        outer_folds: Number of outer folds.
        seed: Seed of the fold assignment.
        groups: Optional case of each item; no case is split across folds.

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
    folds = _folds("outer_folds", outer_folds)
    group_all = _groups("group", groups, n)
    keep, reference = _reference_categories(table, x, cats)
    gk = None if group_all is None else group_all[keep]
    chosen, predicted_cats = _cross_fit_ordinal(x[keep], reference, names, cats, folds, seed, gk)
    overall = _category_metrics(reference, predicted_cats, cats)
    per_rater = _per_rater_metrics(table[keep], raters, predicted_cats, cats)
    predictions = np.full(n, np.nan)
    predictions[keep] = predicted_cats
    logger.info(
        "ordinal baseline: accuracy %.3f, MAE %.3f, QWK %.3f (columns %s)",
        overall["accuracy"],
        overall["mae"],
        overall["qwk"],
        ", ".join(chosen),
    )
    return OrdinalResult(
        tuple(chosen),
        predictions,
        overall["accuracy"],
        overall["mae"],
        overall["qwk"],
        per_rater,
        folds,
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


def _grid_search(estimator, grid: dict, scoring: str, cv, n_jobs: int | None = None):
    """The tuning every baseline gets: a full grid, refit on the best, errors raised."""
    return GridSearchCV(
        estimator,
        {key: list(values) for key, values in grid.items()},
        scoring=scoring,
        cv=cv,
        refit=True,
        error_score="raise",
        n_jobs=n_jobs,
    )
