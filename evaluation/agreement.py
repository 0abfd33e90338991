"""Agreement of every metric with the raters, per aspect (docs/statistics.md).

Per aspect: SRCC and KRCC of every headline metric with the mean rating (BCa bootstrap
intervals), PLCC and RMSE cross-fitted, beside the synthetic oracle and a band of pure-noise
scores; the SRCC with each rater; the metric chosen on the data (and the choice made inside
cross-validation) against every other, with raw and familywise-adjusted p; the raters' own
agreement (ICC(2,1), Krippendorff's alpha), the leave-one-rater-out ceiling, its upper bound
and each metric scored like one more rater against it; and per feature extractor the layer
curve and the tap x mode chosen inside cross-validation. Every resample and every fold takes
whole groups (patients, lesions) of items.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from evaluation.formatting import interval_record
from evaluation.item_scores import LAYER_FAMILIES, Scores
from evaluation.items import RatedItems
from evaluation.options import Options

log = logging.getLogger(__name__)

ORACLE = "true deviation (synthetic oracle)"
NOISE = "noise baseline"
NOISE_DRAWS = 200  # uniform-noise "metrics" behind the noise band (SRCC, KRCC)
NOISE_PLCC_DRAWS = 50  # of them behind the cross-fitted PLCC band (a curve fit per fold each)
REFERENCE_FAMILIES = ("oracle", "baseline")  # beside the metrics, never "the best"
CHOSEN_ON_DATA = "chosen on these items (highest SRCC): optimistic, see the CV choice"


def agreement(scores: Scores, items: RatedItems, options: Options) -> dict[str, Any]:
    """Agreement of every headline metric with the raters, per aspect."""
    groups = np.asarray(items.groups, dtype=object)
    aspects = {}
    for aspect, table in items.ratings.items():
        columns = scores.headline()
        if items.truth.get(aspect) is not None:
            columns[ORACLE] = items.truth[aspect]
        aspects[aspect] = _aspect(scores, columns, table, groups, options)
    return {"aspects": aspects, "n_items": len(items.ids), "n_groups": items.n_groups}


def _aspect(
    scores: Scores,
    columns: dict[str, np.ndarray],
    table: np.ndarray,
    groups: np.ndarray,
    options: Options,
) -> dict[str, Any]:
    """One aspect: the metric rows (best first), the best, the raters, the noise band."""
    from evaluation import stats

    rated = np.isfinite(table).any(axis=1)
    target = np.full(len(table), np.nan)
    target[rated] = np.nanmean(table[rated], axis=1)  # the mean of the raters who rated
    g = groups[rated]
    common = {"n_resamples": options.bootstrap, "seed": options.seed, "groups": g}
    rows = []
    for name, values in columns.items():
        result = stats.agreement(
            values[rated], target[rated], fit=options.fit, folds=options.folds, **common
        )
        per_rater = [_rank_corr(values, table[:, j]) for j in range(table.shape[1])]
        rows.append({
            "metric": name, **_metric_info(scores, name),
            **{k: interval_record(v) for k, v in result.items()},
            "per_rater_srcc": per_rater,
        })  # fmt: skip
    rows.sort(key=lambda r: -r["srcc"]["estimate"])
    candidates = [r["metric"] for r in rows if r["family"] not in REFERENCE_FAMILIES]
    best = _best(candidates, columns, target, rated, options, common)
    for row in rows:
        row["vs_best"] = (best["comparisons"] or {}).get(row["metric"]) if best else None
    raters = _raters(table, rated, columns, common)
    for row in rows:
        row["vs_raters"] = (raters.get("metrics") or {}).get(row["metric"])
    band = stats.noise_band(
        target[rated], NOISE_DRAWS, seed=options.seed, fit=options.fit, folds=options.folds,
        groups=g, plcc_draws=NOISE_PLCC_DRAWS,
    )  # fmt: skip
    return {
        "rows": rows, "best": best["name"] if best else None, "best_choice": best,
        "raters": raters,
        "noise": {"bands": band.bands, "draws": band.draws, "plcc_draws": band.plcc_draws,
                  "level": band.level},
        "target": target.tolist(), "layers": layer_choice(scores, target, rated, options, g),
    }  # fmt: skip


def _best(
    candidates: list[str],
    columns: dict[str, np.ndarray],
    target: np.ndarray,
    rated: np.ndarray,
    options: Options,
    common: dict[str, Any],
) -> dict[str, Any] | None:
    """The metric chosen on the data against every other (max-T adjusted), and the CV choice."""
    from evaluation import stats

    if not candidates:
        return None
    if len(candidates) == 1:
        return {"name": candidates[0], "chosen": CHOSEN_ON_DATA, "comparisons": {},
                "family": 0, "cv": None}  # fmt: skip
    picked = {n: columns[n][rated] for n in candidates}
    result = stats.compare_to_best(picked, target[rated], "srcc", **common)
    comparisons = {
        c.metric: {
            **interval_record(c.difference), "p": c.p, "p_adjusted": c.p_adjusted,
            "simultaneous_low": c.simultaneous.low, "simultaneous_high": c.simultaneous.high,
        }
        for c in result.comparisons
    }  # fmt: skip
    return {
        "name": result.best, "chosen": CHOSEN_ON_DATA, "comparisons": comparisons,
        "family": result.family, "critical": result.critical,
        "adjustment": f"single-step max-T over all {result.family} pairs of metrics",
        "cv": _cv_choice(picked, target[rated], options, common["groups"]),
    }  # fmt: skip


def _cv_choice(
    candidates: dict[str, np.ndarray], target: np.ndarray, options: Options, groups: np.ndarray
) -> dict[str, Any] | None:
    """Choosing the best metric inside CV folds: what that choice scores on held-out items."""
    from evaluation import stats

    try:
        cv = stats.cv_select(candidates, target, options.folds, seed=options.seed, groups=groups)
    except ValueError as err:
        log.info("best metric inside CV: %s", err)
        return None
    return {"chosen": list(cv.chosen), "held_out": list(cv.held_out), "mean": cv.mean,
            "pooled": cv.pooled, "folds": cv.folds}  # fmt: skip


def _raters(
    table: np.ndarray,
    rated: np.ndarray,
    columns: dict[str, np.ndarray],
    common: dict[str, Any],
) -> dict[str, Any]:
    """Inter-rater agreement, the human ceiling and its upper bound, metrics set against it."""
    from evaluation import stats

    out: dict[str, Any] = {
        "icc_2_1": _safe(stats.icc_2_1, table),
        "krippendorff_alpha_interval": _safe(stats.krippendorff_alpha, table, "interval"),
        "krippendorff_alpha_ordinal": _safe(stats.krippendorff_alpha, table, "ordinal"),
        "ceiling": None, "upper_bound": None, "metrics": {},
        "n_items": int(rated.sum()), "n_groups": len(set(common["groups"].tolist())),
        "n_missing_cells": int(np.isnan(table[rated]).sum()),
    }  # fmt: skip
    if table.shape[1] < 2:
        return out
    usable = {n: v[rated] for n, v in columns.items() if np.isfinite(v[rated]).all()}
    try:
        ceiling = stats.human_ceiling(table[rated], usable, **common)
    except ValueError as err:
        log.info("human ceiling: %s", err)
        return out
    out["ceiling"] = {**interval_record(ceiling.ceiling), "per_rater": list(ceiling.per_rater)}
    out["upper_bound"] = interval_record(ceiling.upper_bound)
    out["metrics"] = {
        m.metric: {"vs_others": interval_record(m.vs_others),
                   "minus_ceiling": {**interval_record(m.minus_ceiling), "p": m.p}}
        for m in ceiling.metrics
    }  # fmt: skip
    return out


def layer_choice(
    scores: Scores,
    target: np.ndarray,
    rated: np.ndarray,
    options: Options,
    groups: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Per feature extractor: every tap x mode's SRCC, and the choice made inside CV.

    The per-layer SRCCs are descriptive (all items); the tap x mode chosen on training
    folds (grouped by `groups`, one per rated item) is scored on the held-out folds.
    """
    from evaluation import stats

    models: dict[str, list[str]] = {}
    for name in scores.of_family(*LAYER_FAMILIES):
        info = scores.info[name]
        masked = " masked" if info["family"] == "layer_masked" else ""
        models.setdefault(f"{info['backbone']} {info['framework']}{masked}", []).append(name)
    out = []
    for label, names in models.items():
        curve = [
            {
                "metric": n, "tap": scores.info[n]["tap"], "mode": scores.info[n]["mode"],
                "srcc": stats.srcc(scores.columns[n][rated], target[rated]),
            }
            for n in names
        ]  # fmt: skip
        entry: dict[str, Any] = {"model": label, "curve": curve, "cv": None}
        if rated.sum() >= 2 * options.folds:
            try:
                cv = stats.cv_select(
                    {n: scores.columns[n][rated] for n in names}, target[rated],
                    folds=options.folds, seed=options.seed, groups=groups,
                )  # fmt: skip
            except ValueError as err:
                log.info("%s layer choice: %s", label, err)
                out.append(entry)
                continue
            entry["cv"] = {
                "chosen": list(cv.chosen), "held_out": list(cv.held_out), "mean": cv.mean,
                "pooled": cv.pooled, "folds": cv.folds,
            }  # fmt: skip
        out.append(entry)
    return out


def _metric_info(scores: Scores, name: str) -> dict[str, Any]:
    if name in scores.info:
        info = scores.info[name]
        return {k: info.get(k) for k in ("family", "backbone", "framework", "heads")}
    family = "oracle" if name == ORACLE else "baseline"
    return {"family": family, "backbone": None, "framework": None, "heads": None}


def _rank_corr(x: np.ndarray, y: np.ndarray) -> float | None:
    from evaluation import stats

    ok = np.isfinite(x) & np.isfinite(y)
    return stats.srcc(x[ok], y[ok]) if ok.sum() >= 3 else None


def _safe(function: Callable[..., float], *args: Any) -> float | None:
    try:
        return float(function(*args))
    except ValueError as err:
        log.info("%s: %s", function.__name__, err)
        return None
