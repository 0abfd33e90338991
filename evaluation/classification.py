"""Every exported classifier on the held-out test split, and torch vs Keras per backbone.

Per classifier: accuracy, balanced accuracy, macro-F1 and one-vs-rest AUCs with
bootstrap intervals over images, and the confusion matrix. Per backbone trained in
both frameworks: prediction agreement, McNemar's test and the logits' correlation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bridge.core.runtime import open_model
from evaluation.catalog import Entry
from evaluation.classification_data import ImageBatches, SplitData
from evaluation.formatting import interval_record
from evaluation.options import Options

BATCH = 32  # images per onnxruntime call


def classification(
    entries: Sequence[Entry], data: SplitData | None, images: ImageBatches, options: Options
) -> dict[str, Any]:
    """Every classifier on the test split; torch vs Keras per backbone.

    Raises:
        ValueError: If a classifier's classes differ from the data's.
    """
    classifiers = [e for e in entries if e.kind == "classifier"]
    if not classifiers or data is None:
        return {"rows": [], "pairs": [], "classes": [], "test_split": None}
    y = data.labels("test")
    rows, predictions = [], {}
    for entry in classifiers:
        row, predicted = _classifier(entry, data, y, images, options)
        rows.append(row)
        predictions[entry.label] = predicted
    rows.sort(key=lambda r: (r["backbone"], r["framework"] != "torch", r["framework"]))
    pairs = _torch_vs_keras(y, predictions, sorted({r["backbone"] for r in rows}))
    return {"rows": rows, "pairs": pairs, "classes": list(data.classes), "test_split": data.where}


def _classifier(
    entry: Entry, data: SplitData, y: np.ndarray, images: ImageBatches, options: Options
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One classifier's row of the table, and its logits and predictions."""
    from evaluation import stats

    classes = list(data.classes)
    if entry.run.get("classes") and list(entry.run["classes"]) != classes:
        raise ValueError(f"{entry.path.name}: classes {entry.run['classes']} differ from {classes}")
    batch = images.get("test", data.test, entry.manifest["input_contract"], entry.policy)
    model = open_model(entry.path, prefer_gpu=options.prefer_gpu)
    logits = np.concatenate([
        model.run(image=batch[i : i + BATCH])["logits"] for i in range(0, len(batch), BATCH)
    ])  # fmt: skip
    proba = _softmax(logits)
    pred = proba.argmax(1)
    metrics = stats.classification_metrics(
        y, pred, proba, classes, n_resamples=min(options.bootstrap, 1000), seed=options.seed
    )
    row = {
        "backbone": entry.backbone, "framework": entry.framework, "model": entry.model,
        "file": entry.path.name, "provider": model.provider, "n": len(y),
        **{k: interval_record(v) for k, v in metrics.items()},
        "confusion": _confusion(y, pred, len(classes)).tolist(),
    }  # fmt: skip
    return row, {"logits": logits, "pred": pred}


def _torch_vs_keras(
    y: np.ndarray, predictions: dict[str, dict[str, np.ndarray]], backbones: Sequence[str]
) -> list[dict[str, Any]]:
    """Per backbone classified by both frameworks: how far their predictions agree."""
    from evaluation import stats

    pairs = []
    for backbone in backbones:
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
    return pairs


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((k, k), int)
    np.add.at(out, (y, pred), 1)
    return out
