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


class _Groups:
    """The groups (lesions, patients) of the cases: what every resample and split works on.

    Cases without a group (None) are their own group; `groups=None` makes every case its own
    group, which is the plain bootstrap over cases.

    Attributes:
        codes: Group index 0..G-1 of each case.
        members: Case indices of each group.
        count: Number of groups G.
    """

    def __init__(self, groups, n: int):
        if groups is None:
            self.codes = np.arange(n)
        else:
            values = list(groups) if not isinstance(groups, np.ndarray) else groups.tolist()
            if len(values) != n or (isinstance(groups, np.ndarray) and groups.ndim != 1):
                raise ValueError(f"expected one group per case ({n}), got {len(values)}")
            labels = [f"\0case {i}" if v is None else str(v) for i, v in enumerate(values)]
            _, self.codes = np.unique(np.array(labels, dtype=str), return_inverse=True)
        self.count = int(self.codes.max()) + 1 if n else 0
        order = np.argsort(self.codes, kind="stable")
        bounds = np.cumsum(np.bincount(self.codes, minlength=self.count))[:-1]
        self.members = np.split(order, bounds)
        sizes = {len(m) for m in self.members}
        self.size = sizes.pop() if len(sizes) == 1 else None  # every group's size, if equal
        self._matrix = np.stack(self.members) if self.size is not None else None

    @property
    def trivial(self) -> bool:
        """Every case is its own group."""
        return self.size == 1

    def cases(self, picked: np.ndarray) -> np.ndarray:
        """Case indices of the picked groups (last axis); any leading shape if sizes are equal."""
        if self._matrix is not None:
            return self._matrix[picked].reshape(*picked.shape[:-1], -1)
        if picked.ndim != 1:
            raise ValueError("groups of unequal size are resampled one resample at a time")
        return np.concatenate([self.members[g] for g in picked])


def _complete_grouped(groups, min_cases: int = MIN_CASES, **named):
    """`_complete`, also keeping the groups of the complete cases (None stays None)."""
    arrays = _vectors(**named)
    keep = np.logical_and.reduce([~np.isnan(a) for a in arrays])
    if groups is not None:
        groups = np.asarray(list(groups), dtype=object)
        if groups.shape != keep.shape:
            raise ValueError(f"expected one group per case ({len(keep)}), got {groups.shape}")
        groups = groups[keep]
    return _complete(min_cases, **named), groups
