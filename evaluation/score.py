"""Score image pairs with an exported LPIPS / DISTS ONNX scorer (onnxruntime only).

    python -m evaluation.score MODEL.onnx IMAGE_A IMAGE_B [--region-a x,y,w,h]
                               [--region-b x,y,w,h] [--json]
    python -m evaluation.score MODEL.onnx --pairs pairs.csv --out scores.csv
                               [--engine local|ray] [--address ADDR] [--workers N]

Images go through the one decoder (EXIF-aware, RGB float [0, 1]) and are cropped to
their region (source pixels). Two regions of the same size are scored at that size, as
the `lpips` and `DISTS_pytorch` packages do, when the scorer takes any size; otherwise
(different sizes, a fixed-grid ViT, or `--size`) both are fitted to the scorer's size.
The size used and whether it resized are printed on stderr (and are in `--json`).
A region under 16 px on its shorter side is refused (`--min-region`). 0 means
identical, lower is more similar. Needs numpy, Pillow / OpenCV and onnxruntime only.

A pairs table is scored `--batch` pairs at a time by an engine (`evaluation.engines`):
in this process (`--engine local`, the default) or by a pool of Ray workers (`--engine
ray`, the `scale` extra; docs/scale.md). Either way the scores are written in the
table's order, the CSV appears whole or not at all, and the numbers are the same.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.core.data.image import DEFAULT_POLICY, Box, box_text
from bridge.core.data.masks import OUTLINES, RegionMask, parse_region_cell, region_cell
from bridge.core.files import atomic_path
from bridge.core.runtime import (
    MASKED_KINDS,
    SCORER_KINDS,
    heads_kind,
    is_masked,
    metric_of,
    model_label,
)
from evaluation.engines import EngineOptions, add_engine_arguments, engine_options, map_batches
from evaluation.inputs import MIN_REGION, ImageModel, Region, command_region, region_text

log = logging.getLogger(__name__)


class Scorer(ImageModel):
    """An LPIPS / DISTS ONNX scorer: images or regions in, distances out.

    Opened, sized and checked as `evaluation.inputs.ImageModel` (same arguments). A
    masked scorer (`lpips_masked`, `dists_masked`) also takes regions as masks
    (`bridge.core.data.masks.RegionMask`); a box is an all-ones mask to it.

    Args:
        fill: Masked scorers: fill the pixels outside each mask with the region's mean
            colour before the backbone (less leakage from outside the lesion).
        **kwargs: As `ImageModel`.

    Raises:
        ValueError: If the model is not a scorer, or the size does not suit it.
    """

    KINDS = (*SCORER_KINDS, *MASKED_KINDS)
    NEEDS = "scoring needs an lpips or dists scorer (python -m bridge.export --kind lpips|dists)"

    def __init__(self, model, *args, fill: bool = False, **kwargs):
        super().__init__(model, *args, **kwargs)
        self.masked = is_masked(self.model.manifest["kind"])
        if fill and not self.masked:
            raise ValueError(
                f"{self.model.path.name}: fill needs a masked scorer "
                "(python -m bridge.export --kind lpips_masked|dists_masked)"
            )
        self.fill = fill

    @property
    def metric(self) -> str:
        """`lpips` or `dists` (masked or not: `masked` says)."""
        return metric_of(self.model.manifest["kind"])

    def score_arrays(
        self,
        a: np.ndarray,
        b: np.ndarray,
        mask_a: np.ndarray | None = None,
        mask_b: np.ndarray | None = None,
    ) -> np.ndarray:
        """Distances (N,) of two prepared batches (N, 3, H, W) in [0, 1].

        `a` may hold one image, scored against every image of `b`. A masked scorer
        takes masks (N, 1, H, W) in [0, 1] (default all ones).

        Raises:
            ValueError: On mismatched shapes, NaN / inf, values outside [0, 1], masks
                given to a scorer without mask inputs, or masks whose joint weight is
                empty (the masked metric is undefined there).
        """
        a, b = self.check_pair(a, b)
        return self.model.run(outputs=["distance"], **self._inputs(a, b, mask_a, mask_b))[
            "distance"
        ]

    def _inputs(self, a, b, mask_a, mask_b) -> dict[str, np.ndarray]:
        """The graph's inputs: the images, and for a masked scorer the checked masks."""
        if not self.masked:
            if mask_a is not None or mask_b is not None:
                raise ValueError(
                    f"{self.model.path.name}: a {self.metric} scorer without mask inputs; "
                    f"masks need a masked scorer (--kind {self.metric}_masked)"
                )
            return {"image_a": a, "image_b": b}
        masks = []
        for mask, image, name in ((mask_a, a, "mask_a"), (mask_b, b, "mask_b")):
            m = np.ones((len(image), 1, *image.shape[2:]), np.float32) if mask is None else mask
            m = np.asarray(m, np.float32)
            if m.shape != (len(image), 1, *image.shape[2:]):
                raise ValueError(
                    f"{name}: expected ({len(image)}, 1, {image.shape[2]}, {image.shape[3]}), "
                    f"got {m.shape}"
                )
            if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
                raise ValueError(f"{name}: mask weights must lie in [0, 1]")
            masks.append(m)
        joint = (masks[0] * masks[1]).sum(axis=(1, 2, 3))
        if not (joint > 0).all():
            raise ValueError(
                "the two masks do not overlap on the common grid (their joint weight is "
                "empty): the masked metric pairs positions of both regions and is undefined"
            )
        return {"image_a": a, "image_b": b, "mask_a": masks[0], "mask_b": masks[1]}

    def distance_map(
        self,
        a: np.ndarray,
        b: np.ndarray,
        mask_a: np.ndarray | None = None,
        mask_b: np.ndarray | None = None,
    ) -> np.ndarray:
        """LPIPS distance maps (N, 1, H, W) of two prepared batches (N, 3, H, W) in [0, 1].

        The LPIPS spatial map at the input size: every tap's map upsampled bilinearly
        and summed. Its mean over H, W is close to the distance, not equal to it.

        Raises:
            ValueError: If the scorer is not LPIPS or predates the map output, or on
                the same bad batches as `score_arrays`.
        """
        if self.metric != "lpips":
            raise ValueError(
                f"{self.model.path.name}: a {self.metric} scorer has no distance map; "
                "expected an lpips scorer"
            )
        if "distance_map" not in self.model.outputs:
            raise ValueError(
                f"{self.model.path.name}: has no distance_map output; re-export it "
                "(python -m bridge.export ... --kind lpips)"
            )
        a, b = self.check_pair(a, b)
        inputs = self._inputs(a, b, mask_a, mask_b)
        return self.model.run(outputs=["distance_map"], **inputs)["distance_map"]

    @property
    def label(self) -> str:
        """What tells this scorer from the others (`bridge.core.runtime.model_label`)."""
        return model_label(self.model.manifest)

    def identity(self) -> dict[str, str | None]:
        """What distinguishes this scorer, as fields (`--json` and the explorer show them).

        Its label, metric, backbone, who trained it (framework and run folder), heads,
        exporter and precision (`fp32`, or `int8` / `fp16` for a `bridge.precision` copy).
        """
        manifest = self.model.manifest
        run = manifest.get("training_run") or {}
        return {
            "scorer": self.label, "metric": self.metric, "backbone": manifest.get("backbone"),
            "trained_by": run.get("framework"), "run": run.get("dir"),
            "heads": heads_kind(manifest), "origin": manifest.get("origin"),
            "precision": self.model.precision,
        }  # fmt: skip

    def score(self, a, b, box_a: Region = None, box_b: Region = None) -> float:
        """The distance between two images or regions (under the size rule)."""
        return self.score_detail(a, b, box_a, box_b)["distance"]

    def prepare_pair(self, a, b, box_a: Region = None, box_b: Region = None) -> tuple:
        """Two regions prepared together: (2, 3, H, W), masks (2, 1, H, W) or None, resized."""
        self._check_regions(box_a, box_b)
        batch, masks, resized = self.prepare_masked_group([(a, box_a), (b, box_b)], self.fill)
        return batch, masks if self.masked else None, resized

    def _check_regions(self, *regions: Region) -> None:
        if not self.masked and any(isinstance(r, RegionMask) for r in regions):
            raise ValueError(
                f"{self.model.path.name}: a {self.metric} scorer without mask inputs; masks "
                f"and polygons need a masked scorer (--kind {self.metric}_masked)"
            )

    def score_detail(self, a, b, box_a: Region = None, box_b: Region = None) -> dict:
        """The distance between two images or regions, the size it was scored at and why.

        Returns:
            {"distance", "size": [height, width] scored at, "resized": whether the
            regions were fitted to the scorer's size rather than kept as they are}.
        """
        batch, masks, resized = self.prepare_pair(a, b, box_a, box_b)
        ma, mb = (None, None) if masks is None else (masks[:1], masks[1:])
        distance = float(self.score_arrays(batch[:1], batch[1:], ma, mb)[0])
        return {"distance": distance, "size": list(batch.shape[2:]), "resized": resized}

    def score_many(
        self,
        reference,
        others: Sequence,
        box: Box | str | None = None,
        boxes: Sequence | None = None,
    ) -> np.ndarray:
        """Distances of one reference (a lesion region) to K comparison regions.

        Costs 1 + K backbone passes, not 2K, when the scorer supports it (its manifest
        says `shared_reference`); otherwise the reference is repeated per pair.

        Arguments as `ImageModel.prepare_many`.
        """
        if self.masked:  # masks travel pair by pair
            boxes = list(boxes) if boxes is not None else [None] * len(others)
            pairs = [(reference, box, other, b) for other, b in zip(others, boxes, strict=True)]
            return np.array(list(self.score_pairs(pairs)), np.float32)
        ref, batch = self.prepare_many(reference, others, box, boxes)
        if not self.model.manifest.get("shared_reference"):  # this graph scores pairs only
            ref = np.repeat(ref, len(batch), axis=0)
        return self.score_arrays(ref, batch)

    def score_pairs(self, pairs: Iterable[tuple], batch: int = 16) -> Iterator[float]:
        """Distances of (image_a, box_a, image_b, box_b) pairs, `batch` at a time, in order."""
        chunk: list[tuple] = []
        for image_a, box_a, image_b, box_b in pairs:
            prepared, masks, _ = self.prepare_pair(image_a, image_b, box_a, box_b)
            chunk.append((prepared, masks))
            if len(chunk) == batch:
                yield from self._flush(chunk)
                chunk = []
        if chunk:
            yield from self._flush(chunk)

    def _flush(self, chunk: list[tuple]) -> list[float]:
        """Score prepared pairs ((2, 3, H, W), masks), one run per size, in the chunk's order."""
        out = [0.0] * len(chunk)
        by_shape: dict[tuple, list[int]] = {}
        for i, (pair, _) in enumerate(chunk):
            by_shape.setdefault(pair.shape, []).append(i)
        for rows in by_shape.values():
            a = np.stack([chunk[i][0][0] for i in rows])
            b = np.stack([chunk[i][0][1] for i in rows])
            masks = (None, None)
            if self.masked:
                masks = tuple(np.stack([chunk[i][1][k] for i in rows]) for k in (0, 1))
            for i, d in zip(rows, self.score_arrays(a, b, *masks), strict=True):
                out[i] = float(d)
        return out


@dataclass(frozen=True)
class ScoreJob:
    """Pair scoring an engine runs (`evaluation.engines`): a scorer opened once per worker.

    A worker maps `{"image_a", "box_a", "image_b", "box_b"}` (regions as
    `bridge.core.data.masks.region_cell` writes them: a box, "" for the whole image, or
    an outline) to `{"distance": (B,) float64}`, scoring under `Scorer.score_pairs`'s
    rules.

    Attributes:
        model: The scorer .onnx file.
        size: Fitted side (None: the size rule of `evaluation.inputs`).
        policy: Resize policy.
        min_region: Smallest shorter side of a region.
        prefer_gpu: Try the CUDA provider.
        threads: Intra-op threads per worker session (None: onnxruntime's choice).
        fill: Masked scorers: fill outside each outline first (`Scorer`'s `fill`).
    """

    model: str
    size: int | None = None
    policy: str = DEFAULT_POLICY
    min_region: int = MIN_REGION
    prefer_gpu: bool = True
    threads: int | None = None
    fill: bool = False

    def open(self) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """A worker function holding its own open scorer."""
        from bridge.core.runtime import open_model

        model = open_model(self.model, prefer_gpu=self.prefer_gpu, threads=self.threads)
        scorer = Scorer(model, self.size, self.policy, min_region=self.min_region, fill=self.fill)

        def worker(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            pairs = [
                (os.fspath(a), parse_region_cell(ra), os.fspath(b), parse_region_cell(rb))
                for a, ra, b, rb in zip(
                    batch["image_a"], batch["box_a"], batch["image_b"], batch["box_b"], strict=True
                )
            ]
            scores = list(scorer.score_pairs(pairs, batch=max(len(pairs), 1)))
            return {"distance": np.asarray(scores, np.float64)}

        return worker


def score_table(
    pairs: Sequence,
    job: ScoreJob,
    metric: str,
    out: str | os.PathLike,
    engine: EngineOptions | None = None,
) -> Path:
    """Score region pairs on an engine and write them, in their order, as one CSV.

    The engine scores batches (on Ray, several at once, any of them perhaps twice
    after a worker died); they are gathered in row order, each row written once, into
    a temporary file that replaces `out` only when every pair is scored.

    Args:
        pairs: `bridge.core.data.ratings.RegionPair`s (`id`, `image_a`, `box_a`,
            `image_b`, `box_b`).
        job: The scorer each engine worker opens.
        metric: The score column's name (`lpips` or `dists`).
        out: The CSV written: `id, image_a, box_a, image_b, box_b, <metric>`.
        engine: Where the batches run (default: in this process, 16 pairs a batch).

    Returns:
        The CSV's path.

    Raises:
        ValueError: On a pair the scorer refuses (a region under the minimum size, an
            image it cannot read), or the engine's errors.
    """
    from tqdm import tqdm

    columns = {
        "image_a": [os.path.abspath(p.image_a) for p in pairs],
        "box_a": [region_cell(p.region_a) for p in pairs],
        "image_b": [os.path.abspath(p.image_b) for p in pairs],
        "box_b": [region_cell(p.region_b) for p in pairs],
    }
    kinds = {o.kind for p in pairs for o in (p.outline_a, p.outline_b) if o is not None}
    outlines = [kind for kind in OUTLINES if kind in kinds]  # their columns, if any
    out = Path(out)
    with (
        atomic_path(out) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as f,
        tqdm(total=len(pairs), unit="pair") as bar,
    ):
        writer = csv.writer(f)
        writer.writerow(
            ["id", "image_a", "box_a", "image_b", "box_b"]
            + [f"{kind}_{side}" for kind in outlines for side in "ab"]
            + [metric]
        )
        done = 0
        for start, result in map_batches(job, columns, engine or EngineOptions()):
            distances = result["distance"]
            rows = pairs[start : start + len(distances)]
            if start != done:  # engines yield in row order; never write a row out of place
                raise RuntimeError(f"scores of rows {start}.. came before rows {done}..")
            for pair, distance in zip(rows, distances, strict=True):
                writer.writerow(
                    [pair.id, pair.image_a, box_text(pair.box_a)]
                    + [pair.image_b, box_text(pair.box_b)]
                    + [_outline_cell(pair, kind, side) for kind in outlines for side in "ab"]
                    + [f"{float(distance):.8g}"]
                )
            done += len(distances)
            bar.update(len(distances))
        if done != len(pairs):
            raise RuntimeError(f"{done} of {len(pairs)} pairs scored")
    return out


def _outline_cell(pair, kind: str, side: str) -> str:
    """The pair's `<kind>_<side>` cell: its outline's text when it is of that kind."""
    outline = getattr(pair, f"outline_{side}")
    return outline.text if outline is not None and outline.kind == kind else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Score one pair (printed) or a pairs table (written as CSV)."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.score", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("model", help="an lpips or dists .onnx scorer (manifest beside it)")
    parser.add_argument("image_a", nargs="?", help="first image")
    parser.add_argument("image_b", nargs="?", help="second image")
    parser.add_argument(
        "--region-a", default=None, help="x,y,w,h region of image A (source pixels)"
    )
    parser.add_argument("--region-b", default=None, help="x,y,w,h region of image B")
    for side in "ab":
        parser.add_argument(
            f"--mask-{side}",
            default=None,
            help=f"mask image of image {side.upper()} (its size; white inside; masked scorers)",
        )
        parser.add_argument(
            f"--polygon-{side}",
            default=None,
            help=f'outline of a region of image {side.upper()}: "x1,y1 x2,y2 x3,y3 ..." '
            "(masked scorers)",
        )
    parser.add_argument(
        "--fill",
        action="store_true",
        help="masked scorers: fill outside each mask with the region's mean colour first",
    )
    parser.add_argument(
        "--pairs", default=None, help="CSV with image_a, box_a, image_b, box_b[, raters]"
    )
    parser.add_argument(
        "--images", default=None, help="folder that relative paths in --pairs refer to"
    )
    parser.add_argument("--out", default=None, help="output CSV for --pairs")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="fit every region to this side (default: same-size regions keep their size, "
        "others are fitted to the scorer's native size)",
    )
    parser.add_argument(
        "--min-region",
        type=int,
        default=MIN_REGION,
        help=f"refuse images / regions under this many px on the shorter side ({MIN_REGION})",
    )
    parser.add_argument(
        "--policy", default=DEFAULT_POLICY, help="stretch, shorter_center_crop or pad"
    )
    add_engine_arguments(parser, rows="pairs")  # --engine, --address, --workers, --batch
    parser.add_argument("--cpu", action="store_true", help="do not try the CUDA provider")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON object instead of the number"
    )
    args = parser.parse_args(argv)

    if args.pairs is None and (args.image_a is None or args.image_b is None):
        raise ValueError("give two images (IMAGE_A IMAGE_B) or --pairs pairs.csv --out scores.csv")
    if args.pairs is not None and args.out is None:
        raise ValueError("--pairs needs --out for the scores CSV")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    engine = engine_options(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    scorer = Scorer(
        args.model, args.size, args.policy, prefer_gpu=not args.cpu, min_region=args.min_region,
        fill=args.fill,
    )  # fmt: skip

    if args.pairs is None:
        box_a = command_region(args.image_a, args.region_a, args.mask_a, args.polygon_a, "a")
        box_b = command_region(args.image_b, args.region_b, args.mask_b, args.polygon_b, "b")
        detail = scorer.score_detail(args.image_a, args.image_b, box_a, box_b)
        height, width = detail["size"]
        if args.json:
            print(json.dumps({
                **scorer.identity(), "distance": detail["distance"],
                "image_a": args.image_a, "region_a": region_text(box_a),
                "image_b": args.image_b, "region_b": region_text(box_b),
                "masked": scorer.masked, "fill": scorer.fill,
                "size": detail["size"], "resized": detail["resized"],
                "provider": scorer.provider,
            }))  # fmt: skip
        else:
            how = "fitted to the scorer's size" if detail["resized"] else "their own size"
            log.info("scored at %dx%d (%s), %s", width, height, how, scorer.model.precision)
            print(f"{detail['distance']:.6f}")
        return 0

    from bridge.core.data.ratings import read_region_pairs

    table = read_region_pairs(args.pairs, args.images)
    if not scorer.masked and any(p.has_outline for p in table.pairs):
        log.info(
            "%s has no mask inputs: outlined regions are scored by their bounding boxes "
            "(a masked scorer weighs them by the outline)",
            Path(args.model).name,
        )
    job = ScoreJob(
        str(Path(args.model).resolve()),
        args.size,
        args.policy,
        min_region=args.min_region,
        prefer_gpu=not args.cpu,
        fill=args.fill,
    )
    metric = scorer.metric
    del scorer  # checked; the engine's workers open their own
    out = score_table(table.pairs, job, metric, args.out, engine)
    print(out)
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
