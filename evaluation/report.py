"""Write the comparison report folder `reports/<name>/`, replaced as a whole, atomically.

It holds `report.html` (self-contained), `report.md`, the figures, and the tables as
CSV and JSON.

Figures: SRCC bars with CIs and the human-ceiling band, metric vs rating scatter with the
fitted logistic curve, distance by severity category, per-layer correlation curves,
confusion matrices, and a few example cases with their scores. A synthetic data set is
flagged on every page and every figure.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

INPUT_RULES = (
    "A model whose manifest does not match its ONNX file (or is missing) is left out and "
    "listed under 'Problems found'; --strict stops instead.",
    "A missing rating (empty cell) is left out: an item's mean rating averages the raters "
    "who scored it; items nobody rated for an aspect are left out of that aspect.",
    "--raters picks raters by name; an unknown name stops with the list of known ones.",
    "Malformed tables (a non-numeric score, an unknown column, a case folder without its "
    "images) stop with the file and the line, from the readers.",
    "Scores are oriented as distances (PSNR is negated): larger means more different.",
)

SYNTHETIC_NOTE = (
    "SYNTHETIC DATA: built-in simulated images and raters; the numbers exercise the "
    "pipeline and say nothing about real dermatologists."
)

METHODS = {
    "SRCC / KRCC": "Spearman / Kendall (tau-b) rank correlation of the raw scores with the "
    "mean rating of the raters who scored an item.",
    "PLCC": "Pearson correlation after a monotonic logistic fit of score to rating "
    "(4-parameter; VQEG 5-parameter with --fit logistic5).",
    "CIs": "bootstrap over items (BCa, paired when two metrics are compared), 95%.",
    "vs best": "paired bootstrap of the SRCC difference between the best metric and this one, "
    "with a two-sided bootstrap p-value.",
    "Human ceiling": "leave-one-rater-out: each rater's SRCC with the mean of the others, "
    "averaged over raters. A metric near the ceiling agrees with raters as well as they "
    "agree with each other.",
    "ICC(2,1), alpha": "inter-rater agreement: two-way random, absolute, single rater; "
    "Krippendorff's alpha (interval and ordinal).",
    "Layer choice": "which tap and cosine mode to use is chosen on the training folds of a "
    "k-fold cross-validation and scored on the held-out fold; the per-layer curves are "
    "descriptive (all items).",
    "Classification baselines": "logistic regression, linear SVM, random forest and "
    "k-nearest neighbours on pooled deep features, each tuned by inner cross-validation "
    "grouped by lesion: do classical models on deep features match the fine-tuned networks?",
    "Rating prediction": "ridge and support-vector regression from all distances to the mean "
    "rating, and an ordinal (proportional-odds logit) model from one distance to the rating "
    "category, in nested cross-validation: the inner folds choose, the outer folds score. "
    "Accuracy, MAE and quadratic weighted kappa against the category, beside the raters' own "
    "agreement on the same scale.",
    "Metric fine-tuning": "LPIPS linear heads and DISTS alpha/beta fitted to the mean "
    "rating (loss: minus the Pearson correlation) with the backbone frozen, clamped at zero "
    "after every step as in the originals, on the training folds of a k-fold split; the "
    "epoch is chosen on a validation part of the training folds, and results are reported "
    "on the held-out folds only (python -m bridge.finetune_metric).",
    "Orientation": "every score reads as a distance (PSNR is negated), so a positive "
    "correlation means agreement with the severity ratings.",
}


def write_report(results: dict[str, Any], scores, items, options) -> Path:
    """Write the report folder; return the path of report.html."""
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        figures = _figures(results, scores, items, tmp / "figures")
        _tables(results, scores, items, tmp)
        (tmp / "results.json").write_text(json.dumps(_plain(results), indent=2) + "\n")
        (tmp / "report.md").write_text(_markdown(results, figures), encoding="utf-8")
        (tmp / "report.html").write_text(_html(results, figures, tmp), encoding="utf-8")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "report.html"


def _replace(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# ------------------------------------------------------------------ tables


def _ci(value: dict | None, digits: int = 3) -> str:
    if not value or value.get("estimate") is None:
        return "n/a"
    est, lo, hi = value["estimate"], value.get("low"), value.get("high")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{est:.{digits}f}"
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int | np.integer):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])


def _flat(value: dict | None) -> list:
    if not value:
        return [None, None, None]
    return [value.get("estimate"), value.get("low"), value.get("high")]


def _tables(results: dict[str, Any], scores, items, out: Path) -> None:
    cls = results["classification"]
    keys = ["accuracy", "balanced_accuracy", "macro_f1"]
    aucs = sorted({k for r in cls["rows"] for k in r if k.startswith("auc_")})
    _write_csv(
        out / "classification.csv",
        ["backbone", "framework", "file", "n"]
        + [f"{k}{s}" for k in keys + aucs for s in ("", "_low", "_high")],
        [
            [r["backbone"], r["framework"], r["file"], r["n"]]
            + [v for k in keys + aucs for v in _flat(r.get(k))]
            for r in cls["rows"]
        ],
    )
    _write_csv(
        out / "classification_torch_vs_keras.csv",
        ["backbone", "prediction_agreement", "mcnemar_statistic", "mcnemar_p", "logit_correlation"],
        [[p[k] for k in ("backbone", "prediction_agreement", "mcnemar_statistic", "mcnemar_p",
                         "logit_correlation")] for p in cls["pairs"]],
    )  # fmt: skip
    rows, raters, layer_rows, inter = [], [], [], []
    for aspect, a in results["agreement"]["aspects"].items():
        for r in a["rows"]:
            vs = r.get("vs_best") or {}
            rows.append([
                aspect, r["metric"], r["family"], r["backbone"], r["framework"],
                *_flat(r["srcc"]), *_flat(r["krcc"]), *_flat(r["plcc"]),
                vs.get("estimate"), vs.get("low"), vs.get("high"), vs.get("p"),
            ])  # fmt: skip
            raters.append([aspect, r["metric"], *r["per_rater_srcc"]])
        for layer in a["layers"]:
            for point in layer["curve"]:
                layer_rows.append(
                    [aspect, layer["model"], point["tap"], point["mode"], point["srcc"]]
                )
            if layer["cv"]:
                cv = layer["cv"]
                layer_rows.append(
                    [aspect, layer["model"], "CV choice: " + " | ".join(cv["chosen"]), "held-out",
                     cv["mean"]]
                )  # fmt: skip
        ra = a["raters"]
        ceiling = ra["ceiling"] or {}
        inter.append(
            [aspect, ra["n_items"], ra["n_missing_cells"], ra["icc_2_1"],
             ra["krippendorff_alpha_interval"], ra["krippendorff_alpha_ordinal"],
             *_flat(ceiling)]
        )  # fmt: skip
    _write_csv(
        out / "agreement.csv",
        ["aspect", "metric", "family", "backbone", "framework", "srcc", "srcc_low", "srcc_high",
         "krcc", "krcc_low", "krcc_high", "plcc", "plcc_low", "plcc_high", "srcc_minus_best",
         "diff_low", "diff_high", "diff_p"],
        rows,
    )  # fmt: skip
    _write_csv(
        out / "per_rater_srcc.csv", ["aspect", "metric", *results["rated"]["raters"]], raters
    )
    _write_csv(out / "layers.csv", ["aspect", "model", "tap", "mode", "srcc"], layer_rows)
    _write_csv(
        out / "inter_rater.csv",
        ["aspect", "items", "missing_cells", "icc_2_1", "alpha_interval", "alpha_ordinal",
         "ceiling_srcc", "ceiling_low", "ceiling_high"],
        inter,
    )  # fmt: skip
    fw = []
    for r in results["frameworks"]:
        line = [r["backbone"]]
        for side in ("torch", "keras"):
            s = r[side]
            line += [
                (s["balanced_accuracy"] or {}).get("estimate"),
                (s["srcc_lpips"] or {}).get("estimate"),
                (s["srcc_dists"] or {}).get("estimate"),
                s["train_seconds"],
            ]
        for metric in ("lpips", "dists"):
            between = r[f"{metric}_between"] or {}
            line += [between.get("pearson"), between.get("max_abs_difference")]
        c = r["classification"] or {}
        line += [c.get("prediction_agreement"), c.get("mcnemar_p"), c.get("logit_correlation")]
        fw.append(line)
    _write_csv(
        out / "frameworks.csv",
        ["backbone"]
        + [f"{side}_{k}" for side in ("torch", "keras")
           for k in ("balanced_accuracy", "srcc_lpips", "srcc_dists", "train_seconds")]
        + ["lpips_pearson_between", "lpips_max_abs_diff", "dists_pearson_between",
           "dists_max_abs_diff", "prediction_agreement", "mcnemar_p", "logit_correlation"],
        fw,
    )  # fmt: skip
    learned = results.get("learned") or {}
    _write_csv(
        out / "classification_baselines.csv",
        ["backbone", "framework", "method", "best_params", "inner_balanced_accuracy",
         "balanced_accuracy", "balanced_accuracy_low", "balanced_accuracy_high", "macro_f1"],
        [[r["backbone"], r["framework"], r["method"], json.dumps(r["best_params"]),
          r["inner_balanced_accuracy"], *_flat(r["balanced_accuracy"]),
          r["macro_f1"]["estimate"]] for r in learned.get("classification", [])],
    )  # fmt: skip
    prediction = []
    _write_csv(
        out / "fitted_metrics.csv",
        ["source", "metric", "framework", "cases", "folds", "fitted_srcc", "fitted_low",
         "fitted_high", "unfitted_srcc", "unfitted_low", "unfitted_high", "difference",
         "difference_low", "difference_high", "difference_p", "unfitted_raw_srcc"],
        [[f["source"], f["metric"], f["framework"], f["cases"], f["folds"],
          *(f["pooled"][k][x] for k in ("fitted", "unfitted", "difference")
            for x in ("srcc", "low", "high")),
          f["pooled"]["difference"].get("p"), f["pooled"]["unfitted_raw"]["srcc"]]
         for f in results.get("fitted") or []],
    )  # fmt: skip
    for aspect, a in (learned.get("rating") or {}).items():
        for r in a["regression"]:
            prediction.append([aspect, r["method"], r["srcc"], r["mae"], None, None])
        o = a["ordinal"]
        prediction.append([aspect, "ordinal", None, o["mae"], o["accuracy"], o["qwk"]])
        m = a["raters"].get("mean", {})
        prediction.append([aspect, "raters", None, m.get("mae"), m.get("accuracy"), m.get("qwk")])
    _write_csv(
        out / "rating_prediction.csv",
        ["aspect", "method", "srcc_within_folds", "mae", "accuracy", "qwk"],
        prediction,
    )
    names = list(scores.columns)
    _write_csv(
        out / "item_scores.csv",
        ["item", *[f"mean_{a}" for a in items.ratings], *names],
        [
            [item]
            + [results["agreement"]["aspects"][a]["target"][i] for a in items.ratings]
            + [scores.columns[n][i] for n in names]
            for i, item in enumerate(items.ids)
        ],
    )


# ----------------------------------------------------------------- figures


def _figures(results: dict[str, Any], scores, items, folder: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir()
    figures: dict[str, Path] = {}
    mark = "SYNTHETIC DATA" if results["synthetic"] else None

    def save(fig, name: str) -> None:
        if mark:
            fig.text(0.99, 0.01, mark, ha="right", va="bottom", color="#b00020", fontsize=9,
                     weight="bold")  # fmt: skip
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        figures[name] = path

    aspects = results["agreement"]["aspects"]
    for aspect, a in aspects.items():
        save(_srcc_bars(plt, aspect, a), f"srcc_{aspect}")
    main = "overall" if "overall" in aspects else next(iter(aspects))
    a = aspects[main]
    target = np.array(a["target"], float)
    columns = dict(scores.columns)
    if items.truth.get(main) is not None:
        columns["true deviation (synthetic oracle)"] = items.truth[main]
    top = [r["metric"] for r in a["rows"] if r["metric"] in columns][:4]
    if top:
        save(_scatter(plt, main, top, columns, target), "scatter")
        save(_severity(plt, main, top[:2], columns, target), "severity")
    if a["layers"]:
        save(_layer_curves(plt, main, a["layers"]), "layers")
    cls = results["classification"]
    if cls["rows"]:
        save(_confusions(plt, cls), "confusion")
    best = a["best"]
    if best:
        save(_examples(plt, items, scores, best, target, main), "examples")
    return figures


def _srcc_bars(plt, aspect: str, a: dict[str, Any]):
    rows = a["rows"]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    est = np.array([r["srcc"]["estimate"] for r in rows])
    low = np.array([r["srcc"]["low"] if r["srcc"]["low"] is not None else np.nan for r in rows])
    high = np.array([r["srcc"]["high"] if r["srcc"]["high"] is not None else np.nan for r in rows])
    colours = {"lpips": "#1f77b4", "dists": "#ff7f0e", "classical": "#7f7f7f",
               "oracle": "#2ca02c", "baseline": "#d62728"}  # fmt: skip
    ax.barh(y, est, color=[colours.get(r["family"], "#9467bd") for r in rows])
    err = np.vstack([est - low, high - est])
    ax.errorbar(est, y, xerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=2, lw=1)
    ceiling = a["raters"]["ceiling"]
    if ceiling:
        lo = ceiling["low"] if ceiling["low"] is not None else ceiling["estimate"]
        hi = ceiling["high"] if ceiling["high"] is not None else ceiling["estimate"]
        ax.axvspan(lo, hi, color="#2ca02c", alpha=0.15, label="human ceiling (95% CI)")
        ax.axvline(ceiling["estimate"], color="#2ca02c", lw=1.5)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [r["metric"] for r in rows], fontsize=8)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("SRCC with the mean rating (95% bootstrap CI)")
    ax.set_title(f"Agreement with raters: {aspect}")
    return fig


def _scatter(plt, aspect: str, names: Sequence[str], columns, target: np.ndarray):
    from evaluation.stats import fit_logistic

    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        x = np.asarray(columns[name], float)
        ok = np.isfinite(x) & np.isfinite(target)
        ax.scatter(x[ok], target[ok], s=14, alpha=0.75)
        try:
            curve = fit_logistic(x[ok], target[ok])
            grid = np.linspace(x[ok].min(), x[ok].max(), 200)
            ax.plot(grid, curve(grid), color="black", lw=1.2)
        except (ValueError, RuntimeError):
            pass
        ax.set_xlabel(name if len(name) < 38 else name[:36] + "…", fontsize=8)
        ax.set_ylabel(f"mean {aspect} rating")
    fig.suptitle("Score vs rating, with the fitted logistic curve", fontsize=10)
    fig.tight_layout()
    return fig


def _severity(plt, aspect: str, names: Sequence[str], columns, target: np.ndarray):
    category = np.round(target)
    levels = [c for c in np.unique(category[np.isfinite(category)])]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        x = np.asarray(columns[name], float)
        groups = [x[(category == c) & np.isfinite(x)] for c in levels]
        ax.boxplot(groups, tick_labels=[f"{int(c)}" for c in levels])
        ax.set_xlabel(f"{aspect} rating category (rounded mean)")
        ax.set_ylabel(name if len(name) < 30 else name[:28] + "…", fontsize=8)
    fig.suptitle("Distance by severity category", fontsize=10)
    fig.tight_layout()
    return fig


def _layer_curves(plt, aspect: str, layers: Sequence[dict]):
    fig, axes = plt.subplots(1, len(layers), figsize=(3.4 * len(layers), 3.0), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=False):
        taps = list(dict.fromkeys(p["tap"] for p in layer["curve"]))
        for mode in dict.fromkeys(p["mode"] for p in layer["curve"]):
            points = {p["tap"]: p["srcc"] for p in layer["curve"] if p["mode"] == mode}
            ax.plot(range(len(taps)), [points.get(t, np.nan) for t in taps], marker="o", label=mode)
        ax.set_xticks(range(len(taps)), [t.split(".")[-1] for t in taps], fontsize=7, rotation=45)
        title = layer["model"]
        if layer["cv"]:
            title += f"\nCV held-out SRCC {layer['cv']['mean']:.2f}"
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(f"SRCC ({aspect})")
        ax.axhline(0, color="black", lw=0.5)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Per-layer agreement (descriptive; the choice is made inside CV)", fontsize=10)
    fig.tight_layout()
    return fig


def _confusions(plt, cls: dict[str, Any]):
    rows = cls["rows"]
    classes = cls["classes"]
    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows), 2.8), squeeze=False)
    for ax, r in zip(axes[0], rows, strict=False):
        m = np.array(r["confusion"])
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v > m.max() / 2 else "black")  # fmt: skip
        ax.set_xticks(range(len(classes)), classes, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_title(f"{r['backbone']} {r['framework']}", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
    axes[0][0].set_ylabel("true", fontsize=8)
    fig.tight_layout()
    return fig


def _examples(plt, items, scores, best: str, target: np.ndarray, aspect: str):
    from bridge.core.data.image import crop, decode_image

    order = [i for i in np.argsort(target) if np.isfinite(target[i])]
    picks = list(dict.fromkeys([order[0], order[len(order) // 2], order[-1]]))
    fig, axes = plt.subplots(len(picks), 2, figsize=(4.4, 2.2 * len(picks)), squeeze=False)
    for row, i in zip(axes, picks, strict=True):
        ref, box = items.references[i]
        other, obox = items.comparisons[i][0]
        row[0].imshow(crop(decode_image(ref), box))
        row[1].imshow(crop(decode_image(other), obox))
        row[0].set_title(f"{items.ids[i]}: {aspect} {target[i]:.2f}", fontsize=8)
        row[1].set_title(f"{best[:30]}: {scores.pairs[best][i, 0]:.3f}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.suptitle("Examples: lowest, median, highest mean rating", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------- pages


def _headline(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    aspects = results["agreement"]["aspects"]
    header = ["metric", *[f"SRCC {a}" for a in aspects]]
    first = next(iter(aspects.values()))
    main = aspects.get("overall", first)
    lines = []
    for r in main["rows"]:
        line = [r["metric"]]
        for a in aspects.values():
            match = next((x for x in a["rows"] if x["metric"] == r["metric"]), None)
            line.append(_ci(match["srcc"], 2) if match else "n/a")
        lines.append(line)
    ceiling = ["human ceiling (leave one rater out)"]
    for a in aspects.values():
        ceiling.append(_ci(a["raters"]["ceiling"], 2))
    lines.append(ceiling)
    return header, lines


def _between(b: dict | None) -> str:
    if b is None:
        return "n/a"
    return f"r={b['pearson']:.3f}, max|Δ|={b['max_abs_difference']:.2g}"


def _sections(results: dict[str, Any]) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, text, header, rows) of every table, for both page formats."""
    out = []
    header, rows = _headline(results)
    main = "overall" if "overall" in results["agreement"]["aspects"] else "the first aspect"
    out.append(
        ("Headline: agreement with raters",
         f"SRCC with the mean rating, 95% BCa bootstrap CI over {results['rated']['n_items']} "
         f"items; sorted by {main}.", header, rows)
    )  # fmt: skip
    fw_rows = []
    for r in results["frameworks"]:
        for side in ("torch", "keras"):
            s = r[side]
            between = [r["lpips_between"], r["dists_between"]]
            c = r["classification"] or {}
            fw_rows.append([
                r["backbone"], side, _ci(s["balanced_accuracy"], 2), _ci(s["macro_f1"], 2),
                _ci(s["srcc_lpips"], 2), _ci(s["srcc_dists"], 2),
                _num(s["train_seconds"], 1) if s["train_seconds"] is not None else "n/a",
                " / ".join(_between(b) for b in between) if side == "torch" else "",
                f"{_num(c.get('prediction_agreement'))}, McNemar p={_p(c.get('mcnemar_p'))}, "
                f"logit r={_num(c.get('logit_correlation'))}" if c and side == "torch" else "",
            ])  # fmt: skip
    out.append(
        ("PyTorch vs Keras, per backbone",
         "The same architecture, config, data stream and initial weights; what differs is the "
         "framework. Between: correlation and largest difference of the two frameworks' LPIPS / "
         "DISTS distances on the same region pairs; classification agreement on the test split.",
         ["backbone", "framework", "balanced acc.", "macro-F1", "SRCC LPIPS", "SRCC DISTS",
          "train s", "LPIPS / DISTS between", "predictions between"], fw_rows)
    )  # fmt: skip
    cls = results["classification"]
    if cls["rows"]:
        aucs = [f"auc_{c}" for c in cls.get("classes", [])]
        out.append(
            ("Classification on the test split",
             f"{cls.get('test_split', '')}; 95% bootstrap CIs over images.",
             ["backbone", "framework", "accuracy", "balanced acc.", "macro-F1",
              *[a.replace("auc_", "AUC ") for a in aucs]],
             [[r["backbone"], r["framework"], _ci(r["accuracy"], 2),
               _ci(r["balanced_accuracy"], 2), _ci(r["macro_f1"], 2),
               *[_ci(r.get(a), 2) for a in aucs]] for r in cls["rows"]])
        )  # fmt: skip
    for aspect, a in results["agreement"]["aspects"].items():
        out.append(
            (f"Agreement per metric: {aspect}",
             f"Best: {a['best']}. 'vs best': SRCC difference best − metric, paired bootstrap CI "
             "and p.",
             ["metric", "SRCC", "KRCC", "PLCC", "vs best", "p"],
             [[r["metric"], _ci(r["srcc"]), _ci(r["krcc"]), _ci(r["plcc"]),
               _ci(r["vs_best"]) if r["vs_best"] else "",
               _p(r["vs_best"]["p"]) if r["vs_best"] else ""] for r in a["rows"]])
        )  # fmt: skip
    raters = results["rated"]["raters"]
    for aspect, a in results["agreement"]["aspects"].items():
        out.append(
            (f"Per rater: {aspect}", "SRCC of each metric with each rater.",
             ["metric", *raters],
             [[r["metric"], *[_num(v, 2) for v in r["per_rater_srcc"]]] for r in a["rows"]])
        )  # fmt: skip
    inter = []
    for aspect, a in results["agreement"]["aspects"].items():
        ra = a["raters"]
        inter.append([
            aspect, str(ra["n_items"]), str(ra["n_missing_cells"]), _num(ra["icc_2_1"]),
            _num(ra["krippendorff_alpha_interval"]), _num(ra["krippendorff_alpha_ordinal"]),
            _ci(ra["ceiling"]),
        ])  # fmt: skip
    out.append(
        ("Inter-rater agreement and the human ceiling", "",
         ["aspect", "items", "missing cells", "ICC(2,1)", "alpha (interval)", "alpha (ordinal)",
          "ceiling SRCC"], inter)
    )  # fmt: skip
    layer_rows = []
    for aspect, a in results["agreement"]["aspects"].items():
        for layer in a["layers"]:
            cv = layer["cv"]
            if not cv:
                continue
            picks = sorted(set(cv["chosen"]), key=cv["chosen"].count, reverse=True)
            layer_rows.append([
                aspect, layer["model"], ", ".join(p.split(" ")[-1] + f" ({p.split(' ')[0]})"
                                                  for p in picks[:3]),
                f"{cv['mean']:.3f}", f"{cv['pooled']:.3f}", str(cv["folds"]),
            ])  # fmt: skip
    if layer_rows:
        out.append(
            ("Layer choice inside cross-validation",
             "Tap and cosine mode picked on training folds (highest SRCC), scored on the "
             "held-out fold: the honest estimate of a 'best layer'.",
             ["aspect", "model", "chosen (most often first)", "held-out SRCC (mean)",
              "held-out SRCC (pooled)", "folds"], layer_rows)
        )  # fmt: skip
    out += _learned_sections(results)
    return out


def _learned_sections(results: dict[str, Any]) -> list[tuple[str, str, list[str], list[list[str]]]]:
    learned = results.get("learned") or {}
    out = []
    networks = {
        (r["backbone"], r["framework"]): r["balanced_accuracy"]
        for r in results["classification"]["rows"]
    }
    rows = [
        [r["backbone"], r["framework"], r["method"],
         ", ".join(f"{k.split('__')[-1]}={v}" for k, v in r["best_params"].items()),
         _num(r["inner_balanced_accuracy"], 2), _ci(r["balanced_accuracy"], 2),
         _ci(r["macro_f1"], 2), _ci(networks.get((r["backbone"], r["framework"])), 2)]
        for r in learned.get("classification", [])
    ]  # fmt: skip
    if rows:
        out.append(
            ("Classification baselines on pooled deep features",
             "scikit-learn on the global-average-pooled taps of each exported feature extractor; "
             "hyper-parameters chosen by inner cross-validation on the training split (grouped "
             "by lesion), scored once on the same test split as the fine-tuned networks.",
             ["backbone", "framework", "method", "chosen", "inner CV bal. acc.",
              "test bal. acc.", "test macro-F1", "fine-tuned network bal. acc."], rows)
        )  # fmt: skip
    fitted = results.get("fitted") or []
    if fitted:

        def ci(d: dict) -> str:
            return _ci({"estimate": d["srcc"], "low": d["low"], "high": d["high"]})

        out.append(
            ("Metrics fitted to ratings (held-out folds)",
             "LPIPS heads / DISTS alpha-beta fitted to the mean rating on training folds only "
             "(non-negative, epoch chosen on a validation part), scored on the held-out fold; "
             "each item's distance comes from the fold model that never saw it. Fitted and "
             "unfitted distances are z-scored within folds alike; 'unfitted raw' is the "
             "starting scorer's plain SRCC.",
             ["source", "metric", "fitted in", "items / folds", "fitted SRCC",
              "unfitted SRCC", "difference (p)", "unfitted raw", "final epoch"],
             [[f["source"], f["metric"], f["framework"], f"{f['cases']} / {f['folds']}",
               ci(f["pooled"]["fitted"]), ci(f["pooled"]["unfitted"]),
               f"{ci(f['pooled']['difference'])} ({_p(f['pooled']['difference'].get('p'))})",
               ci(f["pooled"]["unfitted_raw"]), str(f["epochs"].get("final"))]
              for f in fitted])
        )  # fmt: skip
    for aspect, a in (learned.get("rating") or {}).items():
        lines = [[r["method"], _num(r["srcc"]), _num(r["mae"]), "", ""] for r in a["regression"]]
        o = a["ordinal"]
        picks = sorted(set(o["chosen"]), key=o["chosen"].count, reverse=True)
        lines.append(
            [f"ordinal logit on one distance ({', '.join(picks[:2])})", "", _num(o["mae"]),
             _num(o["accuracy"]), _num(o["qwk"])]
        )  # fmt: skip
        mean = a["raters"].get("mean", {})
        lines.append(
            ["raters vs the mean of the others", "", _num(mean.get("mae")),
             _num(mean.get("accuracy")), _num(mean.get("qwk"))]
        )  # fmt: skip
        out.append(
            (f"Predicting the {aspect} rating (nested cross-validation)",
             f"Ridge / SVR from {a['features']} per-layer and classical distances to the mean "
             "rating; an ordinal model from one distance (chosen inside the folds) to the "
             f"rating category {a['categories'][0]}–{a['categories'][-1]} (replacing a KMeans "
             "bucketing). Every number is on held-out folds.",
             ["method", "held-out SRCC (ranked within folds)", "MAE", "category accuracy",
              "QWK"], lines)
        )  # fmt: skip
    return out


FIGURE_TITLES = {
    "srcc_overall": "SRCC with CIs and the human ceiling (overall)",
    "srcc_color": "SRCC with CIs and the human ceiling (color)",
    "srcc_texture": "SRCC with CIs and the human ceiling (texture)",
    "scatter": "Score vs mean rating",
    "severity": "Distance by severity category",
    "layers": "Per-layer correlation curves",
    "confusion": "Confusion matrices (test split)",
    "examples": "Example cases",
}


def _markdown(results: dict[str, Any], figures: dict[str, Path]) -> str:
    lines = [f"# dermsim comparison report: {results['name']}", ""]
    if results["synthetic"]:
        lines += [f"> **{SYNTHETIC_NOTE}**", ""]
    lines += [f"Rated items: {results['rated']['source']}; {results['rated']['n_items']} items, "
              f"raters {', '.join(results['rated']['raters'])}; per-case rule: "
              f"{results['rated']['rule']}.", ""]  # fmt: skip
    for title, text, header, rows in _sections(results):
        lines += [f"## {title}", ""]
        if text:
            lines += [text, ""]
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    lines += ["## Figures", ""]
    for name, path in figures.items():
        lines += [f"![{FIGURE_TITLES.get(name, name)}](figures/{path.name})", ""]
    lines += ["## Methods", ""] + [f"* **{k}**: {v}" for k, v in METHODS.items()] + [""]
    lines += ["## Rules for imperfect input", ""]
    lines += [f"* {r}" for r in INPUT_RULES] + [""]
    lines += ["## Problems found", ""]
    lines += [f"* {p}" for p in results["problems"]] or ["None."]
    if results.get("notes"):
        lines += ["", "## Left out on purpose", ""] + [f"* {n}" for n in results["notes"]]
    lines += ["", "## Provenance", "", "```json", json.dumps(_plain(results["provenance"]),
                                                            indent=2), "```", ""]  # fmt: skip
    if results["synthetic"]:
        lines += [f"> **{SYNTHETIC_NOTE}**", ""]
    return "\n".join(lines)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1150px;padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;white-space:nowrap}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
.synthetic{background:#fde7ea;border:2px solid #b00020;color:#7a0016;padding:.6rem 1rem;
font-weight:600;border-radius:4px}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}pre{background:#f6f8fa;padding:1rem;overflow:auto;
font-size:.75rem}.muted{color:#666;font-size:.9rem}
"""


def _html(results: dict[str, Any], figures: dict[str, Path], folder: Path) -> str:
    e = html.escape
    banner = f'<p class="synthetic">{e(SYNTHETIC_NOTE)}</p>' if results["synthetic"] else ""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>dermsim report: {e(results['name'])}</title><style>{CSS}</style></head><body>",
        f"<h1>dermsim comparison report: {e(results['name'])}</h1>", banner,
        f"<p class='muted'>Rated items: {e(results['rated']['source'])}; "
        f"{results['rated']['n_items']} items; raters {e(', '.join(results['rated']['raters']))};"
        f" per-case rule: {e(results['rated']['rule'])}.</p>",
    ]  # fmt: skip
    sections = _sections(results)
    order = ["srcc_overall", "srcc_color", "srcc_texture", "scatter", "severity"]
    for k, (title, text, header, rows) in enumerate(sections):
        parts.append(f"<h2>{e(title)}</h2>")
        if text:
            parts.append(f"<p class='muted'>{e(text)}</p>")
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
        if k == 0:  # the key figures right after the headline
            parts += [_figure(figures[n], FIGURE_TITLES[n]) for n in order if n in figures]
    parts.append("<h2>More figures</h2>")
    parts += [
        _figure(path, FIGURE_TITLES.get(name, name))
        for name, path in figures.items()
        if name not in order
    ]
    parts.append("<h2>Methods</h2><ul>")
    parts += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in METHODS.items()]
    parts.append("</ul><h2>Rules for imperfect input</h2><ul>")
    parts += [f"<li>{e(r)}</li>" for r in INPUT_RULES]
    parts.append("</ul><h2>Problems found</h2><ul>")
    parts += [f"<li>{e(p)}</li>" for p in results["problems"]] or ["<li>None.</li>"]
    if results.get("notes"):
        parts.append("</ul><h2>Left out on purpose</h2><ul>")
        parts += [f"<li>{e(n)}</li>" for n in results["notes"]]
    parts.append("</ul><h2>Provenance</h2>")
    parts.append(f"<pre>{e(json.dumps(_plain(results['provenance']), indent=2))}</pre>")
    parts.append(banner + "</body></html>")
    return "\n".join(parts)


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
