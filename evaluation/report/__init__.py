"""Write the comparison report folder `reports/<name>/`, replaced as a whole, atomically.

It holds `report.html` (self-contained), `report.md`, the figures, the tables as CSV
and JSON, and the same tables as one workbook, `report.xlsx`. A synthetic data set is
flagged on every page, every figure and the workbook's first sheet. The jobs are in
their own modules: the figures (`evaluation.report.figures`), the tables and the one
list of them (`evaluation.report.tables`), the workbook (`evaluation.report.workbook`),
the page tables (`evaluation.report.sections`), the exploratory subgroup tables
(`evaluation.report.subgroups`), the pages (`evaluation.report.pages`) and their fixed
prose (`evaluation.report.text`, `INPUT_RULES` among it).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from evaluation.formatting import plain
from evaluation.item_scores import Scores
from evaluation.items import RatedItems
from evaluation.options import Options
from evaluation.report.figures import draw_figures
from evaluation.report.pages import html_page, markdown
from evaluation.report.tables import write_tables
from evaluation.report.text import INPUT_RULES

__all__ = ["INPUT_RULES", "write_report"]


def write_report(
    results: dict[str, Any], scores: Scores, items: RatedItems, options: Options
) -> Path:
    """Write the report folder `options.out`; return the path of report.html.

    The folder is written beside its place and swapped in at the end: a failure
    leaves the previous report (or none) and no half-written folder.
    """
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        figures = draw_figures(results, scores, items, tmp / "figures")
        write_tables(results, scores, items, tmp)  # the CSVs and report.xlsx
        (tmp / "results.json").write_text(json.dumps(plain(results), indent=2) + "\n")
        (tmp / "report.md").write_text(markdown(results, figures), encoding="utf-8")
        (tmp / "report.html").write_text(html_page(results, figures), encoding="utf-8")
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
