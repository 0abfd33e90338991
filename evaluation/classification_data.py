"""The classification data of a comparison: the classifiers' own splits, and their batches.

`split_data` finds the data set and splits the exported classifiers were trained on
(from their training runs, or a config and splits file given instead), read with
`bridge.core.data.sources.load_dataset` and `bridge.core.data.splits`;
`ImageBatches` decodes and fits those images once per model input contract;
`subgroups` splits samples by sex, age band (`AGE_BANDS`) and body site.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.core.data.image import decode_image, model_input
from bridge.core.training import RUN_FILE
from evaluation.catalog import Entry

# Age bands of the subgroups: (label, lowest age, age the band stops below); None: open.
AGE_BANDS = (("<40", None, 40.0), ("40–59", 40.0, 60.0), ("≥60", 60.0, None))
SUBGROUP_ATTRIBUTES = ("sex", "age", "site")  # `Sample.attributes` fields split by


@dataclass(frozen=True)
class SplitData:
    """The classification data the classifiers were trained and tested on.

    Attributes:
        train: Training samples (the run's train and validation splits).
        test: Held-out test samples.
        classes: Class names, in the classifiers' output order.
        where: Description, for the report.
        group_by: What a sample's group is ("lesion_id", "patient_id") or None.
        synthetic: True when the data carries the synthetic-set marker.
    """

    train: tuple
    test: tuple
    classes: tuple[str, ...]
    where: str
    group_by: str | None = None
    synthetic: bool = False

    def labels(self, part: str) -> np.ndarray:
        """The class indices of the `train` or `test` samples."""
        classes = list(self.classes)
        return np.array([classes.index(s.label) for s in getattr(self, part)])

    def groups(self, part: str) -> list[str]:
        """The cluster of each `train` or `test` sample (`sample_groups`)."""
        return sample_groups(getattr(self, part))


def sample_groups(samples: Sequence) -> list[str]:
    """The cluster of each sample for a grouped bootstrap: its group, else its own id."""
    return [s.group or s.id for s in samples]


def age_band(age: float | None) -> str | None:
    """The `AGE_BANDS` label of an age in years (None: no age, or NaN)."""
    if age is None:
        return None
    for label, low, stop in AGE_BANDS:
        if (low is None or age >= low) and (stop is None or age < stop):
            return label
    return None


def subgroups(samples: Sequence) -> list[tuple[str, str, np.ndarray]]:
    """The subgroups of `samples` by each of `SUBGROUP_ATTRIBUTES`, where recorded.

    Sex and body site split by each value present (sorted), age by `AGE_BANDS`
    (in band order); samples without the value are in no subgroup of that attribute.

    Returns:
        (attribute, value, indices into `samples`) of every non-empty subgroup.
    """
    out = []
    for attribute in SUBGROUP_ATTRIBUTES:
        values = [getattr(s.attributes, attribute) for s in samples]
        if attribute == "age":
            values = [age_band(v) for v in values]
            order = [label for label, _, _ in AGE_BANDS]
        else:
            order = sorted({v for v in values if v is not None})
        for value in order:
            indices = np.array([i for i, v in enumerate(values) if v == value], dtype=int)
            if len(indices):
                out.append((attribute, value, indices))
    return out


def split_data(
    entries: Sequence[Entry], config_file: Path | None = None, splits_file: Path | None = None
) -> SplitData | None:
    """The data set and splits of the models' training runs, if any.

    Args:
        entries: The models; the first with a training run names the data.
        config_file: A TOML config naming the data, instead of the run's.
        splits_file: A splits file, instead of the run's.

    Raises:
        ValueError: If the test split is empty.
    """
    from bridge.core.config import config_from_dict, load_config
    from bridge.core.data.sources import load_dataset
    from bridge.core.data.splits import read_splits, select

    runs = [e.run for e in entries if e.run]
    run = runs[0] if runs else {}
    if config_file is not None:
        config = load_config(config_file)
    elif run.get("dir") and (Path(run["dir"]) / RUN_FILE).is_file():
        config = config_from_dict(json.loads((Path(run["dir"]) / RUN_FILE).read_text())["config"])
    else:
        return None
    splits = splits_file or (Path(run["splits_file"]) if run.get("splits_file") else None)
    if splits is None or not Path(splits).is_file():
        return None
    dataset = load_dataset(config.data, config.seed)
    split = read_splits(splits, dataset)
    classes = tuple(run.get("classes") or dataset.classes)
    test = tuple(s for s in select(dataset, split, "test") if s.label in classes)
    train = tuple(
        s for name in ("train", "val") for s in select(dataset, split, name) if s.label in classes
    )
    if not test:
        raise ValueError(f"{splits}: the test split is empty")
    where = f"{dataset.name} test split of {splits} ({len(test)} images)"
    return SplitData(train, test, classes, where, dataset.group_by, dataset.synthetic)


class ImageBatches:
    """Decoded, fitted image batches (N, 3, S, S), made once per (samples, size, policy)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, np.ndarray] = {}

    def get(self, name: str, samples: Sequence, contract: dict, policy: str) -> np.ndarray:
        """The batch of `samples` (called `name`) fitted to a model's input contract."""
        from tqdm import tqdm

        size = int(contract["native_size"])
        interpolation = contract.get("interpolation", "bilinear")
        key = (name, size, policy, interpolation)
        if key not in self._cache:
            self._cache[key] = np.stack([
                model_input(decode_image(s.path), size, policy, interpolation).transpose(2, 0, 1)
                for s in tqdm(samples, desc=f"{name} images at {size}px", unit="img", leave=False)
            ])  # fmt: skip
        return self._cache[key]


class PooledTaps:
    """Every tap of each feature extractor, pooled every way, per part of the split.

    The classification baselines and retrieval read the same pooled features; each
    extractor runs once per part (`evaluation.embedding.pooled_taps`, not normalised).
    The comparison releases an extractor's entry once both have used it, so one
    extractor's features are held at a time.

    Args:
        images: The split's image batches.
        prefer_gpu: Try the CUDA provider.
    """

    def __init__(self, images: ImageBatches, prefer_gpu: bool = True) -> None:
        self.images = images
        self.prefer_gpu = prefer_gpu
        self._cache: dict[tuple[str, str], dict] = {}

    def get(self, entry: Entry, name: str, samples: Sequence) -> dict[tuple[str, str], np.ndarray]:
        """{(tap, pooling): (N, C) float64} of `samples` (the part called `name`)."""
        from evaluation.embedding import pooled_taps, poolings_of
        from evaluation.features import FeatureExtractor

        key = (str(entry.path), name)
        if key not in self._cache:
            batch = self.images.get(name, samples, entry.manifest["input_contract"], entry.policy)
            extractor = FeatureExtractor(entry.path, prefer_gpu=self.prefer_gpu)
            self._cache[key] = pooled_taps(extractor, batch, poolings_of(entry.manifest))
        return self._cache[key]

    def release(self, entry: Entry) -> None:
        """Forget an extractor's pooled features (once every user has had them)."""
        for key in [key for key in self._cache if key[0] == str(entry.path)]:
            del self._cache[key]
