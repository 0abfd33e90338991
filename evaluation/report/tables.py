"""The comparison report's tables, one function per table, and the one list of them.

Every table is (header, rows) of plain values (an empty cell where a value is
missing): classification, torch vs Keras predictions, the exploratory subgroups,
retrieval, agreement, per rater SRCC, layers, inter-rater agreement, 2AFC agreement
(header only without `--2afc`), the framework table, classification baselines, fitted
metrics, rating prediction and every item's scores. `report_tables` is the one list
of them: `write_tables` writes each as `<name>.csv` and all of them, from the same
list, as the sheets of one workbook (`evaluation.report.workbook`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.core.metrics import METRICS
from bridge.core.spec import FRAMEWORKS
from evaluation.item_scores import Scores
from evaluation.items import RatedItems
from evaluation.report.workbook import WORKBOOK, ReportTable, write_workbook

Table = tuple[list[str], list[list[Any]]]  # header, rows

SUBGROUPS = "classification_subgroups"  # the subgroup table's name (`SUBGROUP_CSV`)
_BOUNDS = ("", "_low", "_high")


def report_tables(results: dict[str, Any], scores: Scores, items: RatedItems) -> list[ReportTable]:
    """Every table of the report, in order: the one list the CSVs and the workbook share.

    Args:
        results: The comparison's results (`evaluation.compare.compare`).
        scores: Every item's scores (`evaluation.item_scores.score_items`).
        items: The rated items.
    """
    aspects = results["agreement"]["aspects"]
    learned = results.get("learned") or {}
    cls = results["classification"]
    return [
        ReportTable("classification", "Classification on the held-out test split per "
                    "backbone x framework: accuracy, balanced accuracy, macro-F1 and "
                    "one-vs-rest AUCs, each with its 95% CI (_low, _high).",
                    *_classification(cls)),
        ReportTable("classification_torch_vs_keras", "The torch and Keras classifier of "
                    "each backbone: prediction agreement, McNemar's test, logit correlation.",
                    *_torch_vs_keras(cls)),
        ReportTable(SUBGROUPS, "Exploratory: each classifier by sex, age band and body "
                    "site, with 95% CIs; 'too few' where a subgroup is too small.",
                    *subgroup_table(cls)),
        ReportTable("retrieval", "Retrieval of the test split's lesions from the training "
                    "split by each feature extractor: precision, mAP and kNN accuracy at k "
                    "with 95% CIs, the tap and pooling chosen on the training split, "
                    "chance, mAP per diagnosis.",
                    *_retrieval(results.get("retrieval") or {})),
        ReportTable("agreement", "Every metric's agreement with the raters per aspect: "
                    "SRCC, KRCC, cross-fitted PLCC and RMSE with 95% CIs, against a rater, "
                    "minus the ceiling, the paired difference to the best metric; the "
                    "noise bands.", *_agreement(aspects)),
        ReportTable("per_rater_srcc", "Every metric's SRCC with each rater, per aspect.",
                    *_per_rater(aspects, results["rated"]["raters"])),
        ReportTable("layers", "SRCC of every tap and pooling mode per feature extractor "
                    "and aspect; the layer chosen inside cross-validation, on held-out "
                    "folds.", *_layers(aspects)),
        ReportTable("inter_rater", "The raters' agreement per aspect: ICC(2,1), "
                    "Krippendorff's alpha, the leave-one-rater-out ceiling and the upper "
                    "bound with 95% CIs.", *_inter_rater(aspects)),
        ReportTable("two_afc", "2AFC agreement of every metric with the raters' triplet "
                    "judgements, beside the raters' own (no rows without --2afc).",
                    *_two_afc(results.get("two_afc"))),
        ReportTable("frameworks", "Torch vs Keras per backbone: balanced accuracy, SRCC "
                    "of LPIPS and DISTS and training time per side; how their scores and "
                    "predictions agree.", *_frameworks(results["frameworks"])),
        ReportTable("classification_baselines", "scikit-learn classifiers on the feature "
                    "extractors' features: parameters chosen by inner CV, balanced accuracy "
                    "with 95% CI, macro-F1.", *_classification_baselines(learned)),
        ReportTable("fitted_metrics", "Metrics fitted to ratings, on held-out folds: "
                    "fitted and unfitted SRCC and their difference, with 95% CIs.",
                    *_fitted_metrics(results.get("fitted") or [])),
        ReportTable("rating_prediction", "Predicting the ratings from the scores "
                    "(regression, ordinal) beside the raters' own agreement on the same "
                    "scale.", *_rating_prediction(learned)),
        ReportTable("item_scores", "Every rated item: its mean rating per aspect and "
                    "every scorer's score.", *_item_scores(aspects, scores, items)),
    ]  # fmt: skip


def write_tables(
    results: dict[str, Any],
    scores: Scores,
    items: RatedItems,
    folder: Path,
    written: datetime | None = None,
) -> list[ReportTable]:
    """Write every table into `folder` as `<name>.csv` and all of them as `WORKBOOK`.

    Args:
        results: The comparison's results (the workbook's first sheet describes them).
        scores: Every item's scores.
        items: The rated items.
        folder: The report folder.
        written: When the report is written (the workbook's date; default: now).

    Returns:
        The tables written (`report_tables`).
    """
    tables = report_tables(results, scores, items)
    for table in tables:
        _write_csv(folder / f"{table.name}.csv", table.header, table.rows)
    write_workbook(tables, results, folder / WORKBOOK, written)
    return tables


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])


def _flat(value: dict | None) -> list:
    """An interval record as three cells: estimate, low, high."""
    if not value:
        return [None, None, None]
    return [value.get("estimate"), value.get("low"), value.get("high")]


def _classification(cls: dict[str, Any]) -> Table:
    keys = ["accuracy", "balanced_accuracy", "macro_f1"]
    keys += sorted({k for r in cls["rows"] for k in r if k.startswith("auc_")})
    header = ["backbone", "framework", "file", "n", "n_groups"]
    header += [f"{k}{s}" for k in keys for s in _BOUNDS]
    rows = [
        [r["backbone"], r["framework"], r["file"], r["n"], r.get("n_groups")]
        + [v for k in keys for v in _flat(r.get(k))]
        for r in cls["rows"]
    ]
    return header, rows


def subgroup_metric_keys(cls: dict[str, Any]) -> list[str]:
    """The subgroup records' metric keys, in column order."""
    return ["accuracy", "balanced_accuracy", *[f"auc_{c}" for c in cls.get("classes", [])]]


def subgroup_table(cls: dict[str, Any]) -> Table:
    """Every classifier's subgroups as one table (metric, low, high per metric)."""
    keys = subgroup_metric_keys(cls)
    header = ["backbone", "framework", "file", "attribute", "value", "n", "n_groups",
              "n_classes", "status", "reason"]  # fmt: skip
    header += [f"{k}{s}" for k in keys for s in _BOUNDS]
    rows = [
        [r["backbone"], r["framework"], r["file"], s["attribute"], s["value"], s["n"],
         s["n_groups"], s["n_classes"], s["status"], s["reason"]]
        + [v for k in keys for v in _flat(s.get(k))]
        for r in cls["rows"]
        for s in r.get("subgroups") or []
    ]  # fmt: skip
    return header, rows


def _retrieval(found: dict[str, Any]) -> Table:
    rows = found.get("rows") or []
    keys = ["precision", "map", "knn"]
    classes = sorted({c for r in rows for c in r["map_by_class"]})
    header = ["backbone", "framework", "file", "k", "n_queries", "n_groups", "n_gallery"]
    header += ["tap", "pooling", "train_map"] + [f"{k}{s}" for k in keys for s in _BOUNDS]
    header += ["chance_precision", "classifier_accuracy", "classifier_balanced_accuracy"]
    header += [f"map_{c}" for c in classes]
    out = []
    for r in rows:
        classifier = r.get("classifier") or {}
        out.append(
            [r["backbone"], r["framework"], r["file"], found["k"], r["n_queries"],
             r["n_groups"], r["n_gallery"], r["selection"]["tap"], r["selection"]["pooling"],
             r["selection"]["train_map"]]
            + [v for k in keys for v in _flat(r.get(k))]
            + [r["chance_precision"], (classifier.get("accuracy") or {}).get("estimate"),
               (classifier.get("balanced_accuracy") or {}).get("estimate")]
            + [r["map_by_class"].get(c) for c in classes]
        )  # fmt: skip
    return header, out


def _two_afc(afc: dict[str, Any] | None) -> Table:
    header = ["metric", "family", "backbone", "framework", "n_judgements", "n_triplets"]
    header += [f"two_afc{s}" for s in _BOUNDS] + ["two_afc_on_ceiling_triplets"]
    header += [f"ceiling{s}" for s in _BOUNDS]
    if not afc:
        return header, []
    ceiling = _flat(afc["ceiling"])
    rows = [
        [r["metric"], r["family"], r["backbone"], r["framework"], r["n_judgements"],
         r["n_triplets"], *_flat(r["score"]), r["score_where_ceiling"], *ceiling]
        for r in afc["rows"]
    ]  # fmt: skip
    return header, rows


def _torch_vs_keras(cls: dict[str, Any]) -> Table:
    header = [
        "backbone", "n", "n_groups", "prediction_agreement", "mcnemar_statistic", "mcnemar_p",
        "logit_correlation",
    ]  # fmt: skip
    return header, [[p.get(k) for k in header] for p in cls["pairs"]]


def _agreement(aspects: dict[str, Any]) -> Table:
    header = [
        "aspect", "metric", "family", "backbone", "framework", "best_chosen_on_data",
        "srcc", "srcc_low", "srcc_high", "krcc", "krcc_low", "krcc_high",
        "plcc_crossfit", "plcc_low", "plcc_high", "rmse_crossfit", "rmse_low", "rmse_high",
        "plcc_in_sample", "like_a_rater_srcc", "like_a_rater_low", "like_a_rater_high",
        "minus_ceiling", "minus_ceiling_low", "minus_ceiling_high", "minus_ceiling_p",
        "srcc_minus_best", "diff_low", "diff_high", "diff_p", "diff_p_adjusted",
        "diff_simultaneous_low", "diff_simultaneous_high",
    ]  # fmt: skip
    rows = []
    for aspect, a in aspects.items():
        for r in a["rows"]:
            vs = r.get("vs_best") or {}
            like = r.get("vs_raters") or {}
            minus = like.get("minus_ceiling") or {}
            rows.append([
                aspect, r["metric"], r["family"], r["backbone"], r["framework"],
                r["metric"] == a["best"],
                *_flat(r["srcc"]), *_flat(r["krcc"]), *_flat(r["plcc"]), *_flat(r.get("rmse")),
                (r.get("plcc_in_sample") or {}).get("estimate"),
                *_flat(like.get("vs_others")), *_flat(minus), minus.get("p"),
                vs.get("estimate"), vs.get("low"), vs.get("high"), vs.get("p"),
                vs.get("p_adjusted"), vs.get("simultaneous_low"), vs.get("simultaneous_high"),
            ])  # fmt: skip
        for name, band in (a.get("noise") or {}).get("bands", {}).items():
            rows.append([aspect, f"noise band {name} (low, median, high)", "baseline", None,
                         None, False, *band] + [None] * (len(header) - 9))  # fmt: skip
    return header, rows


def _per_rater(aspects: dict[str, Any], raters: Sequence[str]) -> Table:
    rows = [
        [aspect, r["metric"], *r["per_rater_srcc"]]
        for aspect, a in aspects.items()
        for r in a["rows"]
    ]
    return ["aspect", "metric", *raters], rows


def _layers(aspects: dict[str, Any]) -> Table:
    rows = []
    for aspect, a in aspects.items():
        for layer in a["layers"]:
            for point in layer["curve"]:
                rows.append([aspect, layer["model"], point["tap"], point["mode"], point["srcc"]])
            if layer["cv"]:
                cv = layer["cv"]
                rows.append(
                    [aspect, layer["model"], "CV choice: " + " | ".join(cv["chosen"]), "held-out",
                     cv["mean"]]
                )  # fmt: skip
    return ["aspect", "model", "tap", "mode", "srcc"], rows


def _inter_rater(aspects: dict[str, Any]) -> Table:
    header = [
        "aspect", "items", "groups", "missing_cells", "icc_2_1", "alpha_interval",
        "alpha_ordinal", "ceiling_srcc", "ceiling_low", "ceiling_high", "upper_bound_srcc",
        "upper_bound_low", "upper_bound_high",
    ]  # fmt: skip
    rows = []
    for aspect, a in aspects.items():
        ra = a["raters"]
        rows.append(
            [aspect, ra["n_items"], ra.get("n_groups"), ra["n_missing_cells"], ra["icc_2_1"],
             ra["krippendorff_alpha_interval"], ra["krippendorff_alpha_ordinal"],
             *_flat(ra["ceiling"]), *_flat(ra.get("upper_bound"))]
        )  # fmt: skip
    return header, rows


def _frameworks(frameworks: list[dict[str, Any]]) -> Table:
    per_side = ("balanced_accuracy", "srcc_lpips", "srcc_dists", "train_seconds")
    header = (
        ["backbone"]
        + [f"{side}_{k}" for side in FRAMEWORKS for k in per_side]
        + ["lpips_pearson_between", "lpips_max_abs_diff", "dists_pearson_between",
           "dists_max_abs_diff", "prediction_agreement", "mcnemar_p", "logit_correlation"]
    )  # fmt: skip
    rows = []
    for r in frameworks:
        line = [r["backbone"]]
        for side in FRAMEWORKS:
            s = r[side]
            line += [
                (s["balanced_accuracy"] or {}).get("estimate"),
                (s["srcc_lpips"] or {}).get("estimate"),
                (s["srcc_dists"] or {}).get("estimate"),
                s["train_seconds"],
            ]
        for metric in METRICS:
            between = r[f"{metric}_between"] or {}
            line += [between.get("pearson"), between.get("max_abs_difference")]
        c = r["classification"] or {}
        line += [c.get("prediction_agreement"), c.get("mcnemar_p"), c.get("logit_correlation")]
        rows.append(line)
    return header, rows


def _classification_baselines(learned: dict[str, Any]) -> Table:
    header = [
        "backbone", "framework", "method", "best_params", "inner_balanced_accuracy",
        "balanced_accuracy", "balanced_accuracy_low", "balanced_accuracy_high", "macro_f1",
    ]  # fmt: skip
    rows = [
        [r["backbone"], r["framework"], r["method"], json.dumps(r["best_params"]),
         r["inner_balanced_accuracy"], *_flat(r["balanced_accuracy"]), r["macro_f1"]["estimate"]]
        for r in learned.get("classification", [])
    ]  # fmt: skip
    return header, rows


def _fitted_metrics(fitted: list[dict[str, Any]]) -> Table:
    header = [
        "source", "metric", "framework", "cases", "folds", "fitted_srcc", "fitted_low",
        "fitted_high", "unfitted_srcc", "unfitted_low", "unfitted_high", "difference",
        "difference_low", "difference_high", "difference_p", "unfitted_raw_srcc",
    ]  # fmt: skip
    rows = [
        [f["source"], f["metric"], f["framework"], f["cases"], f["folds"],
         *(f["pooled"][k][x] for k in ("fitted", "unfitted", "difference")
           for x in ("srcc", "low", "high")),
         f["pooled"]["difference"].get("p"), f["pooled"]["unfitted_raw"]["srcc"]]
        for f in fitted
    ]  # fmt: skip
    return header, rows


def _rating_prediction(learned: dict[str, Any]) -> Table:
    rows = []
    for aspect, a in (learned.get("rating") or {}).items():
        for r in a["regression"]:
            rows.append([aspect, r["method"], r["srcc"], r["mae"], None, None])
        o = a["ordinal"]
        rows.append([aspect, "ordinal", None, o["mae"], o["accuracy"], o["qwk"]])
        m = a["raters"].get("mean", {})
        rows.append([aspect, "raters", None, m.get("mae"), m.get("accuracy"), m.get("qwk")])
    return ["aspect", "method", "srcc_within_folds", "mae", "accuracy", "qwk"], rows


def _item_scores(aspects: dict[str, Any], scores: Scores, items: RatedItems) -> Table:
    names = list(scores.columns)
    header = ["item", *[f"mean_{a}" for a in items.ratings], *names]
    rows = [
        [item]
        + [aspects[a]["target"][i] for a in items.ratings]
        + [scores.columns[n][i] for n in names]
        for i, item in enumerate(items.ids)
    ]
    return header, rows
