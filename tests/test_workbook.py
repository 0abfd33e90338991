"""The comparison report's workbook, `report.xlsx`: the CSV tables as sheets, and the About sheet.

The tables come from the real table functions (`evaluation.report.tables`) run on a
small hand-made results set, scores and rated items: no models, no comparison run, a
second or so.
"""

from __future__ import annotations

import csv
import math
import re
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from openpyxl import load_workbook

from evaluation.report.tables import ReportTable, report_tables, write_tables
from evaluation.report.workbook import (
    ABOUT,
    WORKBOOK,
    cell_value,
    sheet_names,
    write_workbook,
)

WRITTEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def _ci(estimate: float, width: float = 0.1) -> dict[str, float]:
    return {"estimate": estimate, "low": estimate - width, "high": estimate + width}


def _results(synthetic: bool = True) -> dict:
    """A tiny comparison's results: one classifier, two metrics on three items, one aspect."""
    subgroups = [
        {"attribute": "sex", "value": "female", "n": 20, "n_groups": 10, "n_classes": 2,
         "status": "ok", "reason": None, "accuracy": _ci(0.8), "balanced_accuracy": _ci(0.78),
         "auc_malignant": None},
        {"attribute": "sex", "value": "male", "n": 8, "n_groups": 4, "n_classes": 2,
         "status": "too few", "reason": "8 images < 10"},
    ]  # fmt: skip
    metric = {
        "metric": "lpips_vgg", "family": "lpips", "backbone": "vgg16_tiny", "framework": "torch",
        "srcc": _ci(0.6), "krcc": _ci(0.45), "plcc": _ci(0.62), "rmse": None,
        "plcc_in_sample": {"estimate": np.float64(0.65)},
        "per_rater_srcc": [0.55, np.float32(0.61)],
    }  # fmt: skip
    baseline = {
        **metric, "metric": "ssim", "family": "classical", "backbone": None, "framework": None,
        "vs_best": {"estimate": -0.2, "low": -0.4, "high": 0.0, "p": 0.04, "p_adjusted": 0.08},
        "per_rater_srcc": [float("nan"), 0.1],
    }  # fmt: skip
    overall = {
        "best": "lpips_vgg",
        "rows": [metric, baseline],
        "noise": {"bands": {"95%": [-0.3, 0.0, 0.3]}},
        "layers": [{"model": "vgg16_tiny torch",
                    "curve": [{"tap": "block1", "mode": "gap", "srcc": 0.3}],
                    "cv": {"chosen": ["block1 gap"], "mean": 0.28}}],
        "raters": {"n_items": 3, "n_groups": 3, "n_missing_cells": 0, "icc_2_1": 0.7,
                   "krippendorff_alpha_interval": 0.68, "krippendorff_alpha_ordinal": 0.66,
                   "ceiling": _ci(0.8), "upper_bound": None},
        "target": np.array([1.5, 2.0, 3.5]),
    }  # fmt: skip
    return {
        "name": "tiny",
        "synthetic": synthetic,
        "rated": {"source": "synthetic/rated", "n_items": 3, "raters": ["R1", "R2"],
                  "aspects": ["overall"], "rule": "mean"},
        "classification": {
            "classes": ["malignant"],
            "rows": [{"backbone": "vgg16_tiny", "framework": "torch", "file": "c.onnx", "n": 32,
                      "n_groups": np.int64(16), "accuracy": _ci(0.75),
                      "balanced_accuracy": _ci(0.7), "macro_f1": _ci(0.69),
                      "auc_malignant": _ci(0.8), "subgroups": subgroups}],
            "pairs": [{"backbone": "vgg16_tiny", "n": 32, "n_groups": 16,
                       "prediction_agreement": 0.9375, "mcnemar_statistic": 0.5,
                       "mcnemar_p": 0.48, "logit_correlation": np.float64(0.97)}],
        },
        "retrieval": {},
        "agreement": {"aspects": {"overall": overall}},
        "two_afc": None,
        "learned": {"classification": [], "rating": {"overall": {
            "regression": [{"method": "ridge", "srcc": 0.4, "mae": 0.5}],
            "ordinal": {"mae": 0.6, "accuracy": 0.5, "qwk": 0.3},
            "raters": {"mean": {"mae": 0.4, "accuracy": 0.6, "qwk": 0.5}}}}},
        "fitted": [],
        "frameworks": [],
        "provenance": {
            "command": "python -m evaluation.compare",
            "options": {"models": "models/demo", "bootstrap": "200"},
            "versions": {
                "dermsim": "0.1.0", "python": "3.11.9", "numpy": "2.1.0", "onnxruntime": "1.20.1"
            },
            "execution_provider": "CPUExecutionProvider",
            "seed": 0,
        },
    }  # fmt: skip


# the second item's id starts with "=": a cell of text, never a formula
SCORES = SimpleNamespace(
    columns={"lpips_vgg": np.array([0.1, 0.25, np.nan]), "ssim": np.array([0.9, 0.8, 0.7])}
)
ITEMS = SimpleNamespace(ratings={"overall": None}, ids=["case1", "=HYPERLINK(1)", "case3"])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report folder with every table as CSV and report.xlsx; the tables written."""
    folder = tmp_path_factory.mktemp("report")
    return folder, write_tables(_results(), SCORES, ITEMS, folder, WRITTEN)


def _rows(sheet) -> list[list]:
    return [list(row) for row in sheet.iter_rows(values_only=True)]


def _printed_step(text: str) -> float:
    """The precision a number is printed with: 0.01 for "0.61", 1 for "16", 1e-5 for "1e-05"."""
    mantissa, _, exponent = text.lower().partition("e")
    return 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))


def _same(text: str, cell) -> bool:
    """Does a workbook cell hold what the CSV's text says?"""
    if cell is None:
        return text in ("", "nan", "inf", "-inf")  # missing or not finite: an empty cell
    if isinstance(cell, bool):
        return text == str(cell)
    if isinstance(cell, int | float):
        return abs(float(text) - cell) <= _printed_step(text) / 2
    return text == cell


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def test_the_workbook_has_every_csv_as_a_sheet_cell_by_cell(report):
    folder, tables = report
    assert sorted(p.stem for p in folder.glob("*.csv")) == sorted(t.name for t in tables)
    book = load_workbook(folder / WORKBOOK)
    assert book.sheetnames == [ABOUT, *(t.name for t in tables)]  # the CSV stems
    numbers = 0
    for table in tables:
        with open(folder / f"{table.name}.csv", newline="", encoding="utf-8") as f:
            header, *rows = list(csv.reader(f))
        sheet = book[table.name]
        got = _rows(sheet)
        assert got[0] == header, table.name
        assert len(got) == len(rows) + 1, table.name
        for k, (text_row, cells) in enumerate(zip(rows, got[1:], strict=True), start=2):
            assert len(cells) == len(text_row), (table.name, k)
            for text, cell in zip(text_row, cells, strict=True):
                assert _same(text, cell), (table.name, k, text, cell)
                if _is_number(text):  # numbers as numbers, never as text
                    assert isinstance(cell, int | float) and not isinstance(cell, bool)
                    numbers += 1
        assert sheet.freeze_panes == "A2" and all(c.font.b for c in sheet[1]), table.name
    assert numbers > 50
    ids = book["item_scores"]
    assert ids["A3"].value == "=HYPERLINK(1)" and ids["A3"].data_type == "s"  # not a formula
    assert ids["C4"].value is None  # NaN: an empty cell
    assert book["agreement"]["F2"].value is True  # best_chosen_on_data: a boolean
    assert book["classification"]["E2"].value == 16  # a numpy integer, an int


def test_the_about_sheet_says_what_the_data_was(report, tmp_path):
    folder, tables = report
    about = {row[0]: row[1:] for row in _rows(load_workbook(folder / WORKBOOK)[ABOUT]) if row[0]}
    assert list(about)[:2] == ["dermsim comparison report", "SYNTHETIC DATA"]  # at the top
    assert about["data"][0] == "synthetic"
    assert about["command"][0] == "python -m evaluation.compare"
    assert about["option bootstrap"][0] == "200"
    assert about["dermsim"][0] == "0.1.0"
    assert about["numpy"][0] == "2.1.0" and about["onnxruntime"][0] == "1.20.1"
    assert about["written"][0] == "2024-05-06 07:08:09 UTC"
    for table in tables:  # every sheet listed, with its file and what it holds
        assert about[table.name][1:] == [f"{table.name}.csv", len(table.rows)]
        assert about[table.name][0]
    real = _results(synthetic=False)
    write_workbook(report_tables(real, SCORES, ITEMS), real, tmp_path / WORKBOOK, WRITTEN)
    cells = [c for row in _rows(load_workbook(tmp_path / WORKBOOK)[ABOUT]) for c in row]
    assert "not marked synthetic" in cells
    assert not any("SYNTHETIC" in str(c) for c in cells)


def test_long_and_odd_sheet_names_are_made_valid_and_unique(tmp_path):
    odd = ["a" * 40, "a" * 40 + "b", "A" * 29 + "~2", "x/y:z[1]*?\\", "about", "History",
           "'quoted'", "", "table"]  # fmt: skip
    names = sheet_names(odd)
    assert names == [
        "a" * 31, "a" * 29 + "~2", "A" * 29 + "~3", "x_y_z_1____", "about~2", "History~2",
        "quoted", "table", "table~2",
    ]  # fmt: skip
    assert sheet_names(odd) == names  # deterministic
    tables = [ReportTable(n, "odd", ["x"], [[1]]) for n in odd]
    write_workbook(tables, _results(), tmp_path / WORKBOOK, WRITTEN)
    assert load_workbook(tmp_path / WORKBOOK).sheetnames == [ABOUT, *names]
    for name in names:
        assert len(name) <= 31 and not re.search(r"[\[\]:*?/\\]", name)
        assert name[0] != "'" and name[-1] != "'"
    assert len({n.casefold() for n in [ABOUT, *names]}) == len(names) + 1


def test_the_workbook_is_deterministic_and_written_atomically(report, tmp_path):
    folder, tables = report
    again = tmp_path / WORKBOOK
    write_workbook(tables, _results(), again, WRITTEN.astimezone(timezone(timedelta(hours=2))))
    assert again.read_bytes() == (folder / WORKBOOK).read_bytes()
    with zipfile.ZipFile(again) as parts:  # every part dated as of the report, not of writing
        assert {p.date_time for p in parts.infolist()} == {(2024, 5, 6, 7, 8, 8)}  # 2 s steps
    properties = load_workbook(again).properties
    assert properties.created == properties.modified == WRITTEN.replace(tzinfo=None)
    assert [p.name for p in tmp_path.iterdir()] == [WORKBOOK]  # no temporary file left
    before = again.read_bytes()
    with pytest.raises(ValueError, match="expected 'rated' and 'provenance'"):
        write_workbook(tables, {"name": "x"}, again, WRITTEN)
    with pytest.raises(ValueError, match="expected unique names"):
        write_workbook([*tables, tables[0]], _results(), again, WRITTEN)
    with pytest.raises(ValueError, match="timezone-aware"):
        write_workbook(tables, _results(), again, datetime(2024, 1, 1))
    assert again.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [WORKBOOK]


def test_cell_values():
    assert cell_value(np.float32(0.5)) == 0.5 and type(cell_value(np.float32(0.5))) is float
    assert type(cell_value(np.int64(3))) is int and cell_value(np.bool_(True)) is True
    for missing in (None, float("nan"), float("inf"), np.float64("-inf"), ""):
        assert cell_value(missing) is None
    assert cell_value("a\x01b") == "ab"  # a control character Excel cannot hold
    assert cell_value(Path("a/b.onnx")) == "a/b.onnx"
