"""The framework-neutral table: per backbone, the torch-trained and Keras-trained models.

Side by side per backbone: classification (balanced accuracy, macro-F1), the SRCC of
each framework's LPIPS and DISTS with the raters, training time (with the trainer's
thread count and how many steps ran at once, from run.json), how close the two
frameworks' distances are on the same region pairs, and their classification
agreement on the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bridge.core.metrics import METRICS
from bridge.core.spec import FRAMEWORKS
from evaluation.catalog import Entry
from evaluation.item_scores import Scores


def frameworks(
    entries: Sequence[Entry], cls: dict[str, Any], scores: Scores, agree: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per backbone: torch and Keras side by side.

    Args:
        entries: The models.
        cls: `evaluation.classification.classification(...)`.
        scores: Every metric's scores.
        agree: `evaluation.agreement.agreement(...)` (its overall aspect, or the first).
    """
    overall = agree["aspects"].get("overall") or next(iter(agree["aspects"].values()), None)
    srcc = {r["metric"]: r["srcc"] for r in (overall or {"rows": []})["rows"]}
    by_cls = {(r["backbone"], r["framework"]): r for r in cls["rows"]}
    by_pair = {p["backbone"]: p for p in cls["pairs"]}
    seconds = {(e.backbone, e.framework): e.run.get("train_seconds") for e in entries}
    timing = {(e.backbone, e.framework): e.run.get("timing") or {} for e in entries}
    rows = []
    for backbone in sorted({e.backbone for e in entries}):
        row: dict[str, Any] = {"backbone": backbone}
        for fw in FRAMEWORKS:
            c = by_cls.get((backbone, fw))
            row[fw] = {
                "balanced_accuracy": c["balanced_accuracy"] if c else None,
                "macro_f1": c["macro_f1"] if c else None,
                "train_seconds": seconds.get((backbone, fw)),
                "threads": timing.get((backbone, fw), {}).get("threads"),
                "side_by_side": timing.get((backbone, fw), {}).get("side_by_side"),
                **{f"srcc_{m}": srcc.get(f"{m} {backbone} {fw}") for m in METRICS},
            }
        for metric in METRICS:
            row[f"{metric}_between"] = _between(scores, metric, backbone)
        row["classification"] = by_pair.get(backbone)
        rows.append(row)
    return rows


def _between(scores: Scores, metric: str, backbone: str) -> dict[str, float] | None:
    """How close the two frameworks' distances of one metric are, pair by pair."""
    t = scores.pairs.get(f"{metric} {backbone} torch")
    k = scores.pairs.get(f"{metric} {backbone} keras")
    if t is None or k is None:
        return None
    ok = np.isfinite(t) & np.isfinite(k)
    return {
        "pearson": float(np.corrcoef(t[ok], k[ok])[0, 1]),
        "max_abs_difference": float(np.abs(t[ok] - k[ok]).max()),
    }
