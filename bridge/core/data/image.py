"""The one image decoder, region crop and resize used by every caller.

Every image enters dermsim through `decode_image` (or `decode_image_bytes`) as an
HxWx3 float32 RGB array in [0, 1], EXIF orientation applied. Regions are cut with
`crop` in source pixels of that decoded array, and brought to a network's size with
`resize` / `fit`, which wrap one resampling implementation (Pillow, per channel, in
float mode "F") so that both frameworks and the evaluation harness see identical
pixels. `model_input` is the whole chain a model's input goes through (crop, fit,
clip to [0, 1]); `RecentImages` keeps the last few decoded images for callers that
reuse them row after row.

Decoding rules:

* Transparency (RGBA, LA, PA, palette or colour-key transparency) is composited
  over WHITE, the usual background of a dermoscopy or clinical photograph export.
* 8-bit data is divided by 255, 16-bit data by 65535. Pillow keeps 16-bit
  grayscale (`I;16`) but silently truncates 16-bit RGB(A) and gray+alpha PNG/TIFF
  to 8 bits, so those are decoded with OpenCV instead.
* Mode "I" (32-bit integer; older Pillow's mode for 16-bit grayscale) is divided by
  65535 and mode "F" taken as is; values outside [0, 1] after that are an error,
  never clipped.
* No colour management: embedded ICC profiles are ignored and CMYK is converted
  with Pillow's plain formula. Multi-frame files (GIF, multi-page TIFF) give their
  first frame.
* The pixel count is checked from the header before any pixel is decoded
  (decompression bombs); truncated or corrupt files raise instead of returning a
  partly grey image.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections import OrderedDict
from typing import BinaryIO, NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_PIXELS: int = 178_956_970
"""Default pixel-count guard (Pillow's own hard limit); override per call."""

_EXIF_ORIENTATION = 0x0112
# Modes in which Pillow hands out 16-bit colour / gray+alpha data cut to 8 bits
# (the tile's raw mode says ";16"); those files are decoded with OpenCV instead.
_WIDE_MODES = ("RGB", "RGBA", "RGBX", "LA")
# Serialises the short window in which Pillow's own bomb check is switched off.
_PILLOW_LOCK = threading.Lock()

INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
}
RESIZE_POLICIES = ("stretch", "shorter_center_crop", "pad")
DEFAULT_POLICY = "shorter_center_crop"  # the models' own input: every caller's default
# file suffixes of images every reader, lister and explorer accepts (what decode_image reads)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


# ------------------------------------------------------------------- decoding


def decode_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to RGB float32 in [0, 1], EXIF orientation applied.

    Args:
        path: Image file (any format Pillow reads; 16-bit PNG/TIFF via OpenCV).
        max_pixels: Largest width * height accepted, checked from the header before
            decoding.

    Returns:
        A C-contiguous HxWx3 float32 array; transparency composited over white.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If the file is not a readable image, is truncated or corrupt,
            or has more than `max_pixels` pixels.
    """
    name = os.fspath(path)
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed below, after a possible OpenCV re-read
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no such image file") from None
    except IsADirectoryError:
        raise ValueError(f"{name}: unreadable image (is a directory)") from None
    with fp:
        return _decode(fp, name, max_pixels)


def decode_image_bytes(
    data: bytes, name: str = "<upload>", max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode an image held in memory; same rules and result as `decode_image`.

    Args:
        data: The encoded file contents.
        name: What error messages call the image (an upload's file name).
        max_pixels: Largest width * height accepted, checked before decoding.

    Raises:
        ValueError: If the bytes are not a readable image, are truncated or
            corrupt, or have more than `max_pixels` pixels.
    """
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(fp: BinaryIO, name: str, max_pixels: int) -> np.ndarray:
    """Decode an open binary stream (shared by the file and the bytes entry points)."""
    if max_pixels < 1:
        raise ValueError(f"{name}: max_pixels must be positive, got {max_pixels}")
    try:
        im = _open_unguarded(fp)
    except UnidentifiedImageError as exc:
        raise ValueError(f"{name}: unreadable image (not a format Pillow recognises)") from exc
    except Exception as exc:  # Pillow raises many types on garbage headers
        raise ValueError(f"{name}: unreadable image ({_reason(exc)})") from exc
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise ValueError(
                f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} "
                "(decompression bomb guard)"
            )
        try:
            if _is_wide_rgb(im):
                log.debug("%s: 16-bit colour (%s), decoded with OpenCV", name, im.format)
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
                fp.seek(0)
                out = _decode_wide_opencv(fp.read(), name, (height, width))
                out = _orient(out, orientation)
            else:
                im.load()
                ImageOps.exif_transpose(im, in_place=True)
                out = _to_rgb_float(im, name)
        except ValueError as exc:
            if str(exc).startswith(f"{name}:"):
                raise
            raise ValueError(f"{name}: unreadable image ({_reason(exc)})") from exc
        except Exception as exc:  # truncated / corrupt data: OSError, SyntaxError, ...
            raise ValueError(f"{name}: unreadable image ({_reason(exc)})") from exc
    return np.ascontiguousarray(out, dtype=np.float32)


def _open_unguarded(fp: BinaryIO) -> Image.Image:
    """`Image.open` with Pillow's own bomb check off: `max_pixels` is the one guard.

    Pillow would warn above half of its limit and refuse above it, whatever the
    caller allowed. Its module-level switch is turned off only while the header is
    parsed, under a lock.
    """
    with _PILLOW_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(fp)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _is_wide_rgb(im: Image.Image) -> bool:
    """True for 16-bit colour / gray+alpha data that Pillow would cut to 8 bits."""
    if im.mode not in _WIDE_MODES:
        return False
    for tile in im.tile:
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args if isinstance(args, str) else (args[0] if args else "")
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _decode_wide_opencv(data: bytes, name: str, size_hw: tuple[int, int]) -> np.ndarray:
    """Decode 16-bit colour with OpenCV (BGR(A) -> RGB, / 65535, alpha over white)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"{name}: unreadable image (OpenCV could not decode the 16-bit data)")
    if arr.shape[:2] != size_hw:
        raise ValueError(
            f"{name}: unreadable image (OpenCV decoded {arr.shape[1]}x{arr.shape[0]}, "
            f"header says {size_hw[1]}x{size_hw[0]})"
        )
    scale = np.float32(np.iinfo(arr.dtype).max) if arr.dtype.kind == "u" else np.float32(1)
    x = arr.astype(np.float32) / scale
    if x.ndim == 2:
        return np.repeat(x[:, :, None], 3, axis=2)
    channels = x.shape[2]
    if channels == 1:
        return np.repeat(x, 3, axis=2)
    if channels == 2:
        return _over_white(np.repeat(x[:, :, :1], 3, axis=2), x[:, :, 1:])
    rgb = x[:, :, 2::-1]
    if channels == 4:
        return _over_white(rgb, x[:, :, 3:])
    if channels == 3:
        return rgb
    raise ValueError(f"{name}: unreadable image ({channels} channels)")


def _orient(x: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an HxWxC array, as `ImageOps.exif_transpose` does."""
    if orientation == 2:
        return x[:, ::-1]
    if orientation == 3:
        return x[::-1, ::-1]
    if orientation == 4:
        return x[::-1]
    if orientation == 5:
        return x.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(x, k=-1)
    if orientation == 7:
        return x[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(x, k=1)
    return x


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return rgb * alpha + (np.float32(1) - alpha)


def _to_rgb_float(im: Image.Image, name: str) -> np.ndarray:
    """Convert a loaded Pillow image of any supported mode to HxWx3 float32."""
    mode = im.mode
    if mode.startswith("I;16"):
        gray = np.asarray(im).astype(np.float32) / np.float32(65535)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("I", "F"):
        gray = np.asarray(im).astype(np.float32)
        if mode == "I":
            gray /= np.float32(65535)
        lo, hi = float(gray.min(initial=0.0)), float(gray.max(initial=0.0))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            expected = "0..65535" if mode == "I" else "[0, 1]"
            raise ValueError(
                f"{name}: mode {mode} values outside {expected} (scaled range {lo:g}..{hi:g})"
            )
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "1":
        im, mode = im.convert("L"), "L"
    has_key = "transparency" in im.info and mode in ("L", "RGB", "P")
    if has_key or mode in ("PA", "La", "RGBa"):
        im, mode = im.convert("RGBA"), "RGBA"
    elif mode == "P":
        im, mode = im.convert("RGB"), "RGB"
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        try:
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        except ValueError as exc:
            raise ValueError(f"{name}: unsupported image mode {mode} ({_reason(exc)})") from exc
        mode = im.mode
    x = np.asarray(im, dtype=np.float32) / np.float32(255)
    if mode == "L":
        return np.repeat(x[:, :, None], 3, axis=2)
    if mode == "LA":
        return _over_white(np.repeat(x[:, :, :1], 3, axis=2), x[:, :, 1:])
    if mode == "RGBA":
        return _over_white(x[:, :, :3], x[:, :, 3:])
    return x


# ------------------------------------------------------------------- regions


class Box(NamedTuple):
    """A region in source pixels of the decoded (EXIF-oriented) image.

    Attributes:
        x: Left column of the top-left corner.
        y: Top row of the top-left corner.
        w: Width in pixels.
        h: Height in pixels.
    """

    x: int
    y: int
    w: int
    h: int


def parse_box(text: str) -> Box:
    """Parse `"x,y,w,h"` (spaces allowed) into a `Box`.

    Raises:
        ValueError: If the text does not hold four integers, x or y is negative,
            or w or h is below 1; the message quotes the text.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 4:
        raise ValueError(f"box {text!r}: expected 'x,y,w,h' (four integers)")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"box {text!r}: expected 'x,y,w,h' with integer values") from None
    if x < 0 or y < 0:
        raise ValueError(f"box {text!r}: x and y must be >= 0")
    if w < 1 or h < 1:
        raise ValueError(f"box {text!r}: w and h must be >= 1")
    return Box(x, y, w, h)


def box_text(box: Box | None) -> str:
    """A box as `parse_box` reads it (`"x,y,w,h"`); the empty string for the whole image."""
    return "" if box is None else f"{box.x},{box.y},{box.w},{box.h}"


def crop(image: np.ndarray, box: Box | None) -> np.ndarray:
    """Cut a region out of an HxWxC image.

    Args:
        image: The decoded image.
        box: Region in source pixels; None keeps the whole image.

    Returns:
        The region, C-contiguous; it may share memory with `image` (copy before
        writing to it in place).

    Raises:
        ValueError: If the box does not lie entirely inside the image.
    """
    if box is None:
        return np.ascontiguousarray(image)
    x, y, w, h = box
    height, width = image.shape[:2]
    if x < 0 or y < 0 or w < 1 or h < 1 or x + w > width or y + h > height:
        raise ValueError(
            f"box (x, y, w, h) = ({x}, {y}, {w}, {h}) lies outside the {width}x{height} image"
        )
    return np.ascontiguousarray(image[y : y + h, x : x + w])


def jpeg_bytes(pixels: np.ndarray, max_side: int | None = None, quality: int = 85) -> bytes:
    """An HxWx3 float image in [0, 1] as JPEG bytes, for display only.

    Args:
        pixels: The image (e.g. a `crop` of a decoded image).
        max_side: Shrink (Lanczos, aspect kept) so that the longest side is at most
            this many pixels; None keeps the size.
        quality: JPEG quality.
    """
    data = np.clip(np.rint(np.asarray(pixels) * 255.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(data)
    if max_side is not None:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


# ------------------------------------------------------------------- resizing


def resize(image: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize an HxWxC (or HxW) image; the one resampling implementation.

    Each channel is resampled by Pillow in float mode "F" (no 8-bit rounding).
    Pillow's filters widen with the scale factor when shrinking (antialiased,
    like torchvision's `antialias=True`); "area" is Pillow's BOX filter.

    Args:
        image: Float image, channels last.
        size: Target (height, width).
        interpolation: One of "bilinear", "bicubic", "nearest", "area".

    Returns:
        A float32 array of shape (height, width, C); a copy of the input when the
        size already matches.

    Raises:
        ValueError: On an unknown interpolation, a non-positive size, or an array
            that is not 2-D or 3-D.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"unknown interpolation {interpolation!r}; expected one of {', '.join(INTERPOLATIONS)}"
        )
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"resize size (height, width) = {tuple(size)} must be positive")
    if image.ndim not in (2, 3):
        raise ValueError(f"resize expects an HxW or HxWxC image, got shape {image.shape}")
    x = np.asarray(image, dtype=np.float32)
    if x.shape[:2] == (height, width):
        return x.copy()
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, :, None]
    resample = INTERPOLATIONS[interpolation]
    out = np.empty((height, width, x.shape[2]), dtype=np.float32)
    for c in range(x.shape[2]):
        channel = Image.fromarray(np.ascontiguousarray(x[:, :, c]), "F")
        out[:, :, c] = np.asarray(channel.resize((width, height), resample))
    return out[:, :, 0] if squeeze else out


def fit(
    image: np.ndarray,
    size: int,
    policy: str = DEFAULT_POLICY,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Bring an image to `size` x `size` by one of `RESIZE_POLICIES`.

    * "stretch": resize both sides to `size` (aspect ratio not kept).
    * "shorter_center_crop": resize so the shorter side is `size` (the longer side
      rounded half up), then cut the centred square.
    * "pad": resize so the longer side is `size`, then pad with 0 to a centred
      square (an odd margin puts the extra pixel at the bottom / right).

    Raises:
        ValueError: On an unknown policy or interpolation, or a size below 1.
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(
            f"unknown resize policy {policy!r}; expected one of {', '.join(RESIZE_POLICIES)}"
        )
    if int(size) < 1:
        raise ValueError(f"fit size must be >= 1, got {size}")
    size = int(size)
    height, width = image.shape[:2]
    if policy == "stretch":
        return resize(image, (size, size), interpolation)
    if policy == "shorter_center_crop":
        if height <= width:
            new_h, new_w = size, _scale_half_up(width, size, height)
        else:
            new_h, new_w = _scale_half_up(height, size, width), size
        scaled = resize(image, (new_h, new_w), interpolation)
        return crop(scaled, Box((new_w - size) // 2, (new_h - size) // 2, size, size)).copy()
    if height >= width:
        new_h, new_w = size, max(1, _scale_half_up(width, size, height))
    else:
        new_h, new_w = max(1, _scale_half_up(height, size, width)), size
    scaled = resize(image, (new_h, new_w), interpolation)
    out = np.zeros((size, size, *scaled.shape[2:]), dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = scaled
    return out


def model_input(
    image: np.ndarray,
    size: int,
    policy: str = DEFAULT_POLICY,
    interpolation: str = "bilinear",
    box: Box | None = None,
) -> np.ndarray:
    """Crop a region, fit it to `size`, clip it to [0, 1]: what every model is fed.

    Bicubic resampling (the ViT contract) over- and undershoots a little at sharp
    edges; the clip brings those pixels back into the [0, 1] range the trainers and
    the exported models take.

    Returns:
        (size, size, C) float32.

    Raises:
        ValueError: As `crop` and `fit`.
    """
    return np.clip(fit(crop(image, box), size, policy, interpolation), 0.0, 1.0)


def _scale_half_up(length: int, size: int, reference: int) -> int:
    """`round(length * size / reference)` with halves rounded up, in exact integers."""
    return (2 * length * size + reference) // (2 * reference)


# ------------------------------------------------------------------- caching


class RecentImages:
    """The last few decoded images, keyed by path and modification time (thread-safe).

    Pair tables, comparison cases and the explorer reuse the same images row after
    row; a file rewritten in place is decoded again.

    Args:
        keep: How many images to keep (least recently used goes first).
        max_pixels: Pixel-count guard passed to `decode_image`.
    """

    def __init__(self, keep: int = 8, max_pixels: int = MAX_PIXELS):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep, self.max_pixels = keep, max_pixels
        self._images: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def paths(self) -> list[str]:
        """The kept images' paths, least recently used first."""
        with self._lock:
            return [path for path, _ in self._images]

    def get(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The decoded image (as `decode_image`); do not write to it in place."""
        name = os.fspath(path)
        try:
            key = (name, os.stat(name).st_mtime_ns)
        except OSError:  # decode_image says what is wrong with it
            key = (name, -1)
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        pixels = decode_image(name, self.max_pixels)
        with self._lock:
            self._images[key] = pixels
            while len(self._images) > self.keep:
                self._images.popitem(last=False)
        return pixels
