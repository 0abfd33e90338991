"""Choices made by looking at the ratings, made inside cross-validation folds.

A choice among candidates (layer, epoch, head weights) is made on each fold's training cases
and reported on the held-out cases only (`cv_select`). The folds come from the project's one
splitter, `bridge.core.data.splits.kfold`.

Missing data: `cv_select` drops every case whose rating or any candidate's score is NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from bridge.core.data.splits import kfold
from evaluation.stats._checks import _vectors
from evaluation.stats.correlation import _plcc, _statistic_function


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
    `bridge.core.data.splits.kfold(folds, seed)`: shuffled `KFold`, or shuffled `GroupKFold`
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
