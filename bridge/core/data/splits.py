"""Train / validation / test splits: stratified by class, grouped by patient or lesion.

A split is made once per run, written to `runs/<name>/splits.csv`, and read back by
every trainer of the run (torch and Keras alike), so both frameworks train, select
and test on exactly the same images. No group (patient or lesion) ever appears in
two splits. The test split is never used to choose anything.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bridge.core.data.readers import ClassificationSet, Sample
from bridge.core.files import atomic_path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def kfold(folds: int, seed: int, grouped: bool = False):
    """The one k-fold splitter of every unstratified cross-validation: shuffled, seeded.

    (The classification baselines' inner folds, stratified by class, are scikit-learn's
    `StratifiedKFold` / `StratifiedGroupKFold`, in `evaluation.baselines.classifiers`.)

    `KFold(n_splits=folds, shuffle=True, random_state=seed)`, or with `grouped`
    `GroupKFold(n_splits=folds, shuffle=True, random_state=seed)`: the groups are shuffled
    and dealt into folds of equal group counts, so no group is in two folds (a fold's item
    count depends on its groups' sizes). Call its `split(X)` / `split(X, y, groups)`.
    """
    from sklearn.model_selection import GroupKFold, KFold

    if grouped:
        return GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return KFold(n_splits=folds, shuffle=True, random_state=seed)


def make_splits(
    dataset: ClassificationSet,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, str]:
    """Assign every sample to `train`, `val` or `test`.

    Uses scikit-learn's `StratifiedGroupKFold` twice: one fold of about
    `test_fraction` of the groups becomes the test split, then one fold of about
    `val_fraction` of all groups from the rest becomes validation. Images without a
    group are their own group.

    Args:
        dataset: The classification set.
        val_fraction: Target share for validation (0: no validation split).
        test_fraction: Target share for test.
        seed: Seed of the shuffling.

    Returns:
        Sample id -> split name.

    Raises:
        ValueError: If the fractions are out of range or the data are too small.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < test_fraction < 0.5 or not 0 <= val_fraction < 0.5:
        raise ValueError(
            f"split fractions val={val_fraction}, test={test_fraction}: expected 0 < test < 0.5 "
            "and 0 <= val < 0.5"
        )
    samples = dataset.samples
    labels = np.array([s.label for s in samples])
    groups = np.array([s.group or f"image:{s.id}" for s in samples])
    if len(set(groups)) < 3:
        raise ValueError(f"{dataset.name}: {len(set(groups))} groups are too few to split")

    def one_fold(index: np.ndarray, fraction: float, salt: int) -> np.ndarray:
        n_splits = max(2, round(1.0 / fraction))
        n_splits = min(n_splits, len(set(groups[index])))
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed + salt)
        with warnings.catch_warnings():  # small classes: sklearn warns, the split stays valid
            warnings.simplefilter("ignore", UserWarning)
            _, held_out = next(folds.split(index, labels[index], groups[index]))
        return index[held_out]

    everything = np.arange(len(samples))
    test = one_fold(everything, test_fraction, 0)
    rest = np.setdiff1d(everything, test)
    val = one_fold(rest, val_fraction / (1.0 - test_fraction), 1) if val_fraction else rest[:0]
    split = dict.fromkeys((s.id for s in samples), "train")
    for i in test:
        split[samples[i].id] = "test"
    for i in val:
        split[samples[i].id] = "val"
    check_grouping(dataset, split)
    counts = Counter(split.values())
    log.info("splits: %s", ", ".join(f"{name} {counts[name]}" for name in SPLITS))
    return split


def check_grouping(dataset: ClassificationSet, split: Mapping[str, str]) -> None:
    """Fail if any patient / lesion group appears in more than one split.

    Raises:
        ValueError: Naming the group and its splits.
    """
    seen: dict[str, str] = {}
    for sample in dataset.samples:
        if sample.group is None:
            continue
        where = split[sample.id]
        first = seen.setdefault(sample.group, where)
        if first != where:
            raise ValueError(
                f"{dataset.group_by or 'group'} {sample.group} is in both {first} and {where}"
            )


def write_splits(
    dataset: ClassificationSet, split: Mapping[str, str], path: str | os.PathLike
) -> Path:
    """Write `id,split,label,group` rows atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split", "label", "group"])
        for s in dataset.samples:
            writer.writerow([s.id, split[s.id], s.label, s.group or ""])
    return path


def read_splits(path: str | os.PathLike, dataset: ClassificationSet) -> dict[str, str]:
    """Read a splits file and check it belongs to `dataset`.

    Raises:
        ValueError: If a row is malformed, names an unknown split, or the file's ids
            or labels do not match the data set.
    """
    path = Path(path)
    by_id = {s.id: s for s in dataset.samples}
    split: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"id", "split", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns id,split,label,group")
        for row_number, row in enumerate(reader, start=2):
            sample = by_id.get(row["id"])
            if row["split"] not in SPLITS:
                raise ValueError(f"{path} line {row_number}: unknown split {row['split']!r}")
            if sample is None or sample.label != row["label"]:
                raise ValueError(
                    f"{path} line {row_number}: image {row['id']!r} ({row['label']}) is not in "
                    f"the data set as configured; delete the file to split again"
                )
            split[row["id"]] = row["split"]
    missing = [s.id for s in dataset.samples if s.id not in split]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} images of the data set have no split (e.g. {missing[0]}); "
            "delete the file to split again"
        )
    check_grouping(dataset, split)
    return split


def load_or_make_splits(
    dataset: ClassificationSet,
    path: str | os.PathLike,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, str]:
    """Reuse the run's splits file if it exists, else make and write it."""
    path = Path(path)
    if path.exists():
        log.info("reusing splits %s", path)
        return read_splits(path, dataset)
    split = make_splits(dataset, val_fraction, test_fraction, seed)
    write_splits(dataset, split, path)
    return split


def select(dataset: ClassificationSet, split: Mapping[str, str], name: str) -> list[Sample]:
    """The samples of one split, in data-set order."""
    return [s for s in dataset.samples if split[s.id] == name]
