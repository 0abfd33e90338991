"""Every exported classifier on the held-out test split, and torch vs Keras per backbone.

Per classifier: accuracy, balanced accuracy, macro-F1 and one-vs-rest AUCs with
bootstrap intervals over groups (the views of one lesion, or the images of one
patient, are resampled together; an image without a group is its own), the
confusion matrix, and the same per subgroup of sex, age band and body site
(`subgroup_records`: exploratory). Per backbone trained in both frameworks:
prediction agreement, the clustered McNemar test and the logits' correlation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bridge.core.runtime import open_model
from evaluation.catalog import Entry
from evaluation.classification_data import (
    AGE_BANDS,
    SUBGROUP_ATTRIBUTES,
    ImageBatches,
    SplitData,
    sample_groups,
    subgroups,
)
from evaluation.formatting import interval_record
from evaluation.options import Options

BATCH = 32  # images per onnxruntime call
# A subgroup smaller than this (images, classes present, groups) is reported as too few.
SUBGROUP_MIN_IMAGES = 10
SUBGROUP_MIN_CLASSES = 2
SUBGROUP_MIN_GROUPS = 2
TOO_FEW = "too few"
SUBGROUP_NOTE = (
    "Exploratory: the subgroups were chosen after the fact and there is no correction for "
    "testing many of them, so a difference between subgroups is a lead to check on other "
    "data, not a finding."
)


def classification(
    entries: Sequence[Entry], data: SplitData | None, images: ImageBatches, options: Options
) -> dict[str, Any]:
    """Every classifier on the test split; torch vs Keras per backbone.

    Raises:
        ValueError: If a classifier's classes differ from the data's.
    """
    classifiers = [e for e in entries if e.kind == "classifier"]
    if not classifiers or data is None:
        return {
            "rows": [], "pairs": [], "classes": [], "test_split": None, "group_by": None,
            "subgroups": _subgroup_method(),
        }  # fmt: skip
    y = data.labels("test")
    rows, predictions = [], {}
    for entry in classifiers:
        row, predicted = _classifier(entry, data, y, images, options)
        rows.append(row)
        predictions[entry.label] = predicted
    rows.sort(key=lambda r: (r["backbone"], r["framework"] != "torch", r["framework"]))
    backbones = sorted({r["backbone"] for r in rows})
    pairs = _torch_vs_keras(y, predictions, backbones, data.groups("test"))
    return {
        "rows": rows, "pairs": pairs, "classes": list(data.classes), "test_split": data.where,
        "group_by": data.group_by, "subgroups": _subgroup_method(),
    }  # fmt: skip


def _subgroup_method() -> dict[str, Any]:
    """How the subgroups of the rows were made, and that they are exploratory."""
    return {
        "exploratory": True, "multiplicity_correction": None, "note": SUBGROUP_NOTE,
        "attributes": list(SUBGROUP_ATTRIBUTES), "age_bands": [b[0] for b in AGE_BANDS],
        "min_images": SUBGROUP_MIN_IMAGES, "min_classes": SUBGROUP_MIN_CLASSES,
        "min_groups": SUBGROUP_MIN_GROUPS,
    }  # fmt: skip


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
    groups = data.groups("test")
    metrics = stats.classification_metrics(
        y, pred, proba, classes, n_resamples=min(options.bootstrap, 1000), seed=options.seed,
        groups=groups,
    )  # fmt: skip
    row = {
        "backbone": entry.backbone, "framework": entry.framework, "model": entry.model,
        "file": entry.path.name, "provider": model.provider, "n": len(y),
        "n_groups": len(set(groups)),
        **{k: interval_record(v) for k, v in metrics.items()},
        "confusion": _confusion(y, pred, len(classes)).tolist(),
        "subgroups": subgroup_records(data.test, y, pred, proba, classes, options),
    }  # fmt: skip
    return row, {"logits": logits, "pred": pred}


def subgroup_records(
    samples: Sequence,
    y: np.ndarray,
    pred: np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    options: Options,
) -> list[dict[str, Any]]:
    """One classifier's accuracy, balanced accuracy and AUCs per subgroup (exploratory).

    Subgroups are `evaluation.classification_data.subgroups` (sex, age band, body
    site; samples without the value in none). A subgroup with fewer than
    `SUBGROUP_MIN_IMAGES` images, `SUBGROUP_MIN_CLASSES` classes or
    `SUBGROUP_MIN_GROUPS` groups is reported with `status` "too few" and no metrics;
    the others with bootstrap intervals over their groups. An AUC is None where the
    subgroup lacks the class's positives or negatives.

    Args:
        samples: The test samples (with `attributes` and `group`).
        y: Their true class indices.
        pred: The predicted class indices.
        proba: The (N, K) class probabilities.
        classes: The class names.
        options: Bootstrap resamples and seed.

    Returns:
        Per subgroup: `attribute` ("sex", "age", "site"), `value`, `n` (images),
        `n_groups`, `n_classes` (present), `status` ("ok" or "too few"), `reason`
        (None or why too few), and `accuracy`, `balanced_accuracy`, `auc_<class>`
        (interval records, or None).
    """
    from evaluation import stats

    groups = np.array(sample_groups(samples), dtype=object)
    keys = ["accuracy", "balanced_accuracy", *[f"auc_{c}" for c in classes]]
    records = []
    for attribute, value, idx in subgroups(samples):
        n_groups, n_classes = len(set(groups[idx])), len(set(y[idx].tolist()))
        record: dict[str, Any] = {
            "attribute": attribute, "value": value, "n": len(idx), "n_groups": n_groups,
            "n_classes": n_classes, "status": "ok", "reason": None,
            **dict.fromkeys(keys),
        }  # fmt: skip
        short = [
            f"{count} {what} < {least}"
            for count, what, least in (
                (len(idx), "images", SUBGROUP_MIN_IMAGES),
                (n_classes, "classes", SUBGROUP_MIN_CLASSES),
                (n_groups, "groups", SUBGROUP_MIN_GROUPS),
            )
            if count < least
        ]
        if short:
            record.update(status=TOO_FEW, reason=", ".join(short))
        else:
            metrics = stats.classification_metrics(
                y[idx], pred[idx], proba[idx], classes,
                n_resamples=min(options.bootstrap, 1000), seed=options.seed,
                groups=groups[idx].tolist(),
            )  # fmt: skip
            for key in keys:
                if key in metrics and np.isfinite(metrics[key].estimate):
                    record[key] = interval_record(metrics[key])
        records.append(record)
    return records


def _torch_vs_keras(
    y: np.ndarray,
    predictions: dict[str, dict[str, np.ndarray]],
    backbones: Sequence[str],
    groups: Sequence[str],
) -> list[dict[str, Any]]:
    """Per backbone classified by both frameworks: how far their predictions agree.

    McNemar's test is the clustered one over `groups` (each sample's lesion or patient).
    """
    from evaluation import stats

    pairs = []
    for backbone in backbones:
        t, k = predictions.get(f"{backbone} torch"), predictions.get(f"{backbone} keras")
        if t is None or k is None:
            continue
        statistic, p = stats.mcnemar_test(y, t["pred"], k["pred"], groups=groups)
        pairs.append({
            "backbone": backbone, "n": len(y), "n_groups": len(set(groups)),
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
