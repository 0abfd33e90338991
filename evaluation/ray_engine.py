"""The `ray` engine: `map_batches` on Ray Data, each actor of a pool holding one open model.

`ray_map_batches` is `evaluation.engines.map_batches` for `--engine ray`. The input
rows become a Ray dataset (one block per batch, plus a row-number column); Ray Data's
`map_batches` runs them through a fixed pool of actors (`--workers`, default one per
CPU the cluster offers, at most `MAX_WORKERS`), each of which calls the job's `open()`
once and then maps batch after batch. The outputs are gathered by row number and
yielded in input order, as the local engine yields them, and checked: every row
exactly once.

Faults: Ray Data makes the actors of a pool restartable and their tasks retried
(`max_restarts=-1`, `max_task_retries=-1` are its defaults for actor pools; passing
them through `map_batches`' remote arguments is deprecated in Ray 2.60), so when a
worker process dies (killed, out of memory, its node lost) Ray starts a new one, which
opens the model again, and reruns the batches the dead one held; the rows already
returned are not returned again (and `in_row_order` would refuse a row returned twice).
A user error in a worker (a `ValueError`, a missing file) is not retried: it ends the
run as one `ValueError` line, without Ray's wrappers (`raise_original_map_exception`).

Threads: each actor reserves `threads` CPUs (the cluster's CPUs over the workers, at
least 1) and its onnxruntime session uses that many intra-op threads, so the workers
together do not oversubscribe the machines.

The cluster: without an address a local one is started on this machine (and shut down
at the end); with one (`HOST:6379`, or `auto` for the cluster this machine is part of)
this process connects to it (and disconnects at the end, leaving it running). Ray
Client addresses (`ray://`) are refused: Ray Data's executor does not run through Ray
Client (Ray 2.60: `'Worker' object has no attribute 'core_worker'`). When Ray is already
initialised in this process, that connection is used and left as it is. Ray is
imported here only, and only when this engine runs (the `scale` extra).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np

from bridge.core.cli import USER_ERRORS

log = logging.getLogger(__name__)

ROW = "__dermsim_row__"
"""The row-number column that travels with every batch (input order)."""
MAX_WORKERS = 8
"""Default pool size cap (one actor per CPU up to this)."""
MAX_BLOCKS = 2048
"""Above this many batches, a dataset block holds several batches."""
CONNECT_TIMEOUT_S = 5.0
"""How long an address may take to accept a connection before it is refused."""
GCS_PORT = 6379
INSTALL = "pip install 'dermsim[scale]'"


class Options(Protocol):
    """What this engine reads of `evaluation.engines.EngineOptions`.

    (`evaluation.engines` imports this module when the engine runs; importing it back
    would make an import cycle.)
    """

    address: str | None
    workers: int | None
    batch_size: int


class BatchWorker:
    """The Ray Data callable class: one open job per actor, batches in, outputs out.

    Args:
        job: The engine job; its `open()` runs once, here, in the actor.
    """

    def __init__(self, job):
        self.worker = None
        self.failure: str | None = None
        try:
            self.worker = job.open()
        except USER_ERRORS as err:  # raised with the first batch: Ray would retry __init__
            self.failure = (str(err).strip().splitlines() or [type(err).__name__])[0]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the job's worker on one batch; the row numbers go back beside its outputs."""
        if self.worker is None:
            raise ValueError(self.failure)
        rows = np.asarray(batch[ROW], np.int64)
        inputs = {k: np.asarray(v, dtype=object) for k, v in batch.items() if k != ROW}
        out = dict(self.worker(inputs))
        if ROW in out:
            raise ValueError(f"a job's output may not be named {ROW!r}")
        out[ROW] = rows
        return out


def ray_map_batches(
    job, columns: Mapping[str, Sequence], options: Options
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Run `job` over the rows of `columns` on Ray, yielding (first row, outputs) in row order.

    Args:
        job: A picklable object whose `open()` returns the worker function (a
            dataclass with a `threads` field left None gets the per-worker threads).
        columns: Input columns of equal length (plain strings and numbers).
        options: The `evaluation.engines.EngineOptions` (`address`, `workers`,
            `batch_size`).

    Raises:
        ValueError: If Ray is not installed, the address does not answer, or a worker
            raised a user error (its message, one line).
    """
    n = len(next(iter(columns.values()))) if columns else 0
    if n == 0:
        return
    ray = _import_ray()
    owned = _connect(ray, options.address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        workers = options.workers or max(1, min(MAX_WORKERS, cpus))
        threads = max(1, cpus // workers)
        if cpus and workers > cpus:
            log.warning("ray: %d workers on %d CPUs: they will share them", workers, cpus)
        reserve = min(float(threads), cpus / workers) if cpus else 1.0
        log.info(
            "ray: %d rows in batches of %d on %d workers x %d threads (%d CPUs)",
            n, options.batch_size, workers, threads, cpus,
        )  # fmt: skip
        dataset = _dataset(ray, columns, n, options.batch_size)
        context = dataset.context  # this dataset's own copy: nothing global is changed
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.raise_original_map_exception = True  # a worker's ValueError, not a wrapper
        mapped = dataset.map_batches(
            BatchWorker,
            fn_constructor_args=(_with_threads(job, threads),),
            batch_size=options.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=reserve,
        )
        with _quiet_ray_data():
            try:
                blocks = mapped.iter_batches(batch_size=None, batch_format="numpy")
                yield from in_row_order(blocks, n)
            except Exception as err:
                user = _user_error(ray, err)
                if user is None:
                    raise
                text = str(user).strip().splitlines()
                raise ValueError(text[0] if text else type(user).__name__) from None
    finally:
        if owned:
            ray.shutdown()


def in_row_order(
    blocks: Iterable[dict[str, np.ndarray]], n: int
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield output blocks (with their `ROW` column) as contiguous runs in row order.

    Blocks may arrive in any order and hold rows in any order; each run is yielded as
    soon as every row before it has been.

    Raises:
        RuntimeError: If a row arrives twice, or rows are missing at the end.
    """
    pending: dict[int, tuple[int, dict[str, np.ndarray]]] = {}  # first row -> (end, run)
    seen = np.zeros(n, bool)
    expected = 0
    for block in blocks:
        for start, stop, run in _runs(block):
            if start < 0 or stop > n or seen[start:stop].any():
                raise RuntimeError(f"rows {start}..{stop - 1} came back twice or out of range")
            seen[start:stop] = True
            pending[start] = (stop, run)
        while expected in pending:
            stop, run = pending.pop(expected)
            yield expected, run
            expected = stop
    if expected != n or pending:
        raise RuntimeError(f"the engine returned {int(seen.sum())} of {n} rows")


def _runs(block: dict[str, np.ndarray]) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """A block's rows as (first row, end row, columns) runs of consecutive row numbers."""
    rows = np.asarray(block[ROW], np.int64)
    if not len(rows):
        return
    columns = {k: _plain(v) for k, v in block.items() if k != ROW}
    if (np.diff(rows) != 1).any():  # not one run in order: sort, then cut at the gaps
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        columns = {k: v[order] for k, v in columns.items()}
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    for lo, hi in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        yield int(rows[lo]), int(rows[lo]) + int(hi - lo), {k: v[lo:hi] for k, v in columns.items()}


def _plain(values) -> np.ndarray:
    """An output column as the local engine gives it (text as an object array)."""
    values = np.asarray(values)
    return values.astype(object) if values.dtype.kind in "US" else values


def _dataset(ray, columns: Mapping[str, Sequence], n: int, batch_size: int):
    """The input rows as a Ray dataset whose blocks hold whole batches (plus `ROW`).

    Blocks of a multiple of `batch_size` rows make Ray Data cut the same batches the
    local engine does (same rows per batch: same numbers).
    """
    import pyarrow as pa

    batches = -(-n // batch_size)
    per_block = batch_size * -(-batches // MAX_BLOCKS)
    tables = [
        pa.table(
            {
                ROW: np.arange(start, min(start + per_block, n), dtype=np.int64),
                **{k: list(v[start : start + per_block]) for k, v in columns.items()},
            }
        )
        for start in range(0, n, per_block)
    ]
    # `from_blocks` keeps one block per table (and reads no metadata in remote tasks)
    from_blocks = getattr(ray.data, "from_blocks", None) or ray.data.from_arrow
    return from_blocks(tables)


def _with_threads(job, threads: int):
    """The job with `threads` intra-op threads per worker, where it has that field unset."""
    fields = {f.name for f in dataclasses.fields(job)} if dataclasses.is_dataclass(job) else ()
    if "threads" in fields and job.threads is None:
        return dataclasses.replace(job, threads=threads)
    return job


def _import_ray():
    """`ray` with Ray Data, or a ValueError saying how to install them."""
    try:
        import ray
        import ray.data  # needs pyarrow too
    except ImportError as err:
        raise ValueError(
            f"--engine ray needs Ray Data ({err.name or err} is not installed): {INSTALL}"
        ) from None
    return ray


def _connect(ray, address: str | None) -> bool:
    """Start or join a cluster unless Ray is initialised here; True when this call did.

    Raises:
        ValueError: If the address is malformed, a Ray Client address, does not
            answer within `CONNECT_TIMEOUT_S`, or Ray refuses it.
    """
    where = parse_address(address) if address not in (None, "auto") else None
    if ray.is_initialized():
        if address:
            log.info("ray: already initialised in this process; using that, not %s", address)
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        ray.init(num_cpus=_local_cpus(), include_dashboard=False, **quiet)
        log.info("ray: started a local cluster (%d CPUs)", _local_cpus())
        return True
    if where is not None:
        _probe(address, *where)
        host, port = where
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        hint = ""
        if where is not None and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            hint = " (a cluster with token authentication also needs RAY_AUTH_MODE=token here)"
        raise ValueError(
            f"ray address {address}: {first}; expected a running Ray cluster "
            f"(ray start --head){hint}"
        ) from None
    log.info("ray: connected to %s", address)
    return True


def parse_address(address: str) -> tuple[str, int]:
    """The host and port of a cluster address `HOST[:PORT]` (port default `GCS_PORT`).

    Raises:
        ValueError: On a Ray Client address (`ray://`: Ray Data does not run through
            Ray Client) or anything but `HOST[:PORT]`.
    """
    if address.startswith("ray://"):
        raise ValueError(
            f"ray address {address}: Ray Data does not run through Ray Client (ray://); run "
            "the command on a machine of the cluster with --address HOST:6379 or auto"
        )
    try:
        parts = urlsplit(f"//{address}")
        host, port = parts.hostname, parts.port or GCS_PORT
    except ValueError:
        host = None
    if not host or "://" in address or "/" in address:
        raise ValueError(f"ray address {address}: expected HOST:PORT (the head's GCS) or auto")
    return host, port


def _probe(address: str, host: str, port: int) -> None:
    """Refuse an address where nothing accepts a connection (Ray itself retries for minutes).

    Raises:
        ValueError: If nothing answers within `CONNECT_TIMEOUT_S`.
    """
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise ValueError(
            f"ray address {address}: nothing answers at {host}:{port} ({why}); expected a "
            "running Ray cluster (ray start --head) reachable from here"
        ) from None


def _local_cpus() -> int:
    """CPUs this process may use."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _user_error(ray, err: BaseException) -> BaseException | None:
    """The user error (`bridge.core.cli.USER_ERRORS`) inside Ray's wrappers, if any."""
    todo: list[BaseException | None] = [err]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, USER_ERRORS) and not isinstance(e, ray.exceptions.RayError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Keep Ray Data's info lines and its copy of a worker's error off the console.

    Ray's loggers print through the `ray` logger's handlers; while this runs, those
    drop Ray Data's records below WARNING, its error records (`ray_map_batches` raises
    the error itself, as one line) and its note that progress bars are off (this
    engine's caller draws its own). Other warnings (a cluster too small for the pool)
    still show.
    """
    quiet = _QuietRayData()
    handlers = [*logging.getLogger("ray").handlers, *logging.getLogger("ray.data").handlers]
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


class _QuietRayData(logging.Filter):
    """The filter of `_quiet_ray_data`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "ray.data" and not record.name.startswith("ray.data."):
            return True
        if record.levelno < logging.WARNING or record.levelno >= logging.ERROR:
            return False
        return not record.getMessage().startswith("Progress bars disabled")
