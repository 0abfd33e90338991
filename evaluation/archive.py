"""An image archive to index: which images, which region of each, and what is known of them.

`read_archive` takes whatever a user points `python -m evaluation.index build --data`
at and lists its images as `ArchiveItem`s, reading each format with the project's
one reader of it (`bridge.core.data.readers`):

* an ISIC 2019 ground-truth CSV (or a folder holding one; the metadata CSV beside it
  gives `lesion_id`), an ISIC 2020 `train.csv` (`patient_id`), a HAM10000 metadata
  CSV (`lesion_id`); the built-in synthetic set's root folder is read as its ISIC part;
* a folder of class folders (`<root>/<class>/<image>`);
* a plain folder of images (searched recursively; no labels);
* an image list: a CSV with an `image` column and optional `box` (`x,y,w,h`) or
  `mask` (a mask image of the image's size), `label`, `lesion_id` and `patient_id`
  columns; relative paths are read against the CSV's folder (or `images`). This is
  how an archive gives a region per image.

Lesion masks come along where the data has them: ISIC's and HAM10000's segmentation
masks (`<id>_segmentation.png`, found by `bridge.core.data.readers`), a `*.mask.png`
beside an image in a folder, a list's `mask` column. `ArchiveItem.region` offers them
to the index build, which pools under them when asked (`--masks`).

Nothing is decoded here (the index build decodes, and lists undecodable files in its
`skipped.csv`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bridge.core.data import readers
from bridge.core.data.image import IMAGE_SUFFIXES, Box, box_text, parse_box
from bridge.core.data.masks import Outline, is_mask_file, mask_beside
from bridge.core.data.tables import read_table

LIST_COLUMNS = ("image", "box", "mask", "label", "lesion_id", "patient_id")
"""Columns of an image-list CSV; only `image` is required."""


@dataclass(frozen=True)
class ArchiveItem:
    """One image (or region of one) of an archive.

    Attributes:
        id: Unique in the archive: the table's image id, or the path relative to the
            folder read (with `#x,y,w,h` appended for a second region of one image).
        path: The image file (absolute).
        box: The region to embed (None: the whole image).
        label: Diagnosis or class ("" when unknown).
        lesion_id: The lesion the image shows ("" when unknown).
        patient_id: The patient ("" when unknown).
        mask: The lesion's mask file, where the data has one (None otherwise).
    """

    id: str
    path: Path
    box: Box | None = None
    label: str = ""
    lesion_id: str = ""
    patient_id: str = ""
    mask: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).absolute())
        if self.mask is not None:
            object.__setattr__(self, "mask", Path(self.mask).absolute())

    def region(self, masks: bool = False) -> Box | Outline | None:
        """What to embed: the mask as an outline when `masks` and there is one, else the box."""
        return Outline(file=self.mask) if masks and self.mask is not None else self.box

    @property
    def group(self) -> str:
        """What retrieval treats as "the same lesion": lesion, else patient, else the image."""
        return self.lesion_id or self.patient_id or self.id


@dataclass(frozen=True)
class Archive:
    """The images of an archive, in a stable order.

    Attributes:
        source: What was read (file or folder).
        format: isic2019, isic2020, ham10000, folders, images or list.
        items: The images.
        synthetic: True when the data carries the synthetic-set marker.
    """

    source: Path
    format: str
    items: tuple[ArchiveItem, ...]
    synthetic: bool = False


def read_archive(data: str | os.PathLike, images: str | os.PathLike | None = None) -> Archive:
    """List the images of an archive (the formats of the module docstring).

    Args:
        data: A table (CSV / .xlsx) or a folder.
        images: Folder of the images a table names, where it is not the table's own.

    Raises:
        FileNotFoundError: If `data` does not exist.
        ValueError: If the format is not recognised, or it holds no image; the
            readers' errors (missing images, duplicate ids, bad cells) as they are.
    """
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path, images)
    columns = {c.lower() for c in read_table(path).columns}
    if {"image", *(c.lower() for c in readers.ISIC2019_CLASSES[:-1])} <= columns:
        meta = path.parent / readers.ISIC2019_METADATA
        data_set = readers.read_isic2019(path, images, meta if meta.is_file() else None)
    elif {"image_name", "patient_id", "benign_malignant"} <= columns:
        data_set = readers.read_isic2020(path, images)
    elif {"lesion_id", "image_id", "dx"} <= columns:
        data_set = readers.read_ham10000(path, images)
    elif "image" in columns:
        return _read_list(path, images)
    else:
        raise ValueError(
            f"{path}: not an archive table; expected an ISIC 2019 / ISIC 2020 / HAM10000 table "
            f"or an image list with columns {', '.join(LIST_COLUMNS)} (image required)"
        )
    return _from_set(path, data_set)


def _from_set(source: Path, data_set: readers.ClassificationSet) -> Archive:
    """A classification set as an archive: its group is a lesion or a patient id."""
    key = "patient_id" if data_set.group_by == "patient_id" else "lesion_id"
    items = tuple(
        ArchiveItem(s.id, Path(s.path), None, s.label, **{key: s.group or ""}, mask=s.mask)
        for s in data_set.samples
    )
    return Archive(source, data_set.name, items, data_set.synthetic)


def _read_folder(folder: Path, images: str | os.PathLike | None) -> Archive:
    """A folder: a known table inside it, class folders, or plain images."""
    from bridge.core.data import synth

    for candidate in (
        folder / readers.ISIC2019_GROUND_TRUTH,
        folder / synth.ISIC_DIR / readers.ISIC2019_GROUND_TRUTH,
        folder / "HAM10000_metadata.csv",
        folder / "train.csv",
    ):
        if candidate.is_file():
            return read_archive(candidate, images)
    top = _images_in(folder, recursive=False)
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not top and subfolders and all(_images_in(p, recursive=False) for p in subfolders):
        return _from_set(folder, readers.read_class_folders(folder))
    files = _images_in(folder, recursive=True)
    if not files:
        raise ValueError(
            f"{folder}: no images ({' '.join(IMAGE_SUFFIXES)}) and no ISIC / HAM10000 table"
        )
    items = tuple(
        ArchiveItem(p.relative_to(folder).as_posix(), p, mask=_mask_beside(p)) for p in files
    )
    return Archive(folder, "images", items, readers.is_synthetic(folder))


def _mask_beside(image: Path) -> Path | None:
    mask = mask_beside(image)
    return mask if mask.is_file() else None


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    """Image files under `folder`, sorted; hidden files and folders, and masks, skipped."""
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in pattern
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not is_mask_file(p)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _read_list(path: Path, images: str | os.PathLike | None) -> Archive:
    """An image-list CSV: `image[, box | mask, label, lesion_id, patient_id]`."""
    table = read_table(path)
    columns = {c.lower(): c for c in table.columns}
    base = Path(images) if images is not None else path.parent
    items, seen = [], set()
    for row in table.rows:
        name = row.get(columns["image"])
        if not name:
            raise table.error("empty image cell", row)
        file = Path(name) if Path(name).is_absolute() else base / name
        if not file.is_file():
            raise table.error(f"image {name!r}: no such file {file}", row)
        box_cell = row.get(columns.get("box"))
        try:
            box = parse_box(box_cell) if box_cell else None
        except ValueError as err:
            raise table.error(str(err), row) from None
        mask_cell = row.get(columns.get("mask"))
        mask = None
        if mask_cell:
            if box is not None:
                raise table.error("box and mask both given; expected one region per row", row)
            mask = Path(mask_cell) if Path(mask_cell).is_absolute() else base / mask_cell
            if not mask.is_file():
                raise table.error(f"mask {mask_cell!r}: no such file {mask}", row)
        item_id = name if box is None else f"{name}#{box_text(box)}"
        if item_id in seen:
            raise table.error(f"image {item_id!r} is listed twice", row)
        seen.add(item_id)
        items.append(
            ArchiveItem(
                item_id,
                file,
                box,
                row.get(columns.get("label")),
                row.get(columns.get("lesion_id")),
                row.get(columns.get("patient_id")),
                mask,
            )
        )
    if not items:
        raise ValueError(f"{path}: the image list has no rows")
    return Archive(path, "list", tuple(items), readers.is_synthetic(path.parent))
