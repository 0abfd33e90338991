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

from bridge.core.data.image import DEFAULT_POLICY, Box, box_text, parse_box
from bridge.core.files import atomic_path
from bridge.core.runtime import SCORER_KINDS, heads_kind, model_label
from evaluation.engines import EngineOptions, add_engine_arguments, engine_options, map_batches
from evaluation.inputs import MIN_REGION, ImageModel

log = logging.getLogger(__name__)


class Scorer(ImageModel):
    """An LPIPS / DISTS ONNX scorer: images or regions in, distances out.

    Opened, sized and checked as `evaluation.inputs.ImageModel` (same arguments).

    Raises:
        ValueError: If the model is not a scorer, or the size does not suit it.
    """

    KINDS = SCORER_KINDS
    NEEDS = "scoring needs an lpips or dists scorer (python -m bridge.export --kind lpips|dists)"

    @property
    def metric(self) -> str:
        """`lpips` or `dists`."""
        return self.model.manifest["kind"]

    def score_arrays(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distances (N,) of two prepared batches (N, 3, H, W) in [0, 1].

        `a` may hold one image, scored against every image of `b`.

        Raises:
            ValueError: On mismatched shapes, NaN / inf, or values outside [0, 1].
        """
        a, b = self.check_pair(a, b)
        return self.model.run(outputs=["distance"], image_a=a, image_b=b)["distance"]

    def distance_map(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
        return self.model.run(outputs=["distance_map"], image_a=a, image_b=b)["distance_map"]

    @property
    def label(self) -> str:
        """What tells this scorer from the others (`bridge.core.runtime.model_label`)."""
        return model_label(self.model.manifest)

    def identity(self) -> dict[str, str | None]:
        """What distinguishes this scorer, as fields (`--json` and the explorer show them).

        Its label, metric, backbone, who trained it (framework and run folder), heads
        and exporter.
        """
        manifest = self.model.manifest
        run = manifest.get("training_run") or {}
        return {
            "scorer": self.label, "metric": self.metric, "backbone": manifest.get("backbone"),
            "trained_by": run.get("framework"), "run": run.get("dir"),
            "heads": heads_kind(manifest), "origin": manifest.get("origin"),
        }  # fmt: skip

    def score(self, a, b, box_a: Box | str | None = None, box_b: Box | str | None = None) -> float:
        """The distance between two images or regions (under the size rule)."""
        return self.score_detail(a, b, box_a, box_b)["distance"]

    def score_detail(
        self, a, b, box_a: Box | str | None = None, box_b: Box | str | None = None
    ) -> dict:
        """The distance between two images or regions, the size it was scored at and why.

        Returns:
            {"distance", "size": [height, width] scored at, "resized": whether the
            regions were fitted to the scorer's size rather than kept as they are}.
        """
        batch, resized = self.prepare_group([(a, box_a), (b, box_b)])
        distance = float(self.score_arrays(batch[:1], batch[1:])[0])
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
        ref, batch = self.prepare_many(reference, others, box, boxes)
        if not self.model.manifest.get("shared_reference"):  # this graph scores pairs only
            ref = np.repeat(ref, len(batch), axis=0)
        return self.score_arrays(ref, batch)

    def score_pairs(self, pairs: Iterable[tuple], batch: int = 16) -> Iterator[float]:
        """Distances of (image_a, box_a, image_b, box_b) pairs, `batch` at a time, in order."""
        chunk: list[np.ndarray] = []
        for image_a, box_a, image_b, box_b in pairs:
            chunk.append(self.prepare_group([(image_a, box_a), (image_b, box_b)])[0])
            if len(chunk) == batch:
                yield from self._flush(chunk)
                chunk = []
        if chunk:
            yield from self._flush(chunk)

    def _flush(self, chunk: list[np.ndarray]) -> list[float]:
        """Score prepared (2, 3, H, W) pairs, one run per size, in the chunk's order."""
        out = [0.0] * len(chunk)
        by_shape: dict[tuple, list[int]] = {}
        for i, pair in enumerate(chunk):
            by_shape.setdefault(pair.shape, []).append(i)
        for rows in by_shape.values():
            a = np.stack([chunk[i][0] for i in rows])
            b = np.stack([chunk[i][1] for i in rows])
            for i, d in zip(rows, self.score_arrays(a, b), strict=True):
                out[i] = float(d)
        return out


@dataclass(frozen=True)
class ScoreJob:
    """Pair scoring an engine runs (`evaluation.engines`): a scorer opened once per worker.

    A worker maps `{"image_a", "box_a", "image_b", "box_b"}` (boxes "" = whole image)
    to `{"distance": (B,) float64}`, scoring under `Scorer.score_pairs`'s rules.

    Attributes:
        model: The scorer .onnx file.
        size: Fitted side (None: the size rule of `evaluation.inputs`).
        policy: Resize policy.
        min_region: Smallest shorter side of a region.
        prefer_gpu: Try the CUDA provider.
        threads: Intra-op threads per worker session (None: onnxruntime's choice).
    """

    model: str
    size: int | None = None
    policy: str = DEFAULT_POLICY
    min_region: int = MIN_REGION
    prefer_gpu: bool = True
    threads: int | None = None

    def open(self) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """A worker function holding its own open scorer."""
        from bridge.core.runtime import open_model

        model = open_model(self.model, prefer_gpu=self.prefer_gpu, threads=self.threads)
        scorer = Scorer(model, self.size, self.policy, min_region=self.min_region)

        def worker(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            pairs = [
                (
                    os.fspath(a),
                    parse_box(ba) if ba else None,
                    os.fspath(b),
                    parse_box(bb) if bb else None,
                )
                for a, ba, b, bb in zip(
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
        "box_a": [box_text(p.box_a) for p in pairs],
        "image_b": [os.path.abspath(p.image_b) for p in pairs],
        "box_b": [box_text(p.box_b) for p in pairs],
    }
    out = Path(out)
    with (
        atomic_path(out) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as f,
        tqdm(total=len(pairs), unit="pair") as bar,
    ):
        writer = csv.writer(f)
        writer.writerow(["id", "image_a", "box_a", "image_b", "box_b", metric])
        done = 0
        for start, result in map_batches(job, columns, engine or EngineOptions()):
            distances = result["distance"]
            rows = pairs[start : start + len(distances)]
            if start != done:  # engines yield in row order; never write a row out of place
                raise RuntimeError(f"scores of rows {start}.. came before rows {done}..")
            for pair, distance in zip(rows, distances, strict=True):
                writer.writerow(
                    [
                        pair.id,
                        pair.image_a,
                        box_text(pair.box_a),
                        pair.image_b,
                        box_text(pair.box_b),
                        f"{float(distance):.8g}",
                    ]
                )
            done += len(distances)
            bar.update(len(distances))
        if done != len(pairs):
            raise RuntimeError(f"{done} of {len(pairs)} pairs scored")
    return out


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
        args.model, args.size, args.policy, prefer_gpu=not args.cpu, min_region=args.min_region
    )

    if args.pairs is None:
        box_a = parse_box(args.region_a) if args.region_a else None
        box_b = parse_box(args.region_b) if args.region_b else None
        detail = scorer.score_detail(args.image_a, args.image_b, box_a, box_b)
        height, width = detail["size"]
        if args.json:
            print(json.dumps({
                **scorer.identity(), "distance": detail["distance"],
                "image_a": args.image_a, "region_a": box_text(box_a),
                "image_b": args.image_b, "region_b": box_text(box_b),
                "size": detail["size"], "resized": detail["resized"],
                "provider": scorer.provider,
            }))  # fmt: skip
        else:
            how = "fitted to the scorer's size" if detail["resized"] else "their own size"
            log.info("scored at %dx%d (%s)", width, height, how)
            print(f"{detail['distance']:.6f}")
        return 0

    from bridge.core.data.ratings import read_region_pairs

    table = read_region_pairs(args.pairs, args.images)
    job = ScoreJob(
        str(Path(args.model).resolve()),
        args.size,
        args.policy,
        min_region=args.min_region,
        prefer_gpu=not args.cpu,
    )
    metric = scorer.metric
    del scorer  # checked; the engine's workers open their own
    out = score_table(table.pairs, job, metric, args.out, engine)
    print(out)
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
