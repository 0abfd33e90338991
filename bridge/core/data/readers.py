"""Readers for every supported data format (DESIGN.md section 6), one decoder each.

Classification sets (ISIC 2019, ISIC 2020, HAM10000, a folder per class) become a
`ClassificationSet`; hospital-style rated cases a `RatedCaseSet`; rated region
pairs inside full images a `RegionPairSet`. Readers check that every image named
exists but decode none (`bridge.core.data.image` does that, later).

Tables are CSV (UTF-8, a byte-order mark tolerated) or, where a rater table may be
a spreadsheet, .xlsx. Every malformed input raises a one-line `ValueError` naming
the file and where in it: "line N" is the physical line of a CSV file (the header is
line 1); "row N" is the worksheet row of an .xlsx sheet (the header is row 1).
Blank rows are skipped; column names match case-insensitively.

A data folder is labelled synthetic when a file named `SYNTHETIC` lies in the
table's folder (for class folders: the root) or in any of its 3 parent folders;
the synthetic-set generator writes that marker at its output root.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.core.data.image import IMAGE_SUFFIXES, Box, parse_box

log = logging.getLogger(__name__)

ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
ISIC2020_CLASSES = ("benign", "malignant")
ASPECTS = ("color", "texture", "overall")
SYNTHETIC_MARKER = "SYNTHETIC"
# Suffixes tried, in order, for an image named by id in an ISIC / HAM10000 table.
_ID_SUFFIXES = (".jpg", ".png", ".jpeg")
_HAM_PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
_CASE_IMAGE = re.compile(r"(\d+)\.(jpe?g|png|bmp|tiff?)", re.IGNORECASE)
_RATER_ASPECT = re.compile(r"(.+)_(colou?r|texture|overall)", re.IGNORECASE)
_SYNTHETIC_PARENTS = 3


# ================================================================ data classes


@dataclass(frozen=True)
class Sample:
    """One classification image.

    Attributes:
        id: Image id, unique in its set (the table's id, or `<class>/<file>`).
        path: The image file.
        label: Class name.
        group: Patient or lesion id for grouped splits; None: the image is its own
            group.
    """

    id: str
    path: Path
    label: str
    group: str | None


@dataclass(frozen=True)
class ClassificationSet:
    """A labelled image set.

    Attributes:
        name: Format it was read from: "isic2019", "isic2020", "ham10000", "folders".
        samples: The images, in table (or sorted folder) order.
        classes: Class names present, in the format's canonical order (ISIC 2019
            column order, benign/malignant) or sorted.
        group_by: What `Sample.group` holds: "lesion_id", "patient_id" or None.
        synthetic: True when the data folder carries the `SYNTHETIC` marker.
    """

    name: str
    samples: tuple[Sample, ...]
    classes: tuple[str, ...]
    group_by: str | None
    synthetic: bool = False

    def subset(
        self,
        classes: Sequence[str] | None = None,
        per_class_cap: int | None = None,
        seed: int = 0,
    ) -> ClassificationSet:
        """Keep some classes and at most `per_class_cap` samples of each.

        Args:
            classes: Classes to keep (None: all); the result keeps this set's class
                order.
            per_class_cap: Most samples per class; a larger class is cut to a
                sample drawn with `numpy.random.default_rng(seed)` (groups are not
                kept together). None: no cap.
            seed: Seed of the draw.

        Returns:
            A new set; samples keep their relative order.

        Raises:
            ValueError: On a class this set does not have, or a cap below 1.
        """
        keep = self.classes
        if classes is not None:
            unknown = sorted(set(classes) - set(self.classes))
            if unknown:
                raise ValueError(
                    f"{self.name}: unknown class(es) {', '.join(unknown)}; "
                    f"available: {', '.join(self.classes)}"
                )
            keep = tuple(c for c in self.classes if c in set(classes))
        if per_class_cap is not None and per_class_cap < 1:
            raise ValueError(f"{self.name}: per_class_cap must be >= 1, got {per_class_cap}")
        by_class: dict[str, list[int]] = {c: [] for c in keep}
        for i, sample in enumerate(self.samples):
            if sample.label in by_class:
                by_class[sample.label].append(i)
        rng = np.random.default_rng(seed)
        chosen: list[int] = []
        for label in keep:
            indices = by_class[label]
            if per_class_cap is not None and len(indices) > per_class_cap:
                picked = rng.choice(len(indices), size=per_class_cap, replace=False)
                indices = [indices[j] for j in picked]
            chosen.extend(indices)
        samples = tuple(self.samples[i] for i in sorted(chosen))
        return ClassificationSet(self.name, samples, keep, self.group_by, self.synthetic)


@dataclass(frozen=True)
class RatedCase:
    """One hospital-style case folder.

    Attributes:
        id: Case id: the folder name (e.g. "CASE001").
        reference: `0.<ext>`: the lesion or scar region.
        comparisons: `1.<ext>`, `2.<ext>`, ... in numeric order (normal skin regions).
    """

    id: str
    reference: Path
    comparisons: tuple[Path, ...]


@dataclass(frozen=True)
class Rating:
    """One rater's score of one item.

    Attributes:
        item: Case id or region-pair id.
        rater: Rater name, as written in the table.
        aspect: "color", "texture" or "overall".
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
        cases: Every case folder found, sorted by id (rated or not).
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
    """

    id: str
    image_a: Path
    box_a: Box | None
    image_b: Path
    box_b: Box | None


@dataclass(frozen=True)
class RegionPairSet:
    """Region pairs and their ratings.

    Attributes:
        pairs: In table order.
        ratings: Aspect "overall" unless the rater column is named
            `<rater>_<aspect>`; empty cells give no rating.
        raters: Rater names in column order (may be empty: pairs to score only).
        synthetic: True when the data folder carries the `SYNTHETIC` marker.
    """

    pairs: tuple[RegionPair, ...]
    ratings: tuple[Rating, ...]
    raters: tuple[str, ...]
    synthetic: bool = False


# ================================================================ tables


@dataclass(frozen=True)
class _Row:
    where: str  # "line 7" (CSV) or "row 7" (xlsx)
    number: int  # 1-based data row
    cells: dict[str, str]

    def get(self, column: str | None) -> str:
        return self.cells.get(column, "") if column else ""


@dataclass(frozen=True)
class _Table:
    path: Path
    header_where: str
    columns: tuple[str, ...]
    rows: tuple[_Row, ...]

    def error(self, message: str, row: _Row | None = None) -> ValueError:
        where = row.where if row is not None else f"{self.header_where} (header)"
        return ValueError(f"{self.path}: {where}: {message}")

    def column(self, name: str) -> str | None:
        """The column called `name`, case-insensitively, or None."""
        for column in self.columns:
            if column.lower() == name.lower():
                return column
        return None

    def require(self, *names: str) -> dict[str, str]:
        """Map each required name to the column holding it, or raise naming the missing."""
        if not self.columns:
            raise ValueError(f"{self.path}: empty table (no header row)")
        found = {name: self.column(name) for name in names}
        missing = [name for name, column in found.items() if column is None]
        if missing:
            raise self.error(
                f"missing column(s) {', '.join(missing)}; found {', '.join(self.columns)}"
            )
        return {name: column for name, column in found.items() if column is not None}


def _read_table(path: str | os.PathLike[str], sheet: str | None = None) -> _Table:
    """Read a CSV or .xlsx table into rows of stripped text cells."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        records, prefix = _xlsx_records(path, sheet)
        unit = f"{prefix}row"
    elif suffix == ".csv":
        if sheet is not None:
            raise ValueError(f"{path}: sheet {sheet!r} given, but a CSV file has no sheets")
        records, unit = _csv_records(path), "line"
    elif suffix == ".xls":
        raise ValueError(f"{path}: old-style .xls is not supported; save it as .xlsx or .csv")
    else:
        raise ValueError(f"{path}: unsupported table type {suffix!r}; expected .csv or .xlsx")
    records = [(n, cells) for n, cells in records if any(cells)]
    if not records:
        return _Table(path, f"{unit} 1", (), ())
    header_line, header = records[0]
    while header and not header[-1]:
        header.pop()
    header_where = f"{unit} {header_line}"
    seen: dict[str, str] = {}
    for i, name in enumerate(header, start=1):
        if not name:
            raise ValueError(f"{path}: {header_where} (header): column {i} has no name")
        if name.lower() in seen:
            raise ValueError(f"{path}: {header_where} (header): duplicate column {name!r}")
        seen[name.lower()] = name
    rows = []
    for number, (line, cells) in enumerate(records[1:], start=1):
        where = f"{unit} {line}"
        extra = [c for c in cells[len(header) :] if c]
        if extra:
            raise ValueError(
                f"{path}: {where}: {len(cells)} cells but the header has {len(header)} "
                f"columns (extra {extra[0]!r})"
            )
        padded = cells[: len(header)] + [""] * (len(header) - len(cells))
        rows.append(_Row(where, number, dict(zip(header, padded, strict=True))))
    return _Table(path, header_where, tuple(header), tuple(rows))


def _csv_records(path: Path) -> list[tuple[int, list[str]]]:
    records = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            start = 1
            for cells in reader:
                records.append((start, [c.strip() for c in cells]))
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV"
        ) from None
    except csv.Error as exc:
        raise ValueError(f"{path}: line {start}: malformed CSV ({exc})") from None
    return records


def _xlsx_records(path: Path, sheet: str | None) -> tuple[list[tuple[int, list[str]]], str]:
    """Rows of the sheet as (worksheet row number, cells), and "sheet '<name>' "."""
    import openpyxl  # only needed for spreadsheets
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .xlsx workbook ({exc})") from None
    try:
        if sheet is None:
            ws = book.worksheets[0]
        elif sheet in book.sheetnames:
            ws = book[sheet]
        else:
            raise ValueError(
                f"{path}: no sheet {sheet!r}; sheets: {', '.join(map(repr, book.sheetnames))}"
            )
        records = [
            (n, [_cell_text(v) for v in values])
            for n, values in enumerate(ws.iter_rows(values_only=True), start=1)
        ]
        return records, f"sheet {ws.title!r} "
    finally:
        book.close()


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value).strip()


def _score(table: _Table, row: _Row, column: str) -> float | None:
    """A numeric cell; None when empty."""
    text = row.get(column)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise table.error(f"column {column!r}: score {text!r} is not a number", row)
    return value


# ================================================================ helpers


def is_synthetic(*folders: str | os.PathLike[str]) -> bool:
    """True if a `SYNTHETIC` marker lies in any folder given or its 3 parents."""
    for folder in folders:
        folder = Path(folder).absolute()
        for candidate in (folder, *folder.parents[:_SYNTHETIC_PARENTS]):
            if (candidate / SYNTHETIC_MARKER).exists():
                return True
    return False


class _ImageFinder:
    """Finds `<id><suffix>` files in a few folders, listing each folder once.

    Suffixes match case-insensitively (`ISIC_0000000.JPG` counts as `.jpg`).
    """

    def __init__(self, folders: Iterable[Path], suffixes: Sequence[str] = _ID_SUFFIXES):
        self.folders = tuple(dict.fromkeys(folders))
        self.suffixes = tuple(suffixes)
        self._listings: dict[Path, dict[str, str]] = {}
        self._missing: list[tuple[_Row, str]] = []

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self._listings:
            try:
                names = sorted(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                names = []
            self._listings[folder] = {}
            for name in names:
                self._listings[folder].setdefault(name.lower(), name)
        return self._listings[folder]

    def find(self, image_id: str, row: _Row) -> Path:
        """The image of `image_id`; a placeholder path is recorded as missing if none."""
        for folder in self.folders:
            listing = self._listing(folder)
            for suffix in self.suffixes:
                name = listing.get((image_id + suffix).lower())
                if name is not None:
                    return folder / name
        self._missing.append((row, image_id))
        return self.folders[0] / (image_id + self.suffixes[0])

    def check(self, table: _Table) -> None:
        """Raise for the first missing image, counting the others."""
        if not self._missing:
            return
        row, image_id = self._missing[0]
        suffixes = "/".join(self.suffixes)
        where = " or ".join(str(f) for f in self.folders)
        more = f" ({len(self._missing) - 1} more images missing)" if len(self._missing) > 1 else ""
        raise table.error(f"image {image_id!r}: no {image_id}{{{suffixes}}} in {where}{more}", row)


def _id_cell(table: _Table, row: _Row, column: str, seen: dict[str, _Row]) -> str:
    """A non-empty, not yet seen id cell."""
    value = row.get(column)
    if not value:
        raise table.error(f"empty {column!r} cell", row)
    if value in seen:
        raise table.error(f"duplicate {column} {value!r} (first at {seen[value].where})", row)
    seen[value] = row
    return value


def _present(order: Sequence[str], labels: Iterable[str]) -> tuple[str, ...]:
    found = set(labels)
    return tuple(c for c in order if c in found)


def _log_set(data: ClassificationSet, source: Path) -> None:
    counts = {c: 0 for c in data.classes}
    for s in data.samples:
        counts[s.label] += 1
    log.info(
        "%s: %d images in %d classes from %s%s (%s)",
        data.name,
        len(data.samples),
        len(data.classes),
        source,
        " [synthetic]" if data.synthetic else "",
        ", ".join(f"{c} {n}" for c, n in counts.items()),
    )


# ================================================================ classification


def read_isic2019(
    ground_truth_csv: str | os.PathLike[str],
    image_dir: str | os.PathLike[str] | None = None,
    metadata_csv: str | os.PathLike[str] | None = None,
) -> ClassificationSet:
    """Read the ISIC 2019 training ground truth (`image,MEL,...,UNK`, one-hot).

    Args:
        ground_truth_csv: `ISIC_2019_Training_GroundTruth.csv`.
        image_dir: Folder of `<image>.jpg` (or .png/.jpeg); default
            `ISIC_2019_Training_Input/` beside the CSV if it exists, else the CSV's
            folder.
        metadata_csv: Optional `ISIC_2019_Training_Metadata.csv`; its `lesion_id`
            becomes the sample group (an empty cell: no group).

    Returns:
        The set; `classes` are the one-hot columns that have at least one image, in
        column order (the official training file has no UNK image).

    Raises:
        FileNotFoundError: If a CSV does not exist.
        ValueError: On a missing column, a row without exactly one 1, a duplicate
            image id, a missing image, or a metadata id not in the ground truth.
    """
    table = _read_table(ground_truth_csv)
    columns = table.require("image", *ISIC2019_CLASSES)
    if image_dir is None:
        default = table.path.parent / "ISIC_2019_Training_Input"
        image_dir = default if default.is_dir() else table.path.parent
    finder = _ImageFinder([Path(image_dir)])
    seen: dict[str, _Row] = {}
    entries = []
    for row in table.rows:
        image_id = _id_cell(table, row, columns["image"], seen)
        ones = []
        for cls in ISIC2019_CLASSES:
            text = row.get(columns[cls])
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if value not in (0.0, 1.0):
                raise table.error(f"column {cls}: expected 0 or 1, got {text!r}", row)
            if value == 1.0:
                ones.append(cls)
        if len(ones) != 1:
            which = f" ({', '.join(ones)})" if ones else ""
            raise table.error(
                f"image {image_id!r}: one-hot has {len(ones)} ones{which}, expected exactly one",
                row,
            )
        entries.append((image_id, finder.find(image_id, row), ones[0]))
    finder.check(table)

    groups: dict[str, str | None] = {}
    if metadata_csv is not None:
        meta = _read_table(metadata_csv)
        meta_columns = meta.require("image", "lesion_id")
        meta_seen: dict[str, _Row] = {}
        for row in meta.rows:
            image_id = _id_cell(meta, row, meta_columns["image"], meta_seen)
            if image_id not in seen:
                raise meta.error(
                    f"image {image_id!r} is not in the ground truth {table.path.name}", row
                )
            groups[image_id] = row.get(meta_columns["lesion_id"]) or None
        if len(groups) < len(entries):
            log.warning(
                "%s: %d of %d ground-truth images have no metadata row (no lesion group)",
                meta.path,
                len(entries) - len(groups),
                len(entries),
            )
    samples = tuple(Sample(i, p, label, groups.get(i)) for i, p, label in entries)
    data = ClassificationSet(
        "isic2019",
        samples,
        _present(ISIC2019_CLASSES, (s.label for s in samples)),
        "lesion_id" if metadata_csv is not None else None,
        is_synthetic(table.path.parent),
    )
    _log_set(data, table.path)
    return data


def read_isic2020(
    train_csv: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None
) -> ClassificationSet:
    """Read the ISIC 2020 `train.csv`: label = benign_malignant, group = patient_id.

    Args:
        train_csv: The `train.csv` table.
        image_dir: Folder of `<image_name>.jpg`; default `train/` beside the CSV if
            it exists, else the CSV's folder.

    Raises:
        FileNotFoundError: If the CSV does not exist.
        ValueError: On a missing column, a label other than benign/malignant, a
            `target` that contradicts it, a duplicate image name or a missing image.
    """
    table = _read_table(train_csv)
    columns = table.require("image_name", "patient_id", "benign_malignant")
    target_column = table.column("target")
    if image_dir is None:
        default = table.path.parent / "train"
        image_dir = default if default.is_dir() else table.path.parent
    finder = _ImageFinder([Path(image_dir)])
    seen: dict[str, _Row] = {}
    samples = []
    for row in table.rows:
        image_id = _id_cell(table, row, columns["image_name"], seen)
        label = row.get(columns["benign_malignant"]).lower()
        if label not in ISIC2020_CLASSES:
            raise table.error(
                f"benign_malignant {row.get(columns['benign_malignant'])!r}: "
                "expected benign or malignant",
                row,
            )
        target = row.get(target_column)
        if target and target not in ("0", "1", "0.0", "1.0"):
            raise table.error(f"target {target!r}: expected 0 or 1", row)
        if target and float(target) != ISIC2020_CLASSES.index(label):
            raise table.error(f"target {target} contradicts benign_malignant {label!r}", row)
        group = row.get(columns["patient_id"]) or None
        samples.append(Sample(image_id, finder.find(image_id, row), label, group))
    finder.check(table)
    data = ClassificationSet(
        "isic2020",
        tuple(samples),
        _present(ISIC2020_CLASSES, (s.label for s in samples)),
        "patient_id",
        is_synthetic(table.path.parent),
    )
    _log_set(data, table.path)
    return data


def read_ham10000(
    metadata_csv: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None
) -> ClassificationSet:
    """Read `HAM10000_metadata.csv`: label = dx, group = lesion_id.

    Args:
        metadata_csv: The metadata table.
        image_dir: Folder of `<image_id>.jpg`; default the CSV's folder. Images are
            also looked for in its `HAM10000_images_part_1/` and `_part_2/`
            subfolders (the layout of the published archives).

    Raises:
        FileNotFoundError: If the CSV does not exist.
        ValueError: On a missing column, an empty dx, a duplicate image id or a
            missing image.
    """
    table = _read_table(metadata_csv)
    columns = table.require("lesion_id", "image_id", "dx")
    base = Path(image_dir) if image_dir is not None else table.path.parent
    folders = [base]
    for part in _HAM_PARTS:
        folders += [base / part, base / part.lower()]
    finder = _ImageFinder(folders)
    seen: dict[str, _Row] = {}
    samples = []
    for row in table.rows:
        image_id = _id_cell(table, row, columns["image_id"], seen)
        label = row.get(columns["dx"])
        if not label:
            raise table.error(f"image {image_id!r}: empty dx", row)
        group = row.get(columns["lesion_id"]) or None
        samples.append(Sample(image_id, finder.find(image_id, row), label, group))
    finder.check(table)
    data = ClassificationSet(
        "ham10000",
        tuple(samples),
        tuple(sorted({s.label for s in samples})),
        "lesion_id",
        is_synthetic(table.path.parent),
    )
    _log_set(data, table.path)
    return data


def read_class_folders(root: str | os.PathLike[str]) -> ClassificationSet:
    """Read `root/<class>/<image>`: one subfolder per class, sorted by name.

    Images are the files with an image suffix (.jpg .jpeg .png .bmp .tif .tiff, any
    case) directly inside a class folder; hidden files and folders are skipped.
    Sample ids are `<class>/<file name>`; samples have no group.

    Raises:
        FileNotFoundError: If `root` does not exist.
        ValueError: If `root` has no class folder, or a class folder has no image.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder; expected one subfolder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class folders; expected {root}/<class>/<images>")
    samples = []
    for cls in classes:
        files = sorted(
            p
            for p in (root / cls).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise ValueError(
                f"{root / cls}: class folder has no images ({' '.join(IMAGE_SUFFIXES)})"
            )
        samples += [Sample(f"{cls}/{p.name}", p, cls, None) for p in files]
    data = ClassificationSet("folders", tuple(samples), tuple(classes), None, is_synthetic(root))
    _log_set(data, root)
    return data


# ================================================================ rated cases


def _aspect_name(text: str) -> str:
    name = text.strip().lower()
    return "color" if name == "colour" else name


def _scan_cases(cases_dir: Path) -> dict[str, RatedCase]:
    if not cases_dir.exists():
        raise FileNotFoundError(f"{cases_dir}: no such folder")
    if not cases_dir.is_dir():
        raise ValueError(f"{cases_dir}: not a folder; expected case folders CASE001/0.jpg ...")
    cases = {}
    for folder in sorted(p for p in cases_dir.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
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
            continue
        if 0 not in numbered:
            found = ", ".join(numbered[k].name for k in sorted(numbered))
            raise ValueError(f"{folder}: no reference image 0.jpg (found {found})")
        if len(numbered) < 2:
            raise ValueError(
                f"{folder}: reference {numbered[0].name} but no comparison image 1.jpg, 2.jpg..."
            )
        comparisons = tuple(numbered[k] for k in sorted(numbered) if k > 0)
        cases[folder.name] = RatedCase(folder.name, numbered[0], comparisons)
    if not cases:
        raise ValueError(f"{cases_dir}: no case folders (subfolders holding 0.jpg, 1.jpg, ...)")
    return cases


def _rater_columns(table: _Table, columns: Iterable[str]) -> list[tuple[str, str, str]]:
    """`<rater>_<aspect>` columns as (column, rater, aspect); raise on anything else."""
    found = []
    taken: dict[tuple[str, str], str] = {}
    for column in columns:
        match = _RATER_ASPECT.fullmatch(column)
        if not match:
            raise table.error(
                f"column {column!r} is not <rater>_color, <rater>_texture or <rater>_overall"
            )
        key = (match[1], _aspect_name(match[2]))
        if key in taken:
            raise table.error(
                f"columns {taken[key]!r} and {column!r} both hold {key[0]}'s {key[1]}"
            )
        taken[key] = column
        found.append((column, *key))
    return found


def read_rated_cases(
    cases_dir: str | os.PathLike[str],
    ratings_path: str | os.PathLike[str],
    sheet: str | None = None,
) -> RatedCaseSet:
    """Read hospital-style case folders and their ratings table.

    A case folder (any name) holds `0.<ext>`, the lesion or scar region, and
    `1.<ext>`, `2.<ext>`, ..., comparison regions; subfolders without numbered
    images are ignored. The ratings table (.csv, or .xlsx: first sheet unless
    `sheet`) is either

    * long: columns `case, rater, aspect, score` (others ignored; an empty score
      is a missing rating), or
    * wide: first column `CASES`, then `<rater>_color`, `<rater>_texture` and
      optionally `<rater>_overall`; empty cells are missing ratings.

    Aspects match case-insensitively and "colour" means "color". Where a rater
    gave color and texture but no overall, overall = color + texture - 1 (1-4
    scales -> 1-7, DESIGN.md section 6).

    Raises:
        FileNotFoundError: If the folder or the table does not exist.
        ValueError: On a malformed case folder, an unrecognised header, an unknown
            aspect, a non-numeric score, a duplicate (case, rater, aspect), a case
            without folder, or no ratings at all. Cases without ratings are only
            logged.
    """
    cases_dir = Path(cases_dir)
    cases = _scan_cases(cases_dir)
    table = _read_table(ratings_path, sheet)
    if not table.columns:
        raise ValueError(f"{table.path}: no ratings (the table is empty)")
    scores: dict[tuple[str, str, str], float] = {}
    first_at: dict[tuple[str, str, str], _Row] = {}
    raters: dict[str, None] = {}
    column_order: dict[str, None] = {}

    def add(row: _Row, case: str, rater: str, aspect: str, score: float | None) -> None:
        if case not in cases:
            raise table.error(f"case {case!r} has no folder in {cases_dir}", row)
        if score is None:
            return
        key = (case, rater, aspect)
        if key in scores:
            raise table.error(
                f"duplicate rating for case {case!r}, rater {rater!r}, aspect {aspect} "
                f"(first at {first_at[key].where})",
                row,
            )
        scores[key], first_at[key] = score, row
        raters.setdefault(rater, None)

    lower = {c.lower() for c in table.columns}
    if {"case", "rater", "aspect", "score"} <= lower:
        columns = table.require("case", "rater", "aspect", "score")
        for row in table.rows:
            case, rater, aspect = (row.get(columns[k]) for k in ("case", "rater", "aspect"))
            for name, value in (("case", case), ("rater", rater), ("aspect", aspect)):
                if not value:
                    raise table.error(f"empty {name} cell", row)
            if _aspect_name(aspect) not in ASPECTS:
                raise table.error(
                    f"aspect {aspect!r}: expected color (colour), texture or overall", row
                )
            add(row, case, rater, _aspect_name(aspect), _score(table, row, columns["score"]))
    elif table.columns[0].lower() in ("cases", "case"):
        case_column = table.columns[0]
        rated = _rater_columns(table, table.columns[1:])
        if not rated:
            raise table.error("no <rater>_color / <rater>_texture columns after CASES")
        case_rows: dict[str, _Row] = {}
        column_order = dict.fromkeys(rater for _, rater, _ in rated)
        for row in table.rows:
            case = _id_cell(table, row, case_column, case_rows)
            for column, rater, aspect in rated:
                add(row, case, rater, aspect, _score(table, row, column))
    else:
        raise table.error(
            "unrecognised header: expected long columns case, rater, aspect, score or wide "
            f"columns CASES, <rater>_color, <rater>_texture[, <rater>_overall]; "
            f"found {', '.join(table.columns)}"
        )
    if not scores:
        raise ValueError(f"{table.path}: no ratings (no scored cell)")

    for case, rater, aspect in list(scores):
        if aspect == "color" and (case, rater, "overall") not in scores:
            texture = scores.get((case, rater, "texture"))
            if texture is not None:
                scores[case, rater, "overall"] = scores[case, rater, "color"] + texture - 1.0

    if column_order:  # wide: raters in column order
        raters = {rater: None for rater in column_order if rater in raters}
    rater_order = {rater: i for i, rater in enumerate(raters)}
    case_order = {case: i for i, case in enumerate(cases)}
    keys = sorted(scores, key=lambda k: (case_order[k[0]], rater_order[k[1]], ASPECTS.index(k[2])))
    rated_cases = {k[0] for k in keys}
    unrated = [case for case in cases if case not in rated_cases]
    if unrated:
        shown = ", ".join(unrated[:5]) + (", ..." if len(unrated) > 5 else "")
        log.warning("%s: %d case folder(s) have no ratings: %s", table.path, len(unrated), shown)
    data = RatedCaseSet(
        cases=tuple(cases.values()),
        ratings=tuple(Rating(c, r, a, scores[c, r, a]) for c, r, a in keys),
        raters=tuple(raters),
        aspects=_present(ASPECTS, (k[2] for k in keys)),
        synthetic=is_synthetic(cases_dir, table.path.parent),
    )
    log.info(
        "rated cases: %d cases, %d raters, %d ratings (%s) from %s%s",
        len(data.cases),
        len(data.raters),
        len(data.ratings),
        ", ".join(data.aspects),
        table.path,
        " [synthetic]" if data.synthetic else "",
    )
    return data


# ================================================================ region pairs


def read_region_pairs(
    pairs_csv: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None
) -> RegionPairSet:
    """Read rated region pairs: `image_a, box_a, image_b, box_b, <rater columns>`.

    Boxes are `"x,y,w,h"` in source pixels (quoted in the CSV); an empty box is the
    whole image. An optional `id` or `pair` column names the pairs (default
    "pair<N>", N the 1-based data row). Every other column is a rater: numeric or
    empty cells, aspect "overall" unless the column is `<rater>_<aspect>`. No
    rater column is fine (pairs to score only). The table may also be .xlsx.

    Args:
        pairs_csv: The pairs table.
        image_dir: Folder relative image paths resolve against; default the
            table's folder.

    Raises:
        FileNotFoundError: If the table does not exist.
        ValueError: On a missing column, an empty or missing image, a malformed
            box, a non-numeric score, a duplicate pair id, or no pairs.
    """
    table = _read_table(pairs_csv)
    columns = table.require("image_a", "box_a", "image_b", "box_b")
    id_column = table.column("id") or table.column("pair")
    used = {*columns.values(), id_column}
    rater_columns = []
    taken: dict[tuple[str, str], str] = {}
    for column in table.columns:
        if column in used:
            continue
        match = _RATER_ASPECT.fullmatch(column)
        key = (match[1], _aspect_name(match[2])) if match else (column, "overall")
        if key in taken:
            raise table.error(
                f"columns {taken[key]!r} and {column!r} both hold {key[0]}'s {key[1]}"
            )
        taken[key] = column
        rater_columns.append((column, *key))
    base = Path(image_dir) if image_dir is not None else table.path.parent

    def image(row: _Row, side: str) -> Path:
        text = row.get(columns[f"image_{side}"])
        if not text:
            raise table.error(f"empty image_{side} cell", row)
        path = Path(text)
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise table.error(f"image_{side} {text!r}: no such file {path}", row)
        return path

    def box(row: _Row, side: str) -> Box | None:
        text = row.get(columns[f"box_{side}"])
        if not text:
            return None
        try:
            return parse_box(text)
        except ValueError as exc:
            raise table.error(f"column box_{side}: {exc}", row) from None

    seen: dict[str, _Row] = {}
    pairs, ratings = [], []
    for row in table.rows:
        pair_id = row.get(id_column) or f"pair{row.number}"
        if pair_id in seen:
            raise table.error(
                f"duplicate pair id {pair_id!r} (first at {seen[pair_id].where})", row
            )
        seen[pair_id] = row
        pairs.append(
            RegionPair(pair_id, image(row, "a"), box(row, "a"), image(row, "b"), box(row, "b"))
        )
        for column, rater, aspect in rater_columns:
            score = _score(table, row, column)
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
        "region pairs: %d pairs, %d raters, %d ratings from %s%s",
        len(data.pairs),
        len(data.raters),
        len(data.ratings),
        table.path,
        " [synthetic]" if data.synthetic else "",
    )
    return data
