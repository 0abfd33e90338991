"""Metrics fitted to ratings, as a comparison sees them: which items, and the held-out results.

`python -m bridge.finetune_metric` writes a fit record into the fitted scorer's
manifest (`heads.fit`) and into `<stem>.cv.json` beside the models
(`bridge.core.fitting.CV_SUFFIX`). A scorer fitted to the very items being compared
is left out of the agreement tables (`fitted_cases` says which those are); its
held-out results are reported instead (`fitted_metrics`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from bridge.core.fitting import CV_SUFFIX
from evaluation.catalog import Entry

log = logging.getLogger(__name__)


def fitted_cases(entry: Entry) -> set[str]:
    """The items whose ratings a fitted scorer's heads were fitted to (empty: not fitted)."""
    fit = entry.heads.get("fit") or {}
    folds = (fit.get("folds") or {}).get("held_out") or []
    return {case for fold in folds for case in fold}


def fitted_metrics(folder: Path) -> list[dict[str, Any]]:
    """Held-out results of the metrics fitted to ratings (`*.cv.json` beside the models).

    `split` is the outer folds' splitter as the record gives it (`GroupKFold(...)` where
    the cases were grouped by patient or lesion), `groups` the number of groups.
    """
    out = []
    for path in sorted(folder.glob(f"*{CV_SUFFIX}")):
        try:
            fit = json.loads(path.read_text())["fit"]
            results = fit["results"]
            out.append({
                "file": path.name, "metric": fit["metric"], "backbone": fit["backbone"],
                "framework": fit["framework"], "source": fit["source"]["name"],
                "start_heads": fit.get("start_heads"), "cases": fit["data"]["cases"],
                "aspect": fit["data"]["aspect"], "folds": fit["folds"]["k"],
                "split": fit["folds"].get("split"), "groups": fit["data"].get("groups"),
                "epochs": fit["chosen_epochs"], "pooled": results["pooled"],
                "per_fold": results["per_fold"], "mean_fold_srcc": results["mean_fold_srcc"],
            })  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            log.warning("%s: not a fit record (%s); left out", path.name, err)
    return out
