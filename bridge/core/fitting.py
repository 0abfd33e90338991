"""The numpy side of fitting LPIPS / DISTS heads to ratings: config, heads, terms, folds.

Both metrics are linear in their heads given per-channel terms, so a fit only ever
needs each rated case's terms (computed once by a framework's own metric module):

* LPIPS: per tap and channel, mean over positions of (f^_a - f^_b)^2 (f^: channel-
  normalised taps); distance = terms @ w, w the taps' heads concatenated.
* DISTS: per stage (stage 0 = the image) and channel, the texture term l and the
  structure term s; distance = 1 - (l @ alpha + s @ beta) / (sum alpha + sum beta).

`term_distances` here is the reference formula; `torch_models.finetune` and
`tf_models.finetune` write the same one in their framework's ops (to differentiate it)
with the same floor on the heads' sum. The protocol built on these pieces (folds,
epoch choice, held-out scoring) is `bridge.fit_protocol`; the command is
`python -m bridge.finetune_metric`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.data.ratings import OVERALL, RatedCase, default_ratings_path, read_rated_cases
from bridge.core.data.splits import kfold
from bridge.core.data.synth import RATED_DIR, default_root
from bridge.core.metrics import METRICS, Heads
from bridge.core.spec import ArchSpec

log = logging.getLogger(__name__)

METRIC_NAMES = METRICS  # the metrics whose heads can be fitted: both
MIN_PER_PART = 3  # cases in every held-out fold, validation part and fitting part
LOSS = "-pearson(case distance, mean rating of the aspect)"
CONSTANT_RTOL = 1e-6  # a term varying less than this (relative) over the cases is constant
HEADS_SUFFIX = ".heads.safetensors"  # fitted heads, with the fit record in the metadata
CV_SUFFIX = ".cv.json"  # the fit record and every case's held-out distances
HEADS_SUM_FLOOR = 1e-12  # DISTS divides by the heads' sum: all-zero heads stay finite

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

    Each case's group (patient or lesion) is `RatedCase.group`: `groups`.
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

    @property
    def groups(self) -> tuple[str, ...]:
        """Each case's group (patient or lesion; its id where the table gives none), in order."""
        return tuple(c.group for c in self.cases)

    @property
    def n_groups(self) -> int:
        """The number of distinct groups."""
        return len(set(self.groups))


# ------------------------------------------------------------------- heads


def fitted_name(source_name: str, metric: str) -> str:
    """The stem of a fit's files: `<source>-fitted-<metric>` (+ `HEADS_SUFFIX`, `CV_SUFFIX`).

    Its exported scorer is `<source>-fitted-<metric>-<framework>.onnx`.
    """
    return f"{source_name}-fitted-{metric}"


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

    LPIPS: terms @ theta. DISTS: 1 - terms @ theta / sum(theta), the sum floored at
    `HEADS_SUM_FLOOR`.
    """
    terms = np.asarray(terms, np.float64)
    theta = np.asarray(theta, np.float64)
    if metric == "lpips":
        return terms @ theta
    return 1.0 - (terms @ theta) / max(theta.sum(), HEADS_SUM_FLOOR)


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


# ------------------------------------------------------------------- data


def load_rated(
    rated: str | os.PathLike | None = None,
    ratings: str | os.PathLike | None = None,
    aspect: str = OVERALL,
) -> RatedData:
    """Rated cases and their mean rating of `aspect` (default: the built-in synthetic set).

    A case's target is the mean over the raters who rated it; cases nobody rated for
    the aspect are left out.

    Raises:
        FileNotFoundError: If the folder or the table does not exist.
        ValueError: On malformed data, or no ratings of the aspect.
    """
    if rated is None:
        rated = default_root() / RATED_DIR
    rated = Path(rated)
    ratings = Path(ratings) if ratings is not None else default_ratings_path(rated)
    table = read_rated_cases(rated, ratings)
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


def check_enough_cases(n: int, config: FitConfig, groups: Sequence[str] | None = None) -> None:
    """Every held-out fold, validation part and fitting part needs 3 cases.

    With `groups` (one per case) the folds and parts are made of whole groups, so their
    sizes depend on the groups': the folds and validation splits the fit will use are
    made and checked (the final fit's included).

    Raises:
        ValueError: If `n` cases (in their groups) cannot give that with `config.folds`
            folds, or there are fewer groups than folds.
    """
    if not _enough(n, config):
        need = next(m for m in range(n + 1, n + 100 * config.folds) if _enough(m, config))
        raise ValueError(
            f"{config.folds}-fold fitting needs at least {need} rated cases ({MIN_PER_PART} "
            f"per held-out fold, validation part and fitting part), got {n}"
        )
    if groups is None:
        return
    parts = [
        (f"fold {k + 1}", test, validation_split(train, config.validation, config.seed, k, groups))
        for k, (train, test) in enumerate(outer_folds(n, config.folds, config.seed, groups))
    ]
    everything = np.arange(n)
    final = validation_split(everything, config.validation, config.seed, config.folds, groups)
    parts.append(("the final fit", None, final))
    for where, test, (fit, validation) in parts:
        sizes = {"held-out": test, "validation": validation, "fitting": fit}
        for part, index in sizes.items():
            if index is not None and len(index) < MIN_PER_PART:
                raise ValueError(
                    f"{config.folds}-fold fitting on {n} cases in {len(set(groups))} groups: "
                    f"{where} has {len(index)} {part} case(s), {MIN_PER_PART} needed (a group "
                    "stays in one part); use fewer folds or more groups"
                )


def _enough(n: int, config: FitConfig) -> bool:
    train = n - -(-n // config.folds)  # the smallest training part
    val = max(MIN_PER_PART, round(config.validation * train))
    return n // config.folds >= MIN_PER_PART and train - val >= MIN_PER_PART


# ------------------------------------------------------------------- folds


def outer_folds(
    n: int, folds: int, seed: int, groups: Sequence[str] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, held-out) case indices per fold, from `bridge.core.data.splits.kfold`.

    With `groups` (one per case: patient or lesion) the folds are grouped: no group is
    in two folds.

    Raises:
        ValueError: If `groups` is not one per case, or holds fewer groups than folds.
    """
    if groups is None:
        splits = kfold(folds, seed).split(np.arange(n))
    else:
        labels = _group_labels(groups, n)
        count = len(np.unique(labels))
        if count < folds:
            raise ValueError(
                f"{folds}-fold fitting needs at least {folds} groups (patients or lesions), "
                f"got {count}; use fewer folds"
            )
        splits = kfold(folds, seed, grouped=True).split(np.arange(n), groups=labels)
    return [(np.sort(a), np.sort(b)) for a, b in splits]


def validation_split(
    train: np.ndarray,
    fraction: float,
    seed: int,
    key: int,
    groups: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into (fitting, validation): a seeded share, at least 3.

    `key` tells the splits apart (the outer fold; `folds` for the final fit). With
    `groups` (one per case, indexed like the cases, not like `train`) the validation part
    is made of whole groups, drawn in a seeded order until it holds the share; it can
    then be a little larger.
    """
    train = np.asarray(train)
    rng = np.random.default_rng([seed, key])
    n_val = max(MIN_PER_PART, round(fraction * len(train)))
    if groups is None:
        shuffled = rng.permutation(train)
        return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])
    labels = _group_labels(groups)[train]
    names, sizes = np.unique(labels, return_counts=True)
    order = rng.permutation(len(names))
    taken = order[: np.searchsorted(np.cumsum(sizes[order]), n_val) + 1]
    held = np.isin(labels, names[taken])
    return np.sort(train[~held]), np.sort(train[held])


def _group_labels(groups: Sequence[str], n: int | None = None) -> np.ndarray:
    """The groups as an array of strings, one per case (`n` of them when given)."""
    labels = np.asarray([str(g) for g in groups])
    if n is not None and labels.shape != (n,):
        raise ValueError(f"expected one group per case ({n}), got {len(labels)}")
    return labels
