"""Free-form regions: lesion masks and polygons, read and checked once for every caller.

A `RegionMask` is a weight map over a whole decoded (EXIF-oriented) image, in [0, 1]:
1 inside the lesion, 0 outside; values between are weights (a soft or anti-aliased
edge), accepted as they are. It comes from a mask image (`read_mask`: the file is
decoded by the project's one decoder; it must have its image's size) or from a polygon
(`polygon_mask`: "x1,y1 x2,y2 ..." in source pixels, at least three points, inside the
image). A masked region is the image cropped to the mask's bounding box, with the mask
cropped alike (`RegionMask.box`, `RegionMask.crop`); both then go through the same fit.

How the masked metrics use the weights is in docs/metrics.md ("Masked metrics").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bridge.core.data.image import Box, box_text, crop, decode_image, parse_box

MASK_SUFFIX = ".mask.png"  # a case image's mask beside it: 0.jpg -> 0.mask.png
OUTLINES = ("polygon", "mask")
"""Kinds of `Outline`; a region-pair table's optional columns `polygon_a`, `mask_a`, ..."""
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_POINT = re.compile(rf"\s*({_NUMBER})\s*,\s*({_NUMBER})\s*")


@dataclass(frozen=True, eq=False)
class RegionMask:
    """Weights (H, W) in [0, 1] over a whole image, not all zero.

    Attributes:
        weights: float32 (H, W), the image's decoded size.
        source: Where it came from, for messages and tables (a file, or `polygon ...`).
    """

    weights: np.ndarray
    source: str

    @property
    def box(self) -> Box:
        """The bounding box of the non-zero weights, in source pixels."""
        rows = np.flatnonzero(self.weights.any(axis=1))
        cols = np.flatnonzero(self.weights.any(axis=0))
        return Box(
            int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
        )

    def crop(self) -> np.ndarray:
        """The weights inside `box`: (h, w) float32."""
        return crop(self.weights[:, :, None], self.box)[:, :, 0]

    def check_image(self, shape: tuple[int, ...], image: str) -> None:
        """Raise unless the mask has the image's (height, width)."""
        if tuple(shape[:2]) != self.weights.shape:
            h, w = self.weights.shape
            raise ValueError(
                f"{self.source}: mask of {w}x{h} px for {image} of {shape[1]}x{shape[0]} px; "
                "expected the image's size (as decoded, EXIF orientation applied)"
            )


def check_weights(weights: np.ndarray, source: str) -> RegionMask:
    """A checked `RegionMask`: 2-D, finite, in [0, 1], not empty.

    Raises:
        ValueError: Naming `source` and what was expected.
    """
    w = np.asarray(weights, np.float32)
    if w.ndim != 2:
        raise ValueError(f"{source}: expected an H x W mask, got shape {w.shape}")
    if not np.isfinite(w).all() or w.min() < 0 or w.max() > 1:
        raise ValueError(f"{source}: mask weights must lie in [0, 1]")
    if not w.any():
        raise ValueError(f"{source}: empty mask (no pixel above 0); expected a lesion outline")
    return RegionMask(np.ascontiguousarray(w), source)


def read_mask(path: str | os.PathLike[str]) -> RegionMask:
    """A mask image: grey levels 0..1 (black outside, white inside); any size check is the caller's.

    Colour masks are accepted only when their three channels are equal (a grey image
    saved as RGB); transparency is composited over white by the decoder, so a mask
    should have none.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: On a file that does not decode, a colour mask, or an empty one.
    """
    path = Path(path)
    pixels = decode_image(path)
    if not (
        np.array_equal(pixels[:, :, 0], pixels[:, :, 1])
        and np.array_equal(pixels[:, :, 0], pixels[:, :, 2])
    ):
        raise ValueError(
            f"{path}: a colour image; expected a grey-level mask (black outside, white inside)"
        )
    return check_weights(pixels[:, :, 0], str(path))


def parse_polygon(text: str) -> tuple[tuple[float, float], ...]:
    """Points from `"x1,y1 x2,y2 ..."` (source pixels; decimals allowed).

    Raises:
        ValueError: On a malformed point or fewer than three points.
    """
    parts = text.split()
    points = []
    for part in parts:
        match = _POINT.fullmatch(part)
        if not match:
            raise ValueError(f"polygon point {part!r}: expected x,y (source pixels)")
        points.append((float(match[1]), float(match[2])))
    if len(points) < 3:
        raise ValueError(
            f"polygon {text!r}: {len(points)} point(s); expected at least 3 (x1,y1 x2,y2 x3,y3)"
        )
    return tuple(points)


def polygon_text(points) -> str:
    """Points as `parse_polygon` reads them (integers where whole)."""

    def number(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else f"{v:g}"

    return " ".join(f"{number(x)},{number(y)}" for x, y in points)


def polygon_mask(points, shape: tuple[int, ...]) -> RegionMask:
    """The binary mask of a polygon over an image of `shape` (height, width, ...).

    A pixel is inside when Pillow's polygon fill covers it (outline included).

    Raises:
        ValueError: On fewer than three points, a point outside the image, or a
            polygon that covers no pixel.
    """
    if isinstance(points, str):
        points = parse_polygon(points)
    points = tuple((float(x), float(y)) for x, y in points)
    height, width = shape[:2]
    text = polygon_text(points)
    if len(points) < 3:
        raise ValueError(f"polygon {text!r}: expected at least 3 points")
    outside = [(x, y) for x, y in points if not (0 <= x <= width and 0 <= y <= height)]
    if outside:
        x, y = outside[0]
        raise ValueError(f"polygon point {x:g},{y:g} lies outside the {width}x{height} image")
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=255, outline=255)
    weights = (np.asarray(canvas) > 0).astype(np.float32)
    return check_weights(weights, f"polygon {text}")


@dataclass(frozen=True)
class Outline:
    """A free-form region as a table names it: a polygon or a mask file, resolved per image.

    Tables (region-pair tables, the explorer's history) store the outline, not its
    weights: a polygon is rasterised, and a mask file read, against the image it
    outlines when that image is decoded (`mask`). Masked scorers weigh the region by
    it; scorers without mask inputs see its bounding box.

    Attributes:
        polygon: The points, in source pixels ("x1,y1 x2,y2 ..."), or empty.
        file: The mask file, or None.
    """

    polygon: tuple[tuple[float, float], ...] = ()
    file: Path | None = None

    def __post_init__(self) -> None:
        if bool(self.polygon) == (self.file is not None):
            raise ValueError("an outline is a polygon or a mask file; expected exactly one")

    @classmethod
    def of_polygon(cls, text: str) -> Outline:
        """An outline from `"x1,y1 x2,y2 ..."` (checked as `parse_polygon`)."""
        return cls(polygon=parse_polygon(text))

    @property
    def kind(self) -> str:
        """`polygon` or `mask` (the table column's suffix-less name)."""
        return "polygon" if self.polygon else "mask"

    @property
    def text(self) -> str:
        """The table cell: the polygon's points, or the mask file's path."""
        return polygon_text(self.polygon) if self.polygon else os.fspath(self.file)

    @property
    def source(self) -> str:
        """As `RegionMask.source`: `polygon ...` or the mask file."""
        return f"polygon {self.text}" if self.polygon else self.text

    def mask(self, shape: tuple[int, ...], image: str = "the image") -> RegionMask:
        """The weights over an image of `shape` (height, width, ...).

        Raises:
            ValueError: As `polygon_mask` / `read_mask`, or on a mask of another size.
        """
        if self.polygon:
            return polygon_mask(self.polygon, shape)
        region = read_mask(self.file)
        region.check_image(shape, image)
        return region


def area_average(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Masks (N, 1, H, W) brought to a grid (h, w) by area averaging, in float64.

    Cell i averages the pixels of adaptive average pooling's bin i (floor(i H / h) ..
    ceil((i + 1) H / h) - 1), as the masked metrics' graphs do (docs/metrics.md).
    """

    def matrix(n_in: int, n_out: int) -> np.ndarray:
        i = np.arange(n_out)[:, None]
        j = np.arange(n_in)[None, :]
        start, end = (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out
        return ((j >= start) & (j < end)) / (end - start)

    masks = np.asarray(masks, np.float64)
    rows, cols = matrix(masks.shape[2], size[0]), matrix(masks.shape[3], size[1])
    return rows @ masks @ cols.T


def region_cell(where: Box | Outline | None) -> str:
    """A box or outline as one text cell (engines pass regions as text columns).

    `"x,y,w,h"` for a box, `"polygon x1,y1 x2,y2 ..."`, `"mask <path>"`, or "" for
    the whole image; `parse_region_cell` reads it back.
    """
    if isinstance(where, Outline):
        return f"{where.kind} {where.text}"
    return box_text(where)


def parse_region_cell(text: str) -> Box | Outline | None:
    """The region `region_cell` wrote.

    Raises:
        ValueError: On a malformed box or polygon.
    """
    kind, _, rest = text.partition(" ")
    if kind == "polygon":
        return Outline.of_polygon(rest)
    if kind == "mask":
        return Outline(file=Path(rest))
    return parse_box(text) if text else None


def region_box(where: Box | RegionMask | Outline | None, shape: tuple[int, ...]) -> Box | None:
    """A region's bounding box in an image of `shape`: what a metric without masks sees.

    A box (or None, the whole image) is itself; a mask or outline gives the box around
    its weights.
    """
    if isinstance(where, Outline):
        where = where.mask(shape)
    return where.box if isinstance(where, RegionMask) else where


def crop_region(pixels: np.ndarray, where: Box | RegionMask | Outline | None) -> np.ndarray:
    """The pixels inside a region's bounding box (`region_box`)."""
    return crop(pixels, region_box(where, pixels.shape))


def is_mask_file(path: str | os.PathLike[str]) -> bool:
    """Whether a file is a mask beside an image (`*.mask.png`), not an image to list."""
    return Path(path).name.lower().endswith(MASK_SUFFIX)


def mask_beside(image: str | os.PathLike[str]) -> Path:
    """Where a case image's mask lies: `0.jpg` -> `0.mask.png`."""
    image = Path(image)
    return image.with_name(image.name.split(".")[0] + MASK_SUFFIX)


def fill_outside(region: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The `fill` remedy for leakage: pixels outside the mask take the region's mean colour.

    The mean is weighted by the mask; a pixel of weight w keeps w of its colour.
    """
    weights = mask[:, :, None]
    mean = (region * weights).sum(axis=(0, 1)) / weights.sum()
    return (region * weights + mean * (1.0 - weights)).astype(np.float32)
