"""Lesion-level classification statistics and the exploratory subgroups (sex, age, site).

The classifiers are stand-ins for onnxruntime models (fixed logits per image), so the
test runs `evaluation.classification.classification` end to end in well under a second.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bridge.core.data.readers import Attributes, Sample
from evaluation import classification as classification_module
from evaluation import stats
from evaluation.catalog import Entry
from evaluation.classification import SUBGROUP_NOTE, classification, subgroup_records
from evaluation.classification_data import SplitData, age_band, subgroups
from evaluation.options import Options
from evaluation.report.sections import Section, _classification
from evaluation.report.subgroups import (
    SUBGROUP_CSV,
    subgroup_sections,
    with_subgroups,
    write_subgroup_table,
)

CLASSES = ("benign", "malignant")
OPTIONS = Options(bootstrap=200, seed=0, prefer_gpu=False)


def _samples() -> tuple[Sample, ...]:
    """32 images of 16 lesions (2 views each); sex, age and site known for some.

    female: lesions 0-9 (20 images, both classes); male: lesions 10-13 (8 images: too
    few); no sex: lesions 14-15. Ages 30 (lesions 0-5), 45 (6-11), 70 (12-15). Site
    "back" for lesions 0-11 (both classes), "face" for 12-15 (all benign: too few
    classes).
    """
    out = []
    for lesion in range(16):
        label = CLASSES[lesion % 2] if lesion < 12 else "benign"
        sex = "female" if lesion < 10 else "male" if lesion < 14 else None
        age = 30.0 if lesion < 6 else 45.0 if lesion < 12 else 70.0
        site = "back" if lesion < 12 else "face"
        for view in range(2):
            out.append(
                Sample(
                    f"img{lesion}_{view}", Path(f"{lesion}_{view}.jpg"), label, f"L{lesion}",
                    Attributes(sex, age, site),
                )
            )  # fmt: skip
    return tuple(out)


def _predictions(samples, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.array([CLASSES.index(s.label) for s in samples])
    rng = np.random.default_rng(seed)
    sign = y * 2.0 - 1.0  # +1 for malignant
    logits = np.stack([-sign, sign], axis=1) + rng.normal(0, 1.2, (len(y), 2))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba.argmax(1), proba


def test_age_bands() -> None:
    ages = [None, 0.0, 39.9, 40.0, 59.5, 60.0, 85.0, float("nan")]
    assert [age_band(a) for a in ages] == [None, "<40", "<40", "40–59", "40–59", "≥60", "≥60", None]


def test_subgroups_split_by_each_recorded_value() -> None:
    found = {(a, v): len(idx) for a, v, idx in subgroups(_samples())}
    assert found == {
        ("sex", "female"): 20, ("sex", "male"): 8,
        ("age", "<40"): 12, ("age", "40–59"): 12, ("age", "≥60"): 8,
        ("site", "back"): 24, ("site", "face"): 8,
    }  # fmt: skip
    assert list(found) == sorted(found, key=lambda k: ("sex", "age", "site").index(k[0]))
    no_demographics = [Sample("a", Path("a.jpg"), "benign", None) for _ in range(3)]
    assert subgroups(no_demographics) == []


def test_subgroup_records_counts_too_few_and_intervals() -> None:
    samples = _samples()
    y, pred, proba = _predictions(samples, 0)
    records = {(r["attribute"], r["value"]): r for r in subgroup_records(
        samples, y, pred, proba, CLASSES, OPTIONS)}  # fmt: skip
    female = records[("sex", "female")]
    assert (female["n"], female["n_groups"], female["n_classes"]) == (20, 10, 2)
    assert female["status"] == "ok" and female["reason"] is None
    idx = np.arange(20)
    assert female["accuracy"]["estimate"] == pytest.approx(np.mean(pred[idx] == y[idx]))
    for key in ("accuracy", "balanced_accuracy", "auc_benign", "auc_malignant"):
        r = female[key]
        assert r["low"] <= r["estimate"] <= r["high"] and r["method"] == "percentile", key
    male = records[("sex", "male")]
    assert (male["n"], male["n_groups"], male["status"]) == (8, 4, "too few")
    assert male["reason"] == "8 images < 10" and male["accuracy"] is None
    face = records[("site", "face")]
    assert face["status"] == "too few" and face["reason"] == "8 images < 10, 1 classes < 2"
    old = records[("age", "≥60")]
    assert old["n_classes"] == 1 and old["status"] == "too few"
    assert records[("site", "back")]["n_groups"] == 12


def test_a_subgroup_auc_is_none_where_a_class_is_missing(monkeypatch) -> None:
    samples = _samples()
    y, pred, proba = _predictions(samples, 1)
    # let one-class subgroups through, to see their AUCs left out
    monkeypatch.setattr(classification_module, "SUBGROUP_MIN_CLASSES", 1)
    monkeypatch.setattr(classification_module, "SUBGROUP_MIN_IMAGES", 2)
    records = {(r["attribute"], r["value"]): r for r in subgroup_records(
        samples, y, pred, proba, CLASSES, OPTIONS)}  # fmt: skip
    face = records[("site", "face")]
    assert face["status"] == "ok" and face["accuracy"] is not None
    assert face["auc_benign"] is None and face["auc_malignant"] is None


class _Model:
    """A stand-in for an onnxruntime session: fixed logits per image index."""

    provider = "CPUExecutionProvider"

    def __init__(self, logits: np.ndarray):
        self.logits = logits

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        return {"logits": self.logits[image[:, 0, 0, 0].astype(int)]}


class _Images:
    """Batches whose first pixel is the image's index (read back by `_Model`)."""

    def get(self, name, samples, contract, policy) -> np.ndarray:
        batch = np.zeros((len(samples), 3, 2, 2), np.float32)
        batch[:, 0, 0, 0] = np.arange(len(samples))
        return batch


def _entry(framework: str) -> Entry:
    manifest = {"kind": "classifier", "backbone": "tiny", "input_contract": {"native_size": 2}}
    return Entry(Path(f"tiny-{framework}-classifier.onnx"), manifest, f"m-{framework}", framework)


@pytest.fixture
def results(monkeypatch):
    """The classification results of two stand-in classifiers, and what stats was given."""
    samples = _samples()
    data = SplitData((), samples, CLASSES, "toy test split", "lesion_id")
    logits = {
        fw: np.log(_predictions(samples, seed)[2]) for seed, fw in enumerate(("torch", "keras"))
    }
    monkeypatch.setattr(
        classification_module, "open_model", lambda path, prefer_gpu: _Model(
            logits["torch" if "torch" in path.name else "keras"])
    )  # fmt: skip
    seen = {"metrics": [], "mcnemar": []}
    metrics, mcnemar = stats.classification_metrics, stats.mcnemar_test

    def spy_metrics(*args, **kwargs):
        seen["metrics"].append(kwargs.get("groups"))
        return metrics(*args, **kwargs)

    def spy_mcnemar(*args, **kwargs):
        seen["mcnemar"].append(kwargs.get("groups"))
        return mcnemar(*args, **kwargs)

    monkeypatch.setattr(stats, "classification_metrics", spy_metrics)
    monkeypatch.setattr(stats, "mcnemar_test", spy_mcnemar)
    cls = classification([_entry("torch"), _entry("keras")], data, _Images(), OPTIONS)
    return cls, seen, samples


def test_every_interval_and_mcnemar_get_the_lesion_groups(results) -> None:
    cls, seen, samples = results
    groups = [s.group for s in samples]
    # per classifier: the whole split, then female, <40, 40–59, back (the big enough ones)
    assert len(seen["metrics"]) == 2 * 5
    assert seen["metrics"][0] == groups and seen["metrics"][5] == groups
    assert seen["metrics"][1] == groups[:20]  # female
    assert seen["mcnemar"] == [groups]
    assert all(g is not None for g in seen["metrics"])
    for row in cls["rows"]:
        assert (row["n"], row["n_groups"]) == (32, 16)
    (pair,) = cls["pairs"]
    assert (pair["n"], pair["n_groups"]) == (32, 16) and 0 <= pair["mcnemar_p"] <= 1
    assert cls["group_by"] == "lesion_id"
    method = cls["subgroups"]
    assert method["exploratory"] is True and method["multiplicity_correction"] is None
    assert method["note"] == SUBGROUP_NOTE and method["age_bands"] == ["<40", "40–59", "≥60"]


def test_an_image_without_group_is_its_own_group() -> None:
    samples = (Sample("a", Path("a"), "x", None), Sample("b", Path("b"), "x", "L"))
    assert SplitData((), samples, ("x",), "").groups("test") == ["a", "L"]


def test_report_sections_after_classification_and_csv(results, tmp_path) -> None:
    cls, _, _ = results
    extra = subgroup_sections(cls)
    assert [s.title for s in extra] == [
        "Subgroups (exploratory): tiny torch",
        "Subgroups (exploratory): tiny keras",
    ]
    section = extra[0]
    assert section.text.startswith(SUBGROUP_NOTE) and "over lesions" in section.text
    assert section.header[:4] == ["attribute", "subgroup", "images", "lesions"]
    assert section.header[4:] == ["accuracy", "balanced acc.", "AUC benign", "AUC malignant"]
    by_value = {(r[0], r[1]): r for r in section.rows}
    assert by_value[("sex", "male")][2:] == ["8", "4", "too few: 8 images < 10", "", "", ""]
    assert by_value[("body site", "back")][2:4] == ["24", "12"]
    assert "[" in by_value[("sex", "female")][4]  # an interval

    results_dict = {"classification": cls}
    page = [Section("Headline", "", [], []), _classification(cls), Section("Other", "", [], [])]
    titles = [s.title for s in with_subgroups(page, results_dict)]
    assert titles == ["Headline", page[1].title, *[s.title for s in extra], "Other"]

    write_subgroup_table(results_dict, tmp_path)
    with open(tmp_path / SUBGROUP_CSV, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    assert header[:10] == ["backbone", "framework", "file", "attribute", "value", "n",
                           "n_groups", "n_classes", "status", "reason"]  # fmt: skip
    assert "auc_malignant_high" in header and len(rows) == 2 * 7
    male = next(r for r in rows if r[1] == "torch" and r[4] == "male")
    assert male[5:9] == ["8", "4", "2", "too few"] and male[10] == ""


def test_no_demographics_no_section(results, tmp_path) -> None:
    cls, _, _ = results
    bare = {**cls, "rows": [{**r, "subgroups": []} for r in cls["rows"]]}
    page = [Section("Headline", "", [], [])]
    assert subgroup_sections(bare) == [] and with_subgroups(page, {"classification": bare}) == page
    write_subgroup_table({"classification": bare}, tmp_path)
    assert len((tmp_path / SUBGROUP_CSV).read_text().splitlines()) == 1  # the header only
