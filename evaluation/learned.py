"""Learned baselines of a comparison: scikit-learn on exported features and distances.

Classification: four classifiers on the pooled deepest tap (and a ViT's class token)
of every feature extractor, tuned by inner CV on the training split, scored on the
test split. Ratings: ridge / SVR from per-layer and classical distances to the mean
rating, and an ordinal model from one distance to the rating category, in nested CV
over items grouped by patient or lesion (`RatedItems.groups`: no group on both sides of
a fold); beside the raters' own agreement on the same scale and the naive baselines on
the same folds (the training part's median rating, `median_predictor`, and median
category, `median_category`), rows of the same table. The models are
`evaluation.baselines`; this module feeds them the comparison's data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.catalog import Entry
from evaluation.classification_data import PooledTaps, SplitData
from evaluation.formatting import interval_record
from evaluation.item_scores import Scores
from evaluation.items import RatedItems
from evaluation.options import Options

NAIVE_CATEGORY = "median_category"  # the ordinal model's naive row: each training part's median


def classification_baselines(
    entries: Sequence[Entry], data: SplitData | None, pools: PooledTaps, options: Options
) -> list[dict[str, Any]]:
    """scikit-learn classifiers on each feature extractor's pooled features, test split.

    Args:
        entries: The models; the feature extractors give the classification features.
        data: The classification data (None: no classification baselines).
        pools: The split's pooled tap outputs (shared with retrieval).
        options: Seed, bootstrap resamples, provider.
    """
    from tqdm import tqdm

    extractors = [e for e in entries if e.kind == "features"]
    rows = []
    if data is not None and extractors:
        for entry in tqdm(extractors, desc="classification baselines", unit="model"):
            rows += _classification_baselines(entry, data, pools, options)
    return rows


def rating_baselines(
    scores: Scores, items: RatedItems, agree: dict[str, Any], options: Options
) -> dict[str, Any]:
    """Ridge / SVR / ordinal models on the distances, in nested cross-validation, per aspect.

    Args:
        scores: Every metric's per item scores.
        items: The rated items.
        agree: `evaluation.agreement.agreement(...)`: its per aspect mean ratings.
        options: Seed, bootstrap resamples, provider.
    """
    return {
        aspect: _rating_baselines(scores, items, aspect, np.asarray(a["target"], float), options)
        for aspect, a in agree["aspects"].items()
    }


def _classification_baselines(
    entry: Entry, data: SplitData, pools: PooledTaps, options: Options
) -> list[dict[str, Any]]:
    """The four classifiers on one feature extractor's pooled deepest tap, on the test split.

    The features: the deepest grid tap averaged over its positions, and a ViT's class
    token beside it (as `baselines.pooled_features` pools them).
    """
    from evaluation import baselines, stats
    from evaluation.embedding import grid_taps

    classes = list(data.classes)
    y_train, y_test = data.labels("train"), data.labels("test")
    groups = np.array(data.groups("train"))
    last = grid_taps(entry.manifest)[-1]  # the deepest tap
    pairs = [
        p for p in ((last, "gap"), (last, "cls")) if p in pools.get(entry, "train", data.train)
    ]
    taps = [last] + [f"{last}_cls" for _, pooling in pairs if pooling == "cls"]
    x_train, x_test = (
        np.concatenate([pools.get(entry, name, part)[p] for p in pairs], axis=1)
        for name, part in (("train", data.train), ("test", data.test))
    )
    rows = []
    for fitted in baselines.classification_baselines(
        x_train, y_train, x_test, groups, seed=options.seed, n_jobs=-1
    ):
        metrics = stats.classification_metrics(
            y_test, fitted.predictions, fitted.proba, classes,
            n_resamples=min(options.bootstrap, 1000), seed=options.seed,
            groups=data.groups("test"),
        )  # fmt: skip
        rows.append({
            "backbone": entry.backbone, "framework": entry.framework,
            "method": fitted.name, "best_params": fitted.best_params, "taps": taps,
            "inner_balanced_accuracy": fitted.inner_score,
            **{k: interval_record(v) for k, v in metrics.items()},
        })  # fmt: skip
    return rows


def _rating_baselines(
    scores: Scores, items: RatedItems, aspect: str, target: np.ndarray, options: Options
) -> dict[str, Any]:
    """Ridge / SVR from all distances, an ordinal model from one, the raters: one aspect.

    Both kinds of model run on folds grouped by `items.groups`; the regression rows end
    with the naive `median_predictor`, then the ordinal model's naive `median_category`
    (its MAE in categories, as the ordinal row's).
    """
    from evaluation import baselines

    features = scores.of_family("layer", "classical")
    rated = np.isfinite(target)
    groups = np.asarray(items.groups)[rated]
    x = np.column_stack([v[rated] for v in features.values()])
    regression = baselines.rating_baselines(x, target[rated], seed=options.seed, groups=groups)
    table = items.ratings[aspect][rated]
    present = table[np.isfinite(table)]
    categories = tuple(range(int(np.floor(present.min())), int(np.ceil(present.max())) + 1))
    ordinal = baselines.ordinal_baseline(
        {n: v[rated] for n, v in scores.headline().items()}, table, items.raters, categories,
        seed=options.seed, groups=groups,
    )  # fmt: skip
    naive_ordinal = {
        "method": NAIVE_CATEGORY, "srcc": None, "mae": ordinal.naive["mae"],
        "folds": ordinal.folds,
    }  # fmt: skip
    return {
        "features": len(features),
        "categories": list(categories),
        "groups": len(set(groups)),
        "regression": [
            {"method": r.name, "srcc": r.srcc, "mae": r.mae, "folds": r.folds} for r in regression
        ]
        + [naive_ordinal],
        "ordinal": {
            "chosen": list(ordinal.feature), "accuracy": ordinal.accuracy,
            "mae": ordinal.mae, "qwk": ordinal.qwk, "per_rater": ordinal.per_rater,
            "folds": ordinal.folds, "naive": ordinal.naive,
        },
        "raters": baselines.rater_agreement(items.ratings[aspect], items.raters, categories),
    }  # fmt: skip
