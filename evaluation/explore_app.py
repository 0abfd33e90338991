"""The region explorer's app: its state and operations, with no HTTP in them.

`Explorer` holds one session of `python -m evaluation.explore` (the HTTP layer and
the CLI are in `evaluation.explore_http` and `evaluation.explore`): the scorers,
loaded once; the listing of an images folder plus the session's uploads (capped in
bytes and pixels, decoded with the project's one decoder); comparisons of two
regions with every scorer (distances, crops as the models saw them, LPIPS heat
maps), a region being a box or a free-form outline (a polygon: masked scorers weigh
it by its mask, the others see its bounding box); the history of comparisons as JSON
rows or as a region-pair CSV that `python -m evaluation.score MODEL --pairs
history.csv` reads; and "find similar":
the nearest rows of an archive index (`evaluation.index`, opened once) to region A,
with thumbnails of those rows only.

Regions are in source pixels of the decoded, EXIF-oriented image, which is also what
the page displays. Scoring runs on onnxruntime with `evaluation.score.Scorer`, so the
numbers are those of `python -m evaluation.score` on the same files and boxes.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from PIL import Image

from bridge.core.data.image import (
    DEFAULT_POLICY,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    Box,
    RecentImages,
    box_text,
    crop,
    decode_image,
    decode_image_bytes,
    jpeg_bytes,
    parse_box,
)
from bridge.core.data.masks import (
    RegionMask,
    is_mask_file,
    parse_polygon,
    polygon_mask,
    polygon_text,
)
from bridge.core.files import sha256_file
from bridge.core.runtime import find_models
from evaluation.index import MANIFEST, SETTINGS, Index
from evaluation.score import Scorer
from evaluation.web import NotFound, TooLarge

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_LISTED = 10_000
MIN_REGION = 8  # a region smaller than this, fitted to 224 px, says nothing
MAX_OUTLINE_POINTS = 2000  # the page sends a few hundred at most
HISTORY_OUTLINES = ("polygon_a", "polygon_b")  # the history CSV's outline columns
UPLOAD_PREFIX = "upload:"
INDEX_PREFIX = "index:"  # an index row as an image: index:<index name>/<row id>
DEFAULT_INDEX_DIR = Path("index")
DEFAULT_K = 8
MAX_K = 64
THUMB_SIDE = 128  # longest side of a neighbour's thumbnail, in pixels
INDEX_HINT = (
    "build one with `python -m evaluation.index build --model FEATURES.onnx --data DATA "
    "--out index/<name>`"
)
EXPORT_HINT = (
    "export some with `python -m bridge.export --run runs/demo --kind lpips,dists "
    "--out models/demo` (or --arch ARCH --weights FILE)"
)


# ------------------------------------------------------------------ scorers


def holds_scorers(folder: Path) -> bool:
    """Whether a folder has an LPIPS / DISTS export (masked or not) by its manifest.

    The files are not verified here.
    """
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            continue
        if kind in Scorer.KINDS and path.with_suffix(".onnx").is_file():
            return True
    return False


def default_models_dir() -> Path:
    """`models/` when it holds scorers, else `models/demo` (what `tox -e demo` made) if it does."""
    for folder in (Path("models"), Path("models") / "demo"):
        if holds_scorers(folder):
            return folder
    return Path("models")


def find_scorers(models_dir: str | os.PathLike) -> list[Path]:
    """The LPIPS / DISTS scorers in a folder, masked or not: `*.onnx` files whose manifest says so.

    Classifier and feature models are skipped; so is a file with no readable
    manifest, or one that does not match its file (with a warning).

    Raises:
        FileNotFoundError: If the folder does not exist.
        ValueError: If it holds no scorer; the message says how to export one.
    """
    folder = Path(models_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such models folder; {EXPORT_HINT}")
    found = [path for path, _ in find_models(folder, Scorer.KINDS)[0]]
    if not found:
        inside = [str(d) for d in sorted(folder.iterdir()) if d.is_dir() and holds_scorers(d)]
        hint = f"pass --models {inside[0]}" if inside else EXPORT_HINT
        also = f"; {', '.join(inside)} hold{'s' if len(inside) == 1 else ''} some" if inside else ""
        raise ValueError(f"{folder}: no LPIPS or DISTS scorers (*.onnx + manifest){also}; {hint}")
    return found


def load_scorers(
    paths: Sequence[str | os.PathLike], policy: str = DEFAULT_POLICY, prefer_gpu: bool = True
) -> list[Scorer]:
    """Open every scorer once (verified against its manifest), ordered for the table."""
    scorers = [Scorer(path, policy=policy, prefer_gpu=prefer_gpu) for path in paths]
    return sorted(scorers, key=lambda s: (s.metric, _backbone(s), _origin(s), s.model.path.name))


def _backbone(scorer: Scorer) -> str:
    return str(scorer.model.manifest.get("backbone", "?"))


def _origin(scorer: Scorer) -> str:
    return str(scorer.model.manifest.get("origin", "?"))


def _scorer_id(scorer: Scorer) -> str:
    """A scorer's name in the page and the history CSV: its file stem."""
    return scorer.model.path.stem


def _scorer_fields(scorer: Scorer) -> dict[str, Any]:
    """What the page shows of a scorer: its label, metric, backbone, trainer, heads, size."""
    identity = scorer.identity()
    return {"label": identity.pop("scorer"), **identity, "size": scorer.size}


def _is_synthetic(scorer: Scorer) -> bool:
    """Whether the scorer's manifest says it was trained on synthetic data."""
    return bool(scorer.model.manifest.get("synthetic"))


# ------------------------------------------------------------------ images


def list_images(root: Path, limit: int = MAX_LISTED) -> dict[str, Path]:
    """Images under `root` by name (POSIX path relative to it), sorted; hidden ones skipped.

    A file that resolves outside `root` (a symlink out of it) is not listed.
    """
    base = root.resolve()
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file() or is_mask_file(path):
            continue
        resolved = path.resolve()
        if not resolved.is_relative_to(base):
            continue
        found[rel.as_posix()] = resolved
        if len(found) >= limit:
            log.warning("%s: listing the first %d images only", root, limit)
            break
    return found


def png_bytes(pixels: np.ndarray) -> bytes:
    """An HxWx3 (or HxW) float image in [0, 1] as PNG bytes (8 bits, rounded)."""
    data = np.clip(np.rint(np.asarray(pixels) * 255.0), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(data).save(out, "PNG", compress_level=4)
    return out.getvalue()


def data_url(png: bytes) -> str:
    """A PNG as a `data:` URL (the page embeds crops and maps without more requests)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def heat_map(distance_map: np.ndarray, under: np.ndarray, cmap: str = "magma") -> np.ndarray:
    """Colour an LPIPS map (H, W) over an image (H, W, 3): 0 -> dark, the map's max -> bright.

    The colormap (matplotlib's, looked up in numpy) is blended 70 / 30 over the image's
    grey levels, so the region's structure stays visible under the colours.
    """
    import matplotlib

    lut = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)
    top = float(distance_map.max())
    scaled = distance_map / top if top > 0 else np.zeros_like(distance_map)
    colours = lut[np.clip(np.rint(scaled * 255), 0, 255).astype(np.int64)]
    grey = under.mean(axis=2, keepdims=True)
    return 0.7 * colours + 0.3 * grey


def _parse_region(value: Any, side: str) -> Box | None:
    """A request's box: None / "" (the whole image), "x,y,w,h", [x, y, w, h] or {x, y, w, h}."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = [value.get(k) for k in ("x", "y", "w", "h")]
    if isinstance(value, list | tuple):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise ValueError(f"region {side}: expected four integers x, y, w, h, got {value!r}")
        if any(float(v) != int(v) for v in value):
            raise ValueError(f"region {side}: x, y, w, h must be whole pixels, got {value!r}")
        value = ",".join(str(int(v)) for v in value)
    if not isinstance(value, str):
        raise ValueError(f"region {side}: expected 'x,y,w,h', got {value!r}")
    try:
        return parse_box(value)
    except ValueError as err:
        raise ValueError(f"region {side}: {err}") from None


Points = tuple[tuple[float, float], ...]


def _parse_outline(value: Any, side: str) -> Points | None:
    """A request's outline: None / "" (none), or "x1,y1 x2,y2 ..." in source pixels.

    Raises:
        ValueError: On anything but that text, a malformed point, fewer than three
            points or more than `MAX_OUTLINE_POINTS`.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(
            f"outline {side}: expected 'x1,y1 x2,y2 x3,y3 ...' (source pixels), "
            f"got {type(value).__name__}"
        )
    try:
        points = parse_polygon(value)
    except ValueError as err:
        raise ValueError(f"outline {side}: {err}") from None
    if len(points) > MAX_OUTLINE_POINTS:
        raise ValueError(
            f"outline {side}: {len(points)} points; expected at most {MAX_OUTLINE_POINTS}"
        )
    return points


def _parse_side(request: dict, box_key: str, outline_key: str, side: str):
    """One side's region of a request: (box, None), (None, outline) or (None, None).

    Raises:
        ValueError: If both a box and an outline are given, or either is malformed.
    """
    box = _parse_region(request.get(box_key), side)
    outline = _parse_outline(request.get(outline_key), side)
    if box is not None and outline is not None:
        raise ValueError(
            f"region {side}: give {box_key} (a box) or {outline_key} (an outline), not both"
        )
    return box, outline


def upload_label(filename: str | None) -> str:
    """An upload's name for messages and the listing: the base name the client sent."""
    return Path(str(filename or "upload").replace("\\", "/")).name[:120] or "upload"


# ------------------------------------------------------------------ comparing


def _parse_request(request: Any) -> tuple[dict[str, str], dict[str, tuple]]:
    """A compare request's image names {"a": ..., "b": ...} and regions {"a": (box, outline)}.

    Raises:
        ValueError: If it is not a JSON object, an image name is missing or empty, a
            box or outline is malformed, or a side has both.
    """
    if not isinstance(request, dict):
        raise ValueError(
            "expected a JSON object {image_a, box_a or polygon_a, image_b, box_b or polygon_b}"
        )
    names = {}
    for side in ("a", "b"):
        name = request.get(f"image_{side}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"image_{side}: expected the name of a listed or uploaded image")
        names[side] = name
    regions = {
        side: _parse_side(request, f"box_{side}", f"polygon_{side}", side.upper())
        for side in ("a", "b")
    }
    return names, regions


@dataclass(frozen=True)
class Side:
    """One side of a comparison, checked against its image.

    Attributes:
        box: The box drawn (None: an outline, or the whole image).
        outline: The outline's points in source pixels (None: a box or the whole image).
        mask: The outline's mask over the image (None without an outline).
    """

    box: Box | None = None
    outline: Points | None = None
    mask: RegionMask | None = None

    def region(self, masked: bool) -> Box | RegionMask | None:
        """What a scorer is given: the mask if it is `masked`, else the bounding box."""
        if self.mask is None:
            return self.box
        return self.mask if masked else self.mask.box


@dataclass(frozen=True)
class Prepared:
    """Two regions as one scorer configuration takes them.

    Attributes:
        batch: (2, 3, H, W) in [0, 1]: region A, region B.
        fitted: Whether they were fitted to the scorer's size.
        masks: (2, 1, H, W) the outlines through the same fit (all ones for a box), or
            None without an outline or when the mask could not be fitted.
        mask_error: Why the masks could not be fitted (a masked scorer reports it).
    """

    batch: np.ndarray
    fitted: bool
    masks: np.ndarray | None = None
    mask_error: str | None = None


def _prepare(scorer: Scorer, items: Sequence[tuple[np.ndarray, Side]]) -> Prepared:
    """Both regions for the scorers sharing `scorer`'s size, policy and interpolation.

    Without `fill`, an outline's pixels are its bounding box's: the batch is the one
    every scorer of the group takes, masked or not; the masks go to masked scorers.

    Raises:
        ValueError: A region the scorers refuse (under their minimum size).
    """
    if all(side.mask is None for _, side in items):
        batch, fitted = scorer.prepare_group([(pixels, side.box) for pixels, side in items])
        return Prepared(batch, fitted)
    try:
        batch, masks, fitted = scorer.prepare_masked_group(
            [(pixels, side.region(masked=True)) for pixels, side in items]
        )
        return Prepared(batch, fitted, masks)
    except ValueError as err:  # e.g. a thin outline a centre crop cuts away
        boxes = [(pixels, side.region(masked=False)) for pixels, side in items]
        batch, fitted = scorer.prepare_group(boxes)  # raises if the boxes are the problem
        return Prepared(batch, fitted, mask_error=str(err).splitlines()[0][:300])


def _score(
    scorer: Scorer, prepared: Prepared, outlined: bool
) -> tuple[dict[str, Any], dict | None]:
    """One scorer's result row for two prepared regions, and its LPIPS heat map entry.

    A scorer that fails (or returns a non-finite distance) gets its message in the row's
    `error`, so one scorer failing does not fail the comparison. With an outline, the
    row's `region` says what the scorer compared: `outline` (a masked scorer, the
    regions weighed by their masks) or `bounding box` (the outline's bounding box);
    None when no outline was drawn.

    Returns:
        The row, and the heat map entry (None for DISTS, a model without a distance
        map output, or a failure).
    """
    use_masks = scorer.masked and outlined
    row = {
        "scorer": _scorer_id(scorer),
        **_scorer_fields(scorer),
        "synthetic": _is_synthetic(scorer),
        "masked": scorer.masked,
        "region": ("outline" if use_masks else "bounding box") if outlined else None,
        "distance": None,
        "error": None,
    }
    heat = None
    a, b = prepared.batch[:1], prepared.batch[1:]
    masks: tuple = (None, None)
    try:
        if use_masks:
            if prepared.masks is None:
                raise ValueError(prepared.mask_error or "the outlines could not be fitted")
            masks = (prepared.masks[:1], prepared.masks[1:])
        distance = float(scorer.score_arrays(a, b, *masks)[0])
        if not np.isfinite(distance):  # reported, never passed on as a number
            raise ValueError(f"the scorer returned {distance}")
        row["distance"] = distance
        if scorer.metric == "lpips" and "distance_map" in scorer.model.outputs:
            m = scorer.distance_map(a, b, *masks)[0, 0]
            heat = {
                "scorer": row["scorer"], "label": row["label"], "backbone": row["backbone"],
                "origin": row["origin"], "size": list(a.shape[2:]),
                "max": float(m.max()), "mean": float(m.mean()),
                "image": data_url(png_bytes(heat_map(m, a[0].transpose(1, 2, 0)))),
            }  # fmt: skip
    except (ValueError, RuntimeError) as err:
        log.warning("%s: %s", row["scorer"], err)
        row["error"] = str(err).splitlines()[0][:300]
    return row, heat


DIM_OUTSIDE = 0.3  # an outline's crop as shown: outside it, pixels at 30 % brightness


def shown_crop(region: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """A prepared region (3, H, W) as the page shows it: (H, W, 3), dimmed outside its mask.

    The dimming is for the eye only: the scorers take the region as it is (masked
    scorers weigh it by the mask, the others see the whole bounding box).
    """
    pixels = region.transpose(1, 2, 0)
    if mask is None:
        return pixels
    weight = DIM_OUTSIDE + (1.0 - DIM_OUTSIDE) * mask[0][:, :, None]
    return pixels * weight


def _crops_json(prepared: dict[tuple, Prepared]) -> list[dict[str, Any]]:
    """The crops as fed to the models, one pair per distinct input.

    `size` is the [height, width] fed; `fitted` says whether the regions were fitted
    to the scorers' size (they differ in size, or the scorer needs a fixed grid) or
    kept as they are; `outline` whether the crops are dimmed outside an outline.
    """
    shown: dict[tuple, dict[str, Any]] = {}
    for (_, size, policy, interpolation), p in prepared.items():
        key = (size, policy, interpolation) if p.fitted else ()  # kept as they are: all alike
        masks = (None, None) if p.masks is None else (p.masks[0], p.masks[1])
        shown.setdefault(key, {
            "size": list(p.batch.shape[2:]),
            "fitted": p.fitted,
            "policy": policy,
            "outline": p.masks is not None,
            "a": data_url(png_bytes(shown_crop(p.batch[0], masks[0]))),
            "b": data_url(png_bytes(shown_crop(p.batch[1], masks[1]))),
        })  # fmt: skip
    return list(shown.values())


# ------------------------------------------------------------------ indexes


def is_index_folder(folder: Path) -> bool:
    """Whether a folder is an index folder (finished or not): it has a manifest or settings."""
    return (folder / MANIFEST).is_file() or (folder / SETTINGS).is_file()


def find_indexes(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The index folders named: each path is one, or a folder holding several.

    Folders are not opened here (`load_indexes` does, and reports those it cannot);
    a folder named twice is kept once.

    Raises:
        FileNotFoundError: If a path is not a folder.
        ValueError: If a folder is neither an index folder nor holds one.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such index folder; {INDEX_HINT}")
        inside = [path] if is_index_folder(path) else _index_folders_in(path)
        if not inside:
            raise ValueError(
                f"{path}: not an index folder (no {MANIFEST}) and holds none; expected "
                f"index/<name> or a folder of them; {INDEX_HINT}"
            )
        found += [p for p in inside if p.resolve() not in {f.resolve() for f in found}]
    return found


def _index_folders_in(folder: Path) -> list[Path]:
    return [d for d in sorted(folder.iterdir()) if d.is_dir() and is_index_folder(d)]


def default_indexes() -> list[Path]:
    """Without --index: the index folders under `index/` (or `index/` itself), else none."""
    folder = DEFAULT_INDEX_DIR
    if not folder.is_dir():
        return []
    return [folder] if is_index_folder(folder) else _index_folders_in(folder)


@dataclass
class ArchiveIndex:
    """An archive index opened for "find similar": the index (its model open), rows by id.

    Attributes:
        name: The index's name in the page and the API (its folder's name, made unique).
        index: The open index (its embedder opened and checked).
        rows: Row number of every id.
    """

    name: str
    index: Index
    rows: dict[str, int]

    def info(self) -> dict[str, Any]:
        """What the page shows of the index; `label` is model · backbone · count · tap/pooling."""
        manifest = self.index.manifest
        model, emb = manifest["model"], manifest["embedding"]
        count = len(self.index)
        return {
            "id": self.name,
            "label": (
                f"{model['label']} · {model['backbone']} · {count} image{'s' * (count != 1)} · "
                f"{emb['tap']}/{emb['pooling']}"
            ),
            "model": model["label"],
            "backbone": model["backbone"],
            "origin": model.get("origin"),
            "count": count,
            "tap": emb["tap"],
            "pooling": emb["pooling"],
            "size": emb["size"],
            "dim": emb["dim"],
            "search": self.index.method,
            "synthetic": bool(manifest.get("source", {}).get("synthetic")),
        }

    def row(self, row_id: Any) -> int:
        """The row of an id.

        Raises:
            NotFound: If the index holds no such row.
        """
        if not isinstance(row_id, str) or row_id not in self.rows:
            raise NotFound(f"no row {row_id!r} in index {self.name!r}")
        return self.rows[row_id]

    def file(self, row_id: Any) -> Path:
        """The image file of a row (as the index recorded it).

        Raises:
            NotFound: If the index holds no such row, or its file is gone.
        """
        path = Path(str(self.index.meta["path"][self.row(row_id)]))
        if not path.is_file():
            raise NotFound(f"{row_id}: the file of this row of index {self.name!r} is gone")
        return path


def load_indexes(
    paths: Sequence[str | os.PathLike], prefer_gpu: bool = True
) -> tuple[list[ArchiveIndex], list[str]]:
    """Open every index once, with its model; those that cannot be used are reported.

    An index whose build did not finish, whose shards changed, or whose model file is
    gone or changed is left out with a warning, like an unusable scorer.

    Returns:
        The open indexes, in the order given, and one "<name>: left out: <why>" per
        index left out.
    """
    opened: list[ArchiveIndex] = []
    problems: list[str] = []
    for path in map(Path, paths):
        try:
            index = Index(path, prefer_gpu=prefer_gpu)
            index.embedder()  # the model: present, and the one the index was built with
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            why = (str(err).splitlines() or [type(err).__name__])[0].removeprefix(f"{path}: ")
            problems.append(f"{path.name}: left out: {why}")
            log.warning("index %s: left out: %s", path, why)
            continue
        names = {i.name for i in opened}
        base = path.resolve().name or "index"
        name, number = base, 1
        while name in names:  # two folders of one name (index/a/x, other/x): x, x-2
            number += 1
            name = f"{base}-{number}"
        rows = {str(row_id): row for row, row_id in enumerate(index.meta["id"])}
        opened.append(ArchiveIndex(name, index, rows))
        log.info("index %s: %s", name, opened[-1].info()["label"])
    return opened, problems


def thumbnail_jpeg(pixels: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    """An HxWx3 float image in [0, 1] as a JPEG no larger than `side` on its longest side."""
    return jpeg_bytes(pixels, side)


def _parse_k(value: Any) -> int:
    """A request's k: a whole number in 1..MAX_K (None: DEFAULT_K)."""
    if value is None or value == "":
        return DEFAULT_K
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
        raise ValueError(f"k: expected a whole number of neighbours, got {value!r}")
    if not 1 <= int(value) <= MAX_K:
        raise ValueError(f"k: expected 1 to {MAX_K} neighbours, got {int(value)}")
    return int(value)


# ------------------------------------------------------------------ the app


@dataclass
class Comparison:
    """One comparison of the session (a history row).

    Attributes:
        id: `cmp<N>`, 1-based in the session.
        image_a: Name of image A in the listing.
        box_a: Box of A; None for an outline or the whole image.
        image_b: Name of image B.
        box_b: Box of B.
        path_a: The file image A was read from (what the CSV names).
        path_b: The file of image B.
        distances: {scorer id: distance, or None where that scorer failed}.
        polygon_a: Outline of A in source pixels; None for a box or the whole image.
        polygon_b: Outline of B.
    """

    id: str
    image_a: str
    box_a: Box | None
    image_b: str
    box_b: Box | None
    path_a: Path
    path_b: Path
    distances: dict[str, float | None] = field(default_factory=dict)
    polygon_a: Points | None = None
    polygon_b: Points | None = None

    def to_json(self) -> dict[str, Any]:
        """The row as the page shows it (an outline as `polygon_text`, "" for none)."""
        return {
            "id": self.id,
            "image_a": self.image_a,
            "box_a": box_text(self.box_a),
            "polygon_a": polygon_text(self.polygon_a or ()),
            "image_b": self.image_b,
            "box_b": box_text(self.box_b),
            "polygon_b": polygon_text(self.polygon_b or ()),
            "distances": self.distances,
        }


class Explorer:
    """The explorer's state and operations, independent of HTTP.

    Args:
        scorers: Open scorers (loaded once, kept for the session).
        images_dir: Folder whose images are listed (None: uploads only).
        uploads_dir: Where uploads are stored (they must stay on disk for the CSV).
        max_upload_bytes: Largest upload accepted.
        max_pixels: Largest width * height of an image (uploads and listed files).
        min_region: Smallest region side accepted, in source pixels.
        synthetic_images: Whether the listed images are the built-in synthetic set.
        indexes: Open archive indexes for "find similar" (`load_indexes`).
        index_problems: The indexes left out, and why (shown on the page).
    """

    def __init__(
        self,
        scorers: Sequence[Scorer],
        images_dir: str | os.PathLike | None,
        uploads_dir: str | os.PathLike,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        max_pixels: int = MAX_PIXELS,
        min_region: int = MIN_REGION,
        synthetic_images: bool = False,
        indexes: Sequence[ArchiveIndex] = (),
        index_problems: Sequence[str] = (),
    ):
        if not scorers:
            raise ValueError(f"no scorers to explore with; {EXPORT_HINT}")
        if max_upload_bytes < 1 or max_pixels < 1 or min_region < 1:
            raise ValueError("upload size, pixel cap and minimum region must be positive")
        self.scorers = list(scorers)
        self.images_dir = None if images_dir is None else Path(images_dir).resolve()
        self.uploads_dir = Path(uploads_dir).resolve()
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.min_region = min_region
        self.synthetic_images = synthetic_images
        self.images: dict[str, Path] = (
            {} if self.images_dir is None else list_images(self.images_dir)
        )
        self.uploads: dict[str, tuple[Path, str]] = {}  # name -> (file, original name)
        self.history: list[Comparison] = []
        self._decoded = RecentImages(keep=6, max_pixels=max_pixels)
        self._pngs: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()  # state, caches, and one comparison at a time
        self.indexes = {i.name: i for i in indexes}
        if len(self.indexes) != len(indexes):
            raise ValueError("indexes must have distinct names")
        self.index_problems = list(index_problems)
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._hashes: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256
        self._thumb_slots = threading.BoundedSemaphore(2)  # thumbnails decoded at once

    # -- listing and images

    def info(self) -> dict[str, Any]:
        """What the page needs to start: scorers, limits, whether data is synthetic."""
        return {
            "scorers": [
                {
                    "id": _scorer_id(s),
                    **_scorer_fields(s),
                    "policy": s.policy,
                    "provider": s.provider,
                    "synthetic": _is_synthetic(s),
                    "heads": (s.model.manifest.get("heads") or {}).get("source"),
                }
                for s in self.scorers
            ],
            "images_dir": None if self.images_dir is None else self.images_dir.name,
            "synthetic_images": self.synthetic_images,
            "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.max_pixels,
            "min_region": self.min_region,
            "indexes": [i.info() for i in self.indexes.values()],
            "index_problems": self.index_problems,
            "default_k": DEFAULT_K,
            "max_k": MAX_K,
        }

    def image_list(self) -> list[dict[str, str]]:
        """Every image the page may use: the folder's, then this session's uploads."""
        with self._lock:
            listed = [{"name": name, "label": name} for name in self.images]
            uploaded = [
                {"name": name, "label": f"{original} (upload)"}
                for name, (_, original) in self.uploads.items()
            ]
        return listed + uploaded

    def path(self, name: str) -> Path:
        """The file behind a listed name, or behind a row of an open index.

        `index:<index>/<row id>` names the image of an index row (a neighbour the page
        loads as image B); nothing else outside the listing is reachable.

        Raises:
            NotFound: If the name is not in the listing nor an index row, or its file is
                not inside the folder it was listed from.
        """
        with self._lock:
            if name in self.uploads:
                path, root = self.uploads[name][0], self.uploads_dir
            elif name in self.images and self.images_dir is not None:
                path, root = self.images[name], self.images_dir
            elif name.startswith(INDEX_PREFIX) and "/" in name:
                index, _, row_id = name.removeprefix(INDEX_PREFIX).partition("/")
                path = self._index(index).file(row_id).resolve()
                root = path.parent
            else:
                raise NotFound(f"no image {name!r} in the explorer's listing")
        resolved = path.resolve()
        if not resolved.is_relative_to(root) or not resolved.is_file():
            raise NotFound(f"no image {name!r} in the explorer's listing")
        return resolved

    def pixels(self, name: str) -> np.ndarray:
        """The decoded (EXIF-oriented, RGB [0, 1]) image, the few most recent kept."""
        path = self.path(name)
        try:
            return self._decoded.get(path)
        except ValueError as err:  # name the image as the page knows it, not its path
            raise ValueError(str(err).replace(str(path), name, 1)) from None

    def image_png(self, name: str) -> bytes:
        """The image as the page shows it: the decoded, EXIF-oriented pixels as PNG.

        Display and scoring therefore share one pixel grid.
        """
        path = self.path(name)
        key = f"{path}:{path.stat().st_mtime_ns}"
        with self._lock:
            if key in self._pngs:
                return self._pngs[key]
        png = png_bytes(self.pixels(name))
        with self._lock:
            self._pngs[key] = png
            while len(self._pngs) > 16:
                self._pngs.popitem(last=False)
        return png

    def upload(self, data: bytes, filename: str) -> dict[str, Any]:
        """Check and store an uploaded image; returns its listing entry and size.

        Raises:
            TooLarge: Above the byte cap.
            ValueError: Not an image (the decoder's message), or above the pixel cap.
        """
        label = upload_label(filename)
        self.check_upload_size(len(data), label)
        if not data:
            raise ValueError(f"{label}: empty upload; expected an image file")
        pixels = decode_image_bytes(data, label, self.max_pixels)
        with Image.open(io.BytesIO(data)) as im:
            suffix = "." + (im.format or "img").lower().replace("jpeg", "jpg")
        digest = hashlib.sha256(data).hexdigest()[:16]
        name = f"{UPLOAD_PREFIX}{digest}{suffix}"
        path = self.uploads_dir / f"{digest}{suffix}"
        if not path.exists():
            path.write_bytes(data)
        with self._lock:
            self.uploads[name] = (path, label)
        log.info("upload %s stored as %s", label, path)
        height, width = pixels.shape[:2]
        return {"name": name, "label": f"{label} (upload)", "width": width, "height": height}

    def check_upload_size(self, size: int, filename: str) -> None:
        """Refuse an upload of `size` bytes above the cap (before reading it, over HTTP).

        Raises:
            TooLarge: Naming the file, its size and the limit.
        """
        if size > self.max_upload_bytes:
            raise TooLarge(
                f"{upload_label(filename)}: {size} bytes exceeds the upload limit of "
                f"{self.max_upload_bytes} bytes"
            )

    # -- comparing

    def _region(self, pixels: np.ndarray, box: Box | None, side: str) -> None:
        """Check a region against its image: inside it, and no side below `min_region`."""
        height, width = pixels.shape[:2]
        if box is None:
            return
        if box.x + box.w > width or box.y + box.h > height:
            raise ValueError(
                f"region {side} ({box_text(box)}) lies outside the {width}x{height} image"
            )
        if min(box.w, box.h) < self.min_region:
            raise ValueError(
                f"region {side} is {box.w}x{box.h} px; draw at least "
                f"{self.min_region}x{self.min_region} (source pixels)"
            )

    def _side(self, pixels: np.ndarray, box: Box | None, outline: Points | None, side: str) -> Side:
        """A side's region checked against its image: an outline gets its mask.

        An outline must lie inside the image, cover some pixel, and its bounding box
        must pass `_region`'s size check.

        Raises:
            ValueError: Naming the side and what was expected.
        """
        if outline is None:
            self._region(pixels, box, side)
            return Side(box=box)
        try:
            mask = polygon_mask(outline, pixels.shape)
        except ValueError as err:
            raise ValueError(f"outline {side}: {err}") from None
        bounds = mask.box
        if min(bounds.w, bounds.h) < self.min_region:
            raise ValueError(
                f"outline {side} spans {bounds.w}x{bounds.h} px; draw at least "
                f"{self.min_region}x{self.min_region} (source pixels)"
            )
        return Side(outline=outline, mask=mask)

    def compare(self, request: dict[str, Any]) -> dict[str, Any]:
        """Score two regions with every scorer.

        A region is a box or an outline. Masked scorers (`Scorer.masked`) weigh an
        outline by its mask; the others score its bounding box (each result's
        `region` says which).

        Args:
            request: {image_a, box_a or polygon_a, image_b, box_b or polygon_b}; a box
                is "x,y,w,h" in source pixels (or [x, y, w, h]), an outline
                "x1,y1 x2,y2 ..." in source pixels (`polygon_text`); neither (empty /
                null) is the whole image.

        Returns:
            The comparison: its history row, one result per scorer (metric, backbone,
            origin, distance, region), the outlines' bounding boxes (`outline_box_a`,
            `outline_box_b`; "" for a box), the crops as fed to the models (PNG data
            URLs, one pair per input size, dimmed outside an outline) and one LPIPS
            heat map per LPIPS scorer.

        Raises:
            NotFound: An image name not in the listing.
            ValueError: A malformed request, a side with both a box and an outline, or
                a region outside its image, of zero area or too small.
        """
        names, wanted = _parse_request(request)
        pixels = {s: self.pixels(names[s]) for s in "ab"}
        sides = {s: self._side(pixels[s], *wanted[s], s.upper()) for s in "ab"}
        paths = {s: self.path(names[s]) for s in "ab"}
        items = [(pixels[s], sides[s]) for s in "ab"]
        outlined = any(side.mask is not None for side in sides.values())

        results, prepared, maps = [], {}, []
        with self._lock:
            for scorer in self.scorers:
                key = (scorer.keep_size, scorer.size, scorer.policy, scorer.interpolation)
                if key not in prepared:
                    prepared[key] = _prepare(scorer, items)
                row, heat = _score(scorer, prepared[key], outlined)
                results.append(row)
                if heat is not None:
                    maps.append(heat)
            record = Comparison(
                f"cmp{len(self.history) + 1}", names["a"], sides["a"].box, names["b"],
                sides["b"].box, paths["a"], paths["b"],
                {r["scorer"]: r["distance"] for r in results},
                polygon_a=sides["a"].outline, polygon_b=sides["b"].outline,
            )  # fmt: skip
            self.history.append(record)
        bounds = {
            f"outline_box_{s}": box_text(sides[s].mask.box) if sides[s].mask else "" for s in "ab"
        }
        return {
            **record.to_json(), **bounds,
            "results": results, "crops": _crops_json(prepared), "maps": maps,
        }  # fmt: skip

    # -- find similar

    def _index(self, name: Any) -> ArchiveIndex:
        """An open index by name.

        Raises:
            ValueError: If `name` is not a string.
            NotFound: If no open index has that name.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("index: expected the name of an open index")
        if name not in self.indexes:
            known = ", ".join(self.indexes) or "none is open"
            raise NotFound(f"no index {name!r} (open: {known})")
        return self.indexes[name]

    def _sha256(self, path: Path) -> str:
        """A file's sha256, remembered by path, size and modification time."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._hashes:
                return self._hashes[key]
        sha = sha256_file(path)
        with self._lock:
            if len(self._hashes) > 4096:
                self._hashes.clear()
            self._hashes[key] = sha
        return sha

    def group(self, index: Any, image: Any) -> dict[str, Any]:
        """The ids, lesions and patients of an index's copies of an image (by sha256).

        What "exclude this lesion" leaves out (`Index.group_of`, as `python -m
        evaluation.index query --exclude-group` does); empty when the image is not in
        the index.

        Raises:
            NotFound: An unknown index or image name.
            ValueError: A request without an index or image name.
        """
        entry = self._index(index)
        if not isinstance(image, str) or not image:
            raise ValueError("image: expected the name of a listed or uploaded image")
        group = sorted(entry.index.group_of(self.path(image)))
        return {"index": entry.name, "image": image, "in_index": bool(group), "group": group}

    def similar(self, request: Any) -> dict[str, Any]:
        """The k nearest rows of an index to region A (or the whole image).

        One embedding of the region by the index's own model (opened once), then the
        index's search: the neighbours and distances of `Index.query` and of
        `python -m evaluation.index query ... --json` on the same file and region.

        Args:
            request: {index, image, box or polygon, k, exclude_own}: an index name
                (`info()`), an image name (listed, uploaded or an index row), its
                region ("x,y,w,h" or [x, y, w, h], or an outline "x1,y1 x2,y2 ...",
                embedded under its mask; empty / null for the whole image), how
                many neighbours
                (default `DEFAULT_K`, at most `MAX_K`), and whether to leave out the
                index's copies of the image with their lesion and patient (`group`).

        Returns:
            The query (index, image, box, polygon, k, search, excluded; `box` is an
            outline's bounding box, the crop the embedding pools under the outline),
            the region as embedded
            (a PNG data URL), the embedding and search time, and the neighbours: rank,
            id, distance, label, lesion_id, patient_id, box, the row's thumbnail URL
            and its image name (`index:<index>/<id>`).

        Raises:
            NotFound: An unknown index or image.
            ValueError: A malformed request, a region outside the image or too small,
                or `exclude_own` for an image the index does not hold.
        """
        if not isinstance(request, dict):
            raise ValueError(
                "expected a JSON object {index, image, box or polygon, k, exclude_own}"
            )
        entry = self._index(request.get("index"))
        name = request.get("image")
        if not isinstance(name, str) or not name:
            raise ValueError("image: expected the name of a listed or uploaded image")
        box, outline = _parse_side(request, "box", "polygon", "A")
        k = _parse_k(request.get("k"))
        exclude_own = request.get("exclude_own", False)
        if not isinstance(exclude_own, bool):
            raise ValueError(f"exclude_own: expected true or false, got {exclude_own!r}")
        pixels = self.pixels(name)
        side = self._side(pixels, box, outline, "A")
        region = side.region(masked=True)  # an outline: pooled under its mask, as Index.query
        excluded: list[str] = []
        if exclude_own:
            excluded = self.group(entry.name, name)["group"]
            if not excluded:
                raise ValueError(
                    f"{name}: is not in index {entry.name!r} (no file with its sha256); "
                    "there is no lesion of it to exclude"
                )
        started = time.perf_counter()
        embedder = entry.index.embedder()  # opened by load_indexes; sessions are thread-safe
        prepared, mask = embedder.prepare_region(pixels, region)
        vector = embedder.embed_batch(prepared[None], None if mask is None else mask[None])
        hits = entry.index.search(vector, k, [set(excluded)])[0]
        elapsed = time.perf_counter() - started
        neighbours = []
        for hit in hits:
            row = asdict(hit)
            row.pop("path")  # the page names rows by index and id, never by a file path
            row["thumb"] = f"/api/thumb?{urlencode({'index': entry.name, 'id': hit.id})}"
            row["image"] = f"{INDEX_PREFIX}{entry.name}/{hit.id}"
            neighbours.append(row)
        return {
            "index": entry.name,
            "image": name,
            "box": box_text(side.region(masked=False)),
            "polygon": polygon_text(outline or ()),
            "k": k,
            "search": entry.index.method,
            "count": len(entry.index),
            "excluded": excluded,
            "query": {
                "size": list(prepared.shape[1:]),
                "image": data_url(png_bytes(prepared.transpose(1, 2, 0))),
            },
            "seconds": round(elapsed, 4),
            "neighbours": neighbours,
        }

    def thumbnail(self, index: Any, row_id: Any) -> bytes:
        """A small JPEG of an index row: its file decoded, cropped to the row's box.

        Only rows of an open index have thumbnails; a row is found by index name and
        id, never by a path.

        Raises:
            NotFound: An unknown index or row, or a row whose file is gone.
            ValueError: A row whose file changed since the index was built, or no
                longer decodes.
        """
        entry = self._index(index)
        row = entry.row(row_id)
        path = entry.file(row_id)
        st = path.stat()
        key = (entry.name, row, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        if self._sha256(path) != str(entry.index.meta["sha256"][row]):
            raise ValueError(
                f"{row_id}: its file changed since index {entry.name!r} was built; rebuild it"
            )
        box_value = str(entry.index.meta["box"][row])
        with self._thumb_slots:  # a large archive image decodes to a large float array
            try:
                pixels = decode_image(path, self.max_pixels)
                jpeg = thumbnail_jpeg(crop(pixels, parse_box(box_value) if box_value else None))
            except ValueError as err:  # name the row as the page knows it, not its path
                raise ValueError(str(err).replace(str(path), row_id, 1)) from None
        with self._lock:
            self._thumbs[key] = jpeg
            while len(self._thumbs) > 512:
                self._thumbs.popitem(last=False)
        return jpeg

    # -- history

    def history_rows(self) -> list[dict[str, Any]]:
        """The session's comparisons, oldest first."""
        with self._lock:
            return [c.to_json() for c in self.history]

    def clear_history(self) -> None:
        """Forget the session's comparisons."""
        with self._lock:
            self.history.clear()

    def history_csv(self) -> str:
        """The history as a region-pair table `evaluation.score --pairs` reads.

        Columns: id, image_a, box_a, image_b, box_b, polygon_a, polygon_b (boxes
        "x,y,w,h", outlines "x1,y1 x2,y2 ..." in source pixels; a side has one of them,
        neither for the whole image; both polygon columns are always there, so the
        format does not depend on the session; images as absolute paths, so the file
        works from any folder), then one distance column per scorer, named by its file
        stem.
        """
        ids = [_scorer_id(s) for s in self.scorers]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "image_a", "box_a", "image_b", "box_b", *HISTORY_OUTLINES, *ids])
        with self._lock:
            for c in self.history:
                distances = [c.distances.get(i) for i in ids]
                writer.writerow([
                    c.id, c.path_a, box_text(c.box_a), c.path_b, box_text(c.box_b),
                    polygon_text(c.polygon_a or ()), polygon_text(c.polygon_b or ()),
                    *("" if d is None else f"{d:.8g}" for d in distances),
                ])  # fmt: skip
        return out.getvalue()
