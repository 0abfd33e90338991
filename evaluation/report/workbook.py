"""The comparison report's tables as one Excel workbook, `report.xlsx`.

The first sheet, "About", says what the data was (a synthetic data set flagged at the
top), the command and its options, the dermsim version and the main packages'
versions (the results' provenance), when the workbook was written, and every sheet
with what it holds. Then one sheet per table of
`evaluation.report.tables.report_tables`, the list the CSVs are written from, named
after its CSV (`sheet_names` makes a name Excel accepts). Numbers stay numbers, a
missing or non-finite value is an empty cell, text is never a formula; the header row
is bold and frozen. The file is written atomically and holds the same bytes for the
same tables, results and date.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import zipfile
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet
from openpyxl.writer.excel import ExcelWriter

from bridge.core.files import atomic_path
from evaluation.report.text import SYNTHETIC_NOTE

log = logging.getLogger(__name__)


class ReportTable(NamedTuple):
    """One table of the report: its file stem (and sheet name), what it holds, its cells.

    `evaluation.report.tables.report_tables` lists them; the CSVs and this workbook are
    written from that one list.
    """

    name: str
    about: str
    header: list[str]
    rows: list[list[Any]]


WORKBOOK = "report.xlsx"
ABOUT = "About"
SHEET_NAME_LIMIT = 31  # Excel's longest sheet name
_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")  # characters Excel refuses in a sheet name
_RESERVED = ("History",)  # a name Excel keeps for itself
_BOLD = Font(bold=True)
_ALERT = Font(bold=True, color="7A0016")
_ALERT_FILL = PatternFill("solid", fgColor="FDE7EA")
_WIDTHS = (8, 60)  # narrowest and widest column, in characters
_FLOAT_WIDTH = 12  # a float as Excel's General format shows it, at most

Cell = str | int | float | bool | None


def write_workbook(
    tables: Sequence[ReportTable],
    results: dict[str, Any],
    path: Path,
    written: datetime | None = None,
) -> Path:
    """Write the About sheet and one sheet per table to `path`, atomically.

    Args:
        tables: The report's tables (`evaluation.report.tables.report_tables`).
        results: The comparison's results: `name`, `synthetic`, `rated` and
            `provenance` (command, options, versions) describe the data.
        path: The workbook to write (`WORKBOOK` in the report folder).
        written: When the report is written, timezone-aware (default: now).

    Returns:
        `path`.

    Raises:
        ValueError: If two tables share a name, `written` has no timezone, or the
            results lack what the About sheet describes.
    """
    written = datetime.now(UTC).replace(microsecond=0) if written is None else written
    if written.tzinfo is None:
        raise ValueError(f"written={written}: expected a timezone-aware datetime")
    names = [t.name for t in tables]
    twice = sorted(n for n, k in Counter(names).items() if k > 1)
    if twice:
        raise ValueError(f"tables {twice}: expected unique names (one CSV and one sheet each)")
    sheets = sheet_names(names)
    book = Workbook()
    _fill_about(book.active, results, tables, sheets, written)
    for table, sheet in zip(tables, sheets, strict=True):
        _fill_table(book.create_sheet(sheet), table.header, table.rows)
    utc = written.astimezone(UTC).replace(tzinfo=None)
    book.properties.created = book.properties.modified = utc
    book.properties.creator = "dermsim"
    _save(book, path, utc)
    log.info("wrote %s (%d sheets)", path, len(sheets) + 1)
    return path


def sheet_names(names: Sequence[str], taken: Sequence[str] = (ABOUT,)) -> list[str]:
    r"""Excel sheet names for `names`, in order: valid, unique, as close to the name as may be.

    A forbidden character (``[]:*?/\``) becomes `_`, a name is cut to 31 characters and
    loses leading and trailing apostrophes, an empty one is `table`; a name already
    used (Excel ignores case; `taken` and `History` count as used) gets `~2`, `~3`, ...
    within the 31 characters. The same names always give the same sheet names.

    Args:
        names: The tables' names (their CSV stems).
        taken: Sheet names used besides the tables'.
    """
    used = {n.casefold() for n in (*taken, *_RESERVED)}
    out = []
    for name in names:
        base = _FORBIDDEN.sub("_", name)[:SHEET_NAME_LIMIT].strip("'") or "table"
        sheet, k = base, 1
        while sheet.casefold() in used:
            k += 1
            suffix = f"~{k}"
            sheet = base[: SHEET_NAME_LIMIT - len(suffix)] + suffix
        used.add(sheet.casefold())
        out.append(sheet)
    return out


def cell_value(value: Any) -> Cell:
    """`value` as a cell: int, float or bool as such, None for missing or NaN / inf, else text.

    Text loses the control characters Excel cannot hold; empty text is an empty cell.
    """
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    text = ILLEGAL_CHARACTERS_RE.sub("", value if isinstance(value, str) else str(value))
    return text or None


def about_rows(
    results: dict[str, Any],
    tables: Sequence[ReportTable],
    sheets: Sequence[str],
    written: datetime,
) -> list[list[Cell]]:
    """The About sheet's rows: the data, the command, the versions, the date, the sheets.

    Raises:
        ValueError: If the results lack `provenance` or `rated`.
    """
    provenance, rated = results.get("provenance"), results.get("rated")
    if not provenance or not rated:
        raise ValueError(
            "results: expected 'rated' and 'provenance' records (the command, options and "
            "versions) to describe the data in the workbook"
        )
    rows: list[list[Cell]] = [["dermsim comparison report", results.get("name")]]
    if results.get("synthetic"):
        rows.append(["SYNTHETIC DATA", SYNTHETIC_NOTE])
    rows += [
        ["data", "synthetic" if results.get("synthetic") else "not marked synthetic"],
        ["rated items", rated.get("source")],
        ["items", rated.get("n_items")],
        ["raters", ", ".join(rated.get("raters", []))],
        ["aspects", ", ".join(rated.get("aspects", []))],
        ["per-case rule", rated.get("rule")],
        ["command", provenance.get("command")],
        *[[f"option {k}", v] for k, v in (provenance.get("options") or {}).items()],
        *[[k, v] for k, v in (provenance.get("versions") or {}).items()],
        ["execution provider", provenance.get("execution_provider")],
        ["seed", provenance.get("seed")],
        ["started", provenance.get("started")],
        ["written", written.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")],
        [None],
        ["sheet", "what it holds", "file", "rows"],
    ]
    listed = zip(sheets, tables, strict=True)
    rows += [[sheet, t.about, f"{t.name}.csv", len(t.rows)] for sheet, t in listed]
    return [[cell_value(v) for v in row] for row in rows]


def _fill_about(
    sheet: Worksheet,
    results: dict[str, Any],
    tables: Sequence[ReportTable],
    names: Sequence[str],
    written: datetime,
) -> None:
    """The first sheet: `about_rows`, the title, synthetic flag and sheet list's header bold."""
    sheet.title = ABOUT
    rows = about_rows(results, tables, names, written)
    for row in rows:
        _append(sheet, row)
    sheet["A1"].font = _BOLD
    if results.get("synthetic"):
        sheet.sheet_properties.tabColor = "B00020"
        for cell in sheet[2]:
            cell.font, cell.fill = _ALERT, _ALERT_FILL
    for cell in sheet[len(rows) - len(tables)]:  # the sheet list's header
        cell.font = _BOLD
    _widths(sheet, rows)


def _fill_table(sheet: Worksheet, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table's sheet: the header bold and frozen, one row per row, cells as `cell_value`."""
    cells = [[cell_value(v) for v in row] for row in rows]
    _append(sheet, [cell_value(h) for h in header])
    for row in cells:
        _append(sheet, row)
    for cell in sheet[1]:
        cell.font = _BOLD
    sheet.freeze_panes = "A2"
    if header:
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(header))}{len(rows) + 1}"
    _widths(sheet, [list(header), *cells])


def _append(sheet: Worksheet, row: Sequence[Cell]) -> None:
    """Append `row`; text that starts with `=` stays text, never a formula."""
    sheet.append(list(row))
    if any(isinstance(v, str) and v.startswith("=") for v in row):
        for cell in sheet[sheet.max_row]:
            if cell.data_type == "f":
                cell.data_type = "s"


def _widths(sheet: Worksheet, rows: Sequence[Sequence[Cell]]) -> None:
    """Each column as wide as its widest cell, within `_WIDTHS`."""
    widest: dict[int, int] = {}
    for row in rows:
        for k, value in enumerate(row, start=1):
            widest[k] = max(widest.get(k, 0), _shown_width(value))
    low, high = _WIDTHS
    for k, width in widest.items():
        sheet.column_dimensions[get_column_letter(k)].width = min(max(width + 2, low), high)


def _shown_width(value: Cell) -> int:
    if value is None:
        return 0
    if isinstance(value, float):
        return min(len(repr(value)), _FLOAT_WIDTH)
    return len(str(value))


def _save(book: Workbook, path: Path, when: datetime) -> None:
    """Save `book` to `path` atomically, as of `when` (naive UTC).

    openpyxl's `save` stamps the document and the zip's parts with the time of saving;
    stamped with the report's date instead, the same workbook is the same bytes.
    """
    stamp = max(when, datetime(1980, 1, 1)).timetuple()[:6]  # zip dates start in 1980
    with (
        atomic_path(path) as tmp,
        _StampedZip(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive,
    ):
        archive.stamp = stamp
        ExcelWriter(book, archive).save()  # closed here, or on the way out after a failure


class _StampedZip(zipfile.ZipFile):
    """A zip whose parts carry one fixed date, not the time of writing (or a file's)."""

    stamp: tuple[int, int, int, int, int, int]

    def write(self, filename: Any, arcname: str | None = None, *args, **kwargs) -> None:
        """Add a file's content (openpyxl's worksheets) under `arcname`, stamped."""
        path = Path(filename)
        self.writestr(arcname or path.name, path.read_bytes(), *args, **kwargs)

    def writestr(self, zinfo_or_arcname: str | zipfile.ZipInfo, data: Any, *args, **kwargs) -> None:
        """Add `data` as a part; a part given by name gets the stamp."""
        if isinstance(zinfo_or_arcname, str):
            info = zipfile.ZipInfo(zinfo_or_arcname, date_time=self.stamp)
            info.compress_type, info.create_system = self.compression, 0
            info.external_attr = 0o600 << 16  # what ZipFile gives a part written by name
            zinfo_or_arcname = info
        super().writestr(zinfo_or_arcname, data, *args, **kwargs)
