"""Input checks and limits shared by the statistics submodules.

Every public statistic turns its inputs into float arrays through these helpers, so the error
messages (naming the argument and the shapes or lengths found) read the same everywhere.
"""

from __future__ import annotations

import numpy as np

MIN_CASES = 3  # correlations over fewer cases are meaningless
_CHUNK = 2_000_000  # elements per vectorised block


def _vector(name: str, values) -> np.ndarray:
    """A one-dimensional float array, or a ValueError naming the argument."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be one-dimensional (one value per case), got shape {array.shape}"
        )
    return array


def _vectors(**named) -> list[np.ndarray]:
    """One-dimensional float arrays of equal length."""
    arrays = [_vector(name, values) for name, values in named.items()]
    lengths = {name: len(a) for name, a in zip(named, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise ValueError(f"expected one value per case in every array, got lengths {shown}")
    return arrays


def _complete(min_cases: int = MIN_CASES, **named) -> list[np.ndarray]:
    """Equal-length arrays with the cases holding any NaN dropped; at least `min_cases` left."""
    arrays = _vectors(**named)
    keep = np.logical_and.reduce([~np.isnan(a) for a in arrays])
    if keep.sum() < min_cases:
        raise ValueError(
            f"expected at least {min_cases} cases with no NaN in {', '.join(named)}, "
            f"got {int(keep.sum())} of {len(keep)}"
        )
    return [a[keep] for a in arrays]


def _table(values) -> np.ndarray:
    """A cases x raters float table."""
    table = np.asarray(values, dtype=float)
    if table.ndim != 2:
        raise ValueError(f"expected a cases x raters table, got shape {table.shape}")
    return table


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie strictly between 0 and 1, got {level}")
