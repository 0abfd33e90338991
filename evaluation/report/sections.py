"""The comparison report's tables as text, one function per section, for both page formats.

A `Section` is a title, a line of explanation, a header and rows of formatted cells
(`evaluation.formatting`); `evaluation.report.pages` renders the list `sections`
returns as Markdown and as HTML, in this order: the headline, torch vs Keras,
classification, agreement per aspect, per rater, inter-rater agreement, the layer
choice, 2AFC agreement (with `--2afc`), classification baselines, metrics fitted to
ratings, rating prediction.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from bridge.core.spec import FRAMEWORKS
from evaluation.formatting import format_ci as ci
from evaluation.formatting import format_interval
from evaluation.formatting import format_number as num
from evaluation.formatting import format_p as p_value
from evaluation.retrieval import framework_label


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
    out += [_retrieval(results.get("retrieval") or {})]
    out += [_agreement(aspect, a) for aspect, a in aspects.items()]
    out += [_per_rater(aspect, a, results["rated"]["raters"]) for aspect, a in aspects.items()]
    out += [_inter_rater(aspects), _layer_choice(aspects)]
    out += [_two_afc(results.get("two_afc"))]
    learned = results.get("learned") or {}
    out += [_classification_baselines(learned, results["classification"])]
    out += [_fitted_metrics(results.get("fitted") or [])]
    out += [_rating_prediction(aspect, a) for aspect, a in (learned.get("rating") or {}).items()]
    out += [_scorers(results.get("scorers") or [])]
    return [s for s in out if s is not None]


def _scorers(scorers: list[dict[str, Any]]) -> Section | None:
    if not scorers:
        return None
    return Section(
        "Scorers: what each name stands for",
        "Each metric name of the tables, and what tells its model from the others: kind, "
        "backbone, the framework and run that trained it, its heads and its exporter.",
        ["name in the tables", "scorer", "file"],
        [[s["name"], s["label"], s["file"]] for s in scorers],
    )


def _headline(results: dict[str, Any]) -> Section:
    aspects = results["agreement"]["aspects"]
    main_name = "overall" if "overall" in aspects else next(iter(aspects))
    main = aspects[main_name]
    header = ["metric", *[f"SRCC {a}" for a in aspects], f"like a rater ({main_name})"]
    rows = []
    for r in main["rows"]:
        name = r["metric"] + (
            " (best, chosen on these items)" if r["metric"] == main["best"] else ""
        )
        line = [name]
        for a in aspects.values():
            match = next((x for x in a["rows"] if x["metric"] == r["metric"]), None)
            line.append(ci(match["srcc"], 2) if match else "n/a")
        line.append(ci((r.get("vs_raters") or {}).get("vs_others"), 2))
        rows.append(line)
    noise = [a.get("noise", {}).get("bands", {}).get("srcc") for a in aspects.values()]
    draws = next((a["noise"]["draws"] for a in aspects.values() if a.get("noise")), 0)
    rows.append([f"noise band (95% of {draws} draws)", *[_band(b) for b in noise], ""])
    rows.append(["human ceiling (a rater vs the other raters)", "", *([""] * (len(aspects) - 1)),
                 ci(main["raters"]["ceiling"], 2)])  # fmt: skip
    rows.append(["upper bound (a rater vs all raters)", "", *([""] * (len(aspects) - 1)),
                 ci(main["raters"]["upper_bound"], 2)])  # fmt: skip
    sorted_by = "overall" if "overall" in aspects else "the first aspect"
    agreement = results["agreement"]
    return Section(
        "Headline: agreement with raters",
        f"SRCC with the mean rating, 95% BCa bootstrap CI over {agreement.get('n_groups', '?')} "
        f"groups (patients or lesions) of {results['rated']['n_items']} items; sorted by "
        f"{sorted_by}. 'Like a rater' scores a metric exactly as the human ceiling scores a "
        "rater (against the mean of the other raters, averaged over which rater is left out): "
        "a metric whose like-a-rater SRCC reaches the ceiling agrees with the raters as well "
        "as one more rater would. The upper bound is a rater against a mean that includes "
        "that rater. The noise band is where pure-noise scores land on these ratings.",
        header,
        rows,
    )


def _band(band: Any) -> str:
    """A noise band (low, median, high) as `[low, high]`."""
    if not band:
        return "n/a"
    return f"[{band[0]:.2f}, {band[2]:.2f}]"


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
                _train_time(s),
                " / ".join(_between(b) for b in between) if side == "torch" else "",
                f"{num(c.get('prediction_agreement'))}, McNemar p={p_value(c.get('mcnemar_p'))}, "
                f"logit r={num(c.get('logit_correlation'))}" if c and side == "torch" else "",
            ])  # fmt: skip
    return Section(
        "PyTorch vs Keras, per backbone",
        "The same architecture, config, data stream and initial weights; what differs is the "
        "framework. Train s: the epochs' seconds, with the trainer's threads and how many steps "
        "ran at once (compare times measured alike). Between: correlation and largest "
        "difference of the two frameworks' LPIPS / DISTS distances on the same region pairs; "
        "classification agreement on the test split.",
        ["backbone", "framework", "balanced acc.", "macro-F1", "SRCC LPIPS", "SRCC DISTS",
         "train s", "LPIPS / DISTS between", "predictions between"],
        rows,
    )  # fmt: skip


def _train_time(s: dict[str, Any]) -> str:
    """Training seconds with the conditions they were measured in."""
    if s["train_seconds"] is None:
        return "n/a"
    threads, beside = s.get("threads"), s.get("side_by_side")
    if threads is None:
        return f"{num(s['train_seconds'], 1)} (threads not recorded)"
    load = "alone" if (beside or 1) == 1 else f"{beside} steps at once"
    return f"{num(s['train_seconds'], 1)} ({threads} thread{'s' * (threads != 1)}, {load})"


def _classification(cls: dict[str, Any]) -> Section | None:
    if not cls["rows"]:
        return None
    aucs = [f"auc_{c}" for c in cls.get("classes", [])]
    return Section(
        "Classification on the test split",
        f"{cls.get('test_split', '')}; 95% bootstrap CIs over "
        f"{'lesions / patients' if cls.get('group_by') else 'images'} "
        f"({', '.join(sorted({str(r.get('n_groups', '?')) for r in cls['rows']}))} groups).",
        ["backbone", "framework", "accuracy", "balanced acc.", "macro-F1",
         *[a.replace("auc_", "AUC ") for a in aucs]],
        [[r["backbone"], r["framework"], ci(r["accuracy"], 2), ci(r["balanced_accuracy"], 2),
          ci(r["macro_f1"], 2), *[ci(r.get(a), 2) for a in aucs]] for r in cls["rows"]],
    )  # fmt: skip


def _retrieval(found: dict[str, Any]) -> Section | None:
    if not found.get("rows"):
        return None
    k = found["k"]
    by = {"lesion_id": "lesions", "patient_id": "patients"}.get(found.get("group_by"), "images")
    return Section(
        f"Retrieval: the {k} nearest training images of each test image",
        f"Gallery: {found['gallery']}; queries: {found['queries']}; never the query's own "
        f"lesion or patient. 95% bootstrap CIs over {by}. Tap and pooling chosen on the "
        "training split only. The classifier of the same training run beside it.",
        ["backbone", "framework", "tap · pooling", f"precision@{k}", f"mAP@{k}",
         f"{k}-NN accuracy", "chance", "classifier accuracy"],
        [[r["backbone"], framework_label(r),
          f"{r['selection']['tap']} · {r['selection']['pooling']}",
          ci(r["precision"], 2), ci(r["map"], 2), ci(r["knn"], 2),
          num(r["chance_precision"], 2),
          ci((r.get("classifier") or {}).get("accuracy"), 2)]
         for r in found["rows"]],
    )  # fmt: skip


def _two_afc(afc: dict[str, Any] | None) -> Section | None:
    if not afc:
        return None
    ceiling = afc["ceiling"]
    text = (
        f"{afc['n_judgements']} judgements of {afc['n_triplets']} triplets by "
        f"{len(afc['raters'])} raters ({afc['source']}). 2AFC: the fraction of judgements "
        "where the metric prefers the candidate the rater chose (a tie counts half); 95% "
        f"bootstrap CIs over triplets ({afc['n_groups']} groups). "
    )
    if ceiling:
        text += (
            f"Raters' own agreement (each judgement against the other raters' of the same "
            f"triplet, {afc['n_triplets_ceiling']} triplets judged twice or more): "
            f"{ci(ceiling, 3)}; the last column is the metric on those same triplets."
        )
    else:
        text += "No triplet was judged by two raters: no ceiling."
    return Section(
        "2AFC agreement with the raters' choices",
        text,
        ["metric", "family", "2AFC", "judgements", "on the ceiling's triplets"],
        [[r["metric"], r["family"], ci(r["score"], 3), str(r["n_judgements"]),
          num(r["score_where_ceiling"], 3)]
         for r in afc["rows"]],
    )  # fmt: skip


def _agreement(aspect: str, a: dict[str, Any]) -> Section:
    choice = a.get("best_choice") or {}
    cv = choice.get("cv")
    text = (
        f"Best: {a['best']}, chosen on these items (the highest SRCC: an optimistic pick). "
        "PLCC and RMSE are cross-fitted (the curve fitted on the other folds); 'in-sample' "
        "fits and scores on the same items. 'Like a rater' and '− ceiling': the metric "
        "against the other raters' mean, and its paired difference from the human ceiling. "
        "'vs best': SRCC difference best − metric with its bootstrap CI and raw p; 'p adj.' "
        f"is familywise-adjusted ({choice.get('adjustment', 'max-T')})."
    )
    if cv:
        picks = sorted(dict.fromkeys(cv["chosen"]), key=cv["chosen"].count, reverse=True)
        text += (
            f" Choosing the best inside {cv['folds']}-fold CV picks {', '.join(picks[:3])} and "
            f"scores a held-out SRCC of {cv['mean']:.3f}: the honest value of 'the best metric'."
        )
    band = (a.get("noise") or {}).get("bands", {})
    if band.get("plcc"):
        text += (
            f" Noise band: SRCC {_band(band.get('srcc'))} ({a['noise']['draws']} draws), "
            f"PLCC {_band(band['plcc'])} ({a['noise'].get('plcc_draws', '?')} draws)."
        )
    rows = []
    for r in a["rows"]:
        vs, like = r.get("vs_best"), r.get("vs_raters") or {}
        minus = like.get("minus_ceiling")
        rows.append([
            r["metric"], ci(r["srcc"]), ci(r["krcc"]), ci(r["plcc"]), ci(r.get("rmse")),
            num((r.get("plcc_in_sample") or {}).get("estimate")),
            ci(like.get("vs_others")),
            f"{ci(minus, 2)} (p={p_value(minus['p'])})" if minus else "",
            ci(vs) if vs else "", p_value(vs["p"]) if vs else "",
            p_value(vs["p_adjusted"]) if vs else "",
        ])  # fmt: skip
    return Section(
        f"Agreement per metric: {aspect}",
        text,
        ["metric", "SRCC", "KRCC", "PLCC (cross-fitted)", "RMSE", "PLCC in-sample",
         "like a rater", "− ceiling", "vs best", "p", "p adj."],
        rows,
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
            aspect, str(ra["n_items"]), str(ra.get("n_groups", "")), str(ra["n_missing_cells"]),
            num(ra["icc_2_1"]), num(ra["krippendorff_alpha_interval"]),
            num(ra["krippendorff_alpha_ordinal"]), ci(ra["ceiling"]), ci(ra.get("upper_bound")),
        ])  # fmt: skip
    return Section(
        "Inter-rater agreement and the human ceiling",
        "Ceiling: each rater's SRCC with the mean of the other raters, averaged over raters "
        "(how well one more rater agrees with the rest). Upper bound: each rater with the mean "
        "of all raters, itself included. CIs: percentile bootstrap over groups.",
        ["aspect", "items", "groups", "missing cells", "ICC(2,1)", "alpha (interval)",
         "alpha (ordinal)", "ceiling SRCC", "upper bound SRCC"],
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
        "by lesion), scored once on the same test split as the fine-tuned networks; CIs "
        "resample lesions.",
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
