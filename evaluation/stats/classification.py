"""Classification statistics: accuracy, balanced accuracy, macro F1, AUCs, and two classifiers.

`classification_metrics` gives accuracy, balanced accuracy, macro F1 and one-vs-rest AUC per
class, with BCa bootstrap intervals computed vectorised over the resamples, which draw
samples or, given groups, whole lesions / patients. Two classifiers on the same samples are
compared by McNemar's test (clustered McNemar with groups), their prediction agreement and the
correlation of their logits.

Missing data: the inputs may not hold NaN; resamples that lack a class's positives or negatives
are skipped for that class's AUC.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from evaluation.stats._checks import _CHUNK, _check_level, _Groups
from evaluation.stats.bootstrap import _RNG_KEYWORD, Interval, _checked, _percentile
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
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, k: int, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro F1 and per-class AUC of each resample (rows of weights).

    A resample is given by its case weights (how often each case was drawn), so resamples of
    whole groups, whose sizes vary, are computed together. Same definitions as scikit-learn:
    balanced accuracy averages recall over the classes present in y_true; macro F1 averages
    2 TP / (2 TP + FP + FN) over the classes present in y_true or y_pred; AUC is the
    Mann-Whitney form of the ROC area (ties count one half), NaN without positives or
    negatives.
    """
    r = len(weights)
    cell = y_true * k + y_pred
    flat = (np.arange(r)[:, None] * k * k + cell[None, :]).ravel()
    confusion = np.bincount(flat, weights.ravel(), minlength=r * k * k).reshape(r, k, k)
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    support, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    drawn = weights.sum(axis=1)
    with np.errstate(all="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
        present = (support + predicted) > 0
        f1 = np.where(present, 2 * hits / (support + predicted), np.nan)
        out = {
            "accuracy": hits.sum(axis=1) / drawn,
            "balanced_accuracy": np.nanmean(recall, axis=1),
            "macro_f1": np.nanmean(f1, axis=1),
        }
        if proba is not None:
            for c in range(k):
                values, code = np.unique(proba[:, c], return_inverse=True)
                u = len(values)
                rows = (np.arange(r)[:, None] * u + code[None, :]).ravel()
                positive = y_true == c
                pos = np.bincount(rows, (weights * positive).ravel(), r * u).reshape(r, u)
                neg = np.bincount(rows, (weights * ~positive).ravel(), r * u).reshape(r, u)
                below = np.cumsum(neg, axis=1) - neg
                n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
                wins = (pos * (below + 0.5 * neg)).sum(axis=1)
                out[f"auc:{c}"] = np.where(
                    (n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan
                )
    return out


def classification_metrics(
    y_true,
    y_pred,
    proba=None,
    classes: Sequence[str] | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups=None,
) -> dict[str, Interval]:
    """Accuracy, balanced accuracy, macro F1 and one-vs-rest AUCs, with bootstrap intervals.

    Estimates come from scikit-learn (`accuracy_score`, `balanced_accuracy_score`,
    `f1_score(average="macro")`, `roc_auc_score` per class one-vs-rest). Intervals are BCa
    bootstrap intervals (`scipy.stats.bootstrap`), computed vectorised with the same
    definitions, over samples or, with `groups`, over groups (lesions, patients: the views of
    one lesion are not independent, so each resample draws whole lesions, and the jackknife
    leaves out one lesion at a time). Where a BCa bound is undefined (an AUC whose resamples
    lack a class's positives or negatives) the interval is the percentile interval over the
    resamples where it is defined (none if more than half are not).

    Args:
        y_true: True class indices 0..K-1.
        y_pred: Predicted class indices 0..K-1.
        proba: Optional (N, K) class probabilities (or any per-class scores).
        classes: Class names for the `auc_<class>` keys (default: the indices).
        n_resamples: Number of bootstrap resamples.
        level: Confidence level.
        seed: Seed of the resampling.
        groups: Optional group (lesion or patient id) of each sample; None: every sample is
            its own group.

    Returns:
        `accuracy`, `balanced_accuracy`, `macro_f1`, and `auc_<class>` per class when `proba`
        is given -> Interval.

    Raises:
        ValueError: On mismatched lengths, labels outside 0..K-1, fewer than 2 samples or
            groups, or probabilities that are not (N, K) finite values.
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

    clusters = _Groups(groups, n)
    if clusters.count < 2:
        raise ValueError(f"a bootstrap needs at least 2 groups, got {clusters.count}")
    keys = list(estimates)

    def resampled(picked: np.ndarray, axis: int = -1) -> np.ndarray:
        """Every metric of resamples given as drawn group indices (last axis)."""
        rows = picked.reshape(-1, picked.shape[-1])
        flat = (np.arange(len(rows))[:, None] * clusters.count + rows).ravel()
        counts = np.bincount(flat, minlength=len(rows) * clusters.count)
        weights = counts.reshape(len(rows), clusters.count)[:, clusters.codes].astype(float)
        values = _classification_resamples(y_true, y_pred, proba, k, weights)
        return np.stack([values[key] for key in keys]).reshape(len(keys), *picked.shape[:-1])

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sps.bootstrap(
            (np.arange(clusters.count),), resampled, n_resamples=int(n_resamples),
            batch=max(1, _CHUNK // (n * max(k, 4))), vectorized=True, confidence_level=level,
            method="BCa", **{_RNG_KEYWORD: np.random.default_rng(seed)},
        )  # fmt: skip
    distributions = np.asarray(result.bootstrap_distribution, dtype=float)
    lows = np.atleast_1d(result.confidence_interval.low)
    highs = np.atleast_1d(result.confidence_interval.high)

    out = {}
    for index, (key, estimate) in enumerate(estimates.items()):
        name = f"auc_{names[int(key[4:])]}" if key.startswith("auc:") else key
        low, high, method = float(lows[index]), float(highs[index]), "BCa"
        if not np.isfinite(estimate):
            out[name] = Interval(estimate, float("nan"), float("nan"), level, "none")
            continue
        if not (np.isfinite(low) and np.isfinite(high)):
            bounds = _percentile(distributions[index], level)
            if bounds is None:
                out[name] = Interval(estimate, float("nan"), float("nan"), level, "none")
                continue
            (low, high), method = bounds, "percentile"
        out[name] = _checked(Interval(estimate, low, high, level, method))
    return out


def mcnemar_test(y_true, pred_a, pred_b, groups=None) -> tuple[float, float]:
    """McNemar's test of two classifiers on the same samples; cluster-aware with groups.

    Without groups (or when every group holds one sample), the 2x2 table counts samples both
    get right, only a, only b, neither, and statsmodels' test runs on it: exact binomial with
    fewer than 25 discordant samples, else chi-square with continuity correction. With groups
    (several views of one lesion), the samples of a group are not independent, and the test is
    Durkalski et al.'s (2003) clustered McNemar: with b_k and c_k the samples of group k only a
    or only b gets right, X = (sum_k (b_k - c_k))^2 / sum_k (b_k - c_k)^2, chi-square with one
    degree of freedom (1 with no discordant group).

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
    clusters = _Groups(groups, len(y_true))
    if not clusters.trivial:
        per_group = np.bincount(clusters.codes, (a & ~b).astype(float) - (~a & b), clusters.count)
        spread = float(np.sum(per_group**2))
        if spread == 0:
            return 0.0, 1.0
        statistic = float(per_group.sum() ** 2 / spread)
        return statistic, float(sps.chi2.sf(statistic, 1))
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
