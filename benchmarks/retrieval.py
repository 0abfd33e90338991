"""Benchmark: the archive index at scale (embedding throughput and memory, search, disk).

    .tox/test/bin/python benchmarks/retrieval.py [--only embed|search] [--images 10000]
        [--sizes 64,224] [--memory-images 1000] [--engines local,ray] [--ray-workers 2]
        [--vectors 1e4,1e5,1e6] [--dims 512,2048] [--max-gib 10] [--quick] [--resume]
        [--out table.md]

Measured, not asserted (the tests check behaviour; this prints what it costs):

* **Embedding** (`--only embed`): `evaluation.index.build` of the same archive of
  synthetic ISIC-style JPEGs (`bridge.core.data.synth`, written once under
  `runs/bench-retrieval/data/`: 96x96 files for the 64 px model size, 256x256 for
  224 px) with a seeded random ResNet50 `features` export (no download; exported once
  into `runs/bench-retrieval/models/`), engine `local` and engine `ray`. Each build runs
  in its own process, so its peak resident memory is its own (`VmHWM`); Ray's
  actors and its system processes are sampled separately (proportional set size,
  /proc, every second). Ray is started before the build and its start-up is its own
  column; "Ray / local" compares the builds alone. Each build runs at two archive
  sizes (`--memory-images`, `--images`) to show that its memory does not grow with the
  archive. The ISIC extrapolation divides the image counts by the 224 px rate, and
  adds the measured extra decode time of full-size sources.
* **Search** (`--only search`): synthetic unit vectors shaped like embeddings (a
  Gaussian mixture: a shared mean direction, as all-positive pooled ReLU features have,
  plus one of 4096 random centres plus isotropic noise of a per-centre spread, L2-
  normalised; random pairs have cosine ~0.3-0.45, a centre's members ~0.6-0.9) written as a
  real index folder (`evaluation.index` shards and manifest, with the approximate index
  of `evaluation.index._build_ann`). Queries are 256 fresh draws of the same mixture
  (not archive rows); recall@16 of the approximate index is against their exact
  top 16. Latencies are through `Index.search` (one query; a batch of 64), and the bare
  kernels (one matrix product; one faiss call) for the batch. Each size is built and
  queried in processes of their own (peak memory); a size whose estimated peak exceeds
  `--max-gib` is not run, and its needs are computed instead.

Prints Markdown tables; ratios are against the local engine of the same run. The
machine may be shared: the 1-minute load average before and after each run is printed.
Run it with a python that has dermsim and its `test` and `scale` extras installed
(`.tox/test/bin/python`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench-retrieval"
ARCH = "resnet50"
RECALL_K = 16
QUERIES = 256  # held-out queries for recall
SINGLE = 30  # single queries timed (median)
BATCH = 64
CENTRES = 4096
ISIC = (  # (set, images, typical source side of its JPEGs)
    ("ISIC 2019 training", 25_331, 1024),
    ("ISIC 2020 training", 33_126, 6000),
    ("ISIC total (issue's figure)", 70_000, None),
)
GIB = 1024**3
MIB = 1024**2


# ------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it: model name, family / model, widest vector unit."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (
        f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, "
        f"model {fields.get('model', '?')}, {vector})"
    )


def versions() -> str:
    """Versions of the libraries measured."""
    import onnxruntime

    found = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    found.append(f"onnxruntime {onnxruntime.__version__}")
    for name in ("faiss", "ray"):
        try:
            module = __import__(name)
            found.append(f"{name} {module.__version__}")
        except ImportError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def header(command: str) -> str:
    """The line that says where and when a table was measured."""
    ram = _proc_kib("/proc/meminfo", "MemTotal") * 1024 / GIB
    return (
        f"Machine: {cpu_model()}, {os.cpu_count()} CPU cores, {ram:.0f} GiB RAM, no GPU used; "
        f"{versions()}; {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; command: `{command}`"
    )


def _proc_kib(file: str, field: str) -> int:
    """A `Field:  N kB` line of a /proc file, in KiB (0 when absent)."""
    try:
        for line in Path(file).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """The process ids below `pid` (children, their children, ...), from /proc."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, up in parent.items() if up in frontier]
        found += frontier
    return found


def load() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


# -------------------------------------------------------------------------- child processes


RESULTS = WORK / "results"
REUSED: list[str] = []  # runs whose results `--resume` took from an earlier invocation


def run_child(kind: str, spec: dict, name: str, resume: bool = False) -> dict:
    """Run `main(["--child", kind, spec])` in a new process; return its result and costs.

    The child's stderr goes to `runs/bench-retrieval/logs/<name>.log`. Adds `wall_s`
    (the whole process), the load average before and after, and when it ran. A
    successful result is kept in `runs/bench-retrieval/results/<name>.json`; with
    `resume`, one kept for the same kind and spec is returned instead of running again
    (a benchmark killed half way goes on where it stopped).
    """
    kept = RESULTS / f"{name}.json"
    if resume and kept.is_file():
        old = json.loads(kept.read_text())
        if old.get("kind") == kind and old.get("spec") == spec:
            REUSED.append(f"{name} ({old['result']['at']})")
            return old["result"]
    log = WORK / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    before, at = load(), dt.datetime.now().astimezone().strftime("%H:%M")
    start = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
            check=False,
        )
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = log.read_text().strip().splitlines()[-5:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "wall_s": wall}
    result = {**json.loads(lines[-1][7:]), "wall_s": wall, "load": (before, load()), "at": at}
    RESULTS.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({"kind": kind, "spec": spec, "result": result}) + "\n")
    return result


def peak_rss() -> int:
    """This process's peak resident set size, bytes.

    /proc's `VmHWM` (the high-water mark of this process's own memory), not
    `ru_maxrss`: Linux carries `ru_maxrss` across `execve`, so a child would report its
    parent's peak where that was higher.
    """
    return _proc_kib("/proc/self/status", "VmHWM") * 1024 or (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )


class TreeSampler:
    """Peak proportional set size of this process's descendants, by kind, sampled.

    Ray's worker processes (`ray::...`, `default_worker.py`) are `workers`; the rest
    (raylet, GCS, dashboard, log monitor) are `system`. PSS shares shared pages
    (Ray's object store) among the processes that map them, so the sums do not count
    them twice. `nice` is the highest niceness seen among the workers (Ray lowers its
    workers' priority, which matters on a shared machine).
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.peak = {"workers": 0, "system": 0}
        self.nice: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            total = {"workers": 0, "system": 0}
            for pid in descendants(os.getpid()):
                try:
                    line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    nice = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
                except (OSError, ValueError, IndexError):
                    continue
                pss = _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss") * 1024
                worker = line.startswith(b"ray::") or b"default_worker.py" in line
                total["workers" if worker else "system"] += pss
                if worker:
                    self.nice = max(nice, self.nice if self.nice is not None else nice)
            for k, v in total.items():
                self.peak[k] = max(self.peak[k], v)


# ------------------------------------------------------------------------------ embedding


def jpeg_side(size: int) -> int:
    """Side of the benchmark's JPEGs for a model size: 96 for 64 px, 256 for 224 px."""
    return 96 if size <= 64 else math.ceil(size * 8 / 7 / 16) * 16


def ensure_model() -> Path:
    """The seeded random ResNet50 `features` export (made once, ~1 min)."""
    folder = WORK / "models"
    path = folder / f"{ARCH}-features-torch.onnx"
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    import torch_models  # noqa: F401  (torchvision importable on the CPU torch)
    from bridge.core.weights import random_state_dict, write_state_dict
    from bridge.export import export, source_from_weights

    folder.mkdir(parents=True, exist_ok=True)
    weights = write_state_dict(random_state_dict(ARCH, 3, seed=0), folder / f"{ARCH}.safetensors")
    return export(source_from_weights(ARCH, weights), "features", "torch", folder)


def ensure_images(side: int, count: int) -> Path:
    """A synthetic ISIC 2019-style set of at least `count` side x side JPEGs (made once)."""
    from evaluation.archive import read_archive

    root = WORK / "data" / f"synth-{side}"
    if root.is_dir():
        try:
            if len(read_archive(root).items) >= count:
                return root
        except (ValueError, OSError):
            pass
        shutil.rmtree(root)
    per_class = math.ceil(count / 3)  # the synthetic set draws MEL, NV and BCC
    print(f"writing {3 * per_class} synthetic {side}x{side} JPEGs to {root} ...", file=sys.stderr)
    subprocess.run(
        [
            *(sys.executable, "-m", "bridge.core.data.synth", "--out", str(root)),
            *("--per-class", str(per_class), "--size", str(side), "--cases", "1", "--raters", "2"),
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return root


def archive_files(root: Path, count: int) -> list[Path]:
    """The first `count` image files of the archive (its order)."""
    from evaluation.archive import read_archive

    return [item.path for item in read_archive(root).items[:count]]


def child_embed(spec: dict) -> dict:
    """One index build (in a process of its own): seconds, images, memory."""
    from evaluation.archive import Archive, read_archive
    from evaluation.engines import EngineOptions
    from evaluation.index import BuildOptions, build

    full = read_archive(spec["data"])
    archive = Archive(full.source, full.format, full.items[: spec["images"]], full.synthetic)
    out = Path(spec["out"])
    shutil.rmtree(out, ignore_errors=True)
    startup = None
    if spec["engine"] == "ray":
        import ray

        start = time.perf_counter()  # as evaluation.ray_engine starts a local cluster
        ray.init(
            num_cpus=len(os.sched_getaffinity(0)),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        startup = time.perf_counter() - start
    engine = EngineOptions(spec["engine"], workers=spec.get("workers"), batch_size=spec["batch"])
    options = BuildOptions(size=spec["size"], search="exact", prefer_gpu=False, engine=engine)
    cpu = os.times()
    with TreeSampler() as sampler:
        start = time.perf_counter()
        manifest = build(spec["model"], archive, out, options)
        seconds = time.perf_counter() - start
    cpu_now = os.times()
    busy = sum(getattr(cpu_now, k) - getattr(cpu, k) for k in ("user", "system"))
    if spec["engine"] == "ray":
        import ray

        ray.shutdown()
    shards = sum(p.stat().st_size for p in (out / "shards").glob("*.npz"))
    shutil.rmtree(out, ignore_errors=True)
    return {
        "startup_s": startup,
        "build_s": seconds,
        "embedded": manifest["last_build"]["embedded"],
        "skipped": manifest["last_build"]["skipped"],
        "dim": manifest["embedding"]["dim"],
        "driver_peak": peak_rss(),
        "driver_cpu_s": busy,
        "workers_peak": sampler.peak["workers"],
        "system_peak": sampler.peak["system"],
        "workers_nice": sampler.nice,
        "shard_bytes": shards,
    }


def decode_extra(size: int, sides: list[int], repeats: int = 5) -> dict[int, float]:
    """Extra seconds per image to decode and fit a side x side JPEG vs a `jpeg_side` one.

    The sources are one synthetic image scaled with Pillow (JPEG quality 90); ISIC's
    own files are ~1024 px (2019) and up to 6000x4000 (2020).
    """
    import tempfile

    from PIL import Image

    from evaluation.embedding import Embedder

    model = ensure_model()
    embedder = Embedder(model, size=size, prefer_gpu=False)
    base = archive_files(ensure_images(jpeg_side(size), 1), 1)[0]
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in [jpeg_side(size), *sides]:
            file = Path(tmp) / f"{side}.jpg"
            height = side * 2 // 3 if side > 2000 else side  # 6000x4000 as ISIC 2020's
            Image.open(base).convert("RGB").resize((side, height)).save(file, quality=90)
            embedder.prepare(str(file))
            times[side] = statistics.median(
                _timed(lambda f=file: embedder.prepare(str(f))) for _ in range(repeats)
            )
    own = times.pop(jpeg_side(size))
    return {side: t - own for side, t in times.items()}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def embed_section(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Every (size, engine, archive size) build; and the decode extras at 224 px."""
    model = ensure_model()
    runs = []
    for size, images in zip(args.sizes, args.images, strict=True):
        side = jpeg_side(size)
        root = ensure_images(side, max(images, args.memory_images))
        files = archive_files(root, images)
        for file in files:  # the file cache holds them for every engine alike
            file.read_bytes()
        kib = statistics.mean(f.stat().st_size for f in files) / 1024
        for count in sorted({args.memory_images, images}):
            for engine, workers in [
                (e, w) for e in args.engines for w in (args.ray_workers if e == "ray" else [None])
            ]:
                spec = {
                    "model": str(model), "data": str(root), "images": count, "size": size,
                    "engine": engine, "workers": workers, "batch": args.batch,
                    "out": str(WORK / "index" / f"{engine}-{size}-{count}"),
                }  # fmt: skip
                name = f"embed-{size}px-{count}-{engine}{workers or ''}"
                print(f"{name} ...", file=sys.stderr, flush=True)
                result = run_child("embed", spec, name, args.resume)
                runs.append({**spec, "side": side, "kib": kib, **result})
                print(f"  {_brief(result)}", file=sys.stderr, flush=True)
    extras = {}
    if 224 in args.sizes and not args.quick:
        extras = decode_extra(224, [s for _, _, s in ISIC if s])
    return runs, extras


def _brief(result: dict) -> str:
    if "error" in result:
        return result["error"]
    return ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in result.items()
        if not isinstance(v, (list, tuple))
    )


def engine_label(engine: str, workers: int | None) -> str:
    """How a build ran: `local (1 x 2 threads)`, `ray (2 actors x 1 thread)`."""
    cpus = len(os.sched_getaffinity(0))
    if engine == "local":
        return f"local (1 process x {cpus} threads)"
    actors = workers or min(8, cpus)
    threads = max(1, cpus // actors)  # as evaluation.ray_engine sizes its actors
    return f"ray ({actors} actor{'s' * (actors > 1)} x {threads} thread{'s' * (threads > 1)})"


def embed_tables(runs: list[dict], extras: dict[int, float]) -> str:
    """The embedding table, the memory growth summary and the ISIC extrapolation."""
    lines = [
        "Embedding: `evaluation.index.build` (exact search, shards of 512, batches of "
        f"{runs[0]['batch'] if runs else '-'}) of the first N images of a synthetic ISIC-style "
        "set, with a seeded random ResNet50 `features` export (deepest tap, gap, 2048-d), "
        "onnxruntime CPU, one process per build. local = the build's own process "
        "(onnxruntime's default threads, one per core); ray = Ray Data actors on a local Ray "
        "cluster started by the build's process (`evaluation.ray_engine`: each actor "
        "reserves cores / actors CPUs and runs that many onnxruntime threads). Ray / local "
        "= build seconds against local's at the same size and N (Ray's start-up not "
        "included; it is its own column). Peak memory: driver = the build's process "
        "(VmHWM); Ray workers and Ray system = the peak sum of their proportional set "
        "sizes (/proc smaps_rollup, sampled every 1 s). driver CPU = the driver's CPU "
        "seconds / build seconds (cores busy; Ray's actors not included).",
        "",
        "| model, size | JPEGs | images | engine | Ray start-up s | build s | embeddings/s "
        "| Ray / local | driver peak MiB | Ray workers MiB | Ray system MiB | driver CPU "
        "| load before→after |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    local = {
        (r["size"], r["images"]): r["build_s"]
        for r in runs
        if r["engine"] == "local" and "build_s" in r
    }
    for r in runs:
        first = f"ResNet50, {r['size']} px | {r['side']}x{r['side']}, {r['kib']:.1f} KiB avg"
        label = engine_label(r["engine"], r["workers"])
        if "error" in r:
            pending = "ray_engine" in r["error"] or "No module" in r["error"]
            note = "pending (evaluation.ray_engine not usable yet)" if pending else r["error"]
            lines.append(f"| {first} | {r['images']} | {label} | {note} |" + " |" * 8)
            continue
        rate = r["embedded"] / r["build_s"]
        ref = local.get((r["size"], r["images"]))
        ray = r["engine"] == "ray"
        ratio = "-"
        if ref and ray:
            ratio = f"{r['build_s'] / ref:.2f} ({100 * (r['build_s'] / ref - 1):+.0f}%)"
        elif ref:
            ratio = "1.00"
        lines.append(
            f"| {first} | {r['images']} | {label} "
            f"| {_num(r['startup_s'], 1) if ray else '-'} | {r['build_s']:.1f} | {rate:.1f} "
            f"| {ratio} | {r['driver_peak'] / MIB:.0f} "
            f"| {_num(r['workers_peak'] / MIB, 0) if ray else '-'} "
            f"| {_num(r['system_peak'] / MIB, 0) if ray else '-'} "
            f"| {r['driver_cpu_s'] / r['build_s']:.2f} "
            f"| {r['load'][0]:.1f}→{r['load'][1]:.1f} |"
        )
    nice = {r["workers_nice"] for r in runs if r.get("workers_nice") is not None}
    if nice:
        lines += [
            "",
            f"Ray ran its worker processes at niceness {', '.join(map(str, sorted(nice)))} "
            "(sampled from /proc; the local build and the rest of the machine run at 0), so "
            "on a shared machine its actors yield the CPU to other work first.",
        ]
    lines += ["", *growth_lines(runs), "", *isic_lines(runs, extras)]
    return "\n".join(lines)


def _num(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def growth_lines(runs: list[dict]) -> list[str]:
    """Peak memory at the smaller against the larger archive, per size and engine."""
    out = []
    done = [r for r in runs if "build_s" in r]
    for size, engine, workers in sorted(
        {(r["size"], r["engine"], r["workers"] or 0) for r in done}
    ):
        mine = sorted(
            (
                r
                for r in done
                if (r["size"], r["engine"], r["workers"] or 0) == (size, engine, workers)
            ),
            key=lambda r: r["images"],
        )
        if len(mine) < 2:
            continue
        small, big = mine[0], mine[-1]

        def total(r: dict) -> int:
            return r["driver_peak"] + r["workers_peak"] + r["system_peak"]

        growth = 100 * (total(big) / total(small) - 1)
        out.append(
            f"* {size} px, {engine_label(engine, workers or None)}: peak memory (driver + Ray "
            f"workers + Ray system) {total(small) / MIB:.0f} MiB at {small['images']} images, "
            f"{total(big) / MIB:.0f} MiB at {big['images']} images ({growth:+.0f}% for "
            f"{big['images'] / small['images']:.0f}x the images)."
        )
    return out


def isic_lines(runs: list[dict], extras: dict[int, float]) -> list[str]:
    """Time to embed ISIC at 224 px, from the largest 224 px builds of this run."""
    best: dict[tuple, dict] = {}  # (engine, workers) -> the run of most images
    for r in runs:
        key = (r["engine"], r["workers"])
        if r["size"] == 224 and "build_s" in r and r["images"] >= best.get(key, r)["images"]:
            best[key] = r
    if not best:
        return []
    rates = {k: r["embedded"] / r["build_s"] for k, r in best.items()}
    cpus = len(os.sched_getaffinity(0))
    actors = {k: (k[1] or min(8, cpus)) if k[0] == "ray" else 1 for k in best}
    side = jpeg_side(224)
    text = (
        f"ISIC at 224 px, extrapolated from this run's 224 px rates ({side}x{side} JPEGs; "
        + "; ".join(
            f"{engine_label(*k)}: {rates[k]:.2f} embeddings/s over {best[k]['images']} images"
            + (f", {rates[k] / actors[k]:.2f}/s per actor" if k[0] == "ray" else "")
            for k in best
        )
        + "). One Ray worker = one actor at its share of the pool's rate (its cores / "
        "actors CPUs of this machine); N such workers divide that time by N."
    )
    if extras:
        text += (
            " Full-size sources add their decode and fit time: "
            + ", ".join(f"+{1000 * t:.0f} ms/image at {s} px" for s, t in extras.items())
            + " (measured here: `prepare` of one JPEG of that side against one of "
            f"{side}x{side}); the last column adds it to local's serial loop."
        )
    head = ["set", "images", *(f"{engine_label(*k)}, this machine" for k in best)]
    head += [f"one Ray worker ({engine_label(*k)})" for k in best if k[0] == "ray"]
    local = next((k for k in best if k[0] == "local"), None)
    if extras and local:
        head.append("local, full-size sources")
    lines = [text, "", "| " + " | ".join(head) + " |", "|" + " --- |" + " ---: |" * (len(head) - 1)]
    for name, count, source in ISIC:
        cells = [name, f"{count:,}", *(_hours(count / rates[k]) for k in best)]
        cells += [_hours(count * actors[k] / rates[k]) for k in best if k[0] == "ray"]
        if extras and local:
            cells.append(
                _hours(count * (1 / rates[local] + extras[source])) if source in extras else "-"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _hours(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------------- search


def mixture(seed: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mixture's mean direction (D,), centres (C, D) and per-centre spreads (C,)."""
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centres = rng.standard_normal((CENTRES, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.5, 1.2, CENTRES).astype(np.float32)
    return mean, centres, spread


def draw(parts: tuple, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` unit vectors of the mixture, and their centre numbers."""
    from evaluation.embedding import normalise

    mean, centres, spread = parts
    which = rng.integers(0, len(centres), count)
    noise = rng.standard_normal((count, centres.shape[1]), dtype=np.float32)
    x = mean + centres[which] + spread[which, None] * noise / np.sqrt(centres.shape[1])
    return normalise(x), which


def estimate(n: int, d: int) -> dict[str, float]:
    """Bytes the search build and the query process need (the code paths' arrays).

    build: the matrix, faiss's copy of it, and `_build_ann`'s recall check (256 rows of
    n scores, their negation, and argpartition's int64 indices). query: `Index` holds
    the shards' arrays and their concatenation at once, then faiss's copy.
    """
    matrix = 4 * n * d
    return {
        "matrix": matrix,
        "build_est": 2 * matrix + QUERIES * n * (4 + 4 + 8),
        "query_est": 3 * matrix,
    }


def child_search_build(spec: dict) -> dict:
    """Write n synthetic vectors as an index folder with an approximate index."""
    from evaluation import index as ix

    n, d, folder = spec["n"], spec["d"], Path(spec["folder"])
    shutil.rmtree(folder, ignore_errors=True)
    (folder / ix.SHARDS).mkdir(parents=True)
    parts = mixture(spec["seed"], d)
    rng = np.random.default_rng(spec["seed"] + 1)
    vectors = np.empty((n, d), np.float32)
    labels = np.array(["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"])
    start = time.perf_counter()
    shards = []
    for number, first in enumerate(range(0, n, ix.SHARD_SIZE)):
        rows = min(ix.SHARD_SIZE, n - first)
        vectors[first : first + rows], which = draw(parts, rng, rows)
        ids = [f"SYN_{first + i:07d}" for i in range(rows)]
        path = folder / ix.SHARDS / f"{number:06d}.npz"
        ix._save_shard(
            path,
            {
                "vectors": vectors[first : first + rows],
                "id": ids,
                "path": [f"/data/isic/ISIC_2019_Training_Input/{i}.jpg" for i in ids],
                "box": [""] * rows,
                "label": labels[which % len(labels)].tolist(),
                "lesion_id": [f"IL_{w:07d}" for w in which],
                "patient_id": [""] * rows,
                "sha256": [rng.bytes(32).hex() for _ in range(rows)],
                "file_size": rng.integers(50_000, 500_000, rows),
                "mtime_ns": np.full(rows, 1_700_000_000_000_000_000, np.int64),
            },
        )
        shards.append({"file": f"{ix.SHARDS}/{path.name}", "rows": rows})
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    search = ix._build_ann(vectors, folder / ix.ANN_FILE)
    ann_s = time.perf_counter() - start
    for shard in shards:
        shard["sha256"] = ix.sha256_file(folder / shard["file"])
    ix._write_json(
        folder / ix.MANIFEST,
        {
            "format": ix.FORMAT,
            "complete": True,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": {"data": "synthetic vectors", "format": "synthetic", "synthetic": True},
            "model": {"file": "", "sha256": "", "backbone": "", "origin": "", "label": ""},
            "embedding": {"tap": "", "pooling": "gap", "size": 224, "policy": "", "dim": d},
            "distance": "cosine (1 - dot of L2-normalised vectors)",
            "count": n,
            "shards": shards,
            "search": search,
            "versions": ix._versions(),
        },
    )
    return {
        "write_s": write_s,
        "ann_s": ann_s,
        "nlist": search["nlist"],
        "nprobe": search["nprobe"],
        "recall_build": search[f"recall_at_{RECALL_K}"],
        "shard_bytes": sum(p.stat().st_size for p in (folder / ix.SHARDS).glob("*.npz")),
        "ann_bytes": (folder / ix.ANN_FILE).stat().st_size,
        "peak": peak_rss(),
    }


def child_search_query(spec: dict) -> dict:
    """Exact and approximate search of the folder `child_search_build` wrote."""
    from evaluation.index import Index, _exact_top, recall_at_k

    d, folder = spec["d"], Path(spec["folder"])
    queries, _ = draw(mixture(spec["seed"], d), np.random.default_rng(spec["seed"] + 2), QUERIES)
    out: dict = {}
    truth = None
    for method in ("exact", "approximate"):
        start = time.perf_counter()
        index = Index(folder, method, prefer_gpu=False)
        out[f"{method}_open_s"] = time.perf_counter() - start
        out.update({f"{method}_{k}": v for k, v in time_queries(index, queries).items()})
        if truth is None:
            truth = np.concatenate(
                [
                    _exact_top(index.vectors, queries[i : i + 32], RECALL_K)
                    for i in range(0, QUERIES, 32)
                ]
            )
        else:
            out["recall_heldout"] = recall_at_k(index._ann.search(queries, RECALL_K)[1], truth)
        out[f"{method}_peak"] = peak_rss()
        del index
        gc.collect()
    return out


def time_queries(index, queries: np.ndarray) -> dict[str, float]:
    """One-query latency and batch throughput of an open `Index` (its own method).

    Returns:
        `one_s`: median seconds of one query through `Index.search`; `batch_qps`:
        queries/s of a batch through `Index.search`; `kernel_qps`: queries/s of the bare
        kernel on the batch (exact: `_exact_top`, one matrix product; approximate: one
        faiss search call).
    """
    from evaluation.index import _exact_top

    index.search(queries[:1], RECALL_K)
    one = statistics.median(
        _timed(lambda i=i: index.search(queries[i : i + 1], RECALL_K)) for i in range(SINGLE)
    )
    batch = queries[:BATCH]
    in_index = min(_timed(lambda: index.search(batch, RECALL_K)) for _ in range(3))
    if index._ann is None:

        def kernel() -> object:
            return _exact_top(index.vectors, batch, RECALL_K)
    else:

        def kernel() -> object:
            return index._ann.search(batch, RECALL_K)

    kernel()
    bare = min(_timed(kernel) for _ in range(3))
    return {"one_s": one, "batch_qps": BATCH / in_index, "kernel_qps": BATCH / bare}


def search_section(args: argparse.Namespace) -> list[dict]:
    """Build and query every (n, d) that fits `--max-gib`; compute the needs of the rest."""
    rows = []
    for d in args.dims:
        for n in args.vectors:
            need = estimate(n, d)
            row: dict = {"n": n, "d": d, **need}
            worst = max(need["build_est"], need["query_est"])
            if worst > args.max_gib * GIB:
                row["skipped"] = f"needs ~{worst / GIB:.0f} GiB > --max-gib {args.max_gib:g}"
                rows.append(row)
                continue
            folder = WORK / "search" / f"{n}x{d}"
            spec = {"n": n, "d": d, "folder": str(folder), "seed": 0}
            name = f"search-{n}x{d}"
            print(f"{name} build ...", file=sys.stderr, flush=True)
            queried = RESULTS / f"{name}-query.json"
            built_here = (folder / "manifest.json").is_file() or queried.is_file()
            built = run_child("search-build", spec, f"{name}-build", args.resume and built_here)
            print(f"  {_brief(built)}", file=sys.stderr, flush=True)
            row["build"] = built
            if "error" not in built:
                print(f"{name} query ...", file=sys.stderr, flush=True)
                row["query"] = run_child("search-query", spec, f"{name}-query", args.resume)
                print(f"  {_brief(row['query'])}", file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
            rows.append(row)
    return rows


def search_tables(rows: list[dict]) -> str:
    """The latency / recall table and the memory / disk table."""
    lines = [
        f"Search: synthetic unit vectors (mixture of {CENTRES} centres around a shared mean "
        "direction, isotropic noise; module docstring), k = 16. Exact = `Index.search` "
        "over the float32 matrix in chunks of 65,536 rows; approximate = faiss IndexIVFFlat "
        "(inner product) as `evaluation.index._build_ann` makes it (nlist = min(4 sqrt n, "
        "n / 39), nprobe doubled until recall@16 >= 0.95 on 256 archive rows). Held-out "
        f"recall: {QUERIES} fresh draws of the mixture against their exact top 16. One "
        f"query: median of {SINGLE}. Batch of {BATCH}: `Index.search` (one query at a time "
        "inside) / the bare kernel (one matrix product `_exact_top`; one faiss search call), "
        "best of 3. `auto` search (the default) is exact below 100,000 vectors "
        "(`APPROXIMATE_ABOVE`) and approximate from there. The probes needed depend on the "
        f"data: with {CENTRES} centres, at 10^6 vectors each centre has ~240 members and a "
        "query's 16 neighbours lie in its own, so few lists suffice; less clustered real "
        "embeddings need more probes (the build raises nprobe until its recall check "
        "passes), hence more time per query than here.",
        "",
        "| vectors | dim | exact 1 query ms | exact q/s, batch 64 (Index / kernel) "
        "| ANN build s | nlist | nprobe | recall@16 build / held-out | approx 1 query ms "
        "| approx q/s, batch 64 (Index / faiss) | load before→after |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for r in rows:
        first = f"| {r['n']:,} | {r['d']}"
        if "skipped" in r or "error" in r.get("build", {}) or "error" in r.get("query", {}):
            why = r.get("skipped") or r.get("build", {}).get("error") or r["query"]["error"]
            lines.append(f"{first} | not run: {why} |" + " |" * 8)
            continue
        b, q = r["build"], r["query"]
        lines.append(
            f"{first} | {1000 * q['exact_one_s']:.2f} "
            f"| {q['exact_batch_qps']:.0f} / {q['exact_kernel_qps']:.0f} | {b['ann_s']:.1f} "
            f"| {b['nlist']} | {b['nprobe']} | {b['recall_build']:.3f} / {q['recall_heldout']:.3f} "
            f"| {1000 * q['approximate_one_s']:.2f} "
            f"| {q['approximate_batch_qps']:.0f} / {q['approximate_kernel_qps']:.0f} "
            f"| {b['load'][0]:.1f}→{q['load'][1]:.1f} |"
        )
    lines += [
        "",
        "Memory and disk. float32 matrix = 4 n d bytes. Peak RSS: the build process "
        "(generation, shards, `_build_ann`), the query process after opening the exact "
        "`Index` and after the approximate one (`Index` holds the shards' arrays and their "
        "concatenation at once while it opens). Estimated = what the arrays of those code "
        "paths take (the skip rule). Disk per 10^5 vectors: shards (.npz: vectors and the "
        "text columns) and the faiss file.",
        "",
        "| vectors | dim | float32 matrix | peak RSS build (est.) | peak RSS query exact "
        "| peak RSS query approx (est.) | shards / 10^5 | faiss / 10^5 | shards write s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        first = f"| {r['n']:,} | {r['d']} | {_size(r['matrix'])}"
        if "skipped" in r:
            faiss_est = _size(r["matrix"] * 1e5 / r["n"])
            lines.append(
                f"{first} | not run (est. {_size(r['build_est'])}) | - "
                f"| not run (est. {_size(r['query_est'])}) | - | ~{faiss_est} (est.) | - |"
            )
            continue
        b, q = r["build"], r.get("query", {})
        if "error" in b or "error" in q:
            lines.append(f"{first} | error |" + " |" * 6)
            continue
        per = 1e5 / r["n"]
        lines.append(
            f"{first} | {_size(b['peak'])} ({_size(r['build_est'])}) "
            f"| {_size(q['exact_peak'])} | {_size(q['approximate_peak'])} "
            f"({_size(r['query_est'])}) | {_size(b['shard_bytes'] * per)} "
            f"| {_size(b['ann_bytes'] * per)} | {b['write_s']:.1f} |"
        )
    return "\n".join(lines)


def _size(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


# ----------------------------------------------------------------------------------- main


CHILDREN: dict[str, Callable[[dict], dict]] = {
    "embed": child_embed,
    "search-build": child_search_build,
    "search-query": child_search_query,
}


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables (or, with `--child`, one measured part)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        result = CHILDREN[argv[1]](json.loads(argv[2]))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("embed", "search"), default=None)
    parser.add_argument(
        "--images", default="10000", help="archive images: one count, or one per --sizes entry"
    )
    parser.add_argument("--memory-images", type=int, default=1000, help="the smaller archive")
    parser.add_argument("--sizes", default="64,224", help="model input sides (default 64,224)")
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument(
        "--ray-workers", default="2", help="Ray actor counts to run, e.g. 1,2 (default 2)"
    )
    parser.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    parser.add_argument("--vectors", default="1e4,1e5,1e6")
    parser.add_argument("--dims", default="512,2048")
    parser.add_argument(
        "--max-gib", type=float, default=10.0, help="skip search sizes needing more (default 10)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke: 500 images, 10^4 vectors")
    parser.add_argument("--keep", action="store_true", help="keep the search index folders")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the results an earlier, interrupted run of the same settings kept",
    )
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.memory_images, args.vectors = "500", 100, "1e4"
    args.sizes = _ints(args.sizes)
    args.images = _ints(args.images)
    if len(args.images) == 1:
        args.images *= len(args.sizes)
    if len(args.images) != len(args.sizes):
        parser.error("--images: one count, or one per --sizes entry")
    args.engines = [e for e in args.engines.split(",") if e]
    args.vectors, args.dims = _ints(args.vectors), _ints(args.dims)
    args.ray_workers = _ints(args.ray_workers)
    command = "python benchmarks/retrieval.py " + " ".join(argv)
    started, load_start = time.perf_counter(), load()
    parts = [header(command.strip())]
    if args.only in (None, "embed"):
        runs, extras = embed_section(args)
        parts.append(embed_tables(runs, extras))
    if args.only in (None, "search"):
        parts.append(search_tables(search_section(args)))
    if REUSED:
        parts.append(
            f"--resume: {len(REUSED)} run(s) were measured by an earlier invocation (at the "
            f"time given): {', '.join(REUSED)}."
        )
    parts.append(
        f"Wall time of the benchmark: {(time.perf_counter() - started) / 60:.1f} min; 1-minute "
        f"load average {load_start:.1f} at the start, {load():.1f} at the end ({os.cpu_count()} "
        "cores: a load above that means other work shared the machine)."
    )
    text = "\n\n".join(parts)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
