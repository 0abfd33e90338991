"""Where batch work runs: in this process (`local`, the default) or on a Ray cluster (`ray`).

A job is a small picklable description (`evaluation.embedding.EmbedJob`,
`evaluation.score.ScoreJob`) whose `open()` returns a worker function: a batch of
input columns in, a batch of output columns out, with the model opened once per
worker. `map_batches` feeds the rows to workers `batch_size` at a time and yields the
outputs **in input order**, whichever engine ran them:

* `local`: one worker in this process; nothing beyond onnxruntime.
* `ray`: Ray Data's `map_batches` with an actor pool, each actor opening the model
  once (`evaluation.ray_engine`; needs the `scale` extra). Ray retries the batches of
  an actor that dies, so a killed worker loses and duplicates no row.

Both give the same numbers (the same worker code runs the same batches).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

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


def add_engine_arguments(parser: argparse.ArgumentParser, rows: str = "images") -> None:
    """The `--engine` options shared by the commands that run batch work.

    Args:
        parser: The command's parser.
        rows: What a batch holds, for `--batch`'s help (`images`, `pairs`).
    """
    parser.add_argument("--engine", default="local", choices=ENGINES, help="local (default) or ray")
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local one)"
    )
    parser.add_argument("--workers", type=int, default=None, help="Ray actors (default: CPUs)")
    parser.add_argument("--batch", type=int, default=16, help=f"{rows} per batch (default 16)")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The `EngineOptions` of parsed `add_engine_arguments` options."""
    return EngineOptions(args.engine, args.address, args.workers, args.batch)
