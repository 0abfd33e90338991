"""Agreement of every metric with the raters, per aspect (docs/statistics.md).

Per aspect: SRCC, KRCC and PLCC of every headline metric with the mean rating (BCa
bootstrap intervals over items), beside the synthetic oracle and a noise baseline;
the SRCC with each rater; paired bootstrap differences to the best metric; the
raters' own agreement (ICC(2,1), Krippendorff's alpha, the leave-one-rater-out
ceiling); and per feature extractor the layer curve and the tap x mode chosen inside
cross-validation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from evaluation.formatting import interval_record
from evaluation.item_scores import Scores
from evaluation.items import RatedItems
from evaluation.options import Options

log = logging.getLogger(__name__)

ORACLE = "true deviation (synthetic oracle)"
NOISE = "noise baseline"
REFERENCE_FAMILIES = ("oracle", "baseline")  # beside the metrics, never "the best"


def agreement(scores: Scores, items: RatedItems, options: Options) -> dict[str, Any]:
    """Agreement of every headline metric with the raters, per aspect."""
    rng = np.random.default_rng(options.seed)
    noise = rng.uniform(0, 1, len(items.ids))
    aspects = {}
    for aspect, table in items.ratings.items():
        columns = scores.headline()
        if items.truth.get(aspect) is not None:
            columns[ORACLE] = items.truth[aspect]
        columns[NOISE] = noise
        aspects[aspect] = _aspect(scores, columns, table, options)
    return {"aspects": aspects}


def _aspect(
    scores: Scores, columns: dict[str, np.ndarray], table: np.ndarray, options: Options
) -> dict[str, Any]:
    """One aspect: the metric rows (best first), the raters' agreement, the layer choice."""
    from evaluation import stats

    rated = np.isfinite(table).any(axis=1)
    target = np.full(len(table), np.nan)
    target[rated] = np.nanmean(table[rated], axis=1)  # the mean of the raters who rated
    rows = []
    for name, values in columns.items():
        result = stats.agreement(
            values[rated], target[rated], n_resamples=options.bootstrap,
            seed=options.seed, fit=options.fit, plcc_resamples=min(options.bootstrap, 500),
        )  # fmt: skip
        per_rater = [_rank_corr(values, table[:, j]) for j in range(table.shape[1])]
        rows.append({
            "metric": name, **_metric_info(scores, name),
            **{k: interval_record(v) for k, v in result.items()},
            "per_rater_srcc": per_rater,
        })  # fmt: skip
    rows.sort(key=lambda r: -r["srcc"]["estimate"])
    candidates = [r for r in rows if r["family"] not in REFERENCE_FAMILIES]
    best = candidates[0]["metric"] if candidates else None
    for row in rows:
        row["vs_best"] = _vs_best(row, best, columns, target, rated, options)
    return {
        "rows": rows, "best": best, "raters": _raters(table, rated, options),
        "target": target.tolist(), "layers": layer_choice(scores, target, rated, options),
    }  # fmt: skip


def _vs_best(
    row: dict[str, Any],
    best: str | None,
    columns: dict[str, np.ndarray],
    target: np.ndarray,
    rated: np.ndarray,
    options: Options,
) -> dict[str, Any] | None:
    """The paired bootstrap SRCC difference best - this metric, and its p (None for best)."""
    from evaluation import stats

    if best is None or row["metric"] == best or row["family"] in REFERENCE_FAMILIES:
        return None
    diff, p = stats.paired_difference(
        columns[best][rated], columns[row["metric"]][rated], target[rated],
        n_resamples=options.bootstrap, seed=options.seed,
    )  # fmt: skip
    return {**interval_record(diff), "p": p}


def _raters(table: np.ndarray, rated: np.ndarray, options: Options) -> dict[str, Any]:
    """Inter-rater agreement and the human ceiling of one aspect."""
    from evaluation import stats

    ceiling = stats.leave_one_rater_out(table) if table.shape[1] >= 2 else None
    return {
        "icc_2_1": _safe(stats.icc_2_1, table),
        "krippendorff_alpha_interval": _safe(stats.krippendorff_alpha, table, "interval"),
        "krippendorff_alpha_ordinal": _safe(stats.krippendorff_alpha, table, "ordinal"),
        "ceiling": None
        if ceiling is None
        else {
            **interval_record(
                stats.ceiling_interval(table, n_resamples=options.bootstrap, seed=options.seed)
            ),
            "per_rater": list(ceiling.per_rater),
        },
        "n_items": int(rated.sum()),
        "n_missing_cells": int(np.isnan(table[rated]).sum()),
    }


def layer_choice(
    scores: Scores, target: np.ndarray, rated: np.ndarray, options: Options
) -> list[dict[str, Any]]:
    """Per feature extractor: every tap x mode's SRCC, and the choice made inside CV.

    The per-layer SRCCs are descriptive (all items); the tap x mode chosen on training
    folds is scored on the held-out folds.
    """
    from evaluation import stats

    groups: dict[str, list[str]] = {}
    for name in scores.of_family("layer"):
        info = scores.info[name]
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
