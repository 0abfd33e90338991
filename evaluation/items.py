"""The rated items of a comparison: rated cases or region pairs, in one shape.

`bridge.core.data.ratings` reads rated case folders and region-pair tables;
`load_rated` turns either into `RatedItems`: per item a reference and its comparison
regions and its group (patient or lesion: every cross-validation over the items keeps
a group in one fold), per aspect an items x raters table of ratings, and, for the
synthetic set, the known true deviations (`truth.csv`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.data import ratings as rating_data
from bridge.core.data import synth


@dataclass(frozen=True)
class RatedItems:
    """The rated items (cases or region pairs), in one shape for scoring and statistics.

    Attributes:
        ids: Item ids.
        references: Per item, the reference (image path, box, outline or None).
        comparisons: Per item, the comparison regions (image path, box, outline or
            None). An outline (`bridge.core.data.masks.Outline`, a region pair's
            polygon or mask) weighs masked scores; every other metric sees its
            bounding box.
        ratings: Per aspect, an items x raters table (NaN: not rated).
        raters: Rater names (columns of the tables).
        synthetic: Synthetic data.
        source: Where the items come from, in words.
        truth: Per aspect, the known true deviation (synthetic set only).
        groups: Per item, its group (patient or lesion; `RatedCase.group`,
            `RegionPair.group`); left empty, every item is its own group (its id).
        masks: Image -> its mask file, for the images that have one (rated cases'
            `0.mask.png` ...): masked scorers score those images under their masks.

    Raises:
        ValueError: If `groups` is given but not one per item.
    """

    ids: tuple[str, ...]
    references: tuple[tuple[Path, Any], ...]
    comparisons: tuple[tuple[tuple[Path, Any], ...], ...]
    ratings: dict[str, np.ndarray]
    raters: tuple[str, ...]
    synthetic: bool
    source: str
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    masks: dict[Path, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.groups:
            object.__setattr__(self, "groups", tuple(self.ids))
        elif len(self.groups) != len(self.ids):
            raise ValueError(
                f"{self.source}: {len(self.groups)} groups for {len(self.ids)} items; "
                "expected one group per item"
            )

    @property
    def n_groups(self) -> int:
        """The number of distinct groups (patients or lesions)."""
        return len(set(self.groups))


def load_rated(
    rated: Path | None = None,
    ratings: Path | None = None,
    pairs: Path | None = None,
    images: Path | None = None,
    raters: Sequence[str] = (),
) -> RatedItems:
    """Read rated cases or region pairs, or the synthetic set's rated cases.

    Args:
        rated: Case folders (`CASE001/0.jpg`, ...); default the synthetic set's.
        ratings: Ratings table of the cases; default the one in `rated`.
        pairs: A region-pair table, read instead of rated cases.
        images: Folder relative paths in `pairs` refer to.
        raters: Raters to keep, in this order (default: all).

    Raises:
        ValueError: On malformed input (from the readers), or an unknown rater.
    """
    if pairs is not None:
        table = rating_data.read_region_pairs(pairs, images)
        ids = tuple(p.id for p in table.pairs)
        refs = tuple((p.image_a, p.region_a) for p in table.pairs)
        comps = tuple(((p.image_b, p.region_b),) for p in table.pairs)
        tables = rating_tables(table.ratings, ids, table.raters)
        items = RatedItems(
            ids, refs, comps, tables, table.raters, table.synthetic, f"region pairs {pairs}",
            groups=tuple(p.group for p in table.pairs),
        )  # fmt: skip
    else:
        rated = rated or synth.default_root() / synth.RATED_DIR
        ratings = ratings or rating_data.default_ratings_path(rated)
        table = rating_data.read_rated_cases(rated, ratings)
        ids = tuple(c.id for c in table.cases)
        refs = tuple((c.reference, None) for c in table.cases)
        comps = tuple(tuple((p, None) for p in c.comparisons) for c in table.cases)
        tables = rating_tables(table.ratings, ids, table.raters)
        items = RatedItems(
            ids, refs, comps, tables, table.raters, table.synthetic,
            f"rated cases {rated} (ratings {ratings})", synth.read_truth(rated, ids),
            groups=tuple(c.group for c in table.cases),
            masks={k: v for c in table.cases for k, v in c.masks.items()},
        )  # fmt: skip
    return pick_raters(items, raters)


def rating_tables(
    ratings: Iterable[rating_data.Rating], ids: Sequence[str], raters: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per aspect (in `ASPECTS` order, others after), an items x raters table; NaN: not rated."""
    row = {item: i for i, item in enumerate(ids)}
    col = {rater: j for j, rater in enumerate(raters)}
    tables: dict[str, np.ndarray] = {}
    for r in ratings:
        table = tables.setdefault(r.aspect, np.full((len(ids), len(raters)), np.nan))
        table[row[r.item], col[r.rater]] = r.score
    order = rating_data.ASPECTS
    return {a: tables[a] for a in sorted(tables, key=lambda a: (*order, a).index(a))}


def pick_raters(items: RatedItems, wanted: Sequence[str]) -> RatedItems:
    """The items with the ratings of the `wanted` raters only, in that order (all if empty).

    The items, their groups and the truth stay as they are.

    Raises:
        ValueError: On a rater the ratings do not name.
    """
    if not wanted:
        return items
    unknown = [r for r in wanted if r not in items.raters]
    if unknown:
        raise ValueError(
            f"unknown rater {unknown[0]!r}; the ratings name {', '.join(items.raters)}"
        )
    cols = [items.raters.index(r) for r in wanted]
    tables = {a: t[:, cols] for a, t in items.ratings.items()}
    return replace(items, ratings=tables, raters=tuple(wanted))
