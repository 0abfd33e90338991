"""The report's exploratory subgroup tables: each classifier by sex, age band and body site.

One page `Section` per classifier with subgroups (`with_subgroups` puts them right
after the classification section; `evaluation.report.pages` renders them like every
other section), and one CSV table of them all (`write_subgroup_table`). Data without
sex, age or site has no subgroups: no section, and a CSV with its header only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.formatting import format_ci as ci
from evaluation.report.sections import Section, _classification
from evaluation.report.tables import _BOUNDS, Table, _flat, _write_csv

SUBGROUP_CSV = "classification_subgroups.csv"
_ATTRIBUTE_NAMES = {"sex": "sex", "age": "age band", "site": "body site"}
_GROUP_NAMES = {"lesion_id": "lesions", "patient_id": "patients"}


def _metric_keys(cls: dict[str, Any]) -> list[str]:
    """The subgroup records' metric keys, in column order."""
    return ["accuracy", "balanced_accuracy", *[f"auc_{c}" for c in cls.get("classes", [])]]


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
    keys = _metric_keys(cls)
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


def subgroup_table(cls: dict[str, Any]) -> Table:
    """Every classifier's subgroups as one table (metric, low, high per metric)."""
    keys = _metric_keys(cls)
    header = ["backbone", "framework", "file", "attribute", "value", "n", "n_groups",
              "n_classes", "status", "reason"]  # fmt: skip
    header += [f"{k}{s}" for k in keys for s in _BOUNDS]
    rows = [
        [r["backbone"], r["framework"], r["file"], s["attribute"], s["value"], s["n"],
         s["n_groups"], s["n_classes"], s["status"], s["reason"]]
        + [v for k in keys for v in _flat(s.get(k))]
        for r in cls["rows"]
        for s in r.get("subgroups") or []
    ]  # fmt: skip
    return header, rows


def write_subgroup_table(results: dict[str, Any], folder: Path) -> None:
    """Write `SUBGROUP_CSV` (`subgroup_table`) into the report folder `folder`."""
    header, rows = subgroup_table(results["classification"])
    _write_csv(folder / SUBGROUP_CSV, header, rows)
