"""The report's exploratory subgroup tables: each classifier by sex, age band and body site.

One page `Section` per classifier with subgroups (`with_subgroups` puts them right
after the classification section; `evaluation.report.pages` renders them like every
other section). The one table of them all, `SUBGROUP_CSV` and a sheet of the workbook,
is `evaluation.report.tables.subgroup_table`. Data without sex, age or site has no
subgroups: no section, and a table with its header only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.formatting import format_ci as ci
from evaluation.report.sections import Section, _classification
from evaluation.report.tables import SUBGROUPS, _write_csv, subgroup_metric_keys, subgroup_table

SUBGROUP_CSV = f"{SUBGROUPS}.csv"
_ATTRIBUTE_NAMES = {"sex": "sex", "age": "age band", "site": "body site"}
_GROUP_NAMES = {"lesion_id": "lesions", "patient_id": "patients"}


def subgroup_sections(cls: dict[str, Any]) -> list[Section]:
    """One table per classifier with subgroups (none without demographic data).

    Args:
        cls: The classification results (`evaluation.classification.classification`).
    """
    method = cls.get("subgroups") or {}
    bands = ", ".join(method.get("age_bands", []))
    groups = _GROUP_NAMES.get(cls.get("group_by") or "", "groups")
    text = (
        f"{method.get('note', 'Exploratory.')} Accuracy, balanced accuracy and one-vs-rest "
        f"AUCs per subgroup of the test split, 95% bootstrap CIs over {groups}; age bands "
        f"{bands} years; a subgroup with fewer than {method.get('min_images')} images, "
        f"{method.get('min_classes')} classes or {method.get('min_groups')} {groups} is "
        "'too few'; images without the attribute are in no subgroup of it."
    )
    keys = subgroup_metric_keys(cls)
    header = ["attribute", "subgroup", "images", groups, "accuracy", "balanced acc.",
              *[k.replace("auc_", "AUC ") for k in keys[2:]]]  # fmt: skip
    out = []
    for r in cls["rows"]:
        records = r.get("subgroups") or []
        if not records:
            continue
        rows = [_cells(s, keys) for s in records]
        title = f"Subgroups (exploratory): {r['backbone']} {r['framework']}"
        out.append(Section(title, text, header, rows))
    return out


def _cells(record: dict[str, Any], keys: list[str]) -> list[str]:
    """One subgroup's row: what it is, its counts, its metrics (or why there are none)."""
    if record["status"] == "ok":
        metrics = [ci(record.get(k), 2) for k in keys]
    else:  # "too few: 6 images < 10" once, the other metric cells empty
        reason = f": {record['reason']}" if record.get("reason") else ""
        metrics = [f"{record['status']}{reason}"] + [""] * (len(keys) - 1)
    name = _ATTRIBUTE_NAMES.get(record["attribute"], record["attribute"])
    return [name, str(record["value"]), str(record["n"]), str(record["n_groups"]), *metrics]


def with_subgroups(sections: list[Section], results: dict[str, Any]) -> list[Section]:
    """`sections` with the subgroup tables after the classification section (else last)."""
    cls = results["classification"]
    extra = subgroup_sections(cls)
    if not extra:
        return sections
    anchor = _classification(cls)
    titles = [s.title for s in sections]
    at = titles.index(anchor.title) + 1 if anchor is not None and anchor.title in titles else None
    if at is None:
        return [*sections, *extra]
    return [*sections[:at], *extra, *sections[at:]]


def write_subgroup_table(results: dict[str, Any], folder: Path) -> None:
    """Write `SUBGROUP_CSV` alone into `folder` (the report writes it with every table).

    The table is `evaluation.report.tables.subgroup_table`, one of `report_tables`.
    """
    header, rows = subgroup_table(results["classification"])
    _write_csv(folder / SUBGROUP_CSV, header, rows)
