"""Procedural dermoscopy-like pictures for the synthetic set: lesions, skin, hair, camera.

`Lesion.draw` paints a melanoma, nevus or basal cell carcinoma (the class differences of
`bridge.core.data.synth`'s docstring) and `Lesion.view` renders one view of it;
`PatientSkin.draw` draws a patient's skin (tone and normal texture) and
`case_patches` paints a rated case on it (a lesion or scar region and two normal-skin
regions of that patient) with its true colour and texture deviation. Pure numpy and
OpenCV, driven by the generators the caller passes, so every picture depends only on
its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

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
class Lesion:
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
    def draw(cls, rng: np.random.Generator, name: str, n: int) -> Lesion:
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


# Lab directions (dL, da, db) of a lesion's colour change; scaled to 25 dE at deviation 1.
_COLOUR_SHIFTS = np.array(
    [
        [-0.25, 0.95, 0.2],  # redness (erythema, fresh scar)
        [-0.6, 0.3, 0.75],  # brownness (hyperpigmentation)
        [-0.9, 0.15, 0.35],  # darkening
        [0.85, -0.35, -0.4],  # hypopigmentation (white scar)
    ]
)


@dataclass(frozen=True)
class PatientSkin:
    """One patient's normal skin, shared by all of the patient's rated cases.

    Attributes:
        tone: RGB skin tone in [0, 1].
        pores: Amplitude of the fine pore texture.
        pore_sigma: Its correlation length, in pixels.
        lines: Amplitude of the skin lines (two crossing stripe sets).
        period: Their period, in pixels.
        angles: Their two directions, in radians.
        blotch: Amplitude of the faint blotchiness.
    """

    tone: np.ndarray
    pores: float
    pore_sigma: float
    lines: float
    period: float
    angles: np.ndarray
    blotch: float

    @classmethod
    def draw(cls, rng: np.random.Generator, size: int) -> PatientSkin:
        """A patient's skin for patches of `size` pixels."""
        return cls(
            tone=_skin_tone(rng.beta(1.8, 2.4)),
            pores=float(rng.uniform(0.015, 0.04)),
            pore_sigma=float(rng.uniform(0.6, 1.2) * size / 96),
            lines=float(rng.uniform(0.01, 0.03)),
            period=float(rng.uniform(0.08, 0.14) * size),
            angles=rng.uniform(0.0, np.pi) + np.array([0.0, rng.uniform(0.8, 1.6)]),
            blotch=float(rng.uniform(0.01, 0.03)),
        )


def case_patches(
    rng: np.random.Generator, size: int, skin: PatientSkin
) -> tuple[list[np.ndarray], np.ndarray, int, np.ndarray]:
    """A lesion region and two normal-skin regions of the patient with `skin`, and the truth.

    The deviations, the direction of the colour change and every pixel's noise are the
    case's own (`rng`); the tone and normal texture are the patient's. Also returned:
    the lesion's outline in the first patch, (size, size) weights in [0, 1] (a soft
    edge), where the deviations apply.
    """
    deviation = rng.uniform(0.0, 1.0, 2)
    direction = _COLOUR_SHIFTS[rng.integers(len(_COLOUR_SHIFTS))]
    direction = direction + rng.normal(0.0, 0.1, 3)
    shift = 25.0 * direction / np.linalg.norm(direction)
    quality = int(rng.integers(88, 96))
    drawn = [_patch(rng, size, skin, shift, deviation * (k == 0)) for k in range(3)]
    return [image for image, _ in drawn], deviation, quality, drawn[0][1]


def _stripes(rng: np.random.Generator, size: int, angle: float, period: float) -> np.ndarray:
    x, y = _grid(size)
    along = (x * np.cos(angle) + y * np.sin(angle)) * size / 2
    return np.cos(2 * np.pi * along / period + 2.0 * _field(rng, size, size / 5))


def _patch(
    rng: np.random.Generator,
    size: int,
    skin: PatientSkin,
    shift: np.ndarray,
    deviation: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A region of the patient's skin (with deviation > 0, a lesion or scar in it).

    Returns the image and the lesion's outline (weights in [0, 1]; zero without one).
    """
    colour_dev, texture_dev = deviation
    x, y = _grid(size)
    lines = sum(_stripes(rng, size, a, skin.period) for a in skin.angles) / 2
    normal = (
        skin.pores * _field(rng, size, skin.pore_sigma)
        + skin.lines * lines
        + skin.blotch * _field(rng, size, size / 4)
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
    image = np.clip(skin.tone * texture[..., None], 0.0, 1.0).astype(np.float32)
    if colour_dev > 0:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
        wobble = 1.0 + 0.1 * _field(rng, size, size / 4)
        lab += (colour_dev * mask * wobble)[..., None] * shift.astype(np.float32)
        image = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    return _camera(rng, image, strength=0.4), mask.astype(np.float32)
