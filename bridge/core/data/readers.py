"""Readers of the classification formats, one decoder each (docs/data-formats.md).

ISIC 2019, ISIC 2020, HAM10000 and a folder per class become a `ClassificationSet`
of `Sample`s, each with the sex, age and body site its table records (`Attributes`,
for subgroup analyses). Readers check that every image named exists but decode
none (`bridge.core.data.image` does that, later). Tables are read by
`bridge.core.data.tables` (CSV, one-line errors naming file and line); rated cases
and region pairs are read by `bridge.core.data.ratings`.

This module owns the formats' file and folder names (`ISIC2019_GROUND_TRUTH`, ...),
which the synthetic-set generator writes, and the synthetic marker: a data folder is
labelled synthetic when a file named `SYNTHETIC_MARKER` lies in the table's folder
(for class folders: the root) or in any of its 3 parent folders; the generator
writes that marker at its output root, and `is_synthetic` is the one lookup.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bridge.core.data.image import IMAGE_SUFFIXES
from bridge.core.data.masks import MASK_SUFFIX, is_mask_file, mask_beside
from bridge.core.data.tables import Row, Table, in_order, read_table

log = logging.getLogger(__name__)

ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
ISIC2019_GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
ISIC2019_IMAGES = "ISIC_2019_Training_Input"  # image folder beside the ground truth
ISIC2020_CLASSES = ("benign", "malignant")
ISIC2020_IMAGES = "train"  # image folder beside train.csv
HAM10000_IMAGE_PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
SYNTHETIC_MARKER = "SYNTHETIC"
# Lesion segmentation masks of an image `<id>`: ISIC's and HAM10000's published masks are
# `<id>_segmentation.png`; a mask beside an image is `<id>.mask.png` (`masks.MASK_SUFFIX`).
SEGMENTATION_SUFFIXES = ("_segmentation.png", MASK_SUFFIX)
# Folders searched for them, beside the table and in the image folders: the ISIC 2018
# task 1 ground truth, the HAM10000 segmentations, or a plain `masks/`.
SEGMENTATION_FOLDERS = (
    "ISIC2018_Task1_Training_GroundTruth",
    "HAM10000_segmentations_lesion_tschandl",
    "masks",
)
# Suffixes tried, in order, for an image named by id in an ISIC / HAM10000 table.
_ID_SUFFIXES = (".jpg", ".png", ".jpeg")
_SYNTHETIC_PARENTS = 3


# Cells that mean "not recorded" in the demographic columns (compared lower-case).
_MISSING_CELLS = frozenset({"", "unknown", "na", "n/a", "nan", "none"})


@dataclass(frozen=True)
class Attributes:
    """What a table records about an image's patient and lesion; None where it does not.

    Values are normalised across the formats: text lower-cased (`sex` as written,
    e.g. "female"/"male"; `site` as the format names it, e.g. "head/neck", "back"),
    an empty cell or "unknown" (also "NA", "n/a", "nan", "none") is None.

    Attributes:
        sex: The patient's sex.
        age: The patient's (approximate) age in years.
        site: The lesion's body site.
    """

    sex: str | None = None
    age: float | None = None
    site: str | None = None


@dataclass(frozen=True)
class Sample:
    """One classification image.

    Attributes:
        id: Image id, unique in its set (the table's id, or `<class>/<file>`).
        path: The image file.
        label: Class name.
        group: Patient or lesion id for grouped splits; None: the image is its own
            group.
        attributes: Sex, age and body site where the table records them (ISIC 2019
            metadata, ISIC 2020, HAM10000); all None otherwise.
        mask: The lesion's segmentation mask where the data has one
            (`SEGMENTATION_SUFFIXES` in `SEGMENTATION_FOLDERS` or beside the image);
            None otherwise. Found, not read: `bridge.core.data.masks.read_mask` reads it.
    """

    id: str
    path: Path
    label: str
    group: str | None
    attributes: Attributes = field(default_factory=Attributes)
    mask: Path | None = None


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


def is_synthetic(*folders: str | os.PathLike[str]) -> bool:
    """True if a `SYNTHETIC_MARKER` file lies in any folder given or its 3 parents."""
    for folder in folders:
        folder = Path(folder).absolute()
        for candidate in (folder, *folder.parents[:_SYNTHETIC_PARENTS]):
            if (candidate / SYNTHETIC_MARKER).exists():
                return True
    return False


def _images_folder(table: Table, default: str, image_dir: str | os.PathLike[str] | None) -> Path:
    """`image_dir`, else the folder `default` beside the table if it exists, else the table's."""
    if image_dir is not None:
        return Path(image_dir)
    beside = table.path.parent / default
    return beside if beside.is_dir() else table.path.parent


class _ImageFinder:
    """Finds `<id><suffix>` files in a few folders, listing each folder once.

    Suffixes match case-insensitively (`ISIC_0000000.JPG` counts as `.jpg`).
    """

    def __init__(self, folders: Iterable[Path], suffixes: Sequence[str] = _ID_SUFFIXES):
        self.folders = tuple(dict.fromkeys(folders))
        self.suffixes = tuple(suffixes)
        self._listings: dict[Path, dict[str, str]] = {}
        self._missing: list[tuple[Row, str]] = []

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

    def find(self, image_id: str, row: Row) -> Path:
        """The image of `image_id`; a placeholder path is recorded as missing if none."""
        found = self.find_optional(image_id)
        if found is None:
            self._missing.append((row, image_id))
            return self.folders[0] / (image_id + self.suffixes[0])
        return found

    def find_optional(self, image_id: str) -> Path | None:
        """The file of `image_id` if there is one (nothing is recorded as missing)."""
        for folder in self.folders:
            listing = self._listing(folder)
            for suffix in self.suffixes:
                name = listing.get((image_id + suffix).lower())
                if name is not None:
                    return folder / name
        return None

    def check(self, table: Table) -> None:
        """Raise for the first missing image, counting the others."""
        if not self._missing:
            return
        row, image_id = self._missing[0]
        suffixes = "/".join(self.suffixes)
        where = " or ".join(str(f) for f in self.folders)
        more = f" ({len(self._missing) - 1} more images missing)" if len(self._missing) > 1 else ""
        raise table.error(f"image {image_id!r}: no {image_id}{{{suffixes}}} in {where}{more}", row)


def _with_masks(samples: Sequence[Sample], folders: Iterable[Path]) -> list[Sample]:
    """The samples, each with its segmentation mask where one lies in or below `folders`."""
    search = []
    for folder in dict.fromkeys(folders):
        search += [folder, *(folder / name for name in SEGMENTATION_FOLDERS)]
    finder = _ImageFinder(search, SEGMENTATION_SUFFIXES)
    return [replace(s, mask=finder.find_optional(s.id)) for s in samples]


def _read_set(
    name: str, samples: Sequence[Sample], classes: Sequence[str], group_by: str | None, source: Path
) -> ClassificationSet:
    """The set a reader read from `source` (synthetic if marked so), logged with its counts.

    Segmentation masks are looked for beside `source` and in the images' folders.
    """
    folder = source if source.is_dir() else source.parent
    if name != "folders":
        samples = _with_masks(samples, [folder, *(s.path.parent for s in samples)])
    data = ClassificationSet(name, tuple(samples), tuple(classes), group_by, is_synthetic(folder))
    counts = {c: 0 for c in data.classes}
    for s in data.samples:
        counts[s.label] += 1
    masks = sum(s.mask is not None for s in data.samples)
    log.info(
        "%s: %d images in %d classes from %s%s (%s)%s",
        data.name,
        len(data.samples),
        len(data.classes),
        source,
        " [synthetic]" if data.synthetic else "",
        ", ".join(f"{c} {n}" for c, n in counts.items()),
        f"; {masks} with a segmentation mask" if masks else "",
    )
    return data


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
            becomes the sample group (an empty cell: no group), its optional `sex`,
            `age_approx` and `anatom_site_general` the sample's `attributes`.

    Returns:
        The set; `classes` are the one-hot columns that have at least one image, in
        column order (the official training file has no UNK image).

    Raises:
        FileNotFoundError: If a CSV does not exist.
        ValueError: On a missing column, a row without exactly one 1, a duplicate
            image id, a missing image, a metadata id not in the ground truth, or a
            metadata age that is not a number.
    """
    table = read_table(ground_truth_csv)
    columns = table.require("image", *ISIC2019_CLASSES)
    finder = _ImageFinder([_images_folder(table, ISIC2019_IMAGES, image_dir)])
    seen: dict[str, Row] = {}
    entries = []
    for row in table.rows:
        image_id = table.unique_id(row, columns["image"], seen)
        label = _one_hot_label(table, row, columns, image_id)
        entries.append((image_id, finder.find(image_id, row), label))
    finder.check(table)
    meta = {} if metadata_csv is None else _isic2019_metadata(metadata_csv, table, seen)
    samples = []
    for image_id, path, label in entries:
        group, attributes = meta.get(image_id, (None, Attributes()))
        samples.append(Sample(image_id, path, label, group, attributes))
    classes = in_order(ISIC2019_CLASSES, (s.label for s in samples))
    group_by = "lesion_id" if metadata_csv is not None else None
    return _read_set("isic2019", samples, classes, group_by, table.path)


def _one_hot_label(table: Table, row: Row, columns: dict[str, str], image_id: str) -> str:
    """The one class whose ISIC 2019 one-hot cell is 1; raise on anything else."""
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
    return ones[0]


def _isic2019_metadata(
    metadata_csv: str | os.PathLike[str], truth: Table, truth_ids: dict[str, Row]
) -> dict[str, tuple[str | None, Attributes]]:
    """The metadata's `lesion_id` (None: empty cell) and attributes of each image.

    Sex, age and site come from the optional `sex`, `age_approx` and
    `anatom_site_general` columns; warns on ground-truth images without a row.
    """
    meta = read_table(metadata_csv)
    columns = meta.require("image", "lesion_id")
    attribute_columns = _attribute_columns(meta, "sex", "age_approx", "anatom_site_general")
    seen: dict[str, Row] = {}
    out: dict[str, tuple[str | None, Attributes]] = {}
    for row in meta.rows:
        image_id = meta.unique_id(row, columns["image"], seen)
        if image_id not in truth_ids:
            raise meta.error(
                f"image {image_id!r} is not in the ground truth {truth.path.name}", row
            )
        group = row.get(columns["lesion_id"]) or None
        out[image_id] = (group, _attributes(meta, row, *attribute_columns))
    if len(out) < len(truth_ids):
        log.warning(
            "%s: %d of %d ground-truth images have no metadata row (no lesion group)",
            meta.path,
            len(truth_ids) - len(out),
            len(truth_ids),
        )
    return out


def _attribute_columns(
    table: Table, sex: str, age: str, site: str
) -> tuple[str | None, str | None, str | None]:
    """The table's columns of sex, age and body site (each None if absent)."""
    return table.column(sex), table.column(age), table.column(site)


def _attributes(
    table: Table, row: Row, sex: str | None, age: str | None, site: str | None
) -> Attributes:
    """A row's sex, age and body site (columns from `_attribute_columns`), normalised.

    Raises:
        ValueError: On an age that is neither a missing cell nor a number >= 0.
    """

    def text(column: str | None) -> str | None:
        value = row.get(column).lower()
        return None if value in _MISSING_CELLS else value

    age_text = text(age)
    years = None
    if age_text is not None:
        try:
            years = float(age_text)
        except ValueError:
            years = math.nan
        if not (math.isfinite(years) and years >= 0):
            raise table.error(
                f"column {age!r}: age {row.get(age)!r}: expected a number of years >= 0 "
                "or an empty cell",
                row,
            )
    return Attributes(sex=text(sex), age=years, site=text(site))


def read_isic2020(
    train_csv: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None
) -> ClassificationSet:
    """Read the ISIC 2020 `train.csv`: label = benign_malignant, group = patient_id.

    The optional `sex`, `age_approx` and `anatom_site_general_challenge` columns
    become the samples' `attributes`.

    Args:
        train_csv: The `train.csv` table.
        image_dir: Folder of `<image_name>.jpg`; default `train/` beside the CSV if
            it exists, else the CSV's folder.

    Raises:
        FileNotFoundError: If the CSV does not exist.
        ValueError: On a missing column, a label other than benign/malignant, a
            `target` that contradicts it, a duplicate image name, a missing image or
            an age that is not a number.
    """
    table = read_table(train_csv)
    columns = table.require("image_name", "patient_id", "benign_malignant")
    target_column = table.column("target")
    attribute_columns = _attribute_columns(
        table, "sex", "age_approx", "anatom_site_general_challenge"
    )
    finder = _ImageFinder([_images_folder(table, ISIC2020_IMAGES, image_dir)])
    seen: dict[str, Row] = {}
    samples = []
    for row in table.rows:
        image_id = table.unique_id(row, columns["image_name"], seen)
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
        attributes = _attributes(table, row, *attribute_columns)
        samples.append(Sample(image_id, finder.find(image_id, row), label, group, attributes))
    finder.check(table)
    classes = in_order(ISIC2020_CLASSES, (s.label for s in samples))
    return _read_set("isic2020", samples, classes, "patient_id", table.path)


def read_ham10000(
    metadata_csv: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None
) -> ClassificationSet:
    """Read `HAM10000_metadata.csv`: label = dx, group = lesion_id.

    The optional `sex`, `age` and `localization` columns become the samples'
    `attributes` ("unknown" is None).

    Args:
        metadata_csv: The metadata table.
        image_dir: Folder of `<image_id>.jpg`; default the CSV's folder. Images are
            also looked for in its `HAM10000_images_part_1/` and `_part_2/`
            subfolders (the layout of the published archives).

    Raises:
        FileNotFoundError: If the CSV does not exist.
        ValueError: On a missing column, an empty dx, a duplicate image id, a
            missing image or an age that is not a number.
    """
    table = read_table(metadata_csv)
    columns = table.require("lesion_id", "image_id", "dx")
    attribute_columns = _attribute_columns(table, "sex", "age", "localization")
    base = Path(image_dir) if image_dir is not None else table.path.parent
    folders = [base]
    for part in HAM10000_IMAGE_PARTS:
        folders += [base / part, base / part.lower()]
    finder = _ImageFinder(folders)
    seen: dict[str, Row] = {}
    samples = []
    for row in table.rows:
        image_id = table.unique_id(row, columns["image_id"], seen)
        label = row.get(columns["dx"])
        if not label:
            raise table.error(f"image {image_id!r}: empty dx", row)
        group = row.get(columns["lesion_id"]) or None
        attributes = _attributes(table, row, *attribute_columns)
        samples.append(Sample(image_id, finder.find(image_id, row), label, group, attributes))
    finder.check(table)
    classes = sorted({s.label for s in samples})
    return _read_set("ham10000", samples, classes, "lesion_id", table.path)


def read_class_folders(root: str | os.PathLike[str]) -> ClassificationSet:
    """Read `root/<class>/<image>`: one subfolder per class, sorted by name.

    Images are the files with a suffix of `bridge.core.data.image.IMAGE_SUFFIXES`
    (any case) directly inside a class folder; hidden files and folders are skipped.
    A mask beside an image (`0.mask.png` beside `0.jpg`) is that sample's `mask`, not
    an image. Sample ids are `<class>/<file name>`; samples have no group.

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
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not p.name.startswith(".")
            and not is_mask_file(p)
        )
        if not files:
            raise ValueError(
                f"{root / cls}: class folder has no images ({' '.join(IMAGE_SUFFIXES)})"
            )
        for p in files:
            mask = mask_beside(p)
            samples.append(
                Sample(f"{cls}/{p.name}", p, cls, None, mask=mask if mask.is_file() else None)
            )
    return _read_set("folders", samples, classes, None, root)
