r"""Fit LPIPS heads / DISTS alpha, beta to ratings, cross-validated; export the fitted scorer.

    python -m bridge.finetune_metric --run runs/demo/vgg16-torch --metric both --out models/fitted
    python -m bridge.finetune_metric --arch vgg16 --weights W.pth --metric lpips \
        --framework keras --rated cases/ --ratings ratings.xlsx --aspect overall --out models/

The backbone stays frozen; only the heads are fitted, in either framework
(`torch_models.finetune` / `tf_models.finetune`, mirrored). Both metrics are linear in
their heads given per-channel terms, so each rated case's terms are computed once with
that framework's own LPIPS / DISTS module (checked against the module's distance):

* LPIPS: per tap and channel, mean over positions of (f^_a - f^_b)^2 (f^: channel-
  normalised taps); distance = terms @ w, w the taps' heads concatenated.
* DISTS: per stage (stage 0 = the image) and channel, the texture term l and the
  structure term s; distance = 1 - (l @ alpha + s @ beta) / (sum alpha + sum beta).

A case's terms are the mean over its comparison regions, so its distance is the mean
of its regions' distances. The protocol (DESIGN.md section 5: choices made inside
folds, reported on held-out folds):

1. outer K-fold over the rated cases (`KFold(shuffle=True, random_state=seed)`);
2. in each outer fold, a seeded 20% of the training cases is held back for validation;
   the heads are trained on the rest (full-batch Adam on -Pearson(case distance, mean
   rating), clamped at 0 after every step, from the source's default heads) and the
   epoch with the best validation SRCC (checked every `check_every` epochs, epoch 0 =
   the starting heads included) gives that fold's heads; the held-out fold is only
   scored;
3. every case gets a distance from the fold model that never saw it, z-scored within
   its fold; the pooled SRCC of these and of the unfitted scorer's distances (the
   starting heads, z-scored the same way) get BCa bootstrap CIs and a paired bootstrap
   difference (the unfitted scorer's SRCC on raw distances is given too);
4. a final fit on all cases, with the same validation rule for the epoch, gives the
   heads that are written and exported.

Outputs in --out: `<name>-fitted-<metric>.heads.safetensors` (the heads, with the fit
record in its metadata), the ONNX scorer `<name>-fitted-<metric>-<framework>.onnx` and
its manifest (exported by `bridge.export`, same parity gate as every export; the
manifest's `heads` carries the fit record), and `<name>-fitted-<metric>.cv.json` (the
fit record and every case's held-out distances).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.data.readers import RatedCase
from bridge.files import atomic_path, sha256_file
from bridge.metrics import Heads, uniform_heads, write_fitted_heads
from bridge.spec import ArchSpec

if TYPE_CHECKING:
    from bridge.export import Source

log = logging.getLogger(__name__)

METRIC_NAMES = ("lpips", "dists")
FRAMEWORKS = ("torch", "keras")
DEFAULT_DATA = Path("data/synthetic")
FIT_FORMAT = "dermsim-fit/1"
MIN_PER_PART = 3  # cases in every held-out fold, validation part and fitting part
TERM_BOUND = 1e-5  # term-based vs the module's own distance, relative to max(1, |d|)
LOSS = "-pearson(case distance, mean rating of the aspect)"
CONSTANT_RTOL = 1e-6  # a term varying less than this (relative) over the cases is constant

# fit_heads(metric, terms, target, start, config, checkpoints, trainable)
#   -> ({epoch: heads}, losses)
FitFunction = Callable[..., tuple[dict[int, np.ndarray], np.ndarray]]


@dataclass(frozen=True)
class FitConfig:
    """How heads are fitted and validated (the same in both frameworks).

    Attributes:
        epochs: Adam steps; each is one full batch over the fitting cases.
        lr: Adam learning rate, in units of the starting heads' mean (the heads are
            optimised divided by it, so one lr suits LPIPS and DISTS heads alike).
        check_every: Validation SRCC is computed every this many epochs (and at 0,
            the starting heads, and at the last epoch).
        beta1: Adam's first-moment decay.
        beta2: Adam's second-moment decay.
        eps: Adam's epsilon, far below every real gradient (which can be 1e-8 on a
            channel with tiny terms): Keras adds it before the bias correction, torch
            after it (up to 1 / sqrt(1 - beta2) = 32 times larger in Keras), so a
            larger one would make the frameworks' fits differ on such channels.
        folds: Outer cross-validation folds.
        validation: Share of each training part held back to choose the epoch.
        seed: Seed of the folds and the validation splits (training is deterministic).
        bootstrap: Bootstrap resamples of the pooled confidence intervals.
    """

    epochs: int = 400
    lr: float = 1e-2
    check_every: int = 10
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-14
    folds: int = 5
    validation: float = 0.2
    seed: int = 0
    bootstrap: int = 2000

    def __post_init__(self) -> None:
        for name in ("epochs", "check_every", "bootstrap"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if int(self.folds) < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 < self.validation < 1:
            raise ValueError(f"validation must be a share in (0, 1), got {self.validation}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ValueError("expected Adam betas in [0, 1) and a positive eps")

    def checkpoints(self) -> list[int]:
        """Epochs whose heads are validated: 0, every `check_every`, and the last."""
        return sorted({0, *range(self.check_every, self.epochs + 1, self.check_every), self.epochs})

    def record(self) -> dict[str, Any]:
        """The config as the fit record gives it."""
        return {
            **asdict(self),
            "loss": LOSS,
            "optimizer": (
                "Adam, full batch, float64, on the heads divided by their starting mean; "
                "clamped at 0 after every step; heads whose terms are constant over the "
                "fitting cases are not trained"
            ),
        }


@dataclass(frozen=True)
class RatedData:
    """Rated cases of one aspect, ready to fit on.

    Attributes:
        cases: The cases with at least one rating of the aspect, in folder order.
        target: Their mean rating over the raters who rated them.
        raters: Rater names.
        aspect: `color`, `texture` or `overall`.
        synthetic: From the built-in synthetic set.
        rated_dir: The case folders.
        ratings_file: The ratings table.
        folders: Case folders found (rated or not).
    """

    cases: tuple[RatedCase, ...]
    target: np.ndarray
    raters: tuple[str, ...]
    aspect: str
    synthetic: bool
    rated_dir: Path
    ratings_file: Path
    folders: int

    @property
    def ids(self) -> list[str]:
        """Case ids, in order."""
        return [c.id for c in self.cases]


@dataclass(frozen=True)
class EpochChoice:
    """Heads fitted on part of some cases, at the epoch chosen on the rest.

    Attributes:
        heads: Flat heads (T,) of the chosen epoch, float64.
        epoch: The chosen epoch (0: the starting heads).
        fit_cases: Indices of the cases the heads were trained on.
        validation_cases: Indices of the cases that chose the epoch.
        validation_srcc: Validation SRCC per checked epoch.
        validation_pearson: Validation Pearson correlation per checked epoch (breaks
            ties of SRCC).
        fit_pearson: Pearson correlation on the fitting cases per checked epoch
            (recorded, never used to choose).
        frozen: Heads left at their start (terms constant over the fitting cases).
    """

    heads: np.ndarray
    epoch: int
    fit_cases: np.ndarray
    validation_cases: np.ndarray
    validation_srcc: dict[int, float]
    validation_pearson: dict[int, float]
    fit_pearson: dict[int, float]
    frozen: int = 0


@dataclass(frozen=True)
class CrossValidation:
    """Outer-fold results.

    Attributes:
        folds: (training indices, held-out indices) per outer fold.
        choices: The epoch choice made on each fold's training cases.
        fitted: Every case's distance from the fold model that never saw it.
        fitted_z: The same, z-scored within each fold.
        unfitted: Every case's distance with the starting heads.
        unfitted_z: The same, z-scored within each fold (pooled as the fitted ones).
        fold_of: Each case's outer fold (0-based).
    """

    folds: list[tuple[np.ndarray, np.ndarray]]
    choices: list[EpochChoice]
    fitted: np.ndarray
    fitted_z: np.ndarray
    unfitted: np.ndarray
    unfitted_z: np.ndarray
    fold_of: np.ndarray


# ------------------------------------------------------------------- heads


def flatten_heads(heads: Heads) -> np.ndarray:
    """Heads as one float64 vector: LPIPS taps concatenated; DISTS alpha then beta."""
    return np.concatenate([np.asarray(w, np.float64).reshape(-1) for w in heads.weights])


def unflatten_heads(
    metric: str, theta: np.ndarray, spec: ArchSpec, source: str, fit: dict | None = None
) -> Heads:
    """The inverse of `flatten_heads` for a backbone's taps (float32 vectors)."""
    theta = np.asarray(theta, np.float32)
    channels = [t.channels for t in spec.taps]
    if metric == "lpips":
        expected = sum(channels)
        bounds = np.cumsum(channels)[:-1]
    else:
        expected = 2 * (3 + sum(channels))
        bounds = [expected // 2]
    if theta.shape != (expected,):
        raise ValueError(
            f"expected {expected} {metric} head values for {spec.name}, got {theta.size}"
        )
    return Heads(metric, tuple(np.split(theta, bounds)), source, fit)


def term_distances(metric: str, terms: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Distances from case or pair terms (N, T) and flat heads (T,), in float64.

    LPIPS: terms @ theta. DISTS: 1 - terms @ theta / sum(theta).
    """
    terms = np.asarray(terms, np.float64)
    theta = np.asarray(theta, np.float64)
    if metric == "lpips":
        return terms @ theta
    return 1.0 - (terms @ theta) / theta.sum()


def varying_channels(terms: np.ndarray, rtol: float = CONSTANT_RTOL) -> np.ndarray:
    """Which columns of (cases, T) terms vary over the cases (beyond float32 rounding).

    A head whose term is the same for every case (a dead channel: LPIPS term 0, DISTS
    terms 1) cannot change any correlation: its exact gradient is 0, and what is
    computed is rounding noise, which Adam would blow up to full-size, framework-
    dependent steps. Such heads are not trained; they keep their starting value.
    """
    terms = np.asarray(terms, np.float64)
    spread = terms.max(axis=0) - terms.min(axis=0)
    return spread > rtol * np.abs(terms).max(axis=0)


def start_heads(metric: str, spec: ArchSpec, choice: str | None = None) -> Heads:
    """Starting heads: `export.default_heads` (published on vgg16), uniform if not installed.

    Raises:
        ValueError: If the heads are negative or all zero (fitted heads stay >= 0).
    """
    from bridge.export import default_heads

    try:
        heads = default_heads(metric, spec, choice)
    except FileNotFoundError:
        if choice is not None:
            raise
        log.info("published %s heads not installed; starting from uniform heads", metric)
        heads = uniform_heads(metric, spec)
    theta = flatten_heads(heads)
    if np.any(theta < 0) or not np.any(theta > 0):
        raise ValueError(f"starting {metric} heads ({heads.source}) must be >= 0, not all zero")
    return heads


# ------------------------------------------------------------------- data


def load_rated(
    rated: str | os.PathLike | None = None,
    ratings: str | os.PathLike | None = None,
    aspect: str = "overall",
) -> RatedData:
    """Rated cases and their mean rating of `aspect` (default: the built-in synthetic set).

    A case's target is the mean over the raters who rated it; cases nobody rated for
    the aspect are left out.

    Raises:
        FileNotFoundError: If the folder or the table does not exist.
        ValueError: On malformed data, or no ratings of the aspect.
    """
    from bridge.data import readers

    if rated is None:
        rated = _synthetic_root() / "rated"
    rated = Path(rated)
    ratings = Path(ratings) if ratings is not None else rated / "ratings.csv"
    table = readers.read_rated_cases(rated, ratings)
    ids, scores = table.scores(aspect)
    keep = np.isfinite(scores).any(axis=1)
    if not keep.any():
        raise ValueError(f"{ratings}: no case has a rating of aspect {aspect!r}")
    target = np.nanmean(scores[keep], axis=1)
    cases = tuple(c for c, k in zip(table.cases, keep, strict=True) if k)
    if len(cases) < len(ids):
        log.info("%d case(s) without a %s rating left out", len(ids) - len(cases), aspect)
    name = "color" if aspect.strip().lower() == "colour" else aspect.strip().lower()
    return RatedData(
        cases, target, table.raters, name, table.synthetic, rated, ratings, len(table.cases)
    )


def _synthetic_root() -> Path:
    """The built-in synthetic set (generated on first use, as the trainers do)."""
    from bridge.data.synth import ensure_synthetic

    if (DEFAULT_DATA / "manifest.json").is_file():
        return DEFAULT_DATA
    return ensure_synthetic(DEFAULT_DATA)


def check_enough_cases(n: int, config: FitConfig) -> None:
    """Every held-out fold, validation part and fitting part needs 3 cases.

    Raises:
        ValueError: If `n` cases cannot give that with `config.folds` folds.
    """
    if not _enough(n, config):
        need = next(m for m in range(n + 1, n + 100 * config.folds) if _enough(m, config))
        raise ValueError(
            f"{config.folds}-fold fitting needs at least {need} rated cases ({MIN_PER_PART} "
            f"per held-out fold, validation part and fitting part), got {n}"
        )


def _enough(n: int, config: FitConfig) -> bool:
    train = n - -(-n // config.folds)  # the smallest training part
    val = max(MIN_PER_PART, round(config.validation * train))
    return n // config.folds >= MIN_PER_PART and train - val >= MIN_PER_PART


def framework_module(framework: str) -> ModuleType:
    """`torch_models.finetune` or `tf_models.finetune` (imported on demand).

    Raises:
        ValueError: On another name.
    """
    if framework == "torch":
        from torch_models import finetune
    elif framework == "keras":
        from tf_models import finetune
    else:
        raise ValueError(f"unknown framework {framework!r}; expected torch or keras")
    return finetune


def case_terms(
    framework: ModuleType,
    module,
    cases: Sequence[RatedCase],
    size: int,
    policy: str = "shorter_center_crop",
    interpolation: str = "bilinear",
    check: Heads | None = None,
    batch: int = 16,
    progress: bool = True,
) -> np.ndarray:
    """Per-case terms (cases, T): each case's pair terms averaged over its comparisons.

    Images are decoded and fitted (`bridge.data.image.fit`) to `size`. Whole cases go
    through the backbone together, about `batch` images at a time, each image once (a
    reference is shared by its comparisons).

    Args:
        framework: `framework_module(...)`.
        module: Its `build_metric(...)` module.
        cases: The rated cases.
        size: Side the images are fitted to.
        policy: Resize policy.
        interpolation: Resize interpolation.
        check: The module's heads: the first case's term-based distances are checked
            against the module's own (within 1e-5 relative to max(1, |d|)).
        batch: Images per backbone call (a case is never split).
        progress: Show a progress bar.

    Raises:
        RuntimeError: If the check fails (a bug, not a user error).
    """
    from tqdm import tqdm

    from bridge.data.image import decode_image, model_input

    def load(path: Path) -> np.ndarray:
        return model_input(decode_image(path), size, policy, interpolation).transpose(2, 0, 1)

    chunks: list[list[RatedCase]] = [[]]
    for case in cases:
        if (
            chunks[-1]
            and sum(1 + len(c.comparisons) for c in chunks[-1]) + 1 + len(case.comparisons) > batch
        ):
            chunks.append([])
        chunks[-1].append(case)
    rows = []
    with tqdm(
        total=len(cases), desc="case terms", unit="case", leave=False, disable=not progress
    ) as bar:
        for chunk in chunks:
            refs = np.stack([load(c.reference) for c in chunk])
            comps = np.stack([load(p) for c in chunk for p in c.comparisons])
            index = np.repeat(np.arange(len(chunk)), [len(c.comparisons) for c in chunk])
            terms = framework.pair_terms(module, refs, comps, index)
            if not rows and check is not None:
                _check_terms(
                    framework, module, check, refs[:1], comps[index == 0], terms[index == 0]
                )
            rows.extend(terms[index == k].mean(axis=0) for k in range(len(chunk)))
            bar.update(len(chunk))
    return np.stack(rows)


def _check_terms(
    framework: ModuleType, module, heads: Heads, ref: np.ndarray, comps: np.ndarray, terms
) -> None:
    """Term-based distances of one case's pairs equal the module's own distances."""
    expected = framework.pair_distances(module, ref, comps).astype(np.float64)
    got = term_distances(heads.metric, terms, flatten_heads(heads))
    error = float(np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected))))
    if not error <= TERM_BOUND:
        raise RuntimeError(
            f"{heads.metric} term-based distances differ from the module's by {error:.2e} "
            f"(bound {TERM_BOUND:.0e})"
        )


# --------------------------------------------------------------- protocol


def outer_folds(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, held-out) case indices per fold: `KFold(shuffle=True, random_state=seed)`."""
    from sklearn.model_selection import KFold

    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.arange(n))]


def validation_split(
    train: np.ndarray, fraction: float, seed: int, key: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into (fitting, validation): a seeded share, at least 3.

    `key` tells the splits apart (the outer fold; `folds` for the final fit).
    """
    train = np.asarray(train)
    shuffled = np.random.default_rng([seed, key]).permutation(train)
    n_val = max(MIN_PER_PART, round(fraction * len(train)))
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def choose_epoch(
    fit_heads: FitFunction,
    metric: str,
    terms: np.ndarray,
    target: np.ndarray,
    train: np.ndarray,
    start: np.ndarray,
    config: FitConfig,
    key: int,
) -> EpochChoice:
    """Fit on part of `train`, pick the epoch with the best SRCC on the rest.

    The heads are optimised divided by the starting heads' mean (`FitConfig.lr` is in
    those units) and scaled back. On a few validation cases SRCC takes few values and
    ties are common: they go to the higher validation Pearson correlation, then to the
    earliest epoch. An undefined correlation never wins.
    """
    fit_idx, val_idx = validation_split(train, config.validation, config.seed, key)
    scale = float(np.mean(start))
    trainable = varying_channels(terms[fit_idx])
    snapshots, _ = fit_heads(
        metric, terms[fit_idx], target[fit_idx], start / scale, config, config.checkpoints(),
        trainable,
    )  # fmt: skip
    from evaluation import stats

    val_srcc, val_pearson, fit_pearson = {}, {}, {}
    for epoch in sorted(snapshots):
        theta = snapshots[epoch] * scale
        d = term_distances(metric, terms[val_idx], theta)
        val_srcc[epoch] = _quiet(stats.srcc, d, target[val_idx])
        val_pearson[epoch] = _quiet(stats.pearson, d, target[val_idx])
        fit_pearson[epoch] = _quiet(
            stats.pearson, term_distances(metric, terms[fit_idx], theta), target[fit_idx]
        )
    best = max(val_srcc, key=lambda e: (_finite(val_srcc[e]), _finite(val_pearson[e]), -e))
    return EpochChoice(
        snapshots[best] * scale, best, fit_idx, val_idx, val_srcc, val_pearson, fit_pearson,
        int((~trainable).sum()),
    )  # fmt: skip


def cross_validate(
    fit_heads: FitFunction,
    metric: str,
    terms: np.ndarray,
    target: np.ndarray,
    start: np.ndarray,
    config: FitConfig,
    progress: bool = True,
) -> CrossValidation:
    """Outer K-fold: choose and fit on each training part, score its held-out fold only."""
    from tqdm import tqdm

    check_enough_cases(len(target), config)
    folds = outer_folds(len(target), config.folds, config.seed)
    n = len(target)
    fitted, fitted_z = np.empty(n), np.empty(n)
    fold_of = np.empty(n, int)
    choices = []
    for k, (train, test) in enumerate(
        tqdm(folds, desc=f"{metric} folds", unit="fold", disable=not progress)
    ):
        choice = choose_epoch(fit_heads, metric, terms, target, train, start, config, key=k)
        choices.append(choice)
        fitted[test] = term_distances(metric, terms[test], choice.heads)
        fold_of[test] = k
    unfitted = term_distances(metric, terms, start)
    fitted_z, unfitted_z = _zscore(fitted, folds), _zscore(unfitted, folds)
    return CrossValidation(folds, choices, fitted, fitted_z, unfitted, unfitted_z, fold_of)


def _zscore(values: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Values z-scored within each held-out fold (0 where a fold's values are all equal)."""
    out = np.zeros_like(values)
    for _, test in folds:
        v = values[test]
        sd = v.std()
        out[test] = (v - v.mean()) / sd if sd > 0 else 0.0
    return out


def summarise(cv: CrossValidation, target: np.ndarray, config: FitConfig) -> dict[str, Any]:
    """Held-out SRCC per fold and pooled (BCa CIs), fitted vs unfitted, and their difference.

    Pooled, both scorers get the same treatment (distances z-scored within each fold,
    which removes the fold models' scale and, on a few cases per fold, also some real
    between-fold differences); the paired difference compares those. The unfitted
    scorer's SRCC on its raw distances (one fixed scorer) is given beside them.
    """
    from evaluation import stats

    per_fold = []
    for k, (choice, (_, test)) in enumerate(zip(cv.choices, cv.folds, strict=True)):
        per_fold.append({
            "fold": k + 1,
            "cases": len(test),
            "epoch": choice.epoch,
            "srcc_fitted": _num(_quiet(stats.srcc, cv.fitted[test], target[test])),
            "srcc_unfitted": _num(_quiet(stats.srcc, cv.unfitted[test], target[test])),
        })  # fmt: skip
    options = {"n_resamples": config.bootstrap, "seed": config.seed}
    fitted = stats.bootstrap_ci(stats.srcc, cv.fitted_z, target, **options)
    unfitted = stats.bootstrap_ci(stats.srcc, cv.unfitted_z, target, **options)
    raw = stats.bootstrap_ci(stats.srcc, cv.unfitted, target, **options)
    difference, p = stats.paired_difference(cv.fitted_z, cv.unfitted_z, target, "srcc", **options)
    weights = np.array([f["cases"] for f in per_fold], float)

    def mean(key: str) -> float | None:
        values = np.array([np.nan if f[key] is None else f[key] for f in per_fold])
        ok = np.isfinite(values)
        return _num(np.sum(values[ok] * weights[ok]) / weights[ok].sum()) if ok.any() else None

    return {
        "per_fold": per_fold,
        "mean_fold_srcc": {"fitted": mean("srcc_fitted"), "unfitted": mean("srcc_unfitted")},
        "pooled": {
            "fitted": _interval(fitted),
            "unfitted": _interval(unfitted),
            "difference": {**_interval(difference), "p": _num(p)},
            "unfitted_raw": _interval(raw),
            "cases": len(target),
            "how": (
                "fitted: each case's distance from the fold model that never saw it; "
                "unfitted: the starting heads' distance; both z-scored within each outer "
                "fold, then SRCC against the mean rating over all cases, BCa bootstrap "
                "over cases, paired bootstrap difference fitted - unfitted; unfitted_raw: "
                "the unfitted scorer's SRCC on its raw distances"
            ),
        },
    }


# ------------------------------------------------------------------ fitting


@dataclass(frozen=True)
class FitResult:
    """What `fit_metric` wrote and found.

    Attributes:
        heads_file: The fitted heads (`.heads.safetensors`).
        onnx: The exported fitted scorer.
        cv_file: The fit record and the per-case held-out distances (`.cv.json`).
        record: The fit record.
    """

    heads_file: Path
    onnx: Path
    cv_file: Path
    record: dict[str, Any]


def fit_metric(
    source: Source,
    metric: str,
    framework: str,
    data: RatedData,
    out_dir: str | os.PathLike,
    config: FitConfig = FitConfig(),
    size: int | None = None,
    start: str | None = None,
    progress: bool = True,
) -> FitResult:
    """Cross-validate, fit and export one metric's heads on a source's frozen backbone.

    Args:
        source: A `bridge.export.Source` (a training run or a weights file).
        metric: `lpips` or `dists`.
        framework: `torch` or `keras`: fits, and is the export's origin.
        data: `load_rated(...)`.
        out_dir: Output folder.
        config: Fitting and validation settings.
        size: Image side (default: the source's native size).
        start: Starting heads (`published`, `uniform` or a heads file; default: the
            source's default heads, uniform where the published ones are missing).
        progress: Show progress bars.

    Raises:
        ValueError: Unknown metric or framework, a size the backbone cannot take, too
            few cases for the folds, or an export beyond the parity bound.
    """
    from bridge.export import export

    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; expected lpips, dists or both")
    fw = framework_module(framework)
    check_enough_cases(len(data.cases), config)
    spec = source.spec
    size = int(size if size is not None else source.contract.native_size)
    if size < 1:
        raise ValueError(f"--size must be positive, got {size}")
    if spec.contract.fixed_size and size != source.contract.native_size:
        raise ValueError(
            f"{spec.name} takes {source.contract.native_size} px images only, not --size {size}"
        )
    policy = (source.run or {}).get("resize_policy") or "shorter_center_crop"
    interpolation = source.contract.interpolation
    heads0 = start_heads(metric, spec, start)
    theta0 = flatten_heads(heads0)

    module = fw.build_metric(metric, spec, source.num_classes, source.state_dict(), heads0)
    log.info("%s: case terms of %d cases at %d px (%s)", metric, len(data.cases), size, framework)
    terms = case_terms(
        fw, module, data.cases, size, policy, interpolation, check=heads0, progress=progress
    )
    cv = cross_validate(fw.fit_heads, metric, terms, data.target, theta0, config, progress)
    results = summarise(cv, data.target, config)
    final = choose_epoch(
        fw.fit_heads, metric, terms, data.target, np.arange(len(data.cases)), theta0, config,
        key=config.folds,
    )  # fmt: skip

    ids = data.ids
    record = {
        "format": FIT_FORMAT,
        "metric": metric,
        "backbone": spec.name,
        "taps": [t.name for t in spec.taps],
        "framework": framework,
        "framework_version": _version("torch" if framework == "torch" else "keras"),
        "source": {
            "name": source.name,
            "weights": str(source.weights),
            "sha256": sha256_file(source.weights),
            "provenance": source.provenance,
            "training_run": (source.run or {}).get("dir"),
        },
        "start_heads": heads0.source,
        "data": {
            "rated": str(data.rated_dir),
            "ratings": str(data.ratings_file),
            "cases": len(data.cases),
            "case_folders": data.folders,
            "raters": list(data.raters),
            "aspect": data.aspect,
            "target": "mean rating over the raters who rated the case",
            "synthetic": data.synthetic,
            "image_size": size,
            "resize_policy": policy,
            "interpolation": interpolation,
            "case_distance": "mean over the case's comparison regions",
        },
        "folds": {
            "k": config.folds,
            "split": f"KFold(n_splits={config.folds}, shuffle=True, random_state={config.seed})",
            "held_out": [[ids[i] for i in test] for _, test in cv.folds],
        },
        "validation": {
            "rule": (
                f"a seeded {config.validation:.0%} (at least {MIN_PER_PART}) of each "
                "training part chooses the epoch with the best validation SRCC (checked "
                f"every {config.check_every} epochs and at 0 = the starting heads; ties go "
                "to the higher validation Pearson, then the earliest); the heads of that "
                "epoch, trained on the rest, are kept"
            ),
            "checked_epochs": config.checkpoints(),
            "per_fold": [_choice_record(c, ids) for c in cv.choices],
            "final": _choice_record(final, ids),
        },
        "chosen_epochs": {"folds": [c.epoch for c in cv.choices], "final": final.epoch},
        "config": config.record(),
        "results": results,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    }

    out_dir = Path(out_dir)
    stem = f"{source.name}-fitted-{metric}"
    fitted = unflatten_heads(metric, final.heads, spec, stem, record)
    heads_file = write_fitted_heads(out_dir / f"{stem}.heads.safetensors", fitted, record)
    per_case = [
        {
            "case": ids[i],
            "fold": int(cv.fold_of[i]) + 1,
            "rating": float(data.target[i]),
            "fitted_distance": float(cv.fitted[i]),
            "fitted_z": float(cv.fitted_z[i]),
            "unfitted_distance": float(cv.unfitted[i]),
            "unfitted_z": float(cv.unfitted_z[i]),
        }
        for i in range(len(ids))
    ]
    cv_file = out_dir / f"{stem}.cv.json"
    with atomic_path(cv_file) as tmp:
        tmp.write_text(json.dumps({"fit": record, "cases": per_case}, indent=2) + "\n")
    onnx = export(
        dataclasses.replace(source, name=f"{source.name}-fitted"), metric, framework, out_dir,
        heads=str(heads_file),
    )  # fmt: skip
    return FitResult(heads_file, onnx, cv_file, record)


def _choice_record(choice: EpochChoice, ids: Sequence[str]) -> dict[str, Any]:
    return {
        "fit_cases": [ids[i] for i in choice.fit_cases],
        "validation_cases": [ids[i] for i in choice.validation_cases],
        "checked": [
            {
                "epoch": e,
                "validation_srcc": _num(choice.validation_srcc[e]),
                "validation_pearson": _num(choice.validation_pearson[e]),
                "fit_pearson": _num(choice.fit_pearson[e]),
            }
            for e in sorted(choice.validation_srcc)
        ],
        "chosen_epoch": choice.epoch,
        "frozen_heads": choice.frozen,
    }


def _quiet(f: Callable[..., float], *args) -> float:
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f(*args))


def _finite(x: float) -> float:
    return x if np.isfinite(x) else -np.inf


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _interval(interval) -> dict[str, Any]:
    return {
        "srcc": _num(interval.estimate),
        "low": _num(interval.low),
        "high": _num(interval.high),
        "level": interval.level,
        "method": interval.method,
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------- CLI


def format_table(record: dict[str, Any]) -> str:
    """The held-out SRCC table of a fit record, fitted vs unfitted, per fold and pooled."""
    data, results = record["data"], record["results"]
    pooled = results["pooled"]

    def ci(x: dict) -> str:
        if x["srcc"] is None:
            return "n/a"
        bounds = "" if x["low"] is None else f" [{x['low']:.3f}, {x['high']:.3f}]"
        return f"{x['srcc']:+.3f}{bounds}"

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.3f}"

    lines = [
        f"{record['metric']} on {record['source']['name']} (fitted in {record['framework']}), "
        f"aspect {data['aspect']}, {data['cases']} rated cases"
        f"{' (synthetic)' if data['synthetic'] else ''}, {record['folds']['k']} folds",
        f"{'fold':>5} {'cases':>6} {'epoch':>6} {'SRCC fitted':>12} {'SRCC unfitted':>14}",
    ]
    for f in results["per_fold"]:
        lines.append(
            f"{f['fold']:>5} {f['cases']:>6} {f['epoch']:>6} {num(f['srcc_fitted']):>12} "
            f"{num(f['srcc_unfitted']):>14}"
        )
    diff = pooled["difference"]
    p = "" if diff["p"] is None else f", p {diff['p']:.3f}"
    means = results["mean_fold_srcc"]
    lines += [
        f"{'mean':>5} {data['cases']:>6} {'':>6} {num(means['fitted']):>12} "
        f"{num(means['unfitted']):>14}",
        f"pooled held-out SRCC, z-scored per fold (95% BCa): fitted {ci(pooled['fitted'])}, "
        f"unfitted {ci(pooled['unfitted'])}",
        f"difference fitted - unfitted (paired): {ci(diff)}{p}",
        f"unfitted scorer on raw distances: {ci(pooled['unfitted_raw'])}",
        f"final fit: epoch {record['chosen_epochs']['final']} (chosen on validation cases)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Fit, cross-validate and export LPIPS / DISTS heads of one source."""
    from bridge.export import source_from_run, source_from_weights

    parser = argparse.ArgumentParser(
        prog="python -m bridge.finetune_metric", description=__doc__.split("\n\n")[0]
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="training run folder (runs/<name>/<arch>-<framework>)")
    src.add_argument("--arch", help="vgg16, resnet50, vit_b16 or a *_tiny variant (with --weights)")
    parser.add_argument(
        "--weights", help="torch .safetensors/.pth or Keras .weights.h5 (with --arch)"
    )
    parser.add_argument("--metric", default="both", help="lpips, dists or both (default both)")
    parser.add_argument(
        "--framework",
        default=None,
        help="torch or keras (default: the run's framework, else torch)",
    )
    parser.add_argument("--rated", default=None, help="case folders (default: the synthetic set's)")
    parser.add_argument(
        "--ratings", default=None, help="ratings table (default: <rated>/ratings.csv)"
    )
    parser.add_argument("--aspect", default="overall", help="color, texture or overall (default)")
    parser.add_argument(
        "--folds", type=int, default=FitConfig.folds, help="outer folds (default 5)"
    )
    parser.add_argument(
        "--epochs", type=int, default=FitConfig.epochs, help="Adam steps (default 400)"
    )
    parser.add_argument("--lr", type=float, default=FitConfig.lr, help="Adam lr (default 0.01)")
    parser.add_argument(
        "--check-every",
        type=int,
        default=FitConfig.check_every,
        help="validation interval in epochs (default 10)",
    )
    parser.add_argument("--seed", type=int, default=FitConfig.seed, help="seed of folds and splits")
    parser.add_argument(
        "--bootstrap", type=int, default=FitConfig.bootstrap, help="bootstrap resamples"
    )
    parser.add_argument(
        "--size", type=int, default=None, help="image side (default: the source's native size)"
    )
    parser.add_argument(
        "--start", default=None, help="starting heads: published, uniform or a heads file"
    )
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)

    metrics = list(METRIC_NAMES) if args.metric == "both" else [args.metric]
    if any(m not in METRIC_NAMES for m in metrics):
        raise ValueError(f"unknown metric {args.metric!r}; expected lpips, dists or both")
    if args.arch and not args.weights:
        raise ValueError(
            "--arch needs --weights (a weights file); or fit on a training run with --run"
        )
    if args.run and args.weights:
        raise ValueError("--weights goes with --arch; a --run brings its own weights")
    config = FitConfig(
        epochs=args.epochs, lr=args.lr, check_every=args.check_every, folds=args.folds,
        seed=args.seed, bootstrap=args.bootstrap,
    )  # fmt: skip
    source = source_from_run(args.run) if args.run else source_from_weights(args.arch, args.weights)
    framework = args.framework or (source.run or {}).get("framework") or "torch"
    framework_module(framework)  # an unknown name fails before any work
    data = load_rated(args.rated, args.ratings, args.aspect)
    check_enough_cases(len(data.cases), config)
    for metric in metrics:
        result = fit_metric(
            source, metric, framework, data, args.out, config, size=args.size, start=args.start
        )
        print(format_table(result.record))
        for path in (
            result.heads_file,
            result.onnx,
            result.onnx.with_suffix(".json"),
            result.cv_file,
        ):
            print(path)
        print()
    return 0


if __name__ == "__main__":
    from bridge.cli import run

    run(main)
