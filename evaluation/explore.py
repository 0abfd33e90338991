"""Region explorer: a local page comparing two regions (or two images) with every scorer.

    python -m evaluation.explore [--models DIR] [--images DIR] [--host 127.0.0.1] [--port N]

Point at two regions of one image (or pick two images, whole or a region each) and see
how every exported LPIPS / DISTS scorer judges them: a table of distances (metric x
backbone x origin framework), the crops as the models saw them, the LPIPS distance
map, and a history of the session's comparisons that downloads as a region-pair CSV
(`python -m evaluation.score MODEL --pairs history.csv --out scores.csv` reads it).

The page works offline: its HTML, CSS and JavaScript ship in this package, nothing is
fetched from elsewhere. Scoring runs on onnxruntime with `evaluation.score.Scorer`, so
the numbers are those of `python -m evaluation.score` on the same files and boxes.
Regions are in source pixels of the decoded, EXIF-oriented image, which is also what
the page displays. Safety defaults: the server binds to 127.0.0.1, caps uploads in
bytes and pixels, decodes them with the project's one decoder (a non-image is an
error on the page), and serves images only by a name from its own listing.
Standard library HTTP server; numpy, Pillow, matplotlib's colormaps and onnxruntime.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from PIL import Image

from bridge.core.data.image import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    RESIZE_POLICIES,
    Box,
    RecentImages,
    box_text,
    decode_image_bytes,
    parse_box,
)
from bridge.core.runtime import SCORER_KINDS, find_models
from evaluation.score import Scorer

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("explore_static")
DEFAULT_IMAGES = Path("data/synthetic/rated")
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_REQUEST_BYTES = 64 * 1024  # a compare request is a few hundred bytes of JSON
MAX_LISTED = 10_000
MIN_REGION = 8  # a region smaller than this, fitted to 224 px, says nothing
UPLOAD_PREFIX = "upload:"
EXPORT_HINT = (
    "export some with `python -m bridge.export --run runs/demo --kind lpips,dists "
    "--out models/demo` (or --arch ARCH --weights FILE)"
)
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class NotFound(LookupError):
    """A name that is not in the explorer's listing (answered 404)."""


class TooLarge(ValueError):
    """An upload or request above its byte cap (answered 413)."""


# ------------------------------------------------------------------ scorers


def find_scorers(models_dir: str | os.PathLike) -> list[Path]:
    """The LPIPS / DISTS scorers in a folder: `*.onnx` files whose manifest says so.

    Classifier and feature models are skipped; so is a file with no readable
    manifest, or one that does not match its file (with a warning).

    Raises:
        FileNotFoundError: If the folder does not exist.
        ValueError: If it holds no scorer; the message says how to export one.
    """
    folder = Path(models_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such models folder; {EXPORT_HINT}")
    found = [path for path, _ in find_models(folder, SCORER_KINDS)[0]]
    if not found:
        raise ValueError(f"{folder}: no LPIPS or DISTS scorers (*.onnx + manifest); {EXPORT_HINT}")
    return found


def load_scorers(
    paths: Sequence[str | os.PathLike], policy: str = "shorter_center_crop", prefer_gpu: bool = True
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
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
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


def upload_label(filename: str | None) -> str:
    """An upload's name for messages and the listing: the base name the client sent."""
    return Path(str(filename or "upload").replace("\\", "/")).name[:120] or "upload"


# ------------------------------------------------------------------ the app


@dataclass
class Comparison:
    """One comparison of the session (a history row).

    Attributes:
        id: `cmp<N>`, 1-based in the session.
        image_a: Name of image A in the listing.
        box_a: Region of A, None for the whole image.
        image_b: Name of image B.
        box_b: Region of B.
        path_a: The file image A was read from (what the CSV names).
        path_b: The file of image B.
        distances: {scorer id: distance, or None where that scorer failed}.
    """

    id: str
    image_a: str
    box_a: Box | None
    image_b: str
    box_b: Box | None
    path_a: Path
    path_b: Path
    distances: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The row as the page shows it."""
        return {
            "id": self.id,
            "image_a": self.image_a,
            "box_a": box_text(self.box_a),
            "image_b": self.image_b,
            "box_b": box_text(self.box_b),
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

    # -- listing and images

    def info(self) -> dict[str, Any]:
        """What the page needs to start: scorers, limits, whether data is synthetic."""
        return {
            "scorers": [
                {
                    "id": _scorer_id(s),
                    "metric": s.metric,
                    "backbone": _backbone(s),
                    "origin": _origin(s),
                    "size": s.size,
                    "policy": s.policy,
                    "provider": s.provider,
                    "synthetic": bool(s.model.manifest.get("synthetic")),
                    "heads": (s.model.manifest.get("heads") or {}).get("source"),
                }
                for s in self.scorers
            ],
            "images_dir": None if self.images_dir is None else self.images_dir.name,
            "synthetic_images": self.synthetic_images,
            "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.max_pixels,
            "min_region": self.min_region,
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
        """The file behind a listed name.

        Raises:
            NotFound: If the name is not in the listing, or its file is not inside the
                folder it was listed from.
        """
        with self._lock:
            if name in self.uploads:
                path, root = self.uploads[name][0], self.uploads_dir
            elif name in self.images and self.images_dir is not None:
                path, root = self.images[name], self.images_dir
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

    def compare(self, request: dict[str, Any]) -> dict[str, Any]:
        """Score two regions with every scorer.

        Args:
            request: {image_a, box_a, image_b, box_b}; a box is "x,y,w,h" in source
                pixels (or [x, y, w, h]), empty / null for the whole image.

        Returns:
            The comparison: its history row, one result per scorer (metric, backbone,
            origin, distance), the crops as fed to the models (PNG data URLs, one pair
            per input size) and one LPIPS heat map per LPIPS scorer.

        Raises:
            NotFound: An image name not in the listing.
            ValueError: A malformed request, or a region outside its image, of zero
                area or too small.
        """
        if not isinstance(request, dict):
            raise ValueError("expected a JSON object {image_a, box_a, image_b, box_b}")
        names = {}
        for side in ("a", "b"):
            name = request.get(f"image_{side}")
            if not isinstance(name, str) or not name:
                raise ValueError(f"image_{side}: expected the name of a listed or uploaded image")
            names[side] = name
        box_a = _parse_region(request.get("box_a"), "A")
        box_b = _parse_region(request.get("box_b"), "B")
        pixels_a, pixels_b = self.pixels(names["a"]), self.pixels(names["b"])
        self._region(pixels_a, box_a, "A")
        self._region(pixels_b, box_b, "B")
        path_a, path_b = self.path(names["a"]), self.path(names["b"])

        results, crops, maps = [], {}, []
        with self._lock:
            for scorer in self.scorers:
                key = (scorer.size, scorer.policy, scorer.interpolation)
                if key not in crops:
                    crops[key] = (scorer.prepare(pixels_a, box_a), scorer.prepare(pixels_b, box_b))
                a, b = crops[key]
                row = {
                    "scorer": _scorer_id(scorer),
                    "metric": scorer.metric,
                    "backbone": _backbone(scorer),
                    "origin": _origin(scorer),
                    "size": scorer.size,
                    "synthetic": bool(scorer.model.manifest.get("synthetic")),
                    "distance": None,
                    "error": None,
                }
                try:
                    distance = float(scorer.score_arrays(a, b)[0])
                    if not np.isfinite(distance):  # reported, never passed on as a number
                        raise ValueError(f"the scorer returned {distance}")
                    row["distance"] = distance
                    if scorer.metric == "lpips" and "distance_map" in scorer.model.outputs:
                        m = scorer.distance_map(a, b)[0, 0]
                        maps.append({
                            "scorer": row["scorer"], "backbone": row["backbone"],
                            "origin": row["origin"], "size": scorer.size,
                            "max": float(m.max()), "mean": float(m.mean()),
                            "image": data_url(png_bytes(heat_map(m, a.transpose(1, 2, 0)))),
                        })  # fmt: skip
                except (ValueError, RuntimeError) as err:  # one scorer failing, not all
                    log.warning("%s: %s", row["scorer"], err)
                    row["error"] = str(err).splitlines()[0][:300]
                results.append(row)
            record = Comparison(
                f"cmp{len(self.history) + 1}", names["a"], box_a, names["b"], box_b,
                path_a, path_b, {r["scorer"]: r["distance"] for r in results},
            )  # fmt: skip
            self.history.append(record)
        return {
            **record.to_json(),
            "results": results,
            "crops": [
                {
                    "size": size,
                    "policy": policy,
                    "a": data_url(png_bytes(a.transpose(1, 2, 0))),
                    "b": data_url(png_bytes(b.transpose(1, 2, 0))),
                }
                for (size, policy, _), (a, b) in crops.items()
            ],
            "maps": maps,
        }

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

        Columns: id, image_a, box_a, image_b, box_b (boxes "x,y,w,h", empty for the
        whole image; images as absolute paths, so the file works from any folder),
        then one distance column per scorer, named by its file stem.
        """
        ids = [_scorer_id(s) for s in self.scorers]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "image_a", "box_a", "image_b", "box_b", *ids])
        with self._lock:
            for c in self.history:
                distances = [c.distances.get(i) for i in ids]
                writer.writerow([
                    c.id, c.path_a, box_text(c.box_a), c.path_b, box_text(c.box_b),
                    *("" if d is None else f"{d:.8g}" for d in distances),
                ])  # fmt: skip
        return out.getvalue()


# ------------------------------------------------------------------ HTTP


def is_loopback(host: str) -> bool:
    """Whether a bind address is loopback only (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server holding the `Explorer` its handlers serve.

    Args:
        address: (host, port); port 0 picks a free port.
        explorer: The app.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], explorer: Explorer):
        self.explorer = explorer
        self.loopback = is_loopback(address[0])
        if ":" in address[0]:  # an IPv6 address
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        """The page's address."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    """The page, its files and the JSON API.

    GET `/` (the page), `/static/<file>`, `/api/info` (scorers, limits),
    `/api/images` (the listing), `/api/image/<name>` (PNG of the decoded, oriented
    image), `/api/history` (JSON), `/api/history.csv` (region-pair CSV); POST
    `/api/upload?name=<file name>` (the raw file as the body), `/api/compare`
    ({image_a, box_a, image_b, box_b}), `/api/history/clear`. Errors are JSON
    `{"error": message}`: 400 bad input, 404 unknown name, 413 too large.
    """

    server: ExplorerServer
    server_version = "dermsim-explorer"
    sys_version = ""

    # -- plumbing

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Cache-Control", headers.pop("cache", "no-store"))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_allowed(self) -> bool:
        """On loopback, refuse other Host names (a DNS-rebinding page cannot reach it)."""
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        return host in ("localhost", "127.0.0.1", "::1") or is_loopback(host)

    def _length(self) -> int:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ValueError("expected a Content-Length header")
        return int(length)

    def _body(self, limit: int) -> bytes:
        length = self._length()
        if length > limit:
            raise TooLarge(f"request of {length} bytes exceeds the limit of {limit} bytes")
        return self.rfile.read(length)

    def _dispatch(self, routes: dict) -> None:
        """Call the route for the path: keys ending in "/" take the rest of the path."""
        if not self._host_allowed():
            self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return
        parts = urlsplit(self.path)
        path = parts.path
        try:
            for route, handler in routes.items():
                if path == route:
                    handler("", parts.query)
                    return
                if route.endswith("/") and route != "/" and path.startswith(route):
                    handler(path[len(route) :], parts.query)
                    return
            self._error(HTTPStatus.NOT_FOUND, f"no such page {path!r}")
        except NotFound as err:
            self._error(HTTPStatus.NOT_FOUND, str(err))
        except TooLarge as err:
            self.close_connection = True  # the body was not read
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(err))
        except (ValueError, FileNotFoundError) as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err).splitlines()[0][:500])
        except Exception:  # a bug: logged in full, answered briefly
            log.exception("%s %s failed", self.command, path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the server log)")

    def do_GET(self) -> None:
        """Serve the page, its files, images and the JSON API."""
        self._dispatch({
            "/": self._index,
            "/static/": self._static,
            "/api/info": lambda *_: self._json(200, self.server.explorer.info()),
            "/api/images": lambda *_: self._json(
                200, {"images": self.server.explorer.image_list()}
            ),
            "/api/image/": self._image,
            "/api/history": lambda *_: self._json(
                200, {"history": self.server.explorer.history_rows()}
            ),
            "/api/history.csv": self._history_csv,
        })  # fmt: skip

    do_HEAD = do_GET

    def do_POST(self) -> None:
        """Uploads, comparisons and clearing the history."""
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return
        self._dispatch({
            "/api/upload": self._upload,
            "/api/compare": self._compare,
            "/api/history/clear": self._clear,
        })  # fmt: skip

    # -- routes

    def _index(self, *_) -> None:
        self._static("index.html", "")

    def _static(self, name: str, _query: str) -> None:
        name = unquote(name)
        path = (STATIC / name).resolve()
        if (
            not path.is_relative_to(STATIC.resolve())
            or not path.is_file()
            or path.suffix not in _STATIC_TYPES
        ):
            raise NotFound(f"no such file {name!r}")
        self._send(200, path.read_bytes(), _STATIC_TYPES[path.suffix])

    def _image(self, name: str, _query: str) -> None:
        png = self.server.explorer.image_png(unquote(name))
        self._send(200, png, "image/png", cache="private, max-age=300")

    def _history_csv(self, *_) -> None:
        self._send(
            200,
            self.server.explorer.history_csv().encode(),
            "text/csv; charset=utf-8",
            Content_Disposition='attachment; filename="explorer-history.csv"',
        )

    def _upload(self, _rest: str, query: str) -> None:
        filename = (parse_qs(query).get("name") or ["upload"])[0]
        self.server.explorer.check_upload_size(self._length(), filename)
        data = self._body(self.server.explorer.max_upload_bytes)
        self._json(200, self.server.explorer.upload(data, filename))

    def _compare(self, *_) -> None:
        try:
            request = json.loads(self._body(MAX_REQUEST_BYTES) or b"null")
        except json.JSONDecodeError as err:
            raise ValueError(f"expected a JSON request body ({err})") from None
        self._json(200, self.server.explorer.compare(request))

    def _clear(self, *_) -> None:
        self._body(MAX_REQUEST_BYTES)
        self.server.explorer.clear_history()
        self._json(200, {"history": []})


# ------------------------------------------------------------------ CLI


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 0) -> ExplorerServer:
    """Bind the explorer's HTTP server (not yet serving); port 0 picks a free port.

    Raises:
        ValueError: If the address cannot be bound (in use, not a local address).
    """
    if not is_loopback(host):
        log.warning(
            "binding to %s: the explorer is reachable from other machines and has no "
            "authentication; anyone who can reach it can upload images and run the scorers",
            host,
        )
    try:
        return ExplorerServer((host, port), explorer)
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None


def _default_images(images: str | None) -> tuple[Path | None, bool]:
    """The images folder, and whether it is the built-in synthetic set."""
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such images folder")
        synthetic = any((p / "SYNTHETIC").exists() for p in (folder, *folder.resolve().parents))
        return folder, synthetic
    if DEFAULT_IMAGES.is_dir():
        return DEFAULT_IMAGES, True
    log.warning(
        "no %s here (python -m bridge.core.data.synth --out data/synthetic writes it) and no "
        "--images: only uploaded images can be compared",
        DEFAULT_IMAGES,
    )
    return None, False


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Load the scorers, then serve the page until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.explore", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--models", default="models", help="folder of exported scorers (default models/)"
    )
    parser.add_argument(
        "--images",
        default=None,
        help=f"folder of images to list (default: {DEFAULT_IMAGES}, the synthetic rated cases)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine)"
    )
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=25.0, help="largest upload in MB (default 25)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"largest image, width x height (default {MAX_PIXELS})",
    )
    parser.add_argument(
        "--uploads",
        default=None,
        help="folder to keep uploads in (default: a temporary folder, removed on exit)",
    )
    parser.add_argument(
        "--policy",
        default="shorter_center_crop",
        help=f"how regions are fitted to a scorer's size: {', '.join(RESIZE_POLICIES)}",
    )
    parser.add_argument("--cpu", action="store_true", help="do not try the CUDA provider")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_pixels < 1:
        raise ValueError("--max-upload-mb and --max-pixels must be positive")

    scorers = load_scorers(find_scorers(args.models), args.policy, prefer_gpu=not args.cpu)
    images, synthetic = _default_images(args.images)
    temporary = args.uploads is None
    uploads = Path(tempfile.mkdtemp(prefix="dermsim-uploads-")) if temporary else args.uploads
    try:
        explorer = Explorer(
            scorers, images, uploads, int(args.max_upload_mb * 1024 * 1024), args.max_pixels,
            synthetic_images=synthetic,
        )  # fmt: skip
        server = make_server(explorer, args.host, args.port)
        log.info(
            "%d scorers from %s; %d images from %s%s",
            len(scorers), args.models, len(explorer.images), images or "(none)",
            " (synthetic)" if synthetic else "",
        )  # fmt: skip
        log.info("uploads go to %s%s", uploads, " (removed on exit)" if temporary else "")
        print(f"dermsim region explorer: {server.url}  (Ctrl+C stops it)", flush=True)
        if threading.current_thread() is threading.main_thread():  # SIGTERM cleans up too
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            log.info("stopped")
        finally:
            server.server_close()
    finally:
        if temporary:
            shutil.rmtree(uploads, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
