"""How results are written down: intervals as records and as text, numbers, p-values.

The one owner of "estimate [low, high]": the report's tables and pages and the fit
record's table (`bridge.fit_record.format_table`) all write an interval with
`format_interval` (or `format_ci`, for a record). `interval_record` is the plain form
of a `stats.Interval` in the results, and `plain` makes a result JSON-safe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def interval_record(value: Any) -> dict[str, Any]:
    """A `stats.Interval` as a plain record: estimate, low, high, level, method."""
    return {
        "estimate": value.estimate, "low": value.low, "high": value.high,
        "level": value.level, "method": value.method,
    }  # fmt: skip


def format_interval(
    estimate: float | None,
    low: float | None = None,
    high: float | None = None,
    digits: int = 3,
    signed: bool = False,
) -> str:
    """`estimate [low, high]`; the estimate alone where a bound is missing, `n/a` without one.

    Args:
        estimate: The estimate (None: not available).
        low: Lower bound (None or not finite: no interval).
        high: Upper bound (None or not finite: no interval).
        digits: Decimals.
        signed: Write the estimate's sign always (`+0.500`).
    """
    if estimate is None:
        return "n/a"
    text = f"{estimate:{'+' if signed else ''}.{digits}f}"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return text
    return f"{text} [{low:.{digits}f}, {high:.{digits}f}]"


def format_ci(value: Mapping[str, Any] | None, digits: int = 3) -> str:
    """An interval record (`estimate`, `low`, `high`) as text; `n/a` for None or no estimate."""
    if not value:
        return "n/a"
    return format_interval(value.get("estimate"), value.get("low"), value.get("high"), digits)


def format_number(value: Any, digits: int = 3) -> str:
    """A number with `digits` decimals (significant digits below 0.001); `n/a` if missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int | np.integer):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def format_p(value: float | None) -> str:
    """A p-value: three decimals, `<0.001` below that, `n/a` if missing."""
    if value is None:
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def plain(value: Any) -> Any:
    """`value` in JSON's terms: lists for arrays and tuples, None for NaN and inf, str for paths."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
