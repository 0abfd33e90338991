"""The built-in synthetic data set: dermoscopy-like ISIC images and rated cases.

Everything is drawn with numpy and OpenCV from one seed (no downloads), and written
in the real formats so that the real readers are exercised::

    DIR/SYNTHETIC                                   marker: synthetic data, with the config
    DIR/manifest.json                               generator, version, config, counts
    DIR/isic2019/ISIC_2019_Training_GroundTruth.csv image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK
    DIR/isic2019/ISIC_2019_Training_Metadata.csv    image,age_approx,anatom_site_general,
                                                    lesion_id,sex
    DIR/isic2019/ISIC_2019_Training_Input/SYN_0000001.jpg ...
    DIR/rated/CASE001/0.jpg, 1.jpg, 2.jpg           0: lesion/scar region, 1-2: normal skin
    DIR/rated/ratings.csv                           CASES,R1_color,R1_texture,R2_color,...
    DIR/rated/truth.csv                             case,color_deviation,texture_deviation,
                                                    color_category,texture_category

ISIC part: only MEL, NV and BCC carry images (`per_class` each). Images come in
lesions of `views_per_lesion` views (the same lesion re-rendered with another
rotation, mirror, zoom, offset, skin patch, lighting, blur, noise and JPEG quality),
so splits must be grouped by `lesion_id`; when `per_class` is not a multiple of
`views_per_lesion`, the last lesion of a class has fewer views. Class differences
follow the dermoscopic textbook and overlap on purpose:

* NV: small, near-symmetric, smooth border, one brown tone, regular pigment network
  (or globules, or homogeneous); a share are large and atypical.
* MEL: larger, asymmetric, notched border, several colours (dark brown, black,
  blue-grey, red, white) in irregular blotches, irregular network; a share look
  like nevi.
* BCC: pink-red translucent and pearly, branching red vessels, sometimes blue-grey
  ovoid nests; a share are pigmented or show no vessels.

A few metadata cells (age, site, sex) are empty, as in the real file.

Rated part: each case is a patient (skin tone and texture); `1.jpg` and `2.jpg` are
normal skin of that patient, `0.jpg` a lesion or scar region whose colour deviation
(a CIELAB shift: redness, brownness, darkening or hypopigmentation) and texture
deviation (scar striation and roughness replacing the normal skin lines) are drawn
independently and uniformly in [0, 1]; `truth.csv` holds them. Each rater has a
bias, a noise level and thresholds of their own:
`score = 1 + #{thresholds below 1 + 3 * deviation + bias + noise}` (thresholds near
1.5, 2.5, 3.5, so clip(round(.), 1, 4) for an ideal rater), per aspect. The last
rater leaves a few cells empty.

The files depend only on the config (no timestamps; per-item random streams), so a
config reproduces them byte for byte with the same numpy, OpenCV and Pillow.

Command line::

    python -m bridge.core.data.synth --out DIR [--seed 0] [--per-class 150] [--size 96]
        [--cases 48] [--raters 6] [--views-per-lesion 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from bridge.core.data.ratings import CASES_COLUMN, OVERALL, RATINGS_FILE, SCORED_ASPECTS
from bridge.core.data.readers import (
    ISIC2019_CLASSES,
    ISIC2019_GROUND_TRUTH,
    ISIC2019_IMAGES,
    ISIC2019_METADATA,
    SYNTHETIC_MARKER,
)

log = logging.getLogger(__name__)

GENERATOR = "dermsim.synth"
VERSION = 1
MANIFEST = "manifest.json"
CLASSES = ("MEL", "NV", "BCC")
ISIC_DIR = "isic2019"  # the ISIC 2019 part's folder in the set
RATED_DIR = "rated"
TRUTH_FILE = "truth.csv"  # the true deviations, beside the rated cases
DEFAULT_ROOT = Path("data/synthetic")  # where every command looks for the built-in set

# Independent random streams: (seed, stream, item...) seeds numpy's SeedSequence, so
# an item's pixels do not depend on how many items come before it.
_ORDER, _LESION, _VIEW, _META, _CASE, _RATER, _MISSING = range(1, 8)

# sRGB colours in [0, 1].
_SKIN = np.array([[0.96, 0.80, 0.70], [0.82, 0.62, 0.48], [0.42, 0.28, 0.20]], np.float32)
_LIGHT_BROWN = np.array([0.66, 0.46, 0.32], np.float32)
_DARK_BROWN = np.array([0.36, 0.21, 0.13], np.float32)
_BLACK = np.array([0.10, 0.07, 0.07], np.float32)
_BLUE_GREY = np.array([0.42, 0.47, 0.56], np.float32)
_RED = np.array([0.78, 0.32, 0.33], np.float32)
_WHITE = np.array([0.93, 0.90, 0.88], np.float32)
_PINK = np.array([0.93, 0.62, 0.62], np.float32)
_VESSEL = np.array([0.66, 0.10, 0.14], np.float32)
_HAIR = np.array([0.14, 0.10, 0.08], np.float32)
_MEL_PALETTE = (_DARK_BROWN, _BLACK, _BLUE_GREY, _RED, _WHITE)
_MEL_PALETTE_P = (0.3, 0.2, 0.2, 0.15, 0.15)

_SITES = (
    "anterior torso",
    "posterior torso",
    "lateral torso",
    "upper extremity",
    "lower extremity",
    "head/neck",
    "palms/soles",
    "oral/genital",
)
# Per class: site probabilities, age mean and sd, share of men.
_DEMOGRAPHY = {
    "MEL": ((0.22, 0.25, 0.03, 0.15, 0.2, 0.12, 0.02, 0.01), 60.0, 15.0, 0.56),
    "NV": ((0.3, 0.28, 0.04, 0.14, 0.18, 0.03, 0.02, 0.01), 42.0, 15.0, 0.5),
    "BCC": ((0.15, 0.15, 0.02, 0.1, 0.08, 0.48, 0.01, 0.01), 67.0, 12.0, 0.58),
}
_MISSING_METADATA = 0.02  # share of empty age / site / sex cells


@dataclass(frozen=True)
class SynthConfig:
    """What the synthetic set holds; the same config gives the same files.

    Attributes:
        seed: Seed of every random draw.
        per_class: Images per class (MEL, NV, BCC).
        size: Side of every image and rated patch, in pixels.
        cases: Number of rated cases.
        raters: Number of simulated raters (R1..Rn).
        views_per_lesion: Images per lesion (grouped splits matter).
    """

    seed: int = 0
    per_class: int = 150
    size: int = 96
    cases: int = 48
    raters: int = 6
    views_per_lesion: int = 3

    def __post_init__(self) -> None:
        limits = {
            "seed": (0, 2**63 - 1),
            "per_class": (1, 1_000_000),
            "size": (16, 4096),
            "cases": (1, 999_999),
            "raters": (1, 1000),
            "views_per_lesion": (1, 1000),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"synthetic config: {name} must be an integer, got {value!r}")
            if not low <= value <= high:
                raise ValueError(
                    f"synthetic config: {name} must be in [{low}, {high}], got {value}"
                )

    def as_dict(self) -> dict[str, int]:
        """The config as plain ints (as recorded in the manifest)."""
        return {k: int(v) for k, v in asdict(self).items()}


# ------------------------------------------------------------------ public API


def generate(out: str | os.PathLike, config: SynthConfig = SynthConfig()) -> Path:
    """Write the synthetic set to `out`, replacing an earlier synthetic set there.

    Everything is written into a temporary sibling folder that is renamed onto `out`
    at the end, so an interrupted run leaves no half-written set.

    Args:
        out: Folder to create; may exist only as an empty folder or an earlier
            dermsim synthetic set.
        config: What to generate.

    Returns:
        `out` as a Path.

    Raises:
        ValueError: If `out` is a file, or an existing folder that is neither empty
            nor a dermsim synthetic set (it is never deleted).
    """
    out = Path(out)
    target = Path(os.path.abspath(out))
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        counts = _write_set(tmp, config)
        _check_target(target)
        _replace_folder(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info(
        "wrote synthetic set to %s: %d images (%d lesions), %d rated cases x %d raters",
        out,
        counts["images"],
        counts["lesions"],
        counts["cases"],
        counts["raters"],
    )
    return out


def ensure_synthetic(out: str | os.PathLike, config: SynthConfig = SynthConfig()) -> Path:
    """Return `out`, generating the set first unless it already holds this config.

    Args:
        out: Folder of the synthetic set.
        config: The config wanted; a set made with another config is regenerated.

    Raises:
        ValueError: As `generate`, if `out` is something else than a synthetic set.
    """
    out = Path(out)
    manifest = read_manifest(out)
    if (
        manifest is not None
        and manifest.get("version") == VERSION
        and manifest.get("config") == config.as_dict()
        and (out / SYNTHETIC_MARKER).is_file()
    ):
        log.info("synthetic set %s is up to date", out)
        return out
    return generate(out, config)


def default_root() -> Path:
    """The built-in synthetic set at `DEFAULT_ROOT`, generated on first use.

    A set already there is used as it is (whatever config made it), so commands that
    read it never regenerate what the trainers wrote.
    """
    if read_manifest(DEFAULT_ROOT) is not None:
        return DEFAULT_ROOT
    return ensure_synthetic(DEFAULT_ROOT)


def read_truth(rated: str | os.PathLike, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """The true deviations per aspect of rated cases, where `truth.csv` has every one of `ids`.

    Overall is color + texture (the ratings' overall is color + texture - 1 on their scales).
    Any other folder gives {}.
    """
    path = Path(rated) / TRUTH_FILE
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    if not all(i in rows for i in ids):
        return {}
    truth = {a: np.array([float(rows[i][f"{a}_deviation"]) for i in ids]) for a in SCORED_ASPECTS}
    return {**truth, OVERALL: sum(truth.values())}


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """Return the manifest of a dermsim synthetic set, or None if `folder` is not one."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (
        not isinstance(manifest, dict)
        or manifest.get("synthetic") is not True
        or manifest.get("generator") != GENERATOR
    ):
        return None
    return manifest


# ------------------------------------------------------------- folder handling


def _check_target(target: Path) -> None:
    if target.is_symlink():
        raise ValueError(f"{target}: is a symbolic link; choose another --out")
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target}: exists and is not a folder; choose another --out")
    if target.is_dir() and any(target.iterdir()) and read_manifest(target) is None:
        raise ValueError(
            f"{target}: exists and is not a dermsim synthetic set (no dermsim {MANIFEST}); "
            "choose another --out, it is never deleted"
        )


def _replace_folder(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old)


def _write_set(root: Path, config: SynthConfig) -> dict:
    isic = _write_isic(root / ISIC_DIR, config)
    rated = _write_rated(root / RATED_DIR, config)
    counts = {**isic, **rated}
    manifest = {
        "synthetic": True,
        "generator": GENERATOR,
        "version": VERSION,
        "config": config.as_dict(),
        "counts": counts,
    }
    (root / MANIFEST).write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    settings = " ".join(f"{k}={v}" for k, v in config.as_dict().items())
    (root / SYNTHETIC_MARKER).write_text(
        "SYNTHETIC DATA made by dermsim (bridge.core.data.synth, version "
        f"{VERSION}): no real patient, image or rating.\n"
        f"config: {settings}\n"
        f"regenerate: python -m bridge.core.data.synth --out DIR {_cli_args(config)}\n",
        encoding="utf-8",
    )
    return counts


def _cli_args(config: SynthConfig) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in config.as_dict().items())


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    Image.fromarray(image).save(path, format="JPEG", quality=int(quality))


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


# ---------------------------------------------------------------- ISIC images


def _write_isic(folder: Path, config: SynthConfig) -> dict:
    images = folder / ISIC2019_IMAGES
    images.mkdir(parents=True)
    views = config.views_per_lesion
    lesions_per_class = -(-config.per_class // views)
    # (class index, lesion index, view index) of every image, in image-id order;
    # lesion ids are shuffled too, so neither id reveals the class.
    items = [
        (c, j, k)
        for c in range(len(CLASSES))
        for j in range(lesions_per_class)
        for k in range(min(views, config.per_class - j * views))
    ]
    order = _rng(config.seed, _ORDER)
    items = [items[i] for i in order.permutation(len(items))]
    lesion_keys = [(c, j) for c in range(len(CLASSES)) for j in range(lesions_per_class)]
    lesion_ids = {
        lesion_keys[i]: f"SYNL_{n + 1:07d}"
        for n, i in enumerate(order.permutation(len(lesion_keys)))
    }
    image_ids = {item: f"SYN_{n + 1:07d}" for n, item in enumerate(items)}

    truth_rows, meta_rows = [], []
    for c, j in lesion_keys:
        name = CLASSES[c]
        rng = _rng(config.seed, _LESION, c, j)
        lesion = _Lesion.draw(rng, name, 2 * config.size)
        n_views = min(views, config.per_class - j * views)
        meta = _demography(_rng(config.seed, _META, c, j), name)
        for k in range(n_views):
            image_id = image_ids[(c, j, k)]
            image, quality = lesion.view(_rng(config.seed, _VIEW, c, j, k), config.size)
            _write_jpeg(images / f"{image_id}.jpg", image, quality)
            truth_rows.append(
                [image_id, *("1.0" if col == name else "0.0" for col in ISIC2019_CLASSES)]
            )
            age, site, sex = meta
            meta_rows.append([image_id, age, site, lesion_ids[(c, j)], sex])
    truth_rows.sort()
    meta_rows.sort()
    _write_csv(folder / ISIC2019_GROUND_TRUTH, ["image", *ISIC2019_CLASSES], truth_rows)
    _write_csv(
        folder / ISIC2019_METADATA,
        ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
        meta_rows,
    )
    per_class = {name: config.per_class for name in CLASSES}
    return {"images": len(items), "lesions": len(lesion_keys), "per_class": per_class}


def _demography(rng: np.random.Generator, name: str) -> tuple[str, str, str]:
    sites, age_mean, age_sd, male = _DEMOGRAPHY[name]
    age = float(np.clip(5 * round(rng.normal(age_mean, age_sd) / 5), 5, 85))
    site = _SITES[rng.choice(len(_SITES), p=np.asarray(sites) / sum(sites))]
    sex = "male" if rng.random() < male else "female"
    missing = rng.random(3) < _MISSING_METADATA
    return (
        "" if missing[0] else f"{age:.1f}",
        "" if missing[1] else site,
        "" if missing[2] else sex,
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    return a + (b - a) * t


def _field(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Smooth Gaussian random field (n, n), zero mean, unit sd, correlation ~sigma px."""
    m = int(np.clip(round(n * 3.0 / max(sigma, 1e-3)), 4, n))
    noise = rng.standard_normal((m, m), dtype=np.float32)
    small_sigma = sigma * m / n
    if small_sigma > 0.3:
        noise = cv2.GaussianBlur(noise, (0, 0), small_sigma, borderType=cv2.BORDER_REFLECT)
    if m != n:
        noise = cv2.resize(noise, (n, n), interpolation=cv2.INTER_CUBIC)
    noise -= noise.mean()
    return noise / (noise.std() + 1e-6)


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates x (columns) and y (rows) in [-1, 1] of an n x n image."""
    c = (np.arange(n, dtype=np.float32) + 0.5) * (2.0 / n) - 1.0
    y, x = np.meshgrid(c, c, indexing="ij")
    return x, y


def _skin_tone(t: float) -> np.ndarray:
    """RGB skin tone from light (t = 0) to dark (t = 1)."""
    t = float(np.clip(t, 0.0, 1.0)) * 2
    i = min(int(t), 1)
    return _lerp(_SKIN[i], _SKIN[i + 1], t - i).astype(np.float32)


def _border(
    rng: np.random.Generator, theta: np.ndarray, r0: float, asym: float, irregular: float
) -> np.ndarray:
    """Radius r(theta) of a lesion: mean r0, low harmonics (asymmetry), high (notches)."""
    ks = np.arange(1, 15)
    amps = np.where(
        ks <= 3,
        asym * rng.uniform(0.3, 1.0, ks.size) / np.sqrt(ks),
        irregular * rng.exponential(0.7, ks.size) * 4.0 / ks,
    )
    phases = rng.uniform(0.0, 2 * np.pi, ks.size)
    probe = np.linspace(0.0, 2 * np.pi, 720, endpoint=False)
    dev = (amps[:, None] * np.cos(ks[:, None] * probe + phases[:, None])).sum(0)
    shrink = min(1.0, 0.6 / max(-dev.min(), 1e-6))  # keep r >= 0.4 r0
    top = 1.0 + shrink * dev.max()
    r0 = min(r0, 0.93 / top)  # the whole lesion fits the canonical frame
    r = np.ones_like(theta)
    for k, a, p in zip(ks, amps * shrink, phases, strict=True):
        r += a * np.cos(k * theta + p)
    return (r0 * r).astype(np.float32)


def _network(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    freq: float,
    warp: float,
    irregular: float,
    width: float,
) -> np.ndarray:
    """Pigment network lines in [0, 1]: a warped honeycomb of `freq` cells per unit."""
    n = x.shape[0]
    a = rng.uniform(0.0, np.pi)
    u = x * np.cos(a) + y * np.sin(a) + warp * _field(rng, n, n / 10)
    v = -x * np.sin(a) + y * np.cos(a) + warp * _field(rng, n, n / 10)
    f = 2 * np.pi * freq * (1.0 + irregular * _field(rng, n, n / 6))
    g = np.cos(f * u) + np.cos(f * (0.5 * u + 0.866 * v)) + np.cos(f * (-0.5 * u + 0.866 * v))
    return _sigmoid((width - g) / 0.35)


def _blotch(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, coverage: float, sigma: float
) -> np.ndarray:
    """Soft irregular region covering about `coverage` of the frame, off-centre."""
    n = x.shape[0]
    a = rng.uniform(0.0, 2 * np.pi)
    field = _field(rng, n, sigma) + rng.uniform(0.5, 1.5) * (x * np.cos(a) + y * np.sin(a))
    threshold = np.quantile(field, 1.0 - coverage)
    return _sigmoid((field - threshold) / 0.15)


def _vessels(rng: np.random.Generator, n: int, r0: float, trees: int, thickness: int) -> np.ndarray:
    """Thin branching (arborizing) vessel lines in [0, 1] on an n x n canvas."""
    canvas = np.zeros((n, n), np.uint8)
    half = n / 2

    def branch(p: np.ndarray, angle: float, length: float, thick: int, depth: int) -> None:
        points = [p]
        for _ in range(4):
            angle += rng.normal(0.0, 0.3)
            p = p + length / 4 * np.array([np.cos(angle), np.sin(angle)])
            points.append(p)
        pts = np.round((np.array(points) * half + half) * 16).astype(np.int32)
        cv2.polylines(canvas, [pts], False, 255, thick, cv2.LINE_AA, shift=4)
        if depth > 0:
            for side in (-1, 1):
                turn = side * rng.uniform(0.3, 0.9)
                branch(
                    p, angle + turn, length * rng.uniform(0.5, 0.75), max(1, thick - 1), depth - 1
                )

    for _ in range(trees):
        a, s = rng.uniform(0.0, 2 * np.pi), r0 * np.sqrt(rng.uniform(0.0, 0.5))
        start = np.array([s * np.cos(a), s * np.sin(a)])
        branch(start, rng.uniform(0.0, 2 * np.pi), r0 * rng.uniform(0.3, 0.6), thickness, 2)
    return canvas.astype(np.float32) / 255.0


def _spots(
    rng: np.random.Generator, n: int, centres: np.ndarray, radii: np.ndarray, ellipse: bool
) -> np.ndarray:
    """Filled soft dots (globules) or ovoids (nests) in [0, 1]; centres in [-1, 1]."""
    canvas = np.zeros((n, n), np.uint8)
    half = n / 2
    for (cx, cy), r in zip(centres, radii, strict=True):
        centre = (round((cx * half + half) * 16), round((cy * half + half) * 16))
        axes = round(r * half * 16)
        if ellipse:
            second = round(axes * rng.uniform(0.4, 0.8))
            angle = float(rng.uniform(0.0, 180.0))
            cv2.ellipse(canvas, centre, (axes, second), angle, 0, 360, 255, -1, cv2.LINE_AA, 4)
        else:
            cv2.circle(canvas, centre, axes, 255, -1, cv2.LINE_AA, 4)
    out = canvas.astype(np.float32) / 255.0
    return cv2.GaussianBlur(out, (0, 0), max(0.5, n / 160))


def _points_inside(
    rng: np.random.Generator, count: int, r0: float, spread: float = 0.8
) -> np.ndarray:
    a = rng.uniform(0.0, 2 * np.pi, count)
    s = r0 * spread * np.sqrt(rng.uniform(0.0, 1.0, count))
    return np.stack([s * np.cos(a), s * np.sin(a)], axis=1)


@dataclass(frozen=True)
class _Lesion:
    """One lesion drawn in a canonical frame, re-rendered into any number of views.

    Attributes:
        colour: (n, n, 3) lesion colour, premultiplied by alpha.
        alpha: (n, n) coverage of the skin (translucent lesions stay below 1).
        tone: Skin tone of the patient.
        hair: Chance that a view shows hairs.
        scope: Whether the dermoscope's circular field shows (same device for all views).
    """

    colour: np.ndarray
    alpha: np.ndarray
    tone: np.ndarray
    hair: float
    scope: bool

    @classmethod
    def draw(cls, rng: np.random.Generator, name: str, n: int) -> _Lesion:
        tone = _skin_tone(rng.beta(1.6, 2.6))
        x, y = _grid(n)
        grid = _Polar(x, y, np.hypot(x, y), np.arctan2(y, x))
        render = {"NV": _nevus, "MEL": _melanoma, "BCC": _bcc}[name]
        colour, alpha = render(rng, grid, tone)
        colour = (np.clip(colour, 0.0, 1.0) * alpha[..., None]).astype(np.float32)
        alpha = alpha.astype(np.float32)
        hair = float(rng.choice([0.0, 0.3, 0.8], p=[0.55, 0.25, 0.2]))
        return cls(colour, alpha, tone, hair, bool(rng.random() < 0.35))

    def view(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
        """Render one view; returns a uint8 (size, size, 3) image and its JPEG quality."""
        n = self.alpha.shape[0]
        layer = np.dstack([self.colour, self.alpha])
        if rng.random() < 0.5:
            layer = layer[:, ::-1]
        zoom = rng.uniform(0.85, 1.15) * 2 * size / n
        matrix = cv2.getRotationMatrix2D((n / 2, n / 2), float(rng.uniform(0.0, 360.0)), zoom)
        matrix[:, 2] += size - n / 2 + rng.normal(0.0, 0.07 * 2 * size, 2)
        layer = cv2.warpAffine(
            np.ascontiguousarray(layer),
            matrix,
            (2 * size, 2 * size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        layer = cv2.resize(layer, (size, size), interpolation=cv2.INTER_AREA)
        skin = _skin(rng, size, self.tone)
        image = skin * (1.0 - layer[..., 3:]) + layer[..., :3]
        if rng.random() < self.hair:
            image = _hairs(rng, image, int(rng.integers(1, 6)))
        image = _camera(rng, image, scope=self.scope)
        return image, int(rng.integers(75, 96))


class _Polar(NamedTuple):
    """A lesion's pixel grid: x, y in [-1, 1] and their polar radius and angle."""

    x: np.ndarray
    y: np.ndarray
    rho: np.ndarray
    theta: np.ndarray


def _nevus(
    rng: np.random.Generator, grid: _Polar, tone: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nevus: small, near-symmetric, smooth, one brown tone, regular network or dots."""
    x, y, rho, theta = grid
    atypical = rng.random() < 0.2
    r0 = rng.normal(0.47, 0.08) + (rng.uniform(0.08, 0.2) if atypical else 0.0)
    asym = rng.uniform(0.0, 0.05) + (rng.uniform(0.03, 0.1) if atypical else 0.0)
    r = _border(rng, theta, float(np.clip(r0, 0.28, 0.85)), asym, rng.uniform(0.0, 0.012))
    mask = _sigmoid((r - rho) / rng.uniform(0.012, 0.04))
    rel = np.clip(rho / r, 0.0, 1.5)
    n = x.shape[0]
    base = _lerp(_LIGHT_BROWN, _DARK_BROWN, rng.beta(2.0, 2.0))
    base = _lerp(base, base * tone / _SKIN[0], 0.4)
    shade = 1.0 + rng.uniform(-0.12, 0.15) * (1.0 - np.minimum(rel, 1.0)) ** 2
    shade = shade * (1.0 + 0.04 * _field(rng, n, n / 12))
    colour = base * shade[..., None]
    pattern = rng.choice(3, p=[0.55, 0.25, 0.2])  # reticular, globular, homogeneous
    if pattern == 0:
        lines = _network(rng, x, y, rng.uniform(6.0, 9.0), 0.035, 0.08, rng.uniform(-0.6, 0.0))
        patches = _sigmoid(2.0 * _field(rng, n, n / 8) + 1.0)
        fade = 1.0 - _sigmoid((rel - 0.85) / 0.08) * 0.5
        colour = colour * (1.0 - rng.uniform(0.1, 0.28) * lines * fade * patches)[..., None]
    elif pattern == 1:
        count = int(rng.integers(8, 25))
        dots = _spots(rng, n, _points_inside(rng, count, r0), np.full(count, 0.035), False)
        colour = _lerp(colour, _DARK_BROWN, (rng.uniform(0.4, 0.7) * dots)[..., None])
    if atypical:
        region = _blotch(rng, x, y, rng.uniform(0.05, 0.15), n / 8)
        colour = _lerp(colour, _DARK_BROWN, (0.5 * region)[..., None])
    alpha = mask * rng.uniform(0.75, 0.95) * (1.0 - 0.25 * _sigmoid((rel - 0.8) / 0.1))
    return colour, alpha


def _melanoma(
    rng: np.random.Generator, grid: _Polar, tone: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Melanoma: larger, asymmetric, notched, variegated blotches, irregular network."""
    x, y, rho, theta = grid
    nevus_like = rng.random() < 0.25
    n = x.shape[0]
    if nevus_like:
        r0, asym, irregular = (
            rng.normal(0.52, 0.08),
            rng.uniform(0.02, 0.07),
            rng.uniform(0.0, 0.02),
        )
    else:
        r0, asym, irregular = (
            rng.normal(0.63, 0.1),
            rng.uniform(0.07, 0.2),
            rng.uniform(0.015, 0.06),
        )
    r = _border(rng, theta, float(np.clip(r0, 0.3, 0.88)), asym, irregular)
    mask = _sigmoid((r - rho) / rng.uniform(0.01, 0.06))
    rel = np.clip(rho / r, 0.0, 1.5)
    base = _lerp(_LIGHT_BROWN, _DARK_BROWN, rng.beta(2.0, 1.6))
    base = _lerp(base, base * tone / _SKIN[0], 0.4)
    colour = base * (1.0 + 0.1 * _field(rng, n, n / 10))[..., None]
    count = 1 if nevus_like else int(rng.integers(2, 5))
    picks = rng.choice(len(_MEL_PALETTE), size=count, replace=False, p=_MEL_PALETTE_P)
    for i in picks:
        region = _blotch(rng, x, y, rng.uniform(0.04, 0.14), n / rng.uniform(6.0, 14.0))
        strength = rng.uniform(0.3, 0.5) if nevus_like else rng.uniform(0.5, 0.9)
        colour = _lerp(colour, _MEL_PALETTE[i], (strength * region)[..., None])
    if rng.random() < 0.55:
        lines = _network(rng, x, y, rng.uniform(4.5, 9.0), 0.06, 0.35, rng.uniform(-0.4, 0.4)) * (
            _field(rng, n, n / 10) > rng.uniform(-0.5, 0.5)
        )
        colour = colour * (1.0 - rng.uniform(0.2, 0.45) * lines)[..., None]
    if rng.random() < 0.3:
        count = int(rng.integers(4, 14))
        centres = _points_inside(rng, count, r0, spread=1.0)
        dots = _spots(rng, n, centres, rng.uniform(0.02, 0.06, count), False)
        colour = _lerp(colour, _BLACK, (rng.uniform(0.4, 0.8) * dots)[..., None])
    fade = rng.uniform(0.0, 0.3) * _sigmoid((rel - 0.75) / 0.1)
    alpha = mask * rng.uniform(0.82, 1.0) * (1.0 - fade)
    return colour, alpha


def _bcc(rng: np.random.Generator, grid: _Polar, tone: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BCC: translucent pink and pearly, arborizing vessels, sometimes blue-grey nests."""
    x, y, rho, theta = grid
    n = x.shape[0]
    pigmented = rng.random() < 0.2
    r0 = float(np.clip(rng.normal(0.55, 0.1), 0.3, 0.85))
    r = _border(rng, theta, r0, rng.uniform(0.04, 0.12), rng.uniform(0.01, 0.03))
    mask = _sigmoid((r - rho) / rng.uniform(0.03, 0.08))
    base = _lerp(_PINK, _RED, rng.uniform(0.0, 0.5))
    colour = _lerp(tone, base, rng.uniform(0.5, 0.9)) * np.ones_like(x)[..., None]
    colour = colour * (1.0 + 0.05 * _field(rng, n, n / 8))[..., None]
    sheen = _sigmoid((_field(rng, n, n / 10) - 1.0) / 0.3)
    colour = _lerp(colour, _WHITE, (rng.uniform(0.2, 0.6) * sheen)[..., None])
    alpha = mask * rng.uniform(0.45, 0.8)
    thickness = max(1, round(n / 96))
    if rng.random() < 0.75:
        vessels = _vessels(rng, n, r0, int(rng.integers(2, 6)), thickness) * mask
        colour = _lerp(colour, _VESSEL, (rng.uniform(0.6, 0.95) * vessels)[..., None])
        alpha = np.maximum(alpha, 0.9 * vessels)
    if rng.random() < (0.85 if pigmented else 0.3):
        count = int(rng.integers(1, 6))
        centres = _points_inside(rng, count, r0)
        nests = _spots(rng, n, centres, rng.uniform(0.05, 0.12, count), True) * mask
        colour = _lerp(colour, _BLUE_GREY, (rng.uniform(0.6, 0.9) * nests)[..., None])
        alpha = np.maximum(alpha, 0.9 * nests)
    if pigmented:
        region = _blotch(rng, x, y, rng.uniform(0.05, 0.15), n / 10) * mask
        colour = _lerp(colour, _DARK_BROWN, (0.7 * region)[..., None])
        alpha = np.maximum(alpha, 0.85 * region)
    if rng.random() < 0.15:  # ulceration: a dark red-brown crust
        crust = _spots(rng, n, _points_inside(rng, 1, r0, 0.5), np.array([0.12]), True) * mask
        colour = _lerp(colour, np.array([0.35, 0.12, 0.1], np.float32), (0.85 * crust)[..., None])
        alpha = np.maximum(alpha, 0.9 * crust)
    return colour, alpha


def _skin(
    rng: np.random.Generator, size: int, tone: np.ndarray, texture: float = 1.0
) -> np.ndarray:
    """Skin patch (size, size, 3): tone, fine pores and faint blotchy redness."""
    tex = 1.0 + texture * (
        rng.uniform(0.015, 0.035) * _field(rng, size, rng.uniform(0.6, 1.4))
        + rng.uniform(0.01, 0.04) * _field(rng, size, size / 6)
    )
    skin = tone * tex[..., None]
    red = rng.uniform(0.0, 0.03) * _field(rng, size, size / 5)
    skin[..., 0] += red
    skin[..., 1] -= 0.5 * red
    return skin


def _hairs(rng: np.random.Generator, image: np.ndarray, count: int) -> np.ndarray:
    size = image.shape[0]
    canvas = np.zeros((size, size), np.uint8)
    for _ in range(count):
        p0, p1, p2 = rng.uniform(-0.3, 1.3, (3, 2)) * size
        t = np.linspace(0.0, 1.0, 24)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        pts = np.round(curve * 16).astype(np.int32)
        cv2.polylines(canvas, [pts], False, 255, 1, cv2.LINE_AA, shift=4)
    strength = (canvas.astype(np.float32) / 255.0 * rng.uniform(0.5, 0.9))[..., None]
    return _lerp(image, _HAIR, strength)


def _camera(
    rng: np.random.Generator, image: np.ndarray, scope: bool = False, strength: float = 1.0
) -> np.ndarray:
    """Lighting, white balance, dermoscope field, blur and noise; returns uint8."""
    size = image.shape[0]
    x, y = _grid(size)
    a = rng.uniform(0.0, 2 * np.pi)
    light = 1.0 + strength * (
        rng.uniform(0.0, 0.12) * (x * np.cos(a) + y * np.sin(a))
        - rng.uniform(0.0, 0.1) * (x**2 + y**2)
    )
    gain = rng.uniform(0.88, 1.12) ** strength * rng.uniform(0.95, 1.05, 3) ** strength
    image = image * light[..., None] * gain.astype(np.float32)
    if scope:
        radius = rng.uniform(0.95, 1.3)
        image = image * (1.0 - _sigmoid((np.hypot(x, y) - radius) / 0.03))[..., None]
    sigma = rng.uniform(0.0, 1.0) * strength
    if sigma > 0.25:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image = image + rng.normal(0.0, rng.uniform(0.004, 0.02) * strength, image.shape)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- rated cases


def _write_rated(folder: Path, config: SynthConfig) -> dict:
    folder.mkdir(parents=True)
    names = [f"CASE{i + 1:03d}" for i in range(config.cases)]
    truth = np.zeros((config.cases, len(SCORED_ASPECTS)))
    for i, name in enumerate(names):
        case = folder / name
        case.mkdir()
        patches, truth[i], quality = _case(_rng(config.seed, _CASE, i), config.size)
        for k, patch in enumerate(patches):
            _write_jpeg(case / f"{k}.jpg", patch, quality)
    truth = np.round(truth, 4)
    categories = rating_category(truth)
    _write_csv(
        folder / TRUTH_FILE,
        ["case", *(f"{a}_deviation" for a in SCORED_ASPECTS), "color_category", "texture_category"],
        [
            [name, f"{c:.4f}", f"{t:.4f}", int(cc), int(tc)]
            for name, (c, t), (cc, tc) in zip(names, truth, categories, strict=True)
        ],
    )
    scores = _ratings(config.seed, truth, config.raters)
    header = [CASES_COLUMN] + [
        f"R{j + 1}_{aspect}" for j in range(config.raters) for aspect in SCORED_ASPECTS
    ]
    rows = [
        [name] + ["" if np.isnan(s) else str(int(s)) for s in scores[i].reshape(-1)]
        for i, name in enumerate(names)
    ]
    _write_csv(folder / RATINGS_FILE, header, rows)
    return {
        "cases": config.cases,
        "raters": config.raters,
        "missing_ratings": int(np.isnan(scores).sum()),
    }


def rating_category(deviation: np.ndarray) -> np.ndarray:
    """The 1-4 score of an ideal rater: clip(round(1 + 3 * deviation), 1, 4)."""
    return np.clip(np.floor(1.0 + 3.0 * np.asarray(deviation) + 0.5), 1, 4).astype(int)


def _ratings(seed: int, truth: np.ndarray, raters: int) -> np.ndarray:
    """Scores (cases, raters, aspects) in 1..4, NaN where the last rater left a gap."""
    cases = truth.shape[0]
    scores = np.empty((cases, raters, len(SCORED_ASPECTS)))
    for j in range(raters):
        rng = _rng(seed, _RATER, j)
        bias = rng.normal(0.0, 0.2, len(SCORED_ASPECTS))
        noise = rng.uniform(0.25, 0.55)
        thresholds = np.sort(np.array([1.5, 2.5, 3.5]) + rng.normal(0.0, 0.12, 3))
        latent = 1.0 + 3.0 * truth + bias + rng.normal(0.0, noise, truth.shape)
        scores[:, j] = 1 + (latent[..., None] > thresholds).sum(-1)
    if raters >= 2 and cases >= 2:
        rng = _rng(seed, _MISSING)
        gaps = max(1, round(0.08 * cases))
        cells = rng.choice(cases * len(SCORED_ASPECTS), size=gaps, replace=False)
        scores[cells // len(SCORED_ASPECTS), -1, cells % len(SCORED_ASPECTS)] = np.nan
    return scores


# Lab directions (dL, da, db) of a lesion's colour change; scaled to 25 dE at deviation 1.
_COLOUR_SHIFTS = np.array(
    [
        [-0.25, 0.95, 0.2],  # redness (erythema, fresh scar)
        [-0.6, 0.3, 0.75],  # brownness (hyperpigmentation)
        [-0.9, 0.15, 0.35],  # darkening
        [0.85, -0.35, -0.4],  # hypopigmentation (white scar)
    ]
)


def _case(rng: np.random.Generator, size: int) -> tuple[list[np.ndarray], np.ndarray, int]:
    """A patient's lesion region and two normal-skin regions, and the truth."""
    deviation = rng.uniform(0.0, 1.0, 2)
    tone = _skin_tone(rng.beta(1.8, 2.4))
    direction = _COLOUR_SHIFTS[rng.integers(len(_COLOUR_SHIFTS))]
    direction = direction + rng.normal(0.0, 0.1, 3)
    shift = 25.0 * direction / np.linalg.norm(direction)
    patient = {
        "pores": rng.uniform(0.015, 0.04),
        "pore_sigma": rng.uniform(0.6, 1.2) * size / 96,
        "lines": rng.uniform(0.01, 0.03),
        "period": rng.uniform(0.08, 0.14) * size,
        "angles": rng.uniform(0.0, np.pi) + np.array([0.0, rng.uniform(0.8, 1.6)]),
        "blotch": rng.uniform(0.01, 0.03),
    }
    quality = int(rng.integers(88, 96))
    patches = [_patch(rng, size, tone, patient, shift, deviation * (k == 0)) for k in range(3)]
    return patches, deviation, quality


def _stripes(rng: np.random.Generator, size: int, angle: float, period: float) -> np.ndarray:
    x, y = _grid(size)
    along = (x * np.cos(angle) + y * np.sin(angle)) * size / 2
    return np.cos(2 * np.pi * along / period + 2.0 * _field(rng, size, size / 5))


def _patch(
    rng: np.random.Generator,
    size: int,
    tone: np.ndarray,
    patient: dict,
    shift: np.ndarray,
    deviation: np.ndarray,
) -> np.ndarray:
    """A region of the patient's skin; with deviation > 0, a lesion or scar in it."""
    colour_dev, texture_dev = deviation
    x, y = _grid(size)
    lines = sum(_stripes(rng, size, a, patient["period"]) for a in patient["angles"]) / 2
    normal = (
        patient["pores"] * _field(rng, size, patient["pore_sigma"])
        + patient["lines"] * lines
        + patient["blotch"] * _field(rng, size, size / 4)
    )
    mask = np.zeros_like(x)
    scar = np.zeros_like(x)
    if colour_dev > 0 or texture_dev > 0:
        r = _border(rng, np.arctan2(y, x), rng.uniform(0.8, 1.1), 0.08, 0.02) * 1.2
        mask = _sigmoid((r - np.hypot(x, y)) / 0.08)
        striation = _stripes(rng, size, rng.uniform(0.0, np.pi), rng.uniform(0.04, 0.08) * size)
        striation = striation * (1.0 + 0.4 * _field(rng, size, size / 6))
        rough = _field(rng, size, rng.uniform(0.6, 1.2))
        scar = 0.11 * striation + 0.07 * rough
    texture = 1.0 + normal * (1.0 - 0.6 * texture_dev * mask) + texture_dev * mask * scar
    image = np.clip(tone * texture[..., None], 0.0, 1.0).astype(np.float32)
    if colour_dev > 0:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
        wobble = 1.0 + 0.1 * _field(rng, size, size / 4)
        lab += (colour_dev * mask * wobble)[..., None] * shift.astype(np.float32)
        image = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    return _camera(rng, image, strength=0.4)


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Write the synthetic set (see module docstring)."""
    defaults = SynthConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bridge.core.data.synth",
        description="Write dermsim's synthetic data set: ISIC-style images and rated cases.",
    )
    parser.add_argument("--out", required=True, help="output folder (new, empty or synthetic)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--per-class", type=int, default=defaults.per_class, help="images per class"
    )
    parser.add_argument("--size", type=int, default=defaults.size, help="image side in pixels")
    parser.add_argument("--cases", type=int, default=defaults.cases, help="rated cases")
    parser.add_argument("--raters", type=int, default=defaults.raters, help="simulated raters")
    parser.add_argument(
        "--views-per-lesion", type=int, default=defaults.views_per_lesion, help="images per lesion"
    )
    args = parser.parse_args(argv)
    config = SynthConfig(**{f.name: getattr(args, f.name) for f in fields(SynthConfig)})
    generate(args.out, config)
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
