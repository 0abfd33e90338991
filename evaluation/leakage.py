"""Leakage of masked scorers: how far a masked distance moves when only the outside changes.

    python -m evaluation.leakage MODEL.onnx [MODEL.onnx ...] [--cases DIR] [--out table.md]

A masked scorer (`lpips_masked`, `dists_masked`) averages its terms under the lesion's
mask, but its backbone's receptive fields still see the pixels around the lesion. For
every rated case with a lesion mask (`0.mask.png` beside `0.jpg`; default: the built-in
synthetic set's cases) this scores the lesion region against the case's first
comparison region, then changes ONLY the pixels outside the (binarised) mask, by
inverting their colours, and scores again. Per scorer, with and without `fill`:

* `masked`: the mean |change| of the masked distance (0: no leakage);
* `box`: the mean |change| of the same scorer on the mask's bounding box with no mask
  (all-ones weights, i.e. the plain metric), the change a box-based score suffers;
* `ratio`: masked / box: the share of the outside's influence the mask does not remove.

With `fill` the outside is replaced by the region's mean colour before the backbone, so
any change outside the mask is erased (ratio 0 up to float rounding): the remedy's cost
is a flat surround, which the masked metric still sees near the outline.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.data import synth
from bridge.core.data.image import decode_image
from bridge.core.data.masks import check_weights, read_mask
from bridge.core.data.ratings import read_case_folders
from evaluation.score import Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """A lesion image, its mask, and the comparison image it is scored against."""

    image: Path
    mask: Path
    other: Path


def masked_cases(folder: str | Path) -> list[Case]:
    """The rated cases of `folder` whose reference image has a mask beside it.

    Raises:
        ValueError: If no case has a mask.
    """
    cases = [
        Case(c.reference, c.masks[c.reference], c.comparisons[0])
        for c in read_case_folders(folder)
        if c.reference in c.masks
    ]
    if not cases:
        raise ValueError(f"{folder}: no case has a lesion mask (0.mask.png beside 0.jpg)")
    return cases


def outside_changed(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The image with every pixel outside `inside` (a boolean H x W) colour-inverted."""
    out = image.copy()
    out[~inside] = 1.0 - out[~inside]
    return out


def leakage(scorer: Scorer, cases: Sequence[Case]) -> dict[str, Any]:
    """Mean |change| of the masked and of the box distance when the outside changes.

    Each mask is binarised at 0.5 first, so "outside" is exactly where it weighs 0.

    Raises:
        ValueError: If the scorer is not masked.
    """
    if not scorer.masked:
        raise ValueError(f"{scorer.model.path.name}: not a masked scorer; leakage needs one")
    masked, box = [], []
    for case in cases:
        image = decode_image(case.image)
        weights = read_mask(case.mask).weights
        inside = weights >= 0.5
        mask = check_weights(inside.astype(np.float32), f"{case.mask} (>= 0.5)")
        mask.check_image(image.shape, str(case.image))
        changed = outside_changed(image, inside)
        bounds = mask.box
        for out, region in ((masked, mask), (box, bounds)):
            before = scorer.score(image, case.other, region, None)
            after = scorer.score(changed, case.other, region, None)
            out.append(abs(after - before))
    masked_mean, box_mean = float(np.mean(masked)), float(np.mean(box))
    return {
        "scorer": scorer.label, "metric": scorer.metric, "backbone": scorer.backbone,
        "fill": scorer.fill, "cases": len(cases), "masked": masked_mean, "box": box_mean,
        "ratio": masked_mean / box_mean if box_mean > 0 else float("nan"),
    }  # fmt: skip


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The measurements as a Markdown table."""
    lines = [
        "| metric | backbone | fill | cases | mean abs. change, masked "
        "| mean abs. change, box | ratio |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['metric']} | {r['backbone']} | {'yes' if r['fill'] else 'no'} | {r['cases']} "
            f"| {r['masked']:.2e} | {r['box']:.2e} | {r['ratio']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every given masked scorer with and without fill; print (and write) the table."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.leakage", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("models", nargs="+", help="masked scorers (--kind lpips_masked, ...)")
    parser.add_argument(
        "--cases",
        default=None,
        help="rated case folders with 0.mask.png (default: the synthetic set's)",
    )
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--cpu", action="store_true", help="do not try the CUDA provider")
    args = parser.parse_args(argv)
    folder = Path(args.cases) if args.cases else synth.default_root() / synth.RATED_DIR
    cases = masked_cases(folder)
    rows = []
    for model in args.models:
        for fill in (False, True):
            scorer = Scorer(model, prefer_gpu=not args.cpu, fill=fill)
            rows.append(leakage(scorer, cases))
            log.info("%s, fill %s: ratio %.3f", scorer.label, fill, rows[-1]["ratio"])
    text = table(rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
