"""The fit record of metric heads fitted to ratings, the files it goes into, and its table.

The record (format `dermsim-fit/1`) says everything needed to judge and repeat a fit:
source weights and their sha256, data, folds (and what they were grouped by), the
validation rule and every epoch it checked, the config and the held-out results. It
is stored in the heads file's metadata, in the exported scorer's manifest (`heads`),
and in `<stem>.cv.json` with every case's group and held-out distances.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.core.files import atomic_path, sha256_file
from bridge.core.fitting import (
    CV_SUFFIX,
    HEADS_SUFFIX,
    MIN_PER_PART,
    FitConfig,
    RatedData,
    unflatten_heads,
)
from bridge.core.metrics import Heads, write_fitted_heads
from bridge.core.spec import ArchSpec
from bridge.fit_protocol import CrossValidation, EpochChoice, num
from evaluation.formatting import format_interval

if TYPE_CHECKING:
    from bridge.export import Source

FIT_FORMAT = "dermsim-fit/1"


def fit_record(
    source: Source,
    metric: str,
    framework: str,
    data: RatedData,
    config: FitConfig,
    image: dict[str, Any],
    start: Heads,
    cv: CrossValidation,
    final: EpochChoice,
    results: dict[str, Any],
) -> dict[str, Any]:
    """The fit record of one metric fitted on one source.

    Args:
        source: The backbone's source.
        metric: `lpips` or `dists`.
        framework: The framework that fitted.
        data: The rated data.
        config: Fitting and validation settings.
        image: `image_size`, `resize_policy` and `interpolation` of the case images.
        start: The starting heads.
        cv: The outer cross-validation.
        final: The final fit's epoch choice.
        results: `fit_protocol.summarise(...)`.
    """
    spec = source.spec
    ids = data.ids
    return {
        "format": FIT_FORMAT,
        "metric": metric,
        "backbone": spec.name,
        "taps": [t.name for t in spec.taps],
        "framework": framework,
        "framework_version": _version("torch" if framework == "torch" else "keras"),
        "source": {
            "name": source.name,
            "weights": str(source.weights),
            "sha256": sha256_file(source.weights),
            "provenance": source.provenance,
            "training_run": (source.run or {}).get("dir"),
        },
        "start_heads": start.source,
        "data": {
            "rated": str(data.rated_dir),
            "ratings": str(data.ratings_file),
            "cases": len(data.cases),
            "case_folders": data.folders,
            "raters": list(data.raters),
            "groups": data.n_groups,
            "aspect": data.aspect,
            "target": "mean rating over the raters who rated the case",
            "synthetic": data.synthetic,
            **image,
            "case_distance": "mean over the case's comparison regions",
        },
        "folds": {
            "k": config.folds,
            "split": _split(config, cv, data),
            "held_out": [[ids[i] for i in test] for _, test in cv.folds],
        },
        "validation": {
            "rule": (
                f"a seeded {config.validation:.0%} (at least {MIN_PER_PART}"
                f"{', whole groups' if cv.grouped else ''}) of each "
                "training part chooses the epoch with the best validation SRCC (checked "
                f"every {config.check_every} epochs and at 0 = the starting heads; ties go "
                "to the higher validation Pearson, then the earliest); the heads of that "
                "epoch, trained on the rest, are kept"
            ),
            "checked_epochs": config.checkpoints(),
            "per_fold": [_choice_record(c, ids) for c in cv.choices],
            "final": _choice_record(final, ids),
        },
        "chosen_epochs": {"folds": [c.epoch for c in cv.choices], "final": final.epoch},
        "config": config.record(),
        "results": results,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    }


def _split(config: FitConfig, cv: CrossValidation, data: RatedData) -> str:
    """The outer folds' splitter, as scikit-learn would be called, and what it grouped by."""
    options = f"n_splits={config.folds}, shuffle=True, random_state={config.seed}"
    if not cv.grouped:
        return f"KFold({options})"
    return (
        f"GroupKFold({options}) over {data.n_groups} groups (the ratings table's group "
        "column: patient or lesion; a case without one is its own group)"
    )


def write_outputs(
    out_dir: str | os.PathLike,
    stem: str,
    spec: ArchSpec,
    final: EpochChoice,
    cv: CrossValidation,
    data: RatedData,
    record: dict[str, Any],
) -> tuple[Path, Path]:
    """Write `<stem>.heads.safetensors` and `<stem>.cv.json` atomically; return both paths."""
    metric = record["metric"]
    ids = data.ids
    out_dir = Path(out_dir)
    fitted = unflatten_heads(metric, final.heads, spec, stem, record)
    heads_file = write_fitted_heads(out_dir / f"{stem}{HEADS_SUFFIX}", fitted, record)
    per_case = [
        {
            "case": ids[i],
            "group": data.groups[i],
            "fold": int(cv.fold_of[i]) + 1,
            "rating": float(data.target[i]),
            "fitted_distance": float(cv.fitted[i]),
            "fitted_z": float(cv.fitted_z[i]),
            "unfitted_distance": float(cv.unfitted[i]),
            "unfitted_z": float(cv.unfitted_z[i]),
        }
        for i in range(len(ids))
    ]
    cv_file = out_dir / f"{stem}{CV_SUFFIX}"
    with atomic_path(cv_file) as tmp:
        tmp.write_text(json.dumps({"fit": record, "cases": per_case}, indent=2) + "\n")
    return heads_file, cv_file


def _choice_record(choice: EpochChoice, ids: Sequence[str]) -> dict[str, Any]:
    return {
        "fit_cases": [ids[i] for i in choice.fit_cases],
        "validation_cases": [ids[i] for i in choice.validation_cases],
        "checked": [
            {
                "epoch": e,
                "validation_srcc": num(choice.validation_srcc[e]),
                "validation_pearson": num(choice.validation_pearson[e]),
                "fit_pearson": num(choice.fit_pearson[e]),
            }
            for e in sorted(choice.validation_srcc)
        ],
        "chosen_epoch": choice.epoch,
        "frozen_heads": choice.frozen,
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _grouping(record: dict[str, Any]) -> str:
    """`" of N groups"` where the record's folds were grouped (patients, lesions), else ""."""
    grouped = record["folds"].get("split", "").startswith("GroupKFold")
    groups = record["data"].get("groups")
    return f" of {groups} groups" if grouped and groups else ""


def format_table(record: dict[str, Any]) -> str:
    """The held-out SRCC table of a fit record, fitted vs unfitted, per fold and pooled."""
    data, results = record["data"], record["results"]
    pooled = results["pooled"]

    def ci(x: dict) -> str:
        return format_interval(x["srcc"], x["low"], x["high"], signed=True)

    def signed(x: float | None) -> str:
        return format_interval(x, signed=True)

    lines = [
        f"{record['metric']} on {record['source']['name']} (fitted in {record['framework']}), "
        f"aspect {data['aspect']}, {data['cases']} rated cases"
        f"{' (synthetic)' if data['synthetic'] else ''}, {record['folds']['k']} folds"
        f"{_grouping(record)}",
        f"{'fold':>5} {'cases':>6} {'epoch':>6} {'SRCC fitted':>12} {'SRCC unfitted':>14}",
    ]
    for f in results["per_fold"]:
        lines.append(
            f"{f['fold']:>5} {f['cases']:>6} {f['epoch']:>6} {signed(f['srcc_fitted']):>12} "
            f"{signed(f['srcc_unfitted']):>14}"
        )
    diff = pooled["difference"]
    p = "" if diff["p"] is None else f", p {diff['p']:.3f}"
    means = results["mean_fold_srcc"]
    lines += [
        f"{'mean':>5} {data['cases']:>6} {'':>6} {signed(means['fitted']):>12} "
        f"{signed(means['unfitted']):>14}",
        f"pooled held-out SRCC, z-scored per fold (95% BCa): fitted {ci(pooled['fitted'])}, "
        f"unfitted {ci(pooled['unfitted'])}",
        f"difference fitted - unfitted (paired): {ci(diff)}{p}",
        f"unfitted scorer on raw distances: {ci(pooled['unfitted_raw'])}",
        f"final fit: epoch {record['chosen_epochs']['final']} (chosen on validation cases)",
    ]
    return "\n".join(lines)
