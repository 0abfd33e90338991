"""Readers of rated data: hospital-style rated case folders and rated region pairs.

Rated case folders and their ratings table (long or wide, CSV or .xlsx) become a
`RatedCaseSet`; rated region pairs inside full images a `RegionPairSet`. Readers
check that every image named exists but decode none (`bridge.core.data.image` does
that, later). Tables are read by `bridge.core.data.tables` (one-line errors naming
file and line); docs/data-formats.md describes the formats.

This module owns the rating conventions: the aspects (`SCORED_ASPECTS`, which raters
score, and `OVERALL`, derived from them where not given; `ASPECTS` is all three),
the ratings table's default file name (`RATINGS_FILE`, `default_ratings_path`), the
wide table's case column (`CASES_COLUMN`) and the optional group column of every
table (`GROUP_COLUMN`: the patient or lesion an item belongs to, so that
cross-validation never splits one). The synthetic-set generator writes its rated
cases with them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bridge.core.data.image import IMAGE_SUFFIXES, Box, parse_box
from bridge.core.data.masks import OUTLINES, Outline, mask_beside
from bridge.core.data.readers import is_synthetic
from bridge.core.data.tables import Row, Table, in_order, read_table

log = logging.getLogger(__name__)

SCORED_ASPECTS = ("color", "texture")  # what a rater scores (1-4 scales)
OVERALL = "overall"  # 1-7; where not given: the sum of the scored aspects, less 1 per extra
ASPECTS = (*SCORED_ASPECTS, OVERALL)  # every aspect, in the order ratings are sorted
RATINGS_FILE = "ratings.csv"  # the ratings table's name in a rated-cases folder
CASES_COLUMN = "CASES"  # first column of a wide ratings table ("case" is accepted too)
GROUP_COLUMN = "GROUP"  # optional patient / lesion column of every table (any letter case)
_LONG_COLUMNS = ("case", "rater", "aspect", "score")
_ASPECT_ALIASES = {"colour": "color"}
_CASE_IMAGE = re.compile(
    r"(\d+)(" + "|".join(re.escape(suffix) for suffix in IMAGE_SUFFIXES) + ")", re.IGNORECASE
)
_RATER_ASPECT = re.compile(r"(.+)_(" + "|".join([*ASPECTS, *_ASPECT_ALIASES]) + ")", re.IGNORECASE)


def default_ratings_path(cases_dir: str | os.PathLike[str]) -> Path:
    """The ratings table a rated-cases folder holds by default: `<cases_dir>/ratings.csv`."""
    return Path(cases_dir) / RATINGS_FILE


# ================================================================ data classes


@dataclass(frozen=True)
class RatedCase:
    """One hospital-style case folder.

    Attributes:
        id: Case id: the folder name (e.g. "CASE001").
        reference: `0.<ext>`: the lesion or scar region.
        comparisons: `1.<ext>`, `2.<ext>`, ... in numeric order (normal skin regions).
        group: The patient or lesion the case belongs to (the ratings table's group
            column); given empty (the default), the case is its own group: its id.
        masks: Image -> its mask file (`0.mask.png` beside `0.jpg`, ...), for the
            images that have one.
    """

    id: str
    reference: Path
    comparisons: tuple[Path, ...]
    group: str = ""
    masks: dict[Path, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.id)


@dataclass(frozen=True)
class Rating:
    """One rater's score of one item.

    Attributes:
        item: Case id or region-pair id.
        rater: Rater name, as written in the table.
        aspect: One of `ASPECTS`: "color", "texture" or "overall".
        score: The score.
    """

    item: str
    rater: str
    aspect: str
    score: float


@dataclass(frozen=True)
class RatedCaseSet:
    """Rated cases and their ratings.

    Attributes:
        cases: Every case folder found, sorted by id (rated or not), each with its
            group (`RatedCase.group`).
        ratings: Sorted by case, rater (first-appearance order) and aspect;
            includes the derived overall scores.
        raters: Rater names in order of first appearance in the table.
        aspects: Aspects present, in the order color, texture, overall.
        synthetic: True when the data folder carries the `SYNTHETIC` marker.
    """

    cases: tuple[RatedCase, ...]
    ratings: tuple[Rating, ...]
    raters: tuple[str, ...]
    aspects: tuple[str, ...]
    synthetic: bool = False

    def scores(self, aspect: str) -> tuple[list[str], np.ndarray]:
        """One aspect's scores as a cases x raters table.

        Args:
            aspect: "color" (or "colour"), "texture" or "overall".

        Returns:
            The case ids (all cases, in `cases` order) and a float64 array of shape
            (cases, raters), NaN where a rater did not score a case.

        Raises:
            ValueError: If the set has no ratings of that aspect.
        """
        name = _aspect_name(aspect)
        if name not in self.aspects:
            raise ValueError(
                f"no ratings for aspect {aspect!r}; available: {', '.join(self.aspects)}"
            )
        ids = [case.id for case in self.cases]
        row = {case_id: i for i, case_id in enumerate(ids)}
        col = {rater: j for j, rater in enumerate(self.raters)}
        table = np.full((len(ids), len(self.raters)), np.nan)
        for r in self.ratings:
            if r.aspect == name:
                table[row[r.item], col[r.rater]] = r.score
        return ids, table


@dataclass(frozen=True)
class RegionPair:
    """Two regions (or whole images) to compare.

    Attributes:
        id: The table's `id` / `pair` cell, else "pair<N>" with N the 1-based data
            row.
        image_a: First image file.
        box_a: Region of `image_a` in source pixels; None: the whole image.
        image_b: Second image file.
        box_b: Region of `image_b`; None: the whole image.
        group: The patient or lesion the pair belongs to (the table's `group` cell);
            given empty (the default), the pair is its own group: its id.
        outline_a: A free-form region of `image_a` instead of a box (the table's
            `polygon_a` or `mask_a` cell); None: the box (or whole image).
        outline_b: The same for `image_b`.
    """

    id: str
    image_a: Path
    box_a: Box | None
    image_b: Path
    box_b: Box | None
    group: str = ""
    outline_a: Outline | None = None
    outline_b: Outline | None = None

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.id)
        for side in "ab":
            if getattr(self, f"outline_{side}") and getattr(self, f"box_{side}"):
                raise ValueError(f"pair {self.id}: a box and an outline for {side}; expected one")

    @property
    def region_a(self) -> Box | Outline | None:
        """Where to look in `image_a`: its outline, else its box (None: all of it)."""
        return self.outline_a or self.box_a

    @property
    def region_b(self) -> Box | Outline | None:
        """Where to look in `image_b`: its outline, else its box (None: all of it)."""
        return self.outline_b or self.box_b

    @property
    def has_outline(self) -> bool:
        """Whether either side is a free-form region."""
        return self.outline_a is not None or self.outline_b is not None


@dataclass(frozen=True)
class RegionPairSet:
    """Region pairs and their ratings.

    Attributes:
        pairs: In table order, each with its group (`RegionPair.group`).
        ratings: Aspect "overall" unless the rater column is named
            `<rater>_<aspect>`; empty cells give no rating.
        raters: Rater names in column order (may be empty: pairs to score only).
        synthetic: True when the data folder carries the `SYNTHETIC` marker.
    """

    pairs: tuple[RegionPair, ...]
    ratings: tuple[Rating, ...]
    raters: tuple[str, ...]
    synthetic: bool = False


# ================================================================ shared


def _aspect_name(text: str) -> str:
    """An aspect as written, lower-cased, "colour" read as "color"."""
    name = text.strip().lower()
    return _ASPECT_ALIASES.get(name, name)


def _rater_columns(
    table: Table, columns: Iterable[str], default_aspect: str | None = None
) -> list[tuple[str, str, str]]:
    """Rater columns as (column, rater, aspect), each (rater, aspect) held by one column.

    Args:
        table: The table, for errors.
        columns: The rater columns.
        default_aspect: The aspect of a column not named `<rater>_<aspect>` (the
            column name is then the rater); None: such a column is an error.
    """
    found = []
    taken: dict[tuple[str, str], str] = {}
    for column in columns:
        match = _RATER_ASPECT.fullmatch(column)
        if match:
            key = (match[1], _aspect_name(match[2]))
        elif default_aspect is not None:
            key = (column, default_aspect)
        else:
            raise table.error(
                f"column {column!r} is not <rater>_color, <rater>_texture or <rater>_overall"
            )
        if key in taken:
            raise table.error(
                f"columns {taken[key]!r} and {column!r} both hold {key[0]}'s {key[1]}"
            )
        taken[key] = column
        found.append((column, *key))
    return found


# ================================================================ rated cases


def read_rated_cases(
    cases_dir: str | os.PathLike[str],
    ratings_path: str | os.PathLike[str],
    sheet: str | None = None,
) -> RatedCaseSet:
    """Read hospital-style case folders and their ratings table.

    A case folder (any name) holds `0.<ext>`, the lesion or scar region, and
    `1.<ext>`, `2.<ext>`, ..., comparison regions (`<ext>` any suffix of
    `bridge.core.data.image.IMAGE_SUFFIXES`); subfolders without numbered images
    are ignored. The ratings table (.csv, or .xlsx: first sheet unless `sheet`;
    conventionally `default_ratings_path(cases_dir)`) is either

    * long: columns `case, rater, aspect, score` and optionally `group` (others
      ignored; an empty score is a missing rating), or
    * wide: first column `CASES`, then `<rater>_color`, `<rater>_texture` and
      optionally `<rater>_overall`, and optionally a `GROUP` column; empty cells
      are missing ratings.

    Aspects and the group column match case-insensitively and "colour" means
    "color". Where a rater gave color and texture but no overall, overall = color +
    texture - 1 (1-4 scales -> 1-7, docs/data-formats.md). The group (patient or
    lesion) becomes `RatedCase.group`; a case whose group cells are all empty, or
    that the table does not group, is its own group. In a long table a case's rows
    may leave the group empty, but the groups they give must agree.

    Raises:
        FileNotFoundError: If the folder or the table does not exist.
        ValueError: On a malformed case folder, an unrecognised header, an unknown
            aspect, a non-numeric score, a duplicate (case, rater, aspect), a case
            without folder, a case given two groups, or no ratings at all. Cases
            without ratings are only logged.
    """
    cases_dir = Path(cases_dir)
    cases = _scan_cases(cases_dir)
    table = read_table(ratings_path, sheet)
    if not table.columns:
        raise ValueError(f"{table.path}: no ratings (the table is empty)")
    scores = _Scores(table, cases, cases_dir)
    if set(_LONG_COLUMNS) <= {c.lower() for c in table.columns}:
        _read_long(table, scores)
        raters = tuple(scores.raters)
    elif table.columns[0].lower() in (CASES_COLUMN.lower(), "case"):
        column_order = _read_wide(table, scores)
        raters = tuple(rater for rater in column_order if rater in scores.raters)
    else:
        raise table.error(
            "unrecognised header: expected long columns case, rater, aspect, score or wide "
            f"columns CASES, <rater>_color, <rater>_texture[, <rater>_overall]; "
            f"found {', '.join(table.columns)}"
        )
    if not scores.values:
        raise ValueError(f"{table.path}: no ratings (no scored cell)")
    _derive_overall(scores.values)
    cases = {k: replace(c, group=scores.groups.get(k, "")) for k, c in cases.items()}
    data = _rated_set(cases, scores.values, raters, table, cases_dir)
    log.info(
        "rated cases: %d cases (%d groups), %d raters, %d ratings (%s) from %s%s",
        len(data.cases),
        len({c.group for c in data.cases}),
        len(data.raters),
        len(data.ratings),
        ", ".join(data.aspects),
        table.path,
        " [synthetic]" if data.synthetic else "",
    )
    return data


def read_case_folders(cases_dir: str | os.PathLike[str]) -> tuple[RatedCase, ...]:
    """The case folders of `cases_dir` (no ratings), sorted by id; see `read_rated_cases`.

    Raises:
        FileNotFoundError: If the folder does not exist.
        ValueError: On a malformed case folder, or none at all.
    """
    return tuple(_scan_cases(Path(cases_dir)).values())


def _scan_cases(cases_dir: Path) -> dict[str, RatedCase]:
    """The case folders of `cases_dir` by id, sorted; raise on a malformed one."""
    if not cases_dir.exists():
        raise FileNotFoundError(f"{cases_dir}: no such folder")
    if not cases_dir.is_dir():
        raise ValueError(f"{cases_dir}: not a folder; expected case folders CASE001/0.jpg ...")
    cases = {}
    for folder in sorted(p for p in cases_dir.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        case = _scan_case(folder)
        if case is not None:
            cases[folder.name] = case
    if not cases:
        raise ValueError(f"{cases_dir}: no case folders (subfolders holding 0.jpg, 1.jpg, ...)")
    return cases


def _scan_case(folder: Path) -> RatedCase | None:
    """The case in `folder`; None when it holds no numbered image (not a case folder)."""
    numbered: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = _CASE_IMAGE.fullmatch(path.name)
        if not match or not path.is_file():
            continue
        number = int(match[1])
        if number in numbered:
            raise ValueError(
                f"{folder}: two images numbered {number}: {numbered[number].name}, {path.name}"
            )
        numbered[number] = path
    if not numbered:
        log.debug("%s: no numbered images, not a case folder", folder)
        return None
    if 0 not in numbered:
        found = ", ".join(numbered[k].name for k in sorted(numbered))
        raise ValueError(f"{folder}: no reference image 0.jpg (found {found})")
    if len(numbered) < 2:
        raise ValueError(
            f"{folder}: reference {numbered[0].name} but no comparison image 1.jpg, 2.jpg..."
        )
    comparisons = tuple(numbered[k] for k in sorted(numbered) if k > 0)
    masks = {p: mask_beside(p) for p in numbered.values() if mask_beside(p).is_file()}
    return RatedCase(folder.name, numbered[0], comparisons, masks=masks)


class _Scores:
    """The scores of a ratings table by (case, rater, aspect), checked as they come."""

    def __init__(self, table: Table, cases: dict[str, RatedCase], cases_dir: Path):
        self.table = table
        self.cases = cases
        self.cases_dir = cases_dir
        self.values: dict[tuple[str, str, str], float] = {}
        self.raters: dict[str, None] = {}  # in order of first score
        self.groups: dict[str, str] = {}  # case -> the group its table rows give
        self._first_at: dict[tuple[str, str, str], Row] = {}
        self._group_at: dict[str, Row] = {}

    def add(self, row: Row, case: str, rater: str, aspect: str, score: float | None) -> None:
        """Record a score (None: an empty cell, nothing recorded); raise on a duplicate."""
        if case not in self.cases:
            raise self.table.error(f"case {case!r} has no folder in {self.cases_dir}", row)
        if score is None:
            return
        key = (case, rater, aspect)
        if key in self.values:
            raise self.table.error(
                f"duplicate rating for case {case!r}, rater {rater!r}, aspect {aspect} "
                f"(first at {self._first_at[key].where})",
                row,
            )
        self.values[key], self._first_at[key] = score, row
        self.raters.setdefault(rater, None)

    def group(self, row: Row, case: str, group: str) -> None:
        """Record the case's group ("": not given); raise if it differs from one given before."""
        if not group:
            return
        if case not in self.cases:
            raise self.table.error(f"case {case!r} has no folder in {self.cases_dir}", row)
        first = self.groups.setdefault(case, group)
        if first != group:
            raise self.table.error(
                f"case {case!r} is in group {group!r} here but in group {first!r} at "
                f"{self._group_at[case].where}; a case belongs to one group",
                row,
            )
        self._group_at.setdefault(case, row)


def _read_long(table: Table, scores: _Scores) -> None:
    """Add the rows of a long table: `case, rater, aspect, score[, group]`."""
    columns = table.require(*_LONG_COLUMNS)
    group_column = table.column(GROUP_COLUMN)
    for row in table.rows:
        case, rater, aspect = (row.get(columns[k]) for k in ("case", "rater", "aspect"))
        for name, value in (("case", case), ("rater", rater), ("aspect", aspect)):
            if not value:
                raise table.error(f"empty {name} cell", row)
        if _aspect_name(aspect) not in ASPECTS:
            raise table.error(
                f"aspect {aspect!r}: expected color (colour), texture or overall", row
            )
        scores.add(row, case, rater, _aspect_name(aspect), table.score(row, columns["score"]))
        scores.group(row, case, row.get(group_column))


def _read_wide(table: Table, scores: _Scores) -> list[str]:
    """Add the cells of a wide table: `CASES[, GROUP], <rater>_<aspect>...`; the raters in order."""
    case_column = table.columns[0]
    group_column = table.column(GROUP_COLUMN)
    rated = _rater_columns(table, (c for c in table.columns[1:] if c != group_column))
    if not rated:
        raise table.error("no <rater>_color / <rater>_texture columns after CASES")
    case_rows: dict[str, Row] = {}
    for row in table.rows:
        case = table.unique_id(row, case_column, case_rows)
        for column, rater, aspect in rated:
            scores.add(row, case, rater, aspect, table.score(row, column))
        scores.group(row, case, row.get(group_column))
    return list(dict.fromkeys(rater for _, rater, _ in rated))


def _derive_overall(values: dict[tuple[str, str, str], float]) -> None:
    """Add overall = color + texture - 1 where a rater scored both but gave no overall."""
    first, *others = SCORED_ASPECTS
    for case, rater, aspect in list(values):
        if aspect != first or (case, rater, OVERALL) in values:
            continue
        parts = [values.get((case, rater, other)) for other in others]
        if all(part is not None for part in parts):
            values[case, rater, OVERALL] = sum(parts, values[case, rater, first]) - len(parts)


def _rated_set(
    cases: dict[str, RatedCase],
    values: dict[tuple[str, str, str], float],
    raters: tuple[str, ...],
    table: Table,
    cases_dir: Path,
) -> RatedCaseSet:
    """The set, ratings sorted by case, rater and aspect; warns of unrated cases."""
    rater_order = {rater: i for i, rater in enumerate(raters)}
    case_order = {case: i for i, case in enumerate(cases)}
    keys = sorted(values, key=lambda k: (case_order[k[0]], rater_order[k[1]], ASPECTS.index(k[2])))
    rated_cases = {k[0] for k in keys}
    unrated = [case for case in cases if case not in rated_cases]
    if unrated:
        shown = ", ".join(unrated[:5]) + (", ..." if len(unrated) > 5 else "")
        log.warning("%s: %d case folder(s) have no ratings: %s", table.path, len(unrated), shown)
    return RatedCaseSet(
        cases=tuple(cases.values()),
        ratings=tuple(Rating(c, r, a, values[c, r, a]) for c, r, a in keys),
        raters=raters,
        aspects=in_order(ASPECTS, (k[2] for k in keys)),
        synthetic=is_synthetic(cases_dir, table.path.parent),
    )


# ================================================================ region pairs


def read_region_pairs(
    pairs_csv: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None
) -> RegionPairSet:
    """Read rated region pairs: `image_a, box_a, image_b, box_b, <rater columns>`.

    Boxes are `"x,y,w,h"` in source pixels (quoted in the CSV); an empty box is the
    whole image. A side may instead be outlined: an optional `polygon_a` / `polygon_b`
    column (`"x1,y1 x2,y2 ..."`, source pixels, at least three points) or `mask_a` /
    `mask_b` column (a mask image of its image's size, relative paths as for images);
    a row gives at most one of box, polygon and mask per side. The outline is checked
    against its image when the pair is scored. An optional `id` or `pair` column names
    the pairs (default "pair<N>", N the 1-based data row); an optional `group` column says which
    patient or lesion a pair belongs to (`RegionPair.group`; an empty cell or no
    column: the pair is its own group). Every other column is a rater: numeric or
    empty cells, aspect "overall" unless the column is `<rater>_<aspect>`. No
    rater column is fine (pairs to score only). The table may also be .xlsx.

    Args:
        pairs_csv: The pairs table.
        image_dir: Folder relative image paths resolve against; default the
            table's folder.

    Raises:
        FileNotFoundError: If the table does not exist.
        ValueError: On a missing column, an empty or missing image, a malformed
            box or polygon, a missing mask file, two regions for one side, a
            non-numeric score, a duplicate pair id, or no pairs.
    """
    table = read_table(pairs_csv)
    columns = table.require("image_a", "box_a", "image_b", "box_b")
    id_column = table.column("id") or table.column("pair")
    group_column = table.column(GROUP_COLUMN)
    outline_columns = {
        name: table.column(name) for name in ("polygon_a", "polygon_b", "mask_a", "mask_b")
    }
    used = {*columns.values(), id_column, group_column, *outline_columns.values()}
    rater_columns = _rater_columns(table, (c for c in table.columns if c not in used), OVERALL)
    base = Path(image_dir) if image_dir is not None else table.path.parent
    seen: dict[str, Row] = {}
    pairs, ratings = [], []
    for row in table.rows:
        pair_id = row.get(id_column) or f"pair{row.number}"
        if pair_id in seen:
            raise table.error(
                f"duplicate pair id {pair_id!r} (first at {seen[pair_id].where})", row
            )
        seen[pair_id] = row
        sides = [
            (_pair_image(table, row, columns, s, base), _pair_box(table, row, columns, s))
            for s in "ab"
        ]
        outlines = [_pair_outline(table, row, columns, outline_columns, s, base) for s in "ab"]
        pair = RegionPair(pair_id, *sides[0], *sides[1], group=row.get(group_column))
        pairs.append(replace(pair, outline_a=outlines[0], outline_b=outlines[1]))
        for column, rater, aspect in rater_columns:
            score = table.score(row, column)
            if score is not None:
                ratings.append(Rating(pair_id, rater, aspect, score))
    if not pairs:
        raise ValueError(f"{table.path}: no pairs (the table has a header but no rows)")
    data = RegionPairSet(
        pairs=tuple(pairs),
        ratings=tuple(ratings),
        raters=tuple(dict.fromkeys(rater for _, rater, _ in rater_columns)),
        synthetic=is_synthetic(table.path.parent),
    )
    log.info(
        "region pairs: %d pairs (%d groups), %d raters, %d ratings from %s%s",
        len(data.pairs),
        len({p.group for p in data.pairs}),
        len(data.raters),
        len(data.ratings),
        table.path,
        " [synthetic]" if data.synthetic else "",
    )
    return data


def _pair_image(table: Table, row: Row, columns: dict[str, str], side: str, base: Path) -> Path:
    """The existing file of the row's `image_<side>` cell, relative to `base`."""
    return _image_cell(table, row, columns[f"image_{side}"], base)


def _pair_box(table: Table, row: Row, columns: dict[str, str], side: str) -> Box | None:
    """The row's `box_<side>` cell; None when empty (the whole image)."""
    return _box_cell(table, row, columns[f"box_{side}"])


def _pair_outline(
    table: Table,
    row: Row,
    columns: dict[str, str],
    outline_columns: dict[str, str | None],
    side: str,
    base: Path,
) -> Outline | None:
    """The row's `polygon_<side>` or `mask_<side>` outline; None when neither is given."""
    given = [
        column
        for column in (columns[f"box_{side}"], *(outline_columns[f"{k}_{side}"] for k in OUTLINES))
        if column and row.get(column)
    ]
    if len(given) > 1:
        raise table.error(f"{' and '.join(given)} both given; expected one region per side", row)
    polygon = outline_columns[f"polygon_{side}"]
    if polygon and row.get(polygon):
        try:
            return Outline.of_polygon(row.get(polygon))
        except ValueError as exc:
            raise table.error(f"column {polygon}: {exc}", row) from None
    mask = outline_columns[f"mask_{side}"]
    if mask and row.get(mask):
        return Outline(file=_image_cell(table, row, mask, base))
    return None


def _image_cell(table: Table, row: Row, column: str, base: Path) -> Path:
    """The existing file the row's `column` cell names, relative to `base`."""
    text = row.get(column)
    if not text:
        raise table.error(f"empty {column} cell", row)
    path = Path(text)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise table.error(f"{column} {text!r}: no such file {path}", row)
    return path


def _box_cell(table: Table, row: Row, column: str | None) -> Box | None:
    """The row's box in `column` (None: no such column); None when empty (the whole image)."""
    text = row.get(column)
    if not text:
        return None
    try:
        return parse_box(text)
    except ValueError as exc:
        raise table.error(f"column {column}: {exc}", row) from None


# ================================================================ 2AFC triplets


@dataclass(frozen=True)
class Triplet:
    """A reference and two candidates: "which is more similar to the reference?".

    Attributes:
        id: The table's `id` cell, else "t<N>" with N the 1-based data row.
        ref: Reference image; `box_ref` its region (None: the whole image).
        a: First candidate image; `box_a` its region.
        b: Second candidate image; `box_b` its region.
        group: Patient or lesion of the triplet; empty: its own id.
    """

    id: str
    ref: Path
    box_ref: Box | None
    a: Path
    box_a: Box | None
    b: Path
    box_b: Box | None
    group: str = ""

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.id)


@dataclass(frozen=True)
class Judgement:
    """One rater's 2AFC answer: `choice` is "a" or "b", the candidate judged more similar."""

    triplet: str
    rater: str
    choice: str


@dataclass(frozen=True)
class TwoAfcSet:
    """Triplets and the raters' judgements of them.

    Attributes:
        triplets: In table order, one per distinct triplet.
        judgements: In table order (none for a triplet table without raters).
        raters: Rater names in order of first appearance.
        synthetic: True when the table's folder carries the `SYNTHETIC` marker.
    """

    triplets: tuple[Triplet, ...]
    judgements: tuple[Judgement, ...]
    raters: tuple[str, ...]
    synthetic: bool = False


TRIPLET_COLUMNS = ("ref", "box_ref", "a", "box_a", "b", "box_b")
CHOICES = ("a", "b")


def read_triplets(
    path: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None
) -> TwoAfcSet:
    """Read a 2AFC table: triplets, with or without the raters' judgements.

    Columns `ref, a, b` name images (relative paths resolve against `image_dir`,
    default the table's folder); `box_ref, box_a, box_b` ("x,y,w,h", empty or absent:
    the whole image), `id` and `group` are optional. A triplet table (to rate) has one
    row per triplet; a judgement table (`python -m evaluation.rate export` of a 2AFC
    study) adds `rater` and `choice` ("a" or "b") and has one row per judgement: rows
    with the same id (or, without ids, the same images and boxes) are one triplet.

    Raises:
        FileNotFoundError: If the table does not exist.
        ValueError: On a missing column or image, a malformed box, a choice other than
            a or b, one id given two different triplets, a rater judging a triplet
            twice, a triplet row repeated in a table without raters, or no rows.
    """
    table = read_table(path)
    columns = table.require("ref", "a", "b")
    boxes = {side: table.column(f"box_{side}") for side in ("ref", "a", "b")}
    id_column, group_column = table.column("id"), table.column(GROUP_COLUMN)
    rater_column, choice_column = table.column("rater"), table.column("choice")
    if (rater_column is None) != (choice_column is None):
        raise table.error("a judgement table needs both rater and choice columns")
    base = Path(image_dir) if image_dir is not None else table.path.parent
    triplets: dict[str, Triplet] = {}
    by_content: dict[tuple, str] = {}
    judged: dict[tuple[str, str], Row] = {}
    judgements = []
    for row in table.rows:
        sides = {}
        for side in ("ref", "a", "b"):
            sides[side] = _image_cell(table, row, columns[side], base)
            sides[f"box_{side}"] = _box_cell(table, row, boxes[side])
        content = tuple(sides.values())
        given = row.get(id_column)
        triplet_id = given or by_content.get(content) or f"t{row.number}"
        triplet = Triplet(triplet_id, **sides, group=row.get(group_column))
        known = triplets.get(triplet_id)
        if known is not None and known != triplet:
            raise table.error(f"id {triplet_id!r} names two different triplets", row)
        if known is not None and rater_column is None:
            raise table.error(f"triplet {triplet_id!r} appears twice", row)
        triplets.setdefault(triplet_id, triplet)
        by_content.setdefault(content, triplet_id)
        if rater_column is None:
            continue
        rater, choice = row.get(rater_column), row.get(choice_column).lower()
        if not rater:
            raise table.error("empty rater cell", row)
        if choice not in CHOICES:
            raise table.error(f"choice {row.get(choice_column)!r}: expected a or b", row)
        if (triplet_id, rater) in judged:
            raise table.error(
                f"rater {rater!r} judged triplet {triplet_id!r} twice (first at "
                f"{judged[triplet_id, rater].where})",
                row,
            )
        judged[triplet_id, rater] = row
        judgements.append(Judgement(triplet_id, rater, choice))
    if not triplets:
        raise ValueError(f"{table.path}: no triplets (the table has a header but no rows)")
    data = TwoAfcSet(
        triplets=tuple(triplets.values()),
        judgements=tuple(judgements),
        raters=tuple(dict.fromkeys(j.rater for j in judgements)),
        synthetic=is_synthetic(table.path.parent),
    )
    log.info(
        "2AFC: %d triplets, %d raters, %d judgements from %s",
        len(data.triplets), len(data.raters), len(data.judgements), table.path,
    )  # fmt: skip
    return data
