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

from bridge.core.runtime import FP32
from evaluation.catalog import Entry
from evaluation.classification_data import PooledTaps, SplitData, sample_groups
from evaluation.embedding import normalise, poolings_of
from evaluation.formatting import interval_record
from evaluation.options import Options

K = 16
"""Neighbours per query (Tschandl et al. 2019 used 16)."""
CHUNK = 1024
"""Queries per similarity block (memory: CHUNK x gallery size)."""
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
    evaluated = [
        evaluate(entry, data, pools, options, classification)
        for entry in tqdm(extractors, desc="retrieval", unit="model")
    ]
    return summarise([e for e in evaluated if e is not None], data)


def evaluate(
    entry: Entry,
    data: SplitData | None,
    pools: PooledTaps,
    options: Options,
    classification: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """One extractor: the choice on the training split, the metrics on the test split.

    Returns:
        (its row of the table, its example queries for the figure); None when there is
        no split to retrieve from (fewer than two training images, or no test image).
    """
    from evaluation import stats

    if data is None or len(data.train) < 2 or not data.test:
        return None
    k = min(K, len(data.train) - 1)
    pairs = poolings_of(entry.manifest)
    train = {p: normalise(v) for p, v in pools.get(entry, "train", data.train).items()}
    test = {p: normalise(v) for p, v in pools.get(entry, "test", data.test).items()}
    y_train = np.array([s.label for s in data.train])
    y_test = np.array([s.label for s in data.test])
    g_train = np.array(sample_groups(data.train))
    g_test = np.array(sample_groups(data.test))
    # each training image queries the rest of the training split, its own lesion left out
    scores = {
        pair: float(_per_query(v, v, y_train, y_train, g_train, g_train, k)["map"].mean())
        for pair, v in train.items()
    }
    chosen = max(pairs, key=lambda pair: scores[pair])  # first of equals, in `pairs` order
    per_query = _per_query(test[chosen], train[chosen], y_test, y_train, g_test, g_train, k)
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
    classifier = {r["model"]: r for r in (classification or {}).get("rows", [])}.get(entry.model)
    row = {
        "backbone": entry.backbone,
        "framework": entry.framework,
        "model": entry.model,
        "onnx_precision": entry.precision,  # "precision" is precision@k
        "file": entry.path.name,
        "k": k,
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
        "chance_precision": float(per_query["chance"].mean()),
        "map_by_class": per_class,
        "classifier": (
            {key: classifier[key] for key in ("accuracy", "balanced_accuracy")}
            if classifier
            else None
        ),
    }
    return row, _examples(data, per_query, row)


def summarise(evaluated: Sequence[tuple[dict, dict]], data: SplitData | None) -> dict[str, Any]:
    """The retrieval section of the results from every extractor's `evaluate`."""
    if not evaluated or data is None:
        return {"rows": [], "k": K, "examples": None}
    # the figure's model: the best on the training split (never chosen on the test queries)
    _, examples = max(evaluated, key=lambda e: e[0]["selection"]["train_map"])
    rows = sorted(
        (row for row, _ in evaluated),
        key=lambda r: (r["backbone"], r["framework"] != "torch", r["framework"]),
    )
    return {
        "rows": rows,
        "k": rows[0]["k"],
        "gallery": f"training split ({len(data.train)} images)",
        "queries": f"test split ({len(data.test)} images)",
        "group_by": data.group_by,
        "examples": examples,
    }


def _per_query(
    queries: np.ndarray,
    gallery: np.ndarray,
    y_q: np.ndarray,
    y_g: np.ndarray,
    g_q: np.ndarray,
    g_g: np.ndarray,
    k: int,
) -> dict[str, np.ndarray]:
    """Per-query retrieval metrics (and chance, neighbours, their distances), in chunks.

    A query never retrieves a gallery image of its own group (lesion or patient, as the
    data groups images; an image without a group is its own). Memory: `CHUNK` x gallery.
    """
    from evaluation.stats.retrieval import retrieval_metrics

    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(queries), CHUNK):
        stop = start + CHUNK
        similarity = queries[start:stop] @ gallery.T
        mask = g_q[start:stop, None] == g_g[None, :]
        found = retrieval_metrics(similarity, y_q[start:stop], y_g, k, mask)
        near = found["neighbours"]
        found["distance"] = np.where(
            near >= 0, 1.0 - np.take_along_axis(similarity, np.maximum(near, 0), axis=1), np.nan
        )
        allowed = ~mask
        same = allowed & (y_g[None, :] == y_q[start:stop, None])
        found["chance"] = same.sum(axis=1) / np.maximum(allowed.sum(axis=1), 1)
        for key, value in found.items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(value) for key, value in parts.items()}


def _examples(data: SplitData, per_query: dict, row: dict[str, Any]) -> dict:
    """A few test queries (one per diagnosis first) and their nearest gallery images."""
    picks: list[int] = []
    for label in data.classes:
        first = next((i for i, s in enumerate(data.test) if s.label == label), None)
        if first is not None:
            picks.append(first)
    picks += [i for i in range(len(data.test)) if i not in picks]
    picks = picks[:EXAMPLE_QUERIES]
    return {
        "model": f"{row['backbone']} {framework_label(row)}",
        "selection": row["selection"],
        "synthetic": data.synthetic,
        "queries": [
            {
                "path": str(data.test[i].path),
                "label": data.test[i].label,
                "neighbours": [
                    {
                        "path": str(data.train[j].path),
                        "label": data.train[j].label,
                        "distance": float(d),
                    }
                    for j, d in zip(
                        per_query["neighbours"][i][:EXAMPLE_NEIGHBOURS],
                        per_query["distance"][i][:EXAMPLE_NEIGHBOURS],
                        strict=True,
                    )
                    if j >= 0
                ],
            }
            for i in picks
        ],
    }


def framework_label(row: dict) -> str:
    """A retrieval row's framework, with the precision of a reduced-precision extractor."""
    precision = row.get("onnx_precision", FP32)
    return row["framework"] + ("" if precision == FP32 else f" {precision}")
