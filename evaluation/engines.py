"""Where batch work runs: in this process (`local`, the default) or on a Ray cluster (`ray`).

A job is a small picklable description (`evaluation.embedding.EmbedJob`, `ScoreJob`)
whose `open()` returns a worker function: a batch of input columns in, a batch of
output columns out, with the model opened once per worker. `map_batches` feeds the
rows to workers `batch_size` at a time and yields the outputs **in input order**,
whichever engine ran them:

* `local`: one worker in this process; nothing beyond onnxruntime.
* `ray`: Ray Data's `map_batches` with an actor pool, each actor opening the model
  once (`evaluation.ray_engine`; needs the `scale` extra). Ray retries the batches of
  an actor that dies, so a killed worker loses and duplicates no row.

Both give the same numbers (the same worker code runs the same batches).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bridge.core.data.image import DEFAULT_POLICY, parse_box

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineOptions:
    """How to run batch work.

    Attributes:
        engine: `local` or `ray`.
        address: Ray cluster address (`ray://host:10001`, `host:6379` or `auto`);
            None starts a local Ray cluster on this machine.
        workers: Ray actors (None: one per CPU Ray offers, at most 8).
        batch_size: Rows per batch.
    """

    engine: str = "local"
    address: str | None = None
    workers: int | None = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(
                f"unknown engine {self.engine!r}; expected one of {', '.join(ENGINES)}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.address and self.engine != "ray":
            raise ValueError("--address is for --engine ray")


def map_batches(
    job, columns: Mapping[str, Sequence], options: EngineOptions = EngineOptions()
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Run `job` over the rows of `columns`, yielding (first row, output batch) in row order.

    Args:
        job: A picklable object whose `open()` returns the worker function.
        columns: Input columns of equal length (plain strings and numbers).
        options: The engine and its settings.

    Raises:
        ValueError: On columns of unequal length, or the engine's own errors (a Ray
            address that does not answer, a worker's user error).
    """
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"input columns differ in length: {lengths}")
    if options.engine == "ray":
        from evaluation.ray_engine import ray_map_batches

        yield from ray_map_batches(job, columns, options)
        return
    yield from local_map_batches(job, columns, options.batch_size)


def local_map_batches(
    job, columns: Mapping[str, Sequence], batch_size: int
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """`map_batches` in this process: one worker, batches in order."""
    n = len(next(iter(columns.values()))) if columns else 0
    if n == 0:
        return
    worker = job.open()
    for start in range(0, n, batch_size):
        batch = {
            k: np.asarray(v[start : start + batch_size], dtype=object) for k, v in columns.items()
        }
        yield start, worker(batch)


@dataclass(frozen=True)
class ScoreJob:
    """Pair scoring an engine runs: an LPIPS / DISTS scorer opened once per worker.

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
    min_region: int = 16
    prefer_gpu: bool = True
    threads: int | None = None

    def open(self) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """A worker function holding its own open scorer."""
        from bridge.core.runtime import open_model
        from evaluation.score import Scorer

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


def _box(text: str):
    """A box cell ("" = the whole image)."""
    return parse_box(text) if text else None


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--engine` options shared by the commands that run batch work."""
    parser.add_argument("--engine", default="local", choices=ENGINES, help="local (default) or ray")
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local one)"
    )
    parser.add_argument("--workers", type=int, default=None, help="Ray actors (default: CPUs)")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The `EngineOptions` of parsed `add_engine_arguments` options."""
    return EngineOptions(args.engine, args.address, args.workers, args.batch)
