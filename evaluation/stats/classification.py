"""Classification statistics: accuracy, balanced accuracy, macro F1, AUCs, and two classifiers.

`classification_metrics` gives accuracy, balanced accuracy, macro F1 and one-vs-rest AUC per
class, with percentile bootstrap intervals computed vectorised over the resamples. Two
classifiers on the same samples are compared by McNemar's test, their prediction agreement and
the correlation of their logits.

Missing data: the inputs may not hold NaN; resamples that lack a class's positives or negatives
are skipped for that class's AUC.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from evaluation.stats._checks import _CHUNK, _check_level
from evaluation.stats.bootstrap import Interval, _percentile
from evaluation.stats.correlation import pearson


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
