"""What every learned baseline shares: the pipeline step name, input checks, folds, tuning."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.model_selection import GridSearchCV

from bridge.core.data.splits import kfold

logger = logging.getLogger(__name__)

MODEL = "model"
"""Name of the estimator step in every pipeline; grids address its parameters `model__...`."""


def matrix(name: str, values) -> np.ndarray:
    """A two-dimensional float array (samples x features), or a ValueError naming it."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty (samples, features) matrix, got shape {array.shape}"
        )
    return array


def finite_matrix(name: str, values) -> np.ndarray:
    """`matrix` without NaN or infinite values."""
    array = matrix(name, values)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values; expected finite features")
    return array


def groups(name: str, groups, n: int) -> np.ndarray | None:
    """One group label per sample, or None."""
    if groups is None:
        return None
    array = np.asarray(groups)
    if array.shape != (n,):
        raise ValueError(f"expected one {name} label per sample ({n}), got shape {array.shape}")
    return array


def names(names: Sequence[str] | None, known: Mapping, what: str) -> list[str]:
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


def folds(name: str, folds: int) -> int:
    """A fold count of at least 2."""
    if int(folds) != folds or folds < 2:
        raise ValueError(f"{name} must be an integer of at least 2, got {folds}")
    return int(folds)


def outer_splits(n: int, folds: int, seed: int, groups: np.ndarray | None):
    """Outer train / held-out index pairs over `n` items, with enough units to split."""
    units = n if groups is None else len(np.unique(groups))
    what = "items" if groups is None else "groups"
    if units < folds:
        raise ValueError(
            f"{folds} outer folds need at least {folds} {what}, got {units}; use fewer folds"
        )
    return list(kfold(folds, seed, groups is not None).split(np.zeros(n), groups=groups))


def plain_params(params: Mapping) -> dict:
    """Grid-search parameters without the pipeline's step prefix, as plain Python values."""
    out = {}
    for key, value in params.items():
        plain = value.item() if isinstance(value, np.generic) else value
        out[key.split("__", 1)[1] if key.startswith(f"{MODEL}__") else key] = plain
    return out


def grid_search(estimator, grid: dict, scoring: str, cv, n_jobs: int | None = None):
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
