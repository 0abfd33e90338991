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
    DIR/rated/CASE001/0.mask.png                    the lesion's outline in 0.jpg (grey weights)
    DIR/rated/ratings.csv                           CASES,GROUP,R1_color,R1_texture,...
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

Rated part: the cases come in patients of `cases_per_patient` consecutive cases
(`GROUP` column of the ratings table: PAT001, ...; the last patient may have fewer);
a patient's cases share the skin tone and normal texture, so cross-validation must be
grouped by patient. `1.jpg` and `2.jpg` are normal skin of the case's patient, `0.jpg`
a lesion or scar region whose colour deviation (a CIELAB shift: redness, brownness,
darkening or hypopigmentation) and texture deviation (scar striation and roughness
replacing the normal skin lines) are the case's own, drawn independently and
uniformly in [0, 1]; `truth.csv` holds them. Each rater has a
bias, a noise level and thresholds of their own:
`score = 1 + #{thresholds below 1 + 3 * deviation + bias + noise}` (thresholds near
1.5, 2.5, 3.5, so clip(round(.), 1, 4) for an ideal rater), per aspect. The last
rater leaves a few cells empty.

The files depend only on the config (no timestamps; per-item random streams), so a
config reproduces them byte for byte with the same numpy, OpenCV and Pillow.

Command line::

    python -m bridge.core.data.synth --out DIR [--seed 0] [--per-class 150] [--size 96]
        [--cases 48] [--raters 6] [--views-per-lesion 3] [--cases-per-patient 3]
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

import numpy as np
from PIL import Image

from bridge.core.config import DataConfig
from bridge.core.data.lesions import Lesion, PatientSkin, case_patches
from bridge.core.data.masks import mask_beside
from bridge.core.data.ratings import (
    CASES_COLUMN,
    GROUP_COLUMN,
    OVERALL,
    RATINGS_FILE,
    SCORED_ASPECTS,
)
from bridge.core.data.readers import (
    ISIC2019_CLASSES,
    ISIC2019_GROUND_TRUTH,
    ISIC2019_IMAGES,
    ISIC2019_METADATA,
    SYNTHETIC_MARKER,
)

log = logging.getLogger(__name__)

GENERATOR = "dermsim.synth"
VERSION = 3  # 2: rated cases grouped by patient (GROUP column, shared skin); 3: lesion masks
MANIFEST = "manifest.json"
CLASSES = ("MEL", "NV", "BCC")
ISIC_DIR = "isic2019"  # the ISIC 2019 part's folder in the set
RATED_DIR = "rated"
TRUTH_FILE = "truth.csv"  # the true deviations, beside the rated cases
# where every command looks for the built-in set: a config's default data path
DEFAULT_ROOT = Path(DataConfig().path)

# Independent random streams: (seed, stream, item...) seeds numpy's SeedSequence, so
# an item's pixels do not depend on how many items come before it.
_ORDER, _LESION, _VIEW, _META, _CASE, _RATER, _MISSING, _PATIENT = range(1, 9)


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
        cases_per_patient: Rated cases per patient (grouped folds matter).
    """

    seed: int = 0
    per_class: int = 150
    size: int = 96
    cases: int = 48
    raters: int = 6
    views_per_lesion: int = 3
    cases_per_patient: int = 3

    def __post_init__(self) -> None:
        limits = {
            "seed": (0, 2**63 - 1),
            "per_class": (1, 1_000_000),
            "size": (16, 4096),
            "cases": (1, 999_999),
            "raters": (1, 1000),
            "views_per_lesion": (1, 1000),
            "cases_per_patient": (1, 1000),
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
        "wrote synthetic set to %s: %d images (%d lesions), %d rated cases (%d patients) "
        "x %d raters",
        out,
        counts["images"],
        counts["lesions"],
        counts["cases"],
        counts["patients"],
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


def current(out: str | os.PathLike) -> Path:
    """The synthetic set at `out`, generated when missing or made by an older `VERSION`.

    A set of this version is used as it is (whatever config made it), so commands that
    read it never regenerate what the trainers wrote. An older set is regenerated with
    the config its manifest records (settings it does not record at their defaults),
    a missing one with the default config.

    Raises:
        ValueError: As `generate`, if `out` is something else than a synthetic set.
    """
    out = Path(out)
    manifest = read_manifest(out)
    if manifest is None:
        return ensure_synthetic(out)
    if manifest.get("version") == VERSION:
        return out
    known = {f.name for f in fields(SynthConfig)}
    recorded = manifest.get("config")
    try:
        config = SynthConfig(**{k: v for k, v in recorded.items() if k in known})
    except (AttributeError, TypeError, ValueError):
        config = SynthConfig()
    log.info(
        "synthetic set %s is version %s, not %d: regenerating it (%s)",
        out,
        manifest.get("version"),
        VERSION,
        _cli_args(config),
    )
    return generate(out, config)


def default_root() -> Path:
    """The built-in synthetic set at `DEFAULT_ROOT`, generated on first use (`current`)."""
    return current(DEFAULT_ROOT)


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
        lesion = Lesion.draw(rng, name, 2 * config.size)
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


# ---------------------------------------------------------------- rated cases


def _write_rated(folder: Path, config: SynthConfig) -> dict:
    folder.mkdir(parents=True)
    names = [f"CASE{i + 1:03d}" for i in range(config.cases)]
    patient_of = [i // config.cases_per_patient for i in range(config.cases)]
    patients = [f"PAT{p + 1:03d}" for p in patient_of]
    skins = {
        p: PatientSkin.draw(_rng(config.seed, _PATIENT, p), config.size)
        for p in dict.fromkeys(patient_of)
    }
    truth = np.zeros((config.cases, len(SCORED_ASPECTS)))
    for i, name in enumerate(names):
        case = folder / name
        case.mkdir()
        patches, truth[i], quality, outline = case_patches(
            _rng(config.seed, _CASE, i), config.size, skins[patient_of[i]]
        )
        for k, patch in enumerate(patches):
            _write_jpeg(case / f"{k}.jpg", patch, quality)
        grey = np.clip(np.rint(outline * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(grey, "L").save(mask_beside(case / "0.jpg"))
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
    header = [CASES_COLUMN, GROUP_COLUMN] + [
        f"R{j + 1}_{aspect}" for j in range(config.raters) for aspect in SCORED_ASPECTS
    ]
    rows = [
        [name, patients[i]] + ["" if np.isnan(s) else str(int(s)) for s in scores[i].reshape(-1)]
        for i, name in enumerate(names)
    ]
    _write_csv(folder / RATINGS_FILE, header, rows)
    return {
        "cases": config.cases,
        "patients": len(skins),
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
    parser.add_argument(
        "--cases-per-patient",
        type=int,
        default=defaults.cases_per_patient,
        help="rated cases per patient",
    )
    args = parser.parse_args(argv)
    config = SynthConfig(**{f.name: getattr(args, f.name) for f in fields(SynthConfig)})
    generate(args.out, config)
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
