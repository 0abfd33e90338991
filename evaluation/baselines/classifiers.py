"""Classification baselines: scikit-learn classifiers on pooled taps of an exported extractor.

Logistic regression, a linear SVM, a random forest and k-nearest neighbours are trained on
pooled deep features (`pooled_features`: the global average of every tap). Each model's
hyper-parameters are chosen by an inner grid search that maximises balanced accuracy over
stratified folds that never split a lesion; the chosen model is refit on the whole training
split and predicts the same test split as the fine-tuned networks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from evaluation.baselines import _common as common
from evaluation.embedding import pool

logger = logging.getLogger(__name__)


def _logistic_regression(seed: int) -> Pipeline:
    """Standardised features, multinomial logistic regression with balanced class weights."""
    model = LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)
    return Pipeline([("scale", StandardScaler()), (common.MODEL, model)])


def _linear_svm(seed: int) -> Pipeline:
    """Standardised features, a linear-kernel SVM (libsvm, one-vs-one) with balanced class weights.

    libsvm works on the N x N kernel, so a few hundred images cost well under a second
    whatever the feature width. liblinear (`LinearSVC`) crawled on these wide, nearly
    separable features: its dual solver ran ~80 s per grid point without converging on a
    ViT's 1536 pooled channels, its primal one ~100 s on a ResNet's 2048.
    """
    model = SVC(kernel="linear", class_weight="balanced", random_state=seed)
    return Pipeline([("scale", StandardScaler()), (common.MODEL, model)])


def _random_forest(seed: int) -> Pipeline:
    """A random forest (trees need no scaling) with balanced class weights."""
    model = RandomForestClassifier(n_estimators=100, class_weight="balanced", random_state=seed)
    return Pipeline([(common.MODEL, model)])


def _knn(seed: int) -> Pipeline:
    """Standardised features, k-nearest neighbours (deterministic: `seed` is unused)."""
    del seed
    return Pipeline([("scale", StandardScaler()), (common.MODEL, KNeighborsClassifier())])


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
            if values.ndim in (2, 4):  # a class token is taken as it is
                pooled.append(pool(values, "gap" if values.ndim == 4 else "cls"))
            else:
                raise ValueError(
                    f"output {tap!r}: expected an (N, C, h, w) grid or an (N, C) vector, "
                    f"got shape {values.shape}"
                )
        blocks.append(np.concatenate(pooled, axis=1))
    return np.concatenate(blocks, axis=0)


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
    X_train = common.finite_matrix("X_train", X_train)
    X_test = common.finite_matrix("X_test", X_test)
    if X_test.shape[1] != X_train.shape[1]:
        raise ValueError(
            f"X_test has {X_test.shape[1]} features but X_train has {X_train.shape[1]}; "
            "expected the same features"
        )
    y = _class_labels(y_train, len(X_train))
    folds = common.folds("inner_folds", inner_folds)
    chosen = common.names(names, CLASSIFIERS, "classifier")
    groups = common.groups("group", groups_train, len(X_train))
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
        search = common.grid_search(factory(seed), grid, "balanced_accuracy", cv, n_jobs)
        search.fit(X_train, y, groups=groups)
        predictions = search.predict(X_test).astype(np.int64)
        proba = None
        if hasattr(search.best_estimator_, "predict_proba"):
            proba = np.zeros((len(X_test), k))
            proba[:, search.classes_.astype(np.int64)] = search.predict_proba(X_test)
        params = common.plain_params(search.best_params_)
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
