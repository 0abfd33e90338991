"""Retrieval in the comparison: does each feature extractor find lesions of the same diagnosis?

For every feature extractor (torch- and Keras-trained side by side) on the classifiers'
own split: the gallery is the training split (train + validation), the queries are the
test split. Each image becomes one vector (`evaluation.embedding`: a tap, pooled,
L2-normalised; cosine similarity). Which tap and pooling is chosen on the training
split alone: every training image queries the rest of the training split with its own
lesion (or patient) left out, and the candidate with the best mAP@k wins; the test
queries are never looked at for that choice. On the test split: precision@k, mAP@k and
k-NN majority accuracy by diagnosis (`evaluation.stats.retrieval`), no query ever
matching an image of its own lesion or patient, with bootstrap intervals over lesions
(or patients); the classifier of the same training run beside it, and the chance level
(the share of the gallery with the query's diagnosis).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.catalog import Entry
from evaluation.classification_data import PooledTaps, SplitData, sample_groups
from evaluation.embedding import normalise, poolings_of
from evaluation.formatting import interval_record
from evaluation.options import Options

K = 16
"""Neighbours per query (Tschandl et al. 2019 used 16)."""
EXAMPLE_QUERIES = 4
EXAMPLE_NEIGHBOURS = 6


def retrieval(
    entries: Sequence[Entry],
    data: SplitData | None,
    pools: PooledTaps,
    options: Options,
    classification: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Retrieval rows for every feature extractor, and examples for the report's figure.

    Args:
        entries: The models; the feature extractors are evaluated.
        data: The classification split (None: no retrieval).
        pools: The split's pooled tap outputs (shared with the classification baselines).
        options: Seed, bootstrap resamples, provider.
        classification: `evaluation.classification.classification(...)`, for the
            classifier of the same run beside each row.
    """
    from tqdm import tqdm

    extractors = [e for e in entries if e.kind == "features"]
    if data is None or not extractors or not data.train or not data.test:
        return {"rows": [], "k": K, "examples": None}
    k = min(K, len(data.train) - 1)
    classifiers = {r["model"]: r for r in (classification or {}).get("rows", [])}
    results = []
    for entry in tqdm(extractors, desc="retrieval", unit="model"):
        row, neighbours, similarity = _evaluate(entry, data, pools, options, k)
        classifier = classifiers.get(entry.model)
        row["classifier"] = (
            {key: classifier[key] for key in ("accuracy", "balanced_accuracy")}
            if classifier
            else None
        )
        results.append((row, neighbours, similarity))
    # the figure's model: the best on the training split (never chosen on the test queries)
    best, neighbours, similarity = max(results, key=lambda r: r[0]["selection"]["train_map"])
    rows = sorted(
        (r for r, _, _ in results),
        key=lambda r: (r["backbone"], r["framework"] != "torch", r["framework"]),
    )
    return {
        "rows": rows,
        "k": k,
        "gallery": f"training split ({len(data.train)} images)",
        "queries": f"test split ({len(data.test)} images)",
        "group_by": data.group_by,
        "examples": _examples(data, neighbours, similarity, best),
    }


def _evaluate(
    entry: Entry, data: SplitData, pools: PooledTaps, options: Options, k: int
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One extractor: the choice on the training split, the metrics on the test split."""
    from evaluation import stats
    from evaluation.stats.retrieval import retrieval_metrics

    pairs = poolings_of(entry.manifest)
    train = {p: normalise(v) for p, v in pools.get(entry, "train", data.train).items()}
    test = {p: normalise(v) for p, v in pools.get(entry, "test", data.test).items()}
    y_train = np.array([s.label for s in data.train])
    y_test = np.array([s.label for s in data.test])
    g_train = np.array(sample_groups(data.train))
    g_test = np.array(sample_groups(data.test))
    own = g_train[:, None] == g_train[None, :]  # a training query's own lesion (and itself)
    scores = {
        pair: float(retrieval_metrics(v @ v.T, y_train, y_train, k, own)["map"].mean())
        for pair, v in train.items()
    }
    chosen = max(pairs, key=lambda pair: scores[pair])  # first of equals, in `pairs` order
    mask = g_test[:, None] == g_train[None, :]  # never the query's own lesion or patient
    similarity = test[chosen] @ train[chosen].T
    per_query = retrieval_metrics(similarity, y_test, y_train, k, mask)
    chance = np.array([np.mean(y_train[~m] == y) for y, m in zip(y_test, mask, strict=True)])
    n_resamples = min(options.bootstrap, 1000)
    summary = {
        name: interval_record(
            stats.bootstrap_ci(
                np.mean, per_query[name], n_resamples=n_resamples, seed=options.seed,
                groups=g_test,
            )
        )
        for name in ("precision", "map", "knn")
    }  # fmt: skip
    per_class = {
        label: float(per_query["map"][y_test == label].mean()) for label in data.classes
        if (y_test == label).any()
    }  # fmt: skip
    row = {
        "backbone": entry.backbone,
        "framework": entry.framework,
        "model": entry.model,
        "file": entry.path.name,
        "n_queries": len(y_test),
        "n_groups": len(set(g_test)),
        "n_gallery": len(y_train),
        "selection": {
            "tap": chosen[0],
            "pooling": chosen[1],
            "train_map": scores[chosen],
            "candidates": len(pairs),
            "on": "training split, leave-own-lesion-out",
        },
        **summary,
        "chance_precision": float(chance.mean()),
        "map_by_class": per_class,
    }
    return row, per_query["neighbours"], similarity


def _examples(
    data: SplitData, neighbours: np.ndarray, similarity: np.ndarray, best: dict[str, Any]
) -> dict:
    """A few test queries (one per diagnosis first) and their nearest gallery images."""
    picks: list[int] = []
    for label in data.classes:
        first = next((i for i, s in enumerate(data.test) if s.label == label), None)
        if first is not None:
            picks.append(first)
    picks += [i for i in range(len(data.test)) if i not in picks]
    picks = picks[:EXAMPLE_QUERIES]
    return {
        "model": f"{best['backbone']} {best['framework']}",
        "selection": best["selection"],
        "synthetic": data.synthetic,
        "queries": [
            {
                "path": str(data.test[i].path),
                "label": data.test[i].label,
                "neighbours": [
                    {
                        "path": str(data.train[j].path),
                        "label": data.train[j].label,
                        "distance": float(1.0 - similarity[i, j]),
                    }
                    for j in neighbours[i][:EXAMPLE_NEIGHBOURS]
                    if j >= 0
                ],
            }
            for i in picks
        ],
    }
