"""Retrieval statistics: how often the nearest gallery images share the query's diagnosis.

Per query, with its `k` nearest gallery images (most similar first; ties by gallery
order), an image being relevant when its label equals the query's:

* precision@k: the share of the k that are relevant;
* AP@k: (1 / min(k, R)) * sum over ranks i <= k of precision@i * rel_i, where R is the
  number of relevant images in the (unmasked) gallery; 0 when R is 0. mAP@k is its mean;
* k-NN majority: the most frequent label among the k, a tie going to the tied label met
  first in rank order; correct when it is the query's label.

Gallery images masked out for a query (its own lesion or patient) are never among its k.
Intervals over queries (or over groups of queries, e.g. lesions) come from
`evaluation.stats.bootstrap_ci` on these per-query values.

Missing data: similarities may not be NaN; a masked pair is given as `mask`, not as NaN.
"""

from __future__ import annotations

import numpy as np

RETRIEVAL_METRICS = ("precision", "map", "knn")
"""Keys of `retrieval_metrics`: precision@k, AP@k, k-NN majority correct (per query)."""


def top_k(similarity: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Gallery indices of each query's k most similar images, most similar first.

    Args:
        similarity: (Q, G) similarities (higher is nearer).
        k: Neighbours per query (at most G).
        mask: Optional (Q, G) booleans: True where a gallery image may not be retrieved.

    Returns:
        (Q, k) int indices; ties are ordered by gallery index. Where fewer than k images
        are allowed, the row is padded with -1.

    Raises:
        ValueError: On a k outside [1, G], NaN similarities, or a mask of another shape.
    """
    s = np.asarray(similarity, np.float64)
    if s.ndim != 2:
        raise ValueError(f"similarity must be (queries, gallery), got shape {s.shape}")
    if not 1 <= k <= s.shape[1]:
        raise ValueError(f"k must be in [1, {s.shape[1]}] (the gallery size), got {k}")
    if np.isnan(s).any():
        raise ValueError("similarity holds NaN; give masked pairs as `mask`")
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != s.shape:
            raise ValueError(f"mask shape {mask.shape} differs from similarity {s.shape}")
        s = np.where(mask, -np.inf, s)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    allowed = np.isfinite(np.take_along_axis(s, order, axis=1))
    return np.where(allowed, order, -1)


def retrieval_metrics(
    similarity: np.ndarray,
    query_labels,
    gallery_labels,
    k: int,
    mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-query precision@k, AP@k and k-NN majority correctness (module docstring).

    Args:
        similarity: (Q, G) similarities.
        query_labels: (Q,) labels of the queries.
        gallery_labels: (G,) labels of the gallery.
        k: Neighbours per query.
        mask: Optional (Q, G): True where a gallery image may not be retrieved.

    Returns:
        {"precision": (Q,), "map": (Q,), "knn": (Q,) 0/1, "neighbours": (Q, k) indices}.

    Raises:
        ValueError: On mismatched lengths, or as `top_k`.
    """
    q_labels = np.asarray(query_labels)
    g_labels = np.asarray(gallery_labels)
    s = np.asarray(similarity)
    if s.shape != (len(q_labels), len(g_labels)):
        raise ValueError(
            f"similarity shape {s.shape}; expected ({len(q_labels)}, {len(g_labels)}) "
            "(queries, gallery)"
        )
    neighbours = top_k(s, k, mask)
    found = neighbours >= 0
    labels = np.where(found, g_labels[np.maximum(neighbours, 0)], None)
    relevant = found & (labels == q_labels[:, None])
    precision = relevant.sum(axis=1) / k
    allowed = ~np.asarray(mask, bool) if mask is not None else np.ones(s.shape, bool)
    total = (allowed & (g_labels[None, :] == q_labels[:, None])).sum(axis=1)
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, k + 1)
    ap = (relevant * hits / ranks).sum(axis=1) / np.maximum(np.minimum(total, k), 1)
    knn = np.array(
        [
            _majority(row[ok]) == label
            for row, ok, label in zip(labels, found, q_labels, strict=True)
        ],
        dtype=float,
    )
    return {"precision": precision, "map": ap, "knn": knn, "neighbours": neighbours}


def _majority(labels: np.ndarray):
    """The most frequent label, a tie going to the one met first (None for no label)."""
    if not len(labels):
        return None
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    best = counts == counts.max()
    return values[best][np.argmin(first[best])]
