"""Every metric's score of every rated item, oriented as a distance.

`score_items` runs every exported scorer (LPIPS / DISTS, `evaluation.score.Scorer`),
every tap x cosine mode of every feature extractor (`evaluation.features`) and the
classical baselines (`evaluation.classical`) on each item's reference against each of
its comparison regions; an item's score combines its regions by the options' rule.
A scorer fitted to the ratings of these very items is left out (and noted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.core.data.image import decode_image
from bridge.core.data.masks import Outline, crop_region, read_mask
from bridge.core.runtime import MASKED_KINDS, SCORER_KINDS, is_masked, model_label
from evaluation.catalog import Entry
from evaluation.fitted import fitted_cases
from evaluation.items import RatedItems
from evaluation.options import Options

LAYER_FAMILIES = ("layer", "layer_masked")
"""Families of single feature-extractor taps (by box, and pooled under masks)."""
MASKED_SUFFIX = " masked"
"""Suffix of a feature extractor's distances pooled under the items' masks."""
_RULES = {"mean": np.nanmean, "median": np.nanmedian, "max": np.nanmax, "min": np.nanmin}


@dataclass
class Scores:
    """Per item scores of every metric, oriented as distances (larger = more different).

    Attributes:
        columns: Metric name -> per item score (mean over comparison regions, or
            `rule`).
        pairs: Metric name -> (items, comparisons) distances before aggregation.
        info: Metric name -> what it is (family, backbone, framework, file, ...).
        notes: Scorers left out, and why.
    """

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    pairs: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, per_pair: np.ndarray, rule: str, **info: Any) -> None:
        """Record a metric's distances (items x comparisons, NaN-padded)."""
        self.pairs[name] = per_pair
        self.columns[name] = _RULES[rule](per_pair, axis=1)
        self.info[name] = info

    def of_family(self, *families: str) -> dict[str, np.ndarray]:
        """The per item scores of the metrics of these families (`layer`, `classical`, ...)."""
        return {n: v for n, v in self.columns.items() if self.info[n]["family"] in families}

    def headline(self) -> dict[str, np.ndarray]:
        """Scorers and classical baselines (single layers appear through the CV choice)."""
        return {
            n: v for n, v in self.columns.items() if self.info[n]["family"] not in LAYER_FAMILIES
        }


def score_items(entries: Sequence[Entry], items: RatedItems, options: Options) -> Scores:
    """Every scorer, feature extractor and classical baseline on every rated item."""
    from tqdm import tqdm

    scores = Scores()
    models = [e for e in entries if e.kind in (*SCORER_KINDS, *MASKED_KINDS, "features")]
    in_sample = [e for e in models if fitted_cases(e) & set(items.ids)]
    for entry in in_sample:
        scores.notes.append(
            f"{entry.path.name}: heads fitted to ratings of these very items; left out of the "
            "agreement tables (its held-out results are under 'Metrics fitted to ratings')"
        )
    models = [e for e in models if e not in in_sample]
    for entry in tqdm(models, desc="models", unit="model"):
        _add_model(scores, entry, items, options)
    _add_classical(scores, items, options.rule)
    return scores


def _add_model(scores: Scores, entry: Entry, items: RatedItems, options: Options) -> None:
    """A scorer's distances, or every tap x mode of a feature extractor's."""
    base = dict(
        backbone=entry.backbone, framework=entry.framework, file=entry.path.name,
        model=entry.model, heads=entry.heads.get("source"), label=model_label(entry.manifest),
    )  # fmt: skip
    for name, table in _model_distances(entry, items, options.prefer_gpu).items():
        if entry.kind == "features":
            tap, mode = name.split("/")
            masked = mode.endswith(MASKED_SUFFIX)
            mode = mode.removesuffix(MASKED_SUFFIX)
            scores.add(
                f"cos-{mode} {entry.label}{' masked' if masked else ''} {tap}", table,
                options.rule, family="layer_masked" if masked else "layer", tap=tap,
                mode=mode, **base,
            )  # fmt: skip
        else:
            fitted = " fitted" if fitted_cases(entry) or entry.heads.get("fitted") else ""
            scores.add(
                f"{entry.kind} {entry.label}{fitted}", table, options.rule,
                family=entry.kind, **base,
            )  # fmt: skip


def _model_distances(entry: Entry, items: RatedItems, prefer_gpu: bool) -> dict[str, np.ndarray]:
    """Output name (`tap/mode` of a feature extractor, "" of a scorer) -> distance table.

    Where the items have masks or outlines, a feature extractor's distances come twice:
    by bounding box (`tap/mode`) and pooled under the masks (`tap/mode masked`).
    """
    from evaluation.features import FeatureExtractor
    from evaluation.score import Scorer

    run: Callable[..., dict[str, Sequence[float]]]
    if entry.kind == "features":
        extractor = FeatureExtractor(entry.path, prefer_gpu=prefer_gpu)
        outlined = bool(items.masks) or any(
            isinstance(where, Outline)
            for (_, box), comps in zip(items.references, items.comparisons, strict=True)
            for where in (box, *(c[1] for c in comps))
        )

        def run(ref, paths, box, boxes, masked_box, masked_boxes):
            out = extractor.distances_many(ref, paths, box, boxes)
            if outlined:
                masked = extractor.distances_many(ref, paths, masked_box, masked_boxes, True)
                out.update({f"{k}{MASKED_SUFFIX}": v for k, v in masked.items()})
            return out
    else:
        scorer = Scorer(entry.path, prefer_gpu=prefer_gpu)
        masked_scorer = is_masked(entry.kind)

        def run(ref, paths, box, boxes, masked_box, masked_boxes):
            if masked_scorer:
                return {"": scorer.score_many(ref, paths, masked_box, masked_boxes)}
            return {"": scorer.score_many(ref, paths, box, boxes)}

    def masked(path, box):  # the region under its mask, where the image has one
        return read_mask(items.masks[path]) if path in items.masks else box

    def item(ref, box, comps):
        paths, boxes = [c[0] for c in comps], [c[1] for c in comps]
        return run(ref, paths, box, boxes, masked(ref, box), [masked(*c) for c in comps])

    per_item = (
        item(ref, box, comps)
        for (ref, box), comps in zip(items.references, items.comparisons, strict=True)
    )
    return _distance_tables(per_item, items)


def _add_classical(scores: Scores, items: RatedItems, rule: str) -> None:
    """The classical baselines (`evaluation.classical`), every one read as a distance."""
    from tqdm import tqdm

    from evaluation.classical import CLASSICAL, classical_many

    def distances(i: int) -> dict[str, Sequence[float]]:
        (ref, box), comps = items.references[i], items.comparisons[i]
        reference = crop_region(decode_image(ref), box)
        return classical_many(reference, [crop_region(decode_image(p), b) for p, b in comps])

    rows = tqdm(range(len(items.ids)), desc="classical baselines", unit="item", leave=False)
    for name, table in _distance_tables((distances(i) for i in rows), items).items():
        info = CLASSICAL[name]
        oriented = table if info.lower_better else -table  # every score reads as a distance
        label = name if info.lower_better else f"{name} (negated)"
        scores.add(label, oriented, rule, family="classical", description=info.description)


def _distance_tables(
    per_item: Iterable[dict[str, Sequence[float]]], items: RatedItems
) -> dict[str, np.ndarray]:
    """Metric name -> items x comparisons table (NaN-padded), from each item's distances."""
    shape = (len(items.ids), max(len(c) for c in items.comparisons))
    tables: dict[str, np.ndarray] = {}
    for i, result in enumerate(per_item):
        for name, values in result.items():
            table = tables.setdefault(name, np.full(shape, np.nan))
            table[i, : len(values)] = values
    return tables
