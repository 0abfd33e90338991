"""The classification data of a comparison: the classifiers' own splits, and their batches.

`split_data` finds the data set and splits the exported classifiers were trained on
(from their training runs, or a config and splits file given instead), read with
`bridge.core.data.sources.load_dataset` and `bridge.core.data.splits`;
`ImageBatches` decodes and fits those images once per model input contract.
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


@dataclass(frozen=True)
class SplitData:
    """The classification data the classifiers were trained and tested on.

    Attributes:
        train: Training samples (the run's train and validation splits).
        test: Held-out test samples.
        classes: Class names, in the classifiers' output order.
        where: Description, for the report.
    """

    train: tuple
    test: tuple
    classes: tuple[str, ...]
    where: str

    def labels(self, part: str) -> np.ndarray:
        """The class indices of the `train` or `test` samples."""
        classes = list(self.classes)
        return np.array([classes.index(s.label) for s in getattr(self, part)])


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
    return SplitData(train, test, classes, where)


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
