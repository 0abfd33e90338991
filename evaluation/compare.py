r"""The framework-neutral comparison report, on onnxruntime only.

Which backbone, metric and framework agrees best with dermatologists, with honest
uncertainty (DESIGN.md sections 5 and 6)::

    python -m evaluation.compare                       # the demo: models/demo, synthetic data
    python -m evaluation.compare --models models/mine --rated DIR --ratings ratings.xlsx \\
        --name mine

Everything runs on onnxruntime from the exported models and their manifests (torch and
tensorflow are never imported):

1. classification on the held-out test split, per backbone x training framework, and
   torch vs Keras per backbone (agreement, McNemar, logit correlation);
2. per case, LPIPS / DISTS of every scorer, cosine distances of every tap of every
   feature extractor, and classical baselines; a case's score is the mean over its
   comparison regions (`--rule`);
3. agreement with the raters per aspect (SRCC, KRCC, PLCC after a logistic fit, BCa
   bootstrap CIs over cases), per rater, inter-rater ICC(2,1) and Krippendorff's alpha,
   the leave-one-rater-out ceiling, paired bootstrap differences to the best metric, and
   the layer choice made inside cross-validation, reported on held-out folds;
4. the torch vs Keras table per backbone;
5. `reports/<name>/`: report.html (self-contained), report.md, tables as CSV and JSON.

Rules for imperfect input: `INPUT_RULES` (printed by --help and in the report).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.data import synth
from bridge.core.data.image import decode_image, model_input
from bridge.core.runtime import find_models, model_name, open_model
from evaluation.report import INPUT_RULES, write_report

log = logging.getLogger(__name__)

RULES = ("mean", "median", "max", "min")
DEFAULT_MODELS = Path("models/demo")
DEMO_COMMAND = "tox -e demo"


@dataclass(frozen=True)
class Options:
    """What `python -m evaluation.compare` was asked to do.

    Attributes:
        models: Folder of ONNX models with manifests.
        out: Report folder (`reports/<name>`).
        name: Report name.
        rated: Case folders (`CASE001/0.jpg`, ...), or None.
        ratings: Ratings table of the cases.
        pairs: A region-pair table (instead of rated cases), or None.
        images: Folder relative paths in `pairs` refer to.
        data: Classification data config: a TOML config file, or None to use the
            config recorded in the classifiers' training runs.
        splits: Splits file (default: the training runs' own).
        raters: Raters to use (default: all).
        rule: How a case's comparison regions combine into one score.
        fit: Logistic fit for PLCC (`logistic4`, `logistic5` or `linear`).
        bootstrap: Bootstrap resamples.
        folds: Cross-validation folds for choices made on the ratings.
        seed: Seed of bootstraps, folds and the noise baseline.
        prefer_gpu: Try the CUDA provider.
        strict: Stop at a model that cannot be used instead of leaving it out.
    """

    models: Path = DEFAULT_MODELS
    out: Path = Path("reports/demo")
    name: str = "demo"
    rated: Path | None = None
    ratings: Path | None = None
    pairs: Path | None = None
    images: Path | None = None
    data: Path | None = None
    splits: Path | None = None
    raters: tuple[str, ...] = ()
    rule: str = "mean"
    fit: str = "logistic4"
    bootstrap: int = 2000
    folds: int = 5
    seed: int = 0
    prefer_gpu: bool = True
    strict: bool = False


# ------------------------------------------------------------------ models


@dataclass(frozen=True)
class Entry:
    """One usable exported model.

    Attributes:
        path: Its ONNX file.
        manifest: Its manifest.
        model: The trained model it comes from: `<run>-<arch>-<framework>` or the
            weights' stem (the file name without `-<kind>-<origin>.onnx`).
        framework: The framework that trained it (the export origin when unknown).
        others: Files of the same model and kind from the other origin (unused).
    """

    path: Path
    manifest: dict[str, Any]
    model: str
    framework: str
    others: tuple[Path, ...] = ()

    @property
    def kind(self) -> str:
        """classifier, features, lpips or dists."""
        return self.manifest["kind"]

    @property
    def backbone(self) -> str:
        """The architecture."""
        return self.manifest["backbone"]

    @property
    def label(self) -> str:
        """`vgg16 torch`: backbone and training framework."""
        return f"{self.backbone} {self.framework}"


def discover(folder: Path, strict: bool = False) -> tuple[list[Entry], list[str]]:
    """Usable models in `folder` and the problems found with the others.

    Per trained model and kind, the file exported from the framework that trained it
    is used (the other origin's file gives the same numbers within the export gate).

    Raises:
        FileNotFoundError: If the folder does not exist.
        ValueError: With `strict`, on the first model that cannot be used.
    """
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no such model folder; run `{DEMO_COMMAND}` (or python -m bridge.export "
            "--run runs/<name> --kind all --out models/<name>) first"
        )
    found: dict[tuple[str, str], list[Entry]] = {}
    models, problems = find_models(folder, strict=strict)
    for path, manifest in models:
        model = model_name(path, manifest)
        run = manifest.get("training_run") or {}
        entry = Entry(path, manifest, model, run.get("framework") or manifest["origin"])
        found.setdefault((model, manifest["kind"]), []).append(entry)
    entries = []
    for group in found.values():
        native = [e for e in group if e.manifest["origin"] == e.framework] or group
        chosen = native[0]
        others = tuple(e.path for e in group if e is not chosen)
        entries.append(Entry(chosen.path, chosen.manifest, chosen.model, chosen.framework, others))
    return entries, problems


# ----------------------------------------------------------------- inputs


@dataclass(frozen=True)
class RatedItems:
    """The rated items (cases or region pairs), in one shape for scoring and statistics.

    Attributes:
        ids: Item ids.
        references: Per item, the reference (image path, box or None).
        comparisons: Per item, the comparison regions (image path, box or None).
        ratings: Per aspect, an items x raters table (NaN: not rated).
        raters: Rater names (columns of the tables).
        synthetic: Synthetic data.
        source: Where the items come from, in words.
        truth: Per aspect, the known true deviation (synthetic set only).
    """

    ids: tuple[str, ...]
    references: tuple[tuple[Path, Any], ...]
    comparisons: tuple[tuple[tuple[Path, Any], ...], ...]
    ratings: dict[str, np.ndarray]
    raters: tuple[str, ...]
    synthetic: bool
    source: str
    truth: dict[str, np.ndarray] = field(default_factory=dict)


def load_rated(options: Options) -> RatedItems:
    """Read the rated cases (or region pairs) the options name, or the synthetic set's."""
    from bridge.core.data import ratings as rating_data

    if options.pairs is not None:
        table = rating_data.read_region_pairs(options.pairs, options.images)
        ids = tuple(p.id for p in table.pairs)
        refs = tuple((p.image_a, p.box_a) for p in table.pairs)
        comps = tuple(((p.image_b, p.box_b),) for p in table.pairs)
        tables = _rating_tables(table.ratings, ids, table.raters)
        items = RatedItems(
            ids, refs, comps, tables, table.raters, table.synthetic, f"region pairs {options.pairs}"
        )
    else:
        rated = options.rated or synth.default_root() / "rated"
        ratings = options.ratings or rating_data.default_ratings_path(rated)
        table = rating_data.read_rated_cases(rated, ratings)
        ids = tuple(c.id for c in table.cases)
        refs = tuple((c.reference, None) for c in table.cases)
        comps = tuple(tuple((p, None) for p in c.comparisons) for c in table.cases)
        tables = _rating_tables(table.ratings, ids, table.raters)
        items = RatedItems(
            ids, refs, comps, tables, table.raters, table.synthetic,
            f"rated cases {rated} (ratings {ratings})", _truth(rated, ids),
        )  # fmt: skip
    return _pick_raters(items, options.raters)


def _rating_tables(ratings, ids: Sequence[str], raters: Sequence[str]) -> dict[str, np.ndarray]:
    row = {item: i for i, item in enumerate(ids)}
    col = {rater: j for j, rater in enumerate(raters)}
    tables: dict[str, np.ndarray] = {}
    for r in ratings:
        table = tables.setdefault(r.aspect, np.full((len(ids), len(raters)), np.nan))
        table[row[r.item], col[r.rater]] = r.score
    order = ("color", "texture", "overall")
    return {a: tables[a] for a in sorted(tables, key=lambda a: (*order, a).index(a))}


def _truth(rated: Path, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """The synthetic set's true deviations per aspect (`truth.csv`), if there."""
    path = Path(rated) / "truth.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    if not all(i in rows for i in ids):
        return {}
    color = np.array([float(rows[i]["color_deviation"]) for i in ids])
    texture = np.array([float(rows[i]["texture_deviation"]) for i in ids])
    return {"color": color, "texture": texture, "overall": color + texture}


def _pick_raters(items: RatedItems, wanted: Sequence[str]) -> RatedItems:
    if not wanted:
        return items
    unknown = [r for r in wanted if r not in items.raters]
    if unknown:
        raise ValueError(
            f"unknown rater {unknown[0]!r}; the ratings name {', '.join(items.raters)}"
        )
    cols = [items.raters.index(r) for r in wanted]
    tables = {a: t[:, cols] for a, t in items.ratings.items()}
    return RatedItems(
        items.ids, items.references, items.comparisons, tables, tuple(wanted),
        items.synthetic, items.source, items.truth,
    )  # fmt: skip


# ------------------------------------------------------------ classification


@dataclass(frozen=True)
class SplitData:
    """The classification data the classifiers were trained and tested on.

    Attributes:
        train: Training samples (the run's train and validation splits).
        test: Held-out test samples.
        classes: Class names, in the classifiers' output order.
        where: Description, for the report.
    """

    train: tuple
    test: tuple
    classes: tuple[str, ...]
    where: str


def split_data(entries: Sequence[Entry], options: Options) -> SplitData | None:
    """The data set and splits of the models' training runs (or the options'), if any."""
    from bridge.core.config import config_from_dict, load_config
    from bridge.core.data.sources import load_dataset
    from bridge.core.data.splits import read_splits, select

    runs = [e.manifest["training_run"] for e in entries if e.manifest.get("training_run")]
    run = runs[0] if runs else {}
    if options.data is not None:
        config = load_config(options.data)
    elif run.get("dir") and (Path(run["dir"]) / "run.json").is_file():
        config = config_from_dict(json.loads((Path(run["dir"]) / "run.json").read_text())["config"])
    else:
        return None
    splits = options.splits or (Path(run["splits_file"]) if run.get("splits_file") else None)
    if splits is None or not Path(splits).is_file():
        return None
    dataset = load_dataset(config.data, config.seed)
    split = read_splits(splits, dataset)
    classes = tuple(run.get("classes") or dataset.classes)
    test = tuple(s for s in select(dataset, split, "test") if s.label in classes)
    train = tuple(
        s for name in ("train", "val") for s in select(dataset, split, name) if s.label in classes
    )
    if not test:
        raise ValueError(f"{splits}: the test split is empty")
    where = f"{dataset.name} test split of {splits} ({len(test)} images)"
    return SplitData(train, test, classes, where)


class _Images:
    """Decoded, fitted image batches, made once per (samples, size, policy)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, np.ndarray] = {}

    def get(self, name: str, samples: Sequence, contract: dict, policy: str) -> np.ndarray:
        from tqdm import tqdm

        size = int(contract["native_size"])
        interpolation = contract.get("interpolation", "bilinear")
        key = (name, size, policy, interpolation)
        if key not in self._cache:
            self._cache[key] = np.stack([
                model_input(decode_image(s.path), size, policy, interpolation).transpose(2, 0, 1)
                for s in tqdm(samples, desc=f"{name} images at {size}px", unit="img", leave=False)
            ])  # fmt: skip
        return self._cache[key]


def classification(
    entries: Sequence[Entry], data: SplitData | None, images: _Images, options: Options
) -> dict[str, Any]:
    """Every classifier on the test split; torch vs Keras per backbone."""
    from evaluation import stats

    classifiers = [e for e in entries if e.kind == "classifier"]
    if not classifiers or data is None:
        return {"rows": [], "pairs": [], "classes": [], "test_split": None}
    classes = list(data.classes)
    y = np.array([classes.index(s.label) for s in data.test])
    rows, predictions = [], {}
    for entry in classifiers:
        run = entry.manifest.get("training_run") or {}
        if run.get("classes") and list(run["classes"]) != classes:
            raise ValueError(f"{entry.path.name}: classes {run['classes']} differ from {classes}")
        policy = run.get("resize_policy", "shorter_center_crop")
        batch = images.get("test", data.test, entry.manifest["input_contract"], policy)
        model = open_model(entry.path, prefer_gpu=options.prefer_gpu)
        logits = np.concatenate([
            model.run(image=batch[i : i + 32])["logits"] for i in range(0, len(batch), 32)
        ])  # fmt: skip
        proba = _softmax(logits)
        pred = proba.argmax(1)
        metrics = stats.classification_metrics(
            y, pred, proba, classes, n_resamples=min(options.bootstrap, 1000), seed=options.seed
        )
        predictions[entry.label] = {"logits": logits, "pred": pred}
        rows.append({
            "backbone": entry.backbone, "framework": entry.framework, "model": entry.model,
            "file": entry.path.name, "provider": model.provider, "n": len(y),
            **{k: _interval(v) for k, v in metrics.items()},
            "confusion": _confusion(y, pred, len(classes)).tolist(),
        })  # fmt: skip
    rows.sort(key=lambda r: (r["backbone"], r["framework"] != "torch", r["framework"]))
    pairs = []
    for backbone in sorted({r["backbone"] for r in rows}):
        t, k = predictions.get(f"{backbone} torch"), predictions.get(f"{backbone} keras")
        if t is None or k is None:
            continue
        statistic, p = stats.mcnemar_test(y, t["pred"], k["pred"])
        pairs.append({
            "backbone": backbone,
            "prediction_agreement": stats.prediction_agreement(t["pred"], k["pred"]),
            "mcnemar_statistic": statistic, "mcnemar_p": p,
            "logit_correlation": stats.logit_correlation(t["logits"], k["logits"]),
        })  # fmt: skip
    return {"rows": rows, "pairs": pairs, "classes": classes, "test_split": data.where}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((k, k), int)
    np.add.at(out, (y, pred), 1)
    return out


def _interval(value) -> dict[str, Any]:
    return {
        "estimate": value.estimate, "low": value.low, "high": value.high,
        "level": value.level, "method": value.method,
    }  # fmt: skip


# ---------------------------------------------------------------- scoring


@dataclass
class Scores:
    """Per item scores of every metric, oriented as distances (larger = more different).

    Attributes:
        columns: Metric name -> per item score (mean over comparison regions, or
            `rule`).
        pairs: Metric name -> (items, comparisons) distances before aggregation.
        info: Metric name -> what it is (family, backbone, framework, file, ...).
        notes: Scorers left out, and why.
    """

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    pairs: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, per_pair: np.ndarray, rule: str, **info: Any) -> None:
        """Record a metric's distances (items x comparisons, NaN-padded)."""
        self.pairs[name] = per_pair
        self.columns[name] = _aggregate(per_pair, rule)
        self.info[name] = info


def _heads(entry: Entry) -> dict[str, Any]:
    return entry.manifest.get("heads") or {}


def _fitted_on(entry: Entry) -> set[str]:
    """The items whose ratings a fitted scorer's heads were fitted to (empty: not fitted)."""
    fit = _heads(entry).get("fit") or {}
    folds = (fit.get("folds") or {}).get("held_out") or []
    return {case for fold in folds for case in fold}


def fitted_metrics(folder: Path) -> list[dict[str, Any]]:
    """Held-out results of the metrics fitted to ratings (`*.cv.json` beside the models)."""
    out = []
    for path in sorted(folder.glob("*.cv.json")):
        try:
            fit = json.loads(path.read_text())["fit"]
            results = fit["results"]
            out.append({
                "file": path.name, "metric": fit["metric"], "backbone": fit["backbone"],
                "framework": fit["framework"], "source": fit["source"]["name"],
                "start_heads": fit.get("start_heads"), "cases": fit["data"]["cases"],
                "aspect": fit["data"]["aspect"], "folds": fit["folds"]["k"],
                "epochs": fit["chosen_epochs"], "pooled": results["pooled"],
                "per_fold": results["per_fold"], "mean_fold_srcc": results["mean_fold_srcc"],
            })  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            log.warning("%s: not a fit record (%s); left out", path.name, err)
    return out


def _aggregate(per_pair: np.ndarray, rule: str) -> np.ndarray:
    return {"mean": np.nanmean, "median": np.nanmedian, "max": np.nanmax, "min": np.nanmin}[rule](
        per_pair, axis=1
    )


def score_items(entries: Sequence[Entry], items: RatedItems, options: Options) -> Scores:
    """Every scorer, feature extractor and classical baseline on every rated item."""
    from tqdm import tqdm

    from evaluation.classical import CLASSICAL, classical_many
    from evaluation.features import FeatureExtractor
    from evaluation.score import Scorer

    width = max(len(c) for c in items.comparisons)
    n = len(items.ids)
    scores = Scores()
    models = [e for e in entries if e.kind in ("lpips", "dists", "features")]
    in_sample = [e for e in models if _fitted_on(e) & set(items.ids)]
    for entry in in_sample:
        scores.notes.append(
            f"{entry.path.name}: heads fitted to ratings of these very items; left out of the "
            "agreement tables (its held-out results are under 'Metrics fitted to ratings')"
        )
    models = [e for e in models if e not in in_sample]
    for entry in tqdm(models, desc="models", unit="model"):
        runner = (
            FeatureExtractor(entry.path, prefer_gpu=options.prefer_gpu)
            if entry.kind == "features"
            else Scorer(entry.path, prefer_gpu=options.prefer_gpu)
        )
        per_metric: dict[str, np.ndarray] = {}
        for i in range(n):
            (ref, box), comps = items.references[i], items.comparisons[i]
            if entry.kind == "features":
                result = runner.distances_many(
                    ref, [c[0] for c in comps], box, [c[1] for c in comps]
                )
            else:
                result = {
                    "": runner.score_many(ref, [c[0] for c in comps], box, [c[1] for c in comps])
                }
            for name, values in result.items():
                table = per_metric.setdefault(name, np.full((n, width), np.nan))
                table[i, : len(values)] = values
        for name, table in per_metric.items():
            base = dict(
                backbone=entry.backbone, framework=entry.framework, file=entry.path.name,
                model=entry.model, heads=(entry.manifest.get("heads") or {}).get("source"),
            )  # fmt: skip
            if entry.kind == "features":
                tap, mode = name.split("/")
                scores.add(
                    f"cos-{mode} {entry.label} {tap}", table, options.rule,
                    family="layer", tap=tap, mode=mode, **base,
                )  # fmt: skip
            else:
                fitted = " fitted" if _fitted_on(entry) or _heads(entry).get("fitted") else ""
                scores.add(
                    f"{entry.kind} {entry.label}{fitted}", table, options.rule,
                    family=entry.kind, **base,
                )  # fmt: skip
    classical: dict[str, np.ndarray] = {}
    for i in tqdm(range(n), desc="classical baselines", unit="item", leave=False):
        (ref, box), comps = items.references[i], items.comparisons[i]
        from bridge.core.data.image import crop

        reference = crop(decode_image(ref), box)
        others = [crop(decode_image(p), b) for p, b in comps]
        for name, values in classical_many(reference, others).items():
            table = classical.setdefault(name, np.full((n, width), np.nan))
            table[i, : len(values)] = values
    for name, table in classical.items():
        info = CLASSICAL[name]
        oriented = table if info.lower_better else -table  # every score reads as a distance
        label = name if info.lower_better else f"{name} (negated)"
        scores.add(label, oriented, options.rule, family="classical", description=info.description)
    return scores


# ------------------------------------------------------------- agreement


def agreement(scores: Scores, items: RatedItems, options: Options) -> dict[str, Any]:
    """Agreement of every headline metric with the raters, per aspect."""
    from evaluation import stats

    out: dict[str, Any] = {"aspects": {}}
    rng = np.random.default_rng(options.seed)
    noise = rng.uniform(0, 1, len(items.ids))
    for aspect, table in items.ratings.items():
        rated = np.isfinite(table).any(axis=1)
        target = np.full(len(items.ids), np.nan)
        target[rated] = np.nanmean(table[rated], axis=1)
        columns = _headline_columns(scores)
        if items.truth.get(aspect) is not None:
            columns["true deviation (synthetic oracle)"] = items.truth[aspect]
        columns["noise baseline"] = noise
        rows = []
        for name, values in columns.items():
            result = stats.agreement(
                values[rated], target[rated], n_resamples=options.bootstrap,
                seed=options.seed, fit=options.fit, plcc_resamples=min(options.bootstrap, 500),
            )  # fmt: skip
            per_rater = [_rank_corr(values, table[:, j]) for j in range(table.shape[1])]
            rows.append({
                "metric": name, **_metric_info(scores, name),
                **{k: _interval(v) for k, v in result.items()},
                "per_rater_srcc": per_rater,
            })  # fmt: skip
        rows.sort(key=lambda r: -r["srcc"]["estimate"])
        candidates = [r for r in rows if r["family"] not in ("oracle", "baseline")]
        best = candidates[0]["metric"] if candidates else None
        for row in rows:
            if best is None or row["metric"] == best or row["family"] in ("oracle", "baseline"):
                row["vs_best"] = None
                continue
            diff, p = stats.paired_difference(
                columns[best][rated], columns[row["metric"]][rated], target[rated],
                n_resamples=options.bootstrap, seed=options.seed,
            )  # fmt: skip
            row["vs_best"] = {**_interval(diff), "p": p}
        ceiling = stats.leave_one_rater_out(table) if table.shape[1] >= 2 else None
        raters = {
            "icc_2_1": _safe(stats.icc_2_1, table),
            "krippendorff_alpha_interval": _safe(stats.krippendorff_alpha, table, "interval"),
            "krippendorff_alpha_ordinal": _safe(stats.krippendorff_alpha, table, "ordinal"),
            "ceiling": None
            if ceiling is None
            else {
                **_interval(
                    stats.ceiling_interval(table, n_resamples=options.bootstrap, seed=options.seed)
                ),
                "per_rater": list(ceiling.per_rater),
            },
            "n_items": int(rated.sum()),
            "n_missing_cells": int(np.isnan(table[rated]).sum()),
        }
        out["aspects"][aspect] = {
            "rows": rows, "best": best, "raters": raters, "target": target.tolist(),
            "layers": _layers(scores, target, rated, options),
        }  # fmt: skip
    return out


def _headline_columns(scores: Scores) -> dict[str, np.ndarray]:
    """Scorers and classical baselines (single layers appear through the CV choice)."""
    return {n: v for n, v in scores.columns.items() if scores.info[n]["family"] != "layer"}


def _metric_info(scores: Scores, name: str) -> dict[str, Any]:
    if name in scores.info:
        info = scores.info[name]
        return {k: info.get(k) for k in ("family", "backbone", "framework", "heads")}
    family = "oracle" if name.startswith("true deviation") else "baseline"
    return {"family": family, "backbone": None, "framework": None, "heads": None}


def _rank_corr(x: np.ndarray, y: np.ndarray) -> float | None:
    from evaluation import stats

    ok = np.isfinite(x) & np.isfinite(y)
    return stats.srcc(x[ok], y[ok]) if ok.sum() >= 3 else None


def _safe(function, *args) -> float | None:
    try:
        return float(function(*args))
    except ValueError as err:
        log.info("%s: %s", function.__name__, err)
        return None


def _layers(scores: Scores, target: np.ndarray, rated: np.ndarray, options: Options) -> list:
    """Per feature extractor: every tap x mode's SRCC, and the choice made inside CV.

    The per-layer SRCCs are descriptive (all items); the tap x mode chosen on training
    folds is scored on the held-out folds.
    """
    from evaluation import stats

    groups: dict[str, list[str]] = {}
    for name, info in scores.info.items():
        if info["family"] == "layer":
            groups.setdefault(f"{info['backbone']} {info['framework']}", []).append(name)
    out = []
    for label, names in groups.items():
        curve = [
            {
                "metric": n, "tap": scores.info[n]["tap"], "mode": scores.info[n]["mode"],
                "srcc": stats.srcc(scores.columns[n][rated], target[rated]),
            }
            for n in names
        ]  # fmt: skip
        entry: dict[str, Any] = {"model": label, "curve": curve, "cv": None}
        if rated.sum() >= 2 * options.folds:
            cv = stats.cv_select(
                {n: scores.columns[n][rated] for n in names}, target[rated],
                folds=options.folds, seed=options.seed,
            )  # fmt: skip
            entry["cv"] = {
                "chosen": list(cv.chosen), "held_out": list(cv.held_out), "mean": cv.mean,
                "pooled": cv.pooled, "folds": cv.folds,
            }  # fmt: skip
        out.append(entry)
    return out


# ------------------------------------------------------------ learned baselines


def learned_baselines(
    entries: Sequence[Entry],
    data: SplitData | None,
    images: _Images,
    scores: Scores,
    items: RatedItems,
    agree: dict[str, Any],
    options: Options,
) -> dict[str, Any]:
    """scikit-learn models on exported features and distances, in (nested) cross-validation.

    Classification: four classifiers on the pooled deepest tap (and a ViT's class token)
    of every feature extractor, tuned by inner CV on the training split, scored on the
    test split. Ratings: ridge / SVR from
    per-layer and classical distances to the mean rating, and an ordinal model from one
    distance to the rating category, in nested CV over items; beside the raters' own
    agreement on the same scale.
    """
    from tqdm import tqdm

    from evaluation import baselines, stats
    from evaluation.features import FeatureExtractor

    out: dict[str, Any] = {"classification": [], "rating": {}}
    extractors = [e for e in entries if e.kind == "features"]
    if data is not None and extractors:
        classes = list(data.classes)
        y_train = np.array([classes.index(s.label) for s in data.train])
        y_test = np.array([classes.index(s.label) for s in data.test])
        groups = np.array([s.group or s.id for s in data.train])
        for entry in tqdm(extractors, desc="classification baselines", unit="model"):
            policy = (entry.manifest.get("training_run") or {}).get(
                "resize_policy", "shorter_center_crop"
            )
            contract = entry.manifest["input_contract"]
            fx = FeatureExtractor(entry.path, prefer_gpu=options.prefer_gpu)
            last = [t for t in fx.taps if not t.endswith("_cls")][-1]  # the deepest tap
            taps = [t for t in (last, f"{last}_cls") if t in fx.taps]
            x_train, x_test = (
                baselines.pooled_features(fx, images.get(name, part, contract, policy), taps=taps)
                for name, part in (("train", data.train), ("test", data.test))
            )
            for fitted in baselines.classification_baselines(
                x_train, y_train, x_test, groups, seed=options.seed, n_jobs=-1
            ):
                metrics = stats.classification_metrics(
                    y_test, fitted.predictions, fitted.proba, classes,
                    n_resamples=min(options.bootstrap, 1000), seed=options.seed,
                )  # fmt: skip
                out["classification"].append({
                    "backbone": entry.backbone, "framework": entry.framework,
                    "method": fitted.name, "best_params": fitted.best_params, "taps": taps,
                    "inner_balanced_accuracy": fitted.inner_score,
                    **{k: _interval(v) for k, v in metrics.items()},
                })  # fmt: skip
    features = {
        n: v
        for n, v in scores.columns.items()
        if scores.info[n]["family"] in ("layer", "classical")
    }
    headline = _headline_columns(scores)
    for aspect, a in agree["aspects"].items():
        target = np.asarray(a["target"], float)
        rated = np.isfinite(target)
        x = np.column_stack([v[rated] for v in features.values()])
        regression = baselines.rating_baselines(x, target[rated], seed=options.seed)
        table = items.ratings[aspect][rated]
        present = table[np.isfinite(table)]
        categories = tuple(range(int(np.floor(present.min())), int(np.ceil(present.max())) + 1))
        ordinal = baselines.ordinal_baseline(
            {n: v[rated] for n, v in headline.items()}, table, items.raters, categories,
            seed=options.seed,
        )  # fmt: skip
        out["rating"][aspect] = {
            "features": len(features),
            "categories": list(categories),
            "regression": [
                {"method": r.name, "srcc": r.srcc, "mae": r.mae, "folds": r.folds}
                for r in regression
            ],
            "ordinal": {
                "chosen": list(ordinal.feature), "accuracy": ordinal.accuracy,
                "mae": ordinal.mae, "qwk": ordinal.qwk, "per_rater": ordinal.per_rater,
                "folds": ordinal.folds,
            },
            "raters": baselines.rater_agreement(items.ratings[aspect], items.raters, categories),
        }  # fmt: skip
    return out


# ----------------------------------------------------- framework-neutral table


def frameworks(
    entries: Sequence[Entry], cls: dict[str, Any], scores: Scores, agree: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per backbone: torch and Keras side by side."""
    overall = agree["aspects"].get("overall") or next(iter(agree["aspects"].values()), None)
    srcc = {r["metric"]: r["srcc"] for r in (overall or {"rows": []})["rows"]}
    by_cls = {(r["backbone"], r["framework"]): r for r in cls["rows"]}
    by_pair = {p["backbone"]: p for p in cls["pairs"]}
    seconds = {
        (e.backbone, e.framework): (e.manifest.get("training_run") or {}).get("train_seconds")
        for e in entries
    }
    rows = []
    for backbone in sorted({e.backbone for e in entries}):
        row: dict[str, Any] = {"backbone": backbone}
        for fw in ("torch", "keras"):
            c = by_cls.get((backbone, fw))
            row[fw] = {
                "balanced_accuracy": c["balanced_accuracy"] if c else None,
                "macro_f1": c["macro_f1"] if c else None,
                "train_seconds": seconds.get((backbone, fw)),
                **{f"srcc_{m}": srcc.get(f"{m} {backbone} {fw}") for m in ("lpips", "dists")},
            }
        for metric in ("lpips", "dists"):
            t = scores.pairs.get(f"{metric} {backbone} torch")
            k = scores.pairs.get(f"{metric} {backbone} keras")
            if t is None or k is None:
                row[f"{metric}_between"] = None
                continue
            ok = np.isfinite(t) & np.isfinite(k)
            row[f"{metric}_between"] = {
                "pearson": float(np.corrcoef(t[ok], k[ok])[0, 1]),
                "max_abs_difference": float(np.abs(t[ok] - k[ok]).max()),
            }
        row["classification"] = by_pair.get(backbone)
        rows.append(row)
    return rows


# ------------------------------------------------------------------ driver


def compare(options: Options) -> Path:
    """Run the whole comparison and write the report folder; return report.html's path."""
    started = time.time()
    if options.rule not in RULES:
        raise ValueError(f"unknown --rule {options.rule!r}; expected one of {', '.join(RULES)}")
    entries, problems = discover(options.models, options.strict)
    if not entries:
        raise ValueError(
            f"{options.models}: no usable models (ONNX + manifest); run `{DEMO_COMMAND}` or "
            "python -m bridge.export first"
        )
    items = load_rated(options)
    if not items.ratings:
        raise ValueError(f"{items.source}: no ratings to compare with")
    data = split_data(entries, options)
    if data is None and any(e.kind == "classifier" for e in entries):
        problems.append("classification: no data or splits found (no training run, no --splits)")
    images = _Images()
    cls = classification(entries, data, images, options)
    scores = score_items(entries, items, options)
    agree = agreement(scores, items, options)
    learned = learned_baselines(entries, data, images, scores, items, agree, options)
    results = {
        "name": options.name,
        "synthetic": items.synthetic or any(e.manifest.get("synthetic") for e in entries),
        "rated": {
            "source": items.source,
            "n_items": len(items.ids),
            "raters": list(items.raters),
            "aspects": list(items.ratings),
            "rule": options.rule,
        },
        "classification": cls,
        "agreement": agree,
        "learned": learned,
        "fitted": fitted_metrics(options.models),
        "frameworks": frameworks(entries, cls, scores, agree),
        "problems": problems,
        "notes": scores.notes,
        "provenance": _provenance(entries, options, started),
    }
    return write_report(results, scores, items, options)


def _provenance(entries: Sequence[Entry], options: Options, started: float) -> dict[str, Any]:
    import onnxruntime
    import scipy
    import sklearn

    from bridge.core.runtime import providers

    return {
        "command": "python -m evaluation.compare",
        "options": {k: str(v) for k, v in vars(options).items()},
        "models": [
            {
                "file": e.path.name,
                "kind": e.kind,
                "backbone": e.backbone,
                "framework": e.framework,
                "origin": e.manifest["origin"],
                "sha256": e.manifest.get("onnx_sha256"),
                "source_weights": (e.manifest.get("source_weights") or {}).get("provenance"),
                "heads": (e.manifest.get("heads") or {}).get("source"),
                "synthetic": e.manifest.get("synthetic"),
                "training_run": e.manifest.get("training_run"),
                "parity": e.manifest.get("parity"),
                "not_used": [p.name for p in e.others],
            }
            for e in entries
        ],
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "execution_provider": providers(options.prefer_gpu)[0],
        "seed": options.seed,
        "seconds": round(time.time() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run the comparison, print the report's path."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.compare",
        description=__doc__.split("\n\n")[0],
        epilog="rules for imperfect input: " + " ".join(INPUT_RULES),
    )
    parser.add_argument("--models", default=str(DEFAULT_MODELS), help="ONNX models + manifests")
    parser.add_argument("--name", default=None, help="report name (default: the models folder)")
    parser.add_argument("--out", default=None, help="report folder (default reports/<name>)")
    parser.add_argument("--rated", default=None, help="case folders CASE001/0.jpg, 1.jpg, ...")
    parser.add_argument("--ratings", default=None, help="ratings table (.csv or .xlsx)")
    parser.add_argument("--pairs", default=None, help="region-pair table instead of cases")
    parser.add_argument("--images", default=None, help="folder relative --pairs paths refer to")
    parser.add_argument("--data", default=None, help="TOML config naming the classification data")
    parser.add_argument("--splits", default=None, help="splits file (default: the runs')")
    parser.add_argument("--raters", default="", help="comma-separated raters (default: all)")
    parser.add_argument("--rule", default="mean", help=f"per-case rule: {', '.join(RULES)}")
    parser.add_argument("--fit", default="logistic4", help="PLCC fit: logistic4, logistic5, linear")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--seed", type=int, default=0, help="seed of bootstraps and folds")
    parser.add_argument("--cpu", action="store_true", help="do not try the CUDA provider")
    parser.add_argument("--strict", action="store_true", help="stop at an unusable model")
    args = parser.parse_args(argv)
    if args.bootstrap < 100:
        raise ValueError(f"--bootstrap must be >= 100, got {args.bootstrap}")
    if args.folds < 2:
        raise ValueError(f"--folds must be >= 2, got {args.folds}")
    if args.rated and args.pairs:
        raise ValueError("give either --rated (case folders) or --pairs (region pairs), not both")
    models = Path(args.models)
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", models.resolve().name)
    options = Options(
        models=models, out=Path(args.out) if args.out else Path("reports") / name, name=name,
        rated=Path(args.rated) if args.rated else None,
        ratings=Path(args.ratings) if args.ratings else None,
        pairs=Path(args.pairs) if args.pairs else None,
        images=Path(args.images) if args.images else None,
        data=Path(args.data) if args.data else None,
        splits=Path(args.splits) if args.splits else None,
        raters=tuple(r.strip() for r in args.raters.split(",") if r.strip()),
        rule=args.rule, fit=args.fit, bootstrap=args.bootstrap, folds=args.folds,
        seed=args.seed, prefer_gpu=not args.cpu, strict=args.strict,
    )  # fmt: skip
    report = compare(options)
    print(report)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bridge.core.cli import run

    run(main)
