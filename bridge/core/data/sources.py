"""The configured data source (`[data]` of a config) as a classification set."""

from __future__ import annotations

from pathlib import Path

from bridge.core.config import DataConfig
from bridge.core.data import readers, synth
from bridge.core.data.readers import ClassificationSet


def load_dataset(cfg: DataConfig, seed: int = 0) -> ClassificationSet:
    """Read the configured data set, with class subset and per-class cap applied.

    With `source = "synthetic"` the built-in set is generated into `cfg.path` first
    when it is not there yet, or made by an older generator (`synth.current`).
    """
    path = Path(cfg.path)
    images = cfg.images or None
    if cfg.source == "synthetic":
        # an existing synthetic folder is used as generated (any size); else make the default
        root = synth.current(path)
        folder = root / synth.ISIC_DIR
        dataset = readers.read_isic2019(
            folder / readers.ISIC2019_GROUND_TRUTH,
            metadata_csv=folder / readers.ISIC2019_METADATA,
        )
    elif cfg.source == "isic2019":
        dataset = readers.read_isic2019(path, images, cfg.metadata or None)
    elif cfg.source == "isic2020":
        dataset = readers.read_isic2020(path, images)
    elif cfg.source == "ham10000":
        dataset = readers.read_ham10000(path, images)
    else:
        dataset = readers.read_class_folders(path)
    present = [c for c in dataset.classes if any(s.label == c for s in dataset.samples)]
    classes = list(cfg.classes) or present
    return dataset.subset(classes, cfg.per_class_cap or None, seed=seed)
