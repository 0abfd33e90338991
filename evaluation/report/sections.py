"""The comparison report's tables as text, one function per section, for both page formats.

A `Section` is a title, a line of explanation, a header and rows of formatted cells
(`evaluation.formatting`); `evaluation.report.pages` renders the list `sections`
returns as Markdown and as HTML, in this order: the headline, torch vs Keras,
classification, agreement per aspect, per rater, inter-rater agreement, the layer
choice, classification baselines, metrics fitted to ratings, rating prediction.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from bridge.core.spec import FRAMEWORKS
from evaluation.formatting import format_ci as ci
from evaluation.formatting import format_interval
from evaluation.formatting import format_number as num
from evaluation.formatting import format_p as p_value


class Section(NamedTuple):
    """One table of the report pages.

    Attributes:
        title: The section's title.
        text: A line of explanation ("" for none).
        header: Column names.
        rows: Formatted cells.
    """

    title: str
    text: str
    header: list[str]
    rows: list[list[str]]


def sections(results: dict[str, Any]) -> list[Section]:
    """Every table of the pages, in order (a table without rows is left out)."""
    aspects = results["agreement"]["aspects"]
    out = [_headline(results), _frameworks(results["frameworks"])]
    out += [_classification(results["classification"])]
    out += [_agreement(aspect, a) for aspect, a in aspects.items()]
    out += [_per_rater(aspect, a, results["rated"]["raters"]) for aspect, a in aspects.items()]
    out += [_inter_rater(aspects), _layer_choice(aspects)]
    learned = results.get("learned") or {}
    out += [_classification_baselines(learned, results["classification"])]
    out += [_fitted_metrics(results.get("fitted") or [])]
    out += [_rating_prediction(aspect, a) for aspect, a in (learned.get("rating") or {}).items()]
    return [s for s in out if s is not None]


def _headline(results: dict[str, Any]) -> Section:
    aspects = results["agreement"]["aspects"]
    header = ["metric", *[f"SRCC {a}" for a in aspects]]
    main = aspects.get("overall", next(iter(aspects.values())))
    rows = []
    for r in main["rows"]:
        line = [r["metric"]]
        for a in aspects.values():
            match = next((x for x in a["rows"] if x["metric"] == r["metric"]), None)
            line.append(ci(match["srcc"], 2) if match else "n/a")
        rows.append(line)
    rows.append(
        [
            "human ceiling (leave one rater out)",
            *[ci(a["raters"]["ceiling"], 2) for a in aspects.values()],
        ]
    )
    sorted_by = "overall" if "overall" in aspects else "the first aspect"
    return Section(
        "Headline: agreement with raters",
        f"SRCC with the mean rating, 95% BCa bootstrap CI over {results['rated']['n_items']} "
        f"items; sorted by {sorted_by}.",
        header,
        rows,
    )


def _between(b: dict | None) -> str:
    if b is None:
        return "n/a"
    return f"r={b['pearson']:.3f}, max|Δ|={b['max_abs_difference']:.2g}"


def _frameworks(frameworks: list[dict[str, Any]]) -> Section:
    rows = []
    for r in frameworks:
        for side in FRAMEWORKS:
            s = r[side]
            between = [r["lpips_between"], r["dists_between"]]
            c = r["classification"] or {}
            rows.append([
                r["backbone"], side, ci(s["balanced_accuracy"], 2), ci(s["macro_f1"], 2),
                ci(s["srcc_lpips"], 2), ci(s["srcc_dists"], 2),
                num(s["train_seconds"], 1) if s["train_seconds"] is not None else "n/a",
                " / ".join(_between(b) for b in between) if side == "torch" else "",
                f"{num(c.get('prediction_agreement'))}, McNemar p={p_value(c.get('mcnemar_p'))}, "
                f"logit r={num(c.get('logit_correlation'))}" if c and side == "torch" else "",
            ])  # fmt: skip
    return Section(
        "PyTorch vs Keras, per backbone",
        "The same architecture, config, data stream and initial weights; what differs is the "
        "framework. Between: correlation and largest difference of the two frameworks' LPIPS / "
        "DISTS distances on the same region pairs; classification agreement on the test split.",
        ["backbone", "framework", "balanced acc.", "macro-F1", "SRCC LPIPS", "SRCC DISTS",
         "train s", "LPIPS / DISTS between", "predictions between"],
        rows,
    )  # fmt: skip


def _classification(cls: dict[str, Any]) -> Section | None:
    if not cls["rows"]:
        return None
    aucs = [f"auc_{c}" for c in cls.get("classes", [])]
    return Section(
        "Classification on the test split",
        f"{cls.get('test_split', '')}; 95% bootstrap CIs over images.",
        ["backbone", "framework", "accuracy", "balanced acc.", "macro-F1",
         *[a.replace("auc_", "AUC ") for a in aucs]],
        [[r["backbone"], r["framework"], ci(r["accuracy"], 2), ci(r["balanced_accuracy"], 2),
          ci(r["macro_f1"], 2), *[ci(r.get(a), 2) for a in aucs]] for r in cls["rows"]],
    )  # fmt: skip


def _agreement(aspect: str, a: dict[str, Any]) -> Section:
    return Section(
        f"Agreement per metric: {aspect}",
        f"Best: {a['best']}. 'vs best': SRCC difference best − metric, paired bootstrap CI and p.",
        ["metric", "SRCC", "KRCC", "PLCC", "vs best", "p"],
        [[r["metric"], ci(r["srcc"]), ci(r["krcc"]), ci(r["plcc"]),
          ci(r["vs_best"]) if r["vs_best"] else "",
          p_value(r["vs_best"]["p"]) if r["vs_best"] else ""] for r in a["rows"]],
    )  # fmt: skip


def _per_rater(aspect: str, a: dict[str, Any], raters: list[str]) -> Section:
    return Section(
        f"Per rater: {aspect}",
        "SRCC of each metric with each rater.",
        ["metric", *raters],
        [[r["metric"], *[num(v, 2) for v in r["per_rater_srcc"]]] for r in a["rows"]],
    )


def _inter_rater(aspects: dict[str, Any]) -> Section:
    rows = []
    for aspect, a in aspects.items():
        ra = a["raters"]
        rows.append([
            aspect, str(ra["n_items"]), str(ra["n_missing_cells"]), num(ra["icc_2_1"]),
            num(ra["krippendorff_alpha_interval"]), num(ra["krippendorff_alpha_ordinal"]),
            ci(ra["ceiling"]),
        ])  # fmt: skip
    return Section(
        "Inter-rater agreement and the human ceiling",
        "",
        ["aspect", "items", "missing cells", "ICC(2,1)", "alpha (interval)", "alpha (ordinal)",
         "ceiling SRCC"],
        rows,
    )  # fmt: skip


def _layer_choice(aspects: dict[str, Any]) -> Section | None:
    rows = []
    for aspect, a in aspects.items():
        for layer in a["layers"]:
            cv = layer["cv"]
            if not cv:
                continue
            picks = sorted(dict.fromkeys(cv["chosen"]), key=cv["chosen"].count, reverse=True)
            rows.append([
                aspect, layer["model"],
                ", ".join(p.split(" ")[-1] + f" ({p.split(' ')[0]})" for p in picks[:3]),
                f"{cv['mean']:.3f}", f"{cv['pooled']:.3f}", str(cv["folds"]),
            ])  # fmt: skip
    if not rows:
        return None
    return Section(
        "Layer choice inside cross-validation",
        "Tap and cosine mode picked on training folds (highest SRCC), scored on the held-out "
        "fold: the honest estimate of a 'best layer'.",
        ["aspect", "model", "chosen (most often first)", "held-out SRCC (mean)",
         "held-out SRCC (pooled)", "folds"],
        rows,
    )  # fmt: skip


def _classification_baselines(learned: dict[str, Any], cls: dict[str, Any]) -> Section | None:
    networks = {(r["backbone"], r["framework"]): r["balanced_accuracy"] for r in cls["rows"]}
    rows = [
        [r["backbone"], r["framework"], r["method"],
         ", ".join(f"{k.split('__')[-1]}={v}" for k, v in r["best_params"].items()),
         num(r["inner_balanced_accuracy"], 2), ci(r["balanced_accuracy"], 2),
         ci(r["macro_f1"], 2), ci(networks.get((r["backbone"], r["framework"])), 2)]
        for r in learned.get("classification", [])
    ]  # fmt: skip
    if not rows:
        return None
    return Section(
        "Classification baselines on pooled deep features",
        "scikit-learn on the global-average-pooled taps of each exported feature extractor; "
        "hyper-parameters chosen by inner cross-validation on the training split (grouped "
        "by lesion), scored once on the same test split as the fine-tuned networks.",
        ["backbone", "framework", "method", "chosen", "inner CV bal. acc.",
         "test bal. acc.", "test macro-F1", "fine-tuned network bal. acc."],
        rows,
    )  # fmt: skip


def _srcc(d: dict[str, Any]) -> str:
    """A fit record's SRCC interval (`srcc`, `low`, `high`) as text."""
    return format_interval(d["srcc"], d["low"], d["high"])


def _fitted_metrics(fitted: list[dict[str, Any]]) -> Section | None:
    if not fitted:
        return None
    rows = []
    for f in fitted:
        pooled = f["pooled"]
        rows.append([
            f["source"], f["metric"], f["framework"], f"{f['cases']} / {f['folds']}",
            _srcc(pooled["fitted"]), _srcc(pooled["unfitted"]),
            f"{_srcc(pooled['difference'])} ({p_value(pooled['difference'].get('p'))})",
            _srcc(pooled["unfitted_raw"]), str(f["epochs"].get("final")),
        ])  # fmt: skip
    return Section(
        "Metrics fitted to ratings (held-out folds)",
        "LPIPS heads / DISTS alpha-beta fitted to the mean rating on training folds only "
        "(non-negative, epoch chosen on a validation part), scored on the held-out fold; "
        "each item's distance comes from the fold model that never saw it. Fitted and "
        "unfitted distances are z-scored within folds alike; 'unfitted raw' is the "
        "starting scorer's plain SRCC.",
        ["source", "metric", "fitted in", "items / folds", "fitted SRCC",
         "unfitted SRCC", "difference (p)", "unfitted raw", "final epoch"],
        rows,
    )  # fmt: skip


def _rating_prediction(aspect: str, a: dict[str, Any]) -> Section:
    rows = [[r["method"], num(r["srcc"]), num(r["mae"]), "", ""] for r in a["regression"]]
    o = a["ordinal"]
    picks = sorted(dict.fromkeys(o["chosen"]), key=o["chosen"].count, reverse=True)
    rows.append(
        [f"ordinal logit on one distance ({', '.join(picks[:2])})", "", num(o["mae"]),
         num(o["accuracy"]), num(o["qwk"])]
    )  # fmt: skip
    mean = a["raters"].get("mean", {})
    rows.append(
        ["raters vs the mean of the others", "", num(mean.get("mae")),
         num(mean.get("accuracy")), num(mean.get("qwk"))]
    )  # fmt: skip
    return Section(
        f"Predicting the {aspect} rating (nested cross-validation)",
        f"Ridge / SVR from {a['features']} per-layer and classical distances to the mean "
        "rating; an ordinal model from one distance (chosen inside the folds) to the rating "
        f"category {a['categories'][0]}–{a['categories'][-1]} (replacing a KMeans bucketing). "
        "Every number is on held-out folds.",
        ["method", "held-out SRCC (ranked within folds)", "MAE", "category accuracy", "QWK"],
        rows,
    )
