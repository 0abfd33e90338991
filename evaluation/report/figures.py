"""The comparison report's figures, as PNG files.

SRCC bars with CIs and the human-ceiling band, metric vs rating scatter with the
fitted logistic curve, distance by severity category, per-layer correlation curves,
confusion matrices, and a few example cases with their scores. Every figure of a
synthetic data set carries a SYNTHETIC DATA mark. Drawn with matplotlib (Agg).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.data.image import decode_image
from bridge.core.data.masks import crop_region
from evaluation.agreement import ORACLE
from evaluation.item_scores import Scores
from evaluation.items import RatedItems

SYNTHETIC_MARK = "SYNTHETIC DATA"


def draw_figures(
    results: dict[str, Any], scores: Scores, items: RatedItems, folder: Path
) -> dict[str, Path]:
    """Draw every figure into `folder` (created); return figure name -> PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir()
    figures: dict[str, Path] = {}
    mark = SYNTHETIC_MARK if results["synthetic"] else None

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
        columns[ORACLE] = items.truth[main]
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
    if best and results.get("images", True):  # patient images only when asked for
        save(_examples(plt, items, scores, best, target, main), "examples")
    examples = (results.get("retrieval") or {}).get("examples")
    if examples and examples["queries"] and (examples["synthetic"] or results.get("images")):
        save(_retrieval_examples(plt, examples), "retrieval")
    return figures


def _srcc_bars(plt, aspect: str, a: dict[str, Any]):
    """Each metric scored like a rater (or plain SRCC without raters), the ceiling, the noise."""
    rows = a["rows"]
    like = all((r.get("vs_raters") or {}).get("vs_others") for r in rows)
    values = [(r["vs_raters"]["vs_others"] if like else r["srcc"]) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    est = np.array([v["estimate"] for v in values], dtype=float)
    low = np.array([v["low"] if v["low"] is not None else np.nan for v in values], dtype=float)
    high = np.array([v["high"] if v["high"] is not None else np.nan for v in values], dtype=float)
    colours = {"lpips": "#1f77b4", "dists": "#ff7f0e", "classical": "#7f7f7f",
               "oracle": "#2ca02c", "baseline": "#d62728"}  # fmt: skip
    ax.barh(y, est, color=[colours.get(r["family"], "#9467bd") for r in rows])
    err = np.vstack([est - low, high - est])
    ax.errorbar(est, y, xerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=2, lw=1)
    band = (a.get("noise") or {}).get("bands", {}).get("srcc")
    if band:
        ax.axvspan(band[0], band[2], color="#7f7f7f", alpha=0.15, label="noise band (95%)")
    ceiling = a["raters"]["ceiling"]
    if ceiling and like:
        lo = ceiling["low"] if ceiling["low"] is not None else ceiling["estimate"]
        hi = ceiling["high"] if ceiling["high"] is not None else ceiling["estimate"]
        ax.axvspan(lo, hi, color="#2ca02c", alpha=0.15, label="human ceiling (95% CI)")
        ax.axvline(ceiling["estimate"], color="#2ca02c", lw=1.5)
        upper = a["raters"].get("upper_bound")
        if upper:
            ax.axvline(upper["estimate"], color="#2ca02c", lw=1, ls="--", label="upper bound")
    if band or (ceiling and like):
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [r["metric"] for r in rows], fontsize=8)
    ax.axvline(0, color="black", lw=0.6)
    if like:
        ax.set_xlabel("SRCC with the other raters' mean, averaged over the left-out rater (95% CI)")
        ax.set_title(f"Each metric scored like one more rater: {aspect}")
    else:
        ax.set_xlabel("SRCC with the mean rating (95% bootstrap CI)")
        ax.set_title(f"Agreement with raters: {aspect}")
    return fig


def _scatter(plt, aspect: str, names: Sequence[str], columns, target: np.ndarray):
    from evaluation import stats

    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        x = np.asarray(columns[name], float)
        ok = np.isfinite(x) & np.isfinite(target)
        ax.scatter(x[ok], target[ok], s=14, alpha=0.75)
        try:
            curve = stats.fit_logistic(x[ok], target[ok])
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
    """One panel per extractor: SRCC by tap, a line per mode; under masks dashed, beside it."""
    panels: dict[str, list[dict]] = {}
    for layer in layers:
        panels.setdefault(layer["model"].removesuffix(" masked"), []).append(layer)
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.0 * rows), squeeze=False)
    for ax, (model, group) in zip(axes.flat, panels.items(), strict=False):
        title = [model]
        for layer in group:
            masked = layer["model"].endswith(" masked")
            taps = list(dict.fromkeys(p["tap"] for p in layer["curve"]))
            for i, mode in enumerate(dict.fromkeys(p["mode"] for p in layer["curve"])):
                points = {p["tap"]: p["srcc"] for p in layer["curve"] if p["mode"] == mode}
                ax.plot(
                    range(len(taps)), [points.get(t, np.nan) for t in taps], marker="o",
                    color=f"C{i}", ls="--" if masked else "-",
                    label=f"{mode} (masked)" if masked else mode,
                )  # fmt: skip
            ax.set_xticks(
                range(len(taps)), [t.split(".")[-1] for t in taps], fontsize=7, rotation=45
            )
            if layer["cv"]:
                what = " masked" if masked else ""
                title.append(f"CV held-out SRCC{what} {layer['cv']['mean']:.2f}")
        ax.set_title("\n".join(title), fontsize=9)
        ax.set_ylabel(f"SRCC ({aspect})")
        ax.axhline(0, color="black", lw=0.5)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
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


def _examples(plt, items: RatedItems, scores: Scores, best: str, target: np.ndarray, aspect: str):
    order = [i for i in np.argsort(target) if np.isfinite(target[i])]
    picks = list(dict.fromkeys([order[0], order[len(order) // 2], order[-1]]))
    fig, axes = plt.subplots(len(picks), 2, figsize=(4.4, 2.2 * len(picks)), squeeze=False)
    for row, i in zip(axes, picks, strict=True):
        ref, box = items.references[i]
        other, obox = items.comparisons[i][0]
        row[0].imshow(crop_region(decode_image(ref), box))
        row[1].imshow(crop_region(decode_image(other), obox))
        row[0].set_title(f"{items.ids[i]}: {aspect} {target[i]:.2f}", fontsize=8)
        row[1].set_title(f"{best[:30]}: {scores.pairs[best][i, 0]:.3f}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.suptitle("Examples: lowest, median, highest mean rating", fontsize=9)
    fig.tight_layout()
    return fig


def _retrieval_examples(plt, examples: dict[str, Any]):
    """Each query beside its nearest training images; a green frame: same diagnosis."""
    queries = examples["queries"]
    columns = 1 + max(len(q["neighbours"]) for q in queries)
    fig, axes = plt.subplots(
        len(queries), columns, figsize=(1.5 * columns, 1.75 * len(queries)), squeeze=False
    )
    for row, query in zip(axes, queries, strict=True):
        row[0].imshow(decode_image(query["path"]))
        row[0].set_title(f"query: {query['label']}", fontsize=8, weight="bold")
        for ax, hit in zip(row[1:], query["neighbours"], strict=False):
            ax.imshow(decode_image(hit["path"]))
            same = hit["label"] == query["label"]
            ax.set_title(f"{hit['label']}  d={hit['distance']:.3f}", fontsize=7,
                         color="#1b7f3b" if same else "#b00020")  # fmt: skip
            for spine in ax.spines.values():
                spine.set_edgecolor("#1b7f3b" if same else "#b00020")
                spine.set_linewidth(2.5)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row[1 + len(query["neighbours"]) :]:
            ax.axis("off")
    selection = examples["selection"]
    fig.suptitle(
        f"{examples['model']} ({selection['tap']} · {selection['pooling']}, chosen on the "
        "training split): nearest first; green = same diagnosis",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
