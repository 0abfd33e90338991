"""2AFC agreement: how often a metric prefers the candidate the raters chose.

A 2AFC judgement table (`python -m evaluation.rate export` of a `2afc` study, or any
table `ref,box_ref,a,box_a,b,box_b[,id,group],rater,choice`) is read by
`bridge.core.data.ratings.read_triplets`; `load_triplets` turns it into `RatedItems`
(each triplet an item: the reference against candidates a and b), so every metric is
scored by `evaluation.item_scores` exactly as the rated cases are.

Per metric, with d_a and d_b its distances of the reference to a and to b: the metric
prefers a when d_a < d_b, b when d_b < d_a, and neither on a tie (counted half). Its
2AFC score is the fraction of judgements where it prefers the candidate the rater chose
(the BAPPS 2AFC score, weighted by judgements). The raters' own agreement is the
ceiling: for each judgement of a triplet judged by two or more raters, the fraction of
the OTHER raters' judgements of that triplet that chose alike, averaged over those
judgements (a leave-one-out form of BAPPS's p² + (1 − p)², unbiased for a few raters).
The metric's score over the same judgements is given beside it, like for like.
Intervals: BCa bootstrap over triplets, whole groups (lesion or patient) drawn together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.data.ratings import TwoAfcSet, read_triplets
from evaluation.formatting import interval_record
from evaluation.item_scores import Scores
from evaluation.items import RatedItems
from evaluation.options import Options


def load_triplets(path: Path, images: Path | None = None) -> tuple[RatedItems, TwoAfcSet]:
    """A judgement table as rated items (reference vs a, b) and the judgements.

    Raises:
        ValueError: On malformed input, or a table without judgements.
    """
    data = read_triplets(path, images)
    if not data.judgements:
        raise ValueError(
            f"{path}: no judgements (expected rater and choice columns: the export of a 2afc "
            "study, python -m evaluation.rate export)"
        )
    items = RatedItems(
        ids=tuple(t.id for t in data.triplets),
        references=tuple((t.ref, t.box_ref) for t in data.triplets),
        comparisons=tuple(((t.a, t.box_a), (t.b, t.box_b)) for t in data.triplets),
        ratings={},
        raters=data.raters,
        synthetic=data.synthetic,
        source=f"2AFC judgements {path}",
        groups=tuple(t.group for t in data.triplets),
    )
    return items, data


def counts(items: RatedItems, data: TwoAfcSet) -> tuple[np.ndarray, np.ndarray]:
    """Per triplet: judgements, and how many of them chose a."""
    row = {item: i for i, item in enumerate(items.ids)}
    n, chose_a = np.zeros(len(items.ids)), np.zeros(len(items.ids))
    for j in data.judgements:
        n[row[j.triplet]] += 1
        chose_a[row[j.triplet]] += j.choice == "a"
    return n, chose_a


def metric_agreement(distances: np.ndarray, n: np.ndarray, chose_a: np.ndarray) -> np.ndarray:
    """Per triplet, the judgements the metric agrees with (a tie agrees with half).

    Args:
        distances: (triplets, 2): the metric's distance of the reference to a and to b.
        n: Judgements per triplet.
        chose_a: Judgements per triplet that chose a.
    """
    d_a, d_b = distances[:, 0], distances[:, 1]
    return np.where(d_a < d_b, chose_a, np.where(d_b < d_a, n - chose_a, n / 2))


def rater_agreement(n: np.ndarray, chose_a: np.ndarray) -> np.ndarray:
    """Per triplet, the summed leave-one-out agreement of its judgements (0 where n < 2).

    For each judgement, the fraction of the other judgements of the triplet that chose
    alike; summed over the triplet's judgements.
    """
    k, rest = chose_a, n - chose_a
    pairs = k * (k - 1) + rest * (rest - 1)
    return np.divide(pairs, n - 1, out=np.zeros_like(n), where=n >= 2)


def _ratio(agree: np.ndarray, n: np.ndarray) -> float:
    return float(agree.sum() / n.sum()) if n.sum() else float("nan")


def _interval(stats: Any, agree: np.ndarray, n: np.ndarray, groups: np.ndarray, common: dict):
    """The judgement-weighted agreement with its bootstrap interval over triplets (groups).

    With fewer than 2 groups there is no interval: the estimate alone.
    """
    if len(set(groups.tolist())) < 2:
        return {"estimate": _ratio(agree, n), "low": None, "high": None, "level": None,
                "method": "none (fewer than 2 groups)"}  # fmt: skip
    return interval_record(stats.bootstrap_ci(_ratio, agree, n, groups=groups, **common))


def two_afc_agreement(
    scores: Scores, items: RatedItems, data: TwoAfcSet, options: Options
) -> dict[str, Any]:
    """Every headline metric's 2AFC score with its interval, and the raters' ceiling."""
    from evaluation import stats

    n, chose_a = counts(items, data)
    groups = np.asarray(items.groups, dtype=object)
    common = {"n_resamples": options.bootstrap, "seed": options.seed}
    judged = n > 0
    shared = n >= 2  # triplets with a ceiling
    ceiling = None
    if shared.any():
        ceiling = _interval(
            stats, rater_agreement(n, chose_a)[shared], n[shared], groups[shared], common
        )
    rows = []
    for name, _ in scores.headline().items():
        distances = scores.pairs[name]
        usable = judged & np.isfinite(distances).all(axis=1)
        agree = metric_agreement(distances, n, chose_a)
        row = {
            "metric": name, "family": scores.info[name]["family"],
            "backbone": scores.info[name].get("backbone"),
            "framework": scores.info[name].get("framework"),
            "n_judgements": int(n[usable].sum()), "n_triplets": int(usable.sum()),
            "score": _interval(stats, agree[usable], n[usable], groups[usable], common),
            "score_where_ceiling": None,
        }  # fmt: skip
        both = usable & shared
        if both.any():
            row["score_where_ceiling"] = _ratio(agree[both], n[both])
        rows.append(row)
    rows.sort(key=lambda r: -(r["score"]["estimate"] or 0))
    return {
        "source": items.source,
        "n_triplets": int(judged.sum()),
        "n_judgements": int(n.sum()),
        "n_groups": len(set(groups[judged].tolist())),
        "raters": list(data.raters),
        "ceiling": ceiling,
        "n_triplets_ceiling": int(shared.sum()),
        "rows": rows,
        "synthetic": items.synthetic,
    }
