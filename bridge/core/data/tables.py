"""The table engine every reader shares: CSV and .xlsx tables as rows of text cells.

Tables are CSV (UTF-8, a byte-order mark tolerated) or, where a rater table may be
a spreadsheet, .xlsx. Every malformed input raises a one-line `ValueError` naming
the file and where in it: "line N" is the physical line of a CSV file (the header is
line 1); "row N" is the worksheet row of an .xlsx sheet (the header is row 1).
Blank rows are skipped; cells are stripped; column names match case-insensitively.

The formats themselves are read in `bridge.core.data.readers` (classification sets)
and `bridge.core.data.ratings` (rated cases and region pairs); docs/data-formats.md
describes them.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One data row of a table.

    Attributes:
        where: Its place for error messages: "line 7" (CSV) or "sheet 'x' row 7" (xlsx).
        number: 1-based data row (the first row after the header is 1).
        cells: Stripped text by column name; a short row is padded with "".
    """

    where: str
    number: int
    cells: dict[str, str]

    def get(self, column: str | None) -> str:
        """The cell of `column`; "" when the column is None or absent."""
        return self.cells.get(column, "") if column else ""


@dataclass(frozen=True)
class Table:
    """A table read by `read_table`.

    Attributes:
        path: The file.
        header_where: Where the header is ("line 1", "sheet 'x' row 1").
        columns: Column names as written; empty for an empty table.
        rows: The non-blank data rows.
    """

    path: Path
    header_where: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]

    def error(self, message: str, row: Row | None = None) -> ValueError:
        """A one-line error naming the file and the row (default: the header)."""
        where = row.where if row is not None else f"{self.header_where} (header)"
        return ValueError(f"{self.path}: {where}: {message}")

    def column(self, name: str) -> str | None:
        """The column called `name`, case-insensitively, or None."""
        for column in self.columns:
            if column.lower() == name.lower():
                return column
        return None

    def require(self, *names: str) -> dict[str, str]:
        """Map each required name to the column holding it, or raise naming the missing."""
        if not self.columns:
            raise ValueError(f"{self.path}: empty table (no header row)")
        found = {name: self.column(name) for name in names}
        missing = [name for name, column in found.items() if column is None]
        if missing:
            raise self.error(
                f"missing column(s) {', '.join(missing)}; found {', '.join(self.columns)}"
            )
        return {name: column for name, column in found.items() if column is not None}

    def score(self, row: Row, column: str) -> float | None:
        """A numeric (finite) cell; None when empty."""
        text = row.get(column)
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise self.error(f"column {column!r}: score {text!r} is not a number", row)
        return value

    def unique_id(self, row: Row, column: str, seen: dict[str, Row]) -> str:
        """A non-empty id cell not in `seen`; it is added to `seen`."""
        value = row.get(column)
        if not value:
            raise self.error(f"empty {column!r} cell", row)
        if value in seen:
            raise self.error(f"duplicate {column} {value!r} (first at {seen[value].where})", row)
        seen[value] = row
        return value


def read_table(path: str | os.PathLike[str], sheet: str | None = None) -> Table:
    """Read a CSV or .xlsx table into rows of stripped text cells.

    Args:
        path: A .csv, .xlsx or .xlsm file.
        sheet: The worksheet of a spreadsheet (default: the first); not for CSV.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: On an unsupported file type, unreadable content, a header
            column without name or duplicated, or a row longer than the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        records, prefix = _xlsx_records(path, sheet)
        unit = f"{prefix}row"
    elif suffix == ".csv":
        if sheet is not None:
            raise ValueError(f"{path}: sheet {sheet!r} given, but a CSV file has no sheets")
        records, unit = _csv_records(path), "line"
    elif suffix == ".xls":
        raise ValueError(f"{path}: old-style .xls is not supported; save it as .xlsx or .csv")
    else:
        raise ValueError(f"{path}: unsupported table type {suffix!r}; expected .csv or .xlsx")
    records = [(n, cells) for n, cells in records if any(cells)]
    if not records:
        return Table(path, f"{unit} 1", (), ())
    header_line, header = records[0]
    while header and not header[-1]:
        header.pop()
    header_where = f"{unit} {header_line}"
    seen: dict[str, str] = {}
    for i, name in enumerate(header, start=1):
        if not name:
            raise ValueError(f"{path}: {header_where} (header): column {i} has no name")
        if name.lower() in seen:
            raise ValueError(f"{path}: {header_where} (header): duplicate column {name!r}")
        seen[name.lower()] = name
    rows = []
    for number, (line, cells) in enumerate(records[1:], start=1):
        where = f"{unit} {line}"
        extra = [c for c in cells[len(header) :] if c]
        if extra:
            raise ValueError(
                f"{path}: {where}: {len(cells)} cells but the header has {len(header)} "
                f"columns (extra {extra[0]!r})"
            )
        padded = cells[: len(header)] + [""] * (len(header) - len(cells))
        rows.append(Row(where, number, dict(zip(header, padded, strict=True))))
    return Table(path, header_where, tuple(header), tuple(rows))


def in_order(order: Sequence[str], labels: Iterable[str]) -> tuple[str, ...]:
    """The names of `order` that occur in `labels`, in `order`'s order."""
    found = set(labels)
    return tuple(name for name in order if name in found)


def _csv_records(path: Path) -> list[tuple[int, list[str]]]:
    """Rows of a CSV file as (first physical line, stripped cells)."""
    records = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            start = 1
            for cells in reader:
                records.append((start, [c.strip() for c in cells]))
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV"
        ) from None
    except csv.Error as exc:
        raise ValueError(f"{path}: line {start}: malformed CSV ({exc})") from None
    return records


def _xlsx_records(path: Path, sheet: str | None) -> tuple[list[tuple[int, list[str]]], str]:
    """Rows of the sheet as (worksheet row number, cells), and "sheet '<name>' "."""
    import openpyxl  # only needed for spreadsheets
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .xlsx workbook ({exc})") from None
    try:
        if sheet is None:
            ws = book.worksheets[0]
        elif sheet in book.sheetnames:
            ws = book[sheet]
        else:
            raise ValueError(
                f"{path}: no sheet {sheet!r}; sheets: {', '.join(map(repr, book.sheetnames))}"
            )
        records = [
            (n, [_cell_text(v) for v in values])
            for n, values in enumerate(ws.iter_rows(values_only=True), start=1)
        ]
        return records, f"sheet {ws.title!r} "
    finally:
        book.close()


def _cell_text(value: object) -> str:
    """A spreadsheet cell as text: integral floats without ".0", dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value).strip()
