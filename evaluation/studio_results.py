"""What a rating study has produced: the exports `evaluation.compare` reads, and its status.

`export` writes a study's first answers in the format the comparison reads unchanged:

* hospital design on case folders: the long ratings table `case,rater,aspect,score`
  (plus `group` when the study's items have groups), for
  `python -m evaluation.compare --rated <cases> --ratings <file>`;
* hospital design on a region-pair table: the region-pair table with
  `<rater>_color, <rater>_texture` columns, for `--pairs <file>`;
* 2afc design: the judgement table `id,ref,box_ref,a,box_a,b,box_b[,group],rater,choice`
  (one row per judgement), for `--2afc <file>`.

Image paths are written relative to the export's folder. A study with repeated items
also gets `<name>-retest.csv`: each repeated item's first and repeated answer.

`status` gives each rater's progress, the agreement among raters on the answers so far
(ICC(2,1) and Krippendorff's alpha from `evaluation.stats`; for 2AFC the raters'
pairwise agreement and nominal alpha) and each rater's test-retest agreement.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.data.ratings import GROUP_COLUMN, SCORED_ASPECTS
from bridge.core.data.readers import SYNTHETIC_MARKER, is_synthetic
from bridge.core.files import atomic_path
from evaluation.studio import Region, Study, hospital_tables, to_csv


def export(study: Study, out: str | os.PathLike[str]) -> list[Path]:
    """Write the study's first answers (and the test-retest table); return the files written.

    A synthetic study's export gets the `SYNTHETIC` marker beside it, so that the
    comparison flags its report as it would the source data.

    Raises:
        ValueError: If no rater has answered anything yet, or `out` is not a CSV path
            (never the study's own database).
    """
    out = Path(out)
    if out.suffix.lower() != ".csv" or out.resolve() == study.path.resolve():
        raise ValueError(f"--out {out}: expected a .csv file to write the ratings to")
    first = study.first_answers()
    if not first:
        raise ValueError(f"study {study.name!r}: no answers yet; nothing to export")
    grouped = study.meta.get("grouped", False)
    base = out.resolve().parent
    kind = study.meta["source"]["kind"]
    if study.design == "2afc":
        header = ["id", "ref", "box_ref", "a", "box_a", "b", "box_b"]
        header += [GROUP_COLUMN.lower()] * grouped + ["rater", "choice"]
        items = {it.key: it for it in study.items()}
        rows = [
            [a["item"], *_regions(items[a["item"]].regions, base)]
            + [a["group"]] * grouped + [a["rater"], a["choice"]]
            for a in first
        ]  # fmt: skip
    elif kind == "pairs":
        raters = [r for r in study.raters if any(a["rater"] == r for a in first)]
        header = ["id", "image_a", "box_a", "image_b", "box_b"] + [GROUP_COLUMN.lower()] * grouped
        header += [f"{r}_{aspect}" for r in raters for aspect in SCORED_ASPECTS]
        by_item: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
        for a in first:
            for aspect in SCORED_ASPECTS:
                by_item[a["item"]][a["rater"], aspect] = a[aspect]
        rows = [
            [it.key, *_regions(it.regions, base)] + [it.group] * grouped
            + [by_item[it.key].get((r, aspect), "") for r in raters for aspect in SCORED_ASPECTS]
            for it in study.items()
        ]  # fmt: skip
    else:
        header = ["case", "rater", "aspect", "score"] + [GROUP_COLUMN.lower()] * grouped
        rows = [
            [a["item"], a["rater"], aspect, a[aspect]] + [a["group"]] * grouped
            for a in first
            for aspect in SCORED_ASPECTS
        ]
    written = [_write(out, to_csv(header, rows))]
    if study.meta.get("repeat", 0) > 0:
        written.append(_write(retest_path(out), _retest_csv(study)))
    if study.meta.get("synthetic") and not is_synthetic(out.parent):
        written.append(_write(out.parent / SYNTHETIC_MARKER, "synthetic data (dermsim)\n"))
    return written


def retest_path(out: str | os.PathLike[str]) -> Path:
    """The test-retest table written beside an export: `<stem>-retest.csv`."""
    out = Path(out)
    return out.with_name(f"{out.stem}-retest.csv")


def _regions(regions: tuple[Region, ...], base: Path) -> list[str]:
    """Path and box text of each region; paths relative to `base` where they can be."""
    cells = []
    for region in regions:
        path, box = region.record()
        with contextlib.suppress(ValueError):  # another drive (Windows): keep it absolute
            path = os.path.relpath(path, base)
        cells += [Path(path).as_posix(), box]
    return cells


def _retest_csv(study: Study) -> str:
    pairs = study.retest_pairs()
    if study.design == "2afc":
        rows = [[p["item"], p["rater"], p["first"]["choice"], p["repeat"]["choice"]] for p in pairs]
        return to_csv(["id", "rater", "first", "repeat"], rows)
    rows = [
        [p["item"], p["rater"], aspect, p["first"][aspect], p["repeat"][aspect]]
        for p in pairs
        for aspect in SCORED_ASPECTS
    ]
    return to_csv(["case", "rater", "aspect", "first", "repeat"], rows)


def _write(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# ================================================================ status


def status(study: Study) -> dict[str, Any]:
    """Per-rater progress, agreement among raters so far, and test-retest agreement."""
    answers = study.answers()
    raters = []
    for rater in study.raters:
        progress = study.progress(rater)
        mine = [a for a in answers if a["rater"] == rater]
        raters.append({
            "rater": rater, "answered": progress["answered"], "total": progress["total"],
            "items_answered": sum(not a["repeat"] for a in mine),
            "repeats_answered": sum(a["repeat"] for a in mine),
            "last_saved": max((a["saved"] for a in mine), default=None),
        })  # fmt: skip
    return {
        "study": study.name, "design": study.design, "items": len(study.items()),
        "synthetic": study.meta.get("synthetic", False), "raters": raters,
        "agreement": _agreement(study), "retest": _retest(study),
    }  # fmt: skip


def _safe(function, *args) -> dict[str, Any]:
    try:
        value = function(*args)
    except ValueError as err:
        return {"value": None, "why": str(err)}
    return {
        "value": None if np.isnan(value) else float(value),
        "why": "" if np.isfinite(value) else "undefined (no spread)",
    }


def _agreement(study: Study) -> dict[str, Any]:
    from evaluation import stats

    if study.design == "2afc":
        table = _choice_table(study)
        return {"choice": {
            "pairwise_agreement": _pairwise(table),
            "krippendorff_alpha_nominal": _safe(stats.krippendorff_alpha, table, "nominal"),
            "n_items_two_raters": int(((~np.isnan(table)).sum(axis=1) >= 2).sum()),
        }}  # fmt: skip
    out = {}
    for aspect, table in hospital_tables(study).items():
        out[aspect] = {
            "icc_2_1": _safe(stats.icc_2_1, table),
            "krippendorff_alpha_interval": _safe(stats.krippendorff_alpha, table, "interval"),
            "krippendorff_alpha_ordinal": _safe(stats.krippendorff_alpha, table, "ordinal"),
            "n_items_all_raters": int((~np.isnan(table)).all(axis=1).sum()),
        }
    return out


def _choice_table(study: Study) -> np.ndarray:
    """Items x raters: 0 for a, 1 for b, NaN not answered (first answers)."""
    keys = {it.key: i for i, it in enumerate(study.items())}
    col = {r: j for j, r in enumerate(study.raters)}
    table = np.full((len(keys), len(col)), np.nan)
    for a in study.first_answers():
        table[keys[a["item"]], col[a["rater"]]] = 0.0 if a["choice"] == "a" else 1.0
    return table


def _pairwise(table: np.ndarray) -> dict[str, Any]:
    """The fraction of rater pairs (over items judged by 2+ raters) that chose alike."""
    agree = pairs = 0
    for row in table:
        values = row[~np.isnan(row)]
        n, b = len(values), values.sum()
        if n >= 2:
            agree += b * (b - 1) / 2 + (n - b) * (n - b - 1) / 2
            pairs += n * (n - 1) / 2
    if not pairs:
        return {"value": None, "why": "no item judged by two raters yet"}
    return {"value": float(agree / pairs), "why": ""}


def _retest(study: Study) -> dict[str, Any]:
    """Per rater: repeated items answered twice, exact agreement, and more per design."""
    by_rater: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pair in study.retest_pairs():
        by_rater[pair["rater"]].append(pair)
    out: dict[str, Any] = {}
    for rater in study.raters:
        pairs = by_rater.get(rater, [])
        if study.design == "2afc":
            same = [p["first"]["choice"] == p["repeat"]["choice"] for p in pairs]
            out[rater] = {"n": len(pairs), "same_choice": float(np.mean(same)) if same else None}
            continue
        out[rater] = {"n": len(pairs)}
        for aspect in SCORED_ASPECTS:
            diff = np.array([p["first"][aspect] - p["repeat"][aspect] for p in pairs], float)
            out[rater][aspect] = {
                "exact": float(np.mean(diff == 0)) if len(diff) else None,
                "within_one": float(np.mean(np.abs(diff) <= 1)) if len(diff) else None,
                "mean_abs_difference": float(np.mean(np.abs(diff))) if len(diff) else None,
            }
    return out


def status_text(report: dict[str, Any]) -> str:
    """The status as the command line prints it."""
    lines = [
        f"study {report['study']} ({report['design']}, {report['items']} items"
        + (", synthetic" if report["synthetic"] else "") + ")",
        "",
        f"{'rater':<16}{'answered':>12}{'items':>8}{'repeats':>9}  last saved",
    ]  # fmt: skip
    for r in report["raters"]:
        lines.append(
            f"{r['rater']:<16}{r['answered']:>6}/{r['total']:<5}{r['items_answered']:>8}"
            f"{r['repeats_answered']:>9}  {r['last_saved'] or '-'}"
        )
    lines += ["", "agreement among raters (first answers):"]
    reasons: dict[str, None] = {}
    for aspect, values in report["agreement"].items():
        shown = []
        for name, value in values.items():
            if isinstance(value, dict):
                shown.append(f"{_LABELS.get(name, name)} {_number(value)}")
                if value["value"] is None:
                    reasons.setdefault(value["why"], None)
        key = next(k for k in values if k.startswith("n_"))
        lines.append(f"  {aspect:<8} " + "   ".join(shown) + f"   ({_LABELS[key]}: {values[key]})")
    lines += [f"  n/a: {why}" for why in reasons]
    lines += ["", "test-retest (repeated items):"]
    for rater, values in report["retest"].items():
        if not values["n"]:
            lines.append(f"  {rater}: no repeated item answered twice yet")
        elif report["design"] == "2afc":
            lines.append(
                f"  {rater}: {values['n']} repeats, same choice {values['same_choice']:.0%}"
            )
        else:
            parts = [
                f"{aspect} exact {values[aspect]['exact']:.0%}, within 1 "
                f"{values[aspect]['within_one']:.0%}, mean |diff| "
                f"{values[aspect]['mean_abs_difference']:.2f}"
                for aspect in SCORED_ASPECTS
            ]
            lines.append(f"  {rater}: {values['n']} repeats; " + "; ".join(parts))
    return "\n".join(lines)


_LABELS = {
    "icc_2_1": "ICC(2,1)",
    "krippendorff_alpha_interval": "alpha (interval)",
    "krippendorff_alpha_ordinal": "alpha (ordinal)",
    "krippendorff_alpha_nominal": "alpha (nominal)",
    "pairwise_agreement": "pairwise agreement",
    "n_items_all_raters": "items rated by all",
    "n_items_two_raters": "items judged by 2+ raters",
}  # fmt: skip


def _number(value: dict[str, Any]) -> str:
    return f"{value['value']:.3f}" if value["value"] is not None else "n/a"
