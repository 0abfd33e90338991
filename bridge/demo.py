"""The whole pipeline offline on the built-in synthetic data set (`tox -e demo`).

    python -m bridge.demo [--config configs/demo.toml] [--fresh]

1. both trainers on the demo config (synthetic data generated on first use);
2. export of every trained model's classifier, feature extractor, LPIPS and DISTS
   scorer to ONNX (`models/<name>/`), parity-gated, by the framework that trained it
   (Keras-trained through tf2onnx, torch-trained through torch.onnx). `--origin torch`
   sends every model through torch.onnx (Keras weights are ported first, exactly),
   `--origin both` writes both; for `FINETUNE` backbones also the masked LPIPS and
   DISTS scorers, so that the report puts the synthetic lesions' outlines (their
   `0.mask.png`) beside the boxes;
3. LPIPS and DISTS fitted to the synthetic ratings on VGG16 (`FINETUNE`), the torch-
   trained model in torch and the Keras-trained one in Keras, in cross-validation
   (`python -m bridge.finetune_metric`), and their fitted scorers exported;
4. `python -m evaluation.compare` on them -> `reports/<name>/report.html`.

Each task (one run's training, one run's exports, one run's metric fit) runs in its own
process (the frameworks never share one); `--jobs` of them run side by side (default 2),
each as soon as what it needs is done, each with an equal share of the cores (`--threads`,
recorded in run.json with the times, so the two frameworks' times compare). Each logs to
`<runs>/logs/` and reports its last line every minute; a failed one is named with the tail
of its log. The start, wall and CPU seconds of every task end the run (also in
`<runs>/logs/steps.json`).
Work already done is kept: finished runs are not retrained and up-to-date exports not
redone, so a second `tox -e demo` only re-runs the comparison; `--fresh` starts over.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.core.config import load_config
from bridge.core.data import synth
from bridge.core.files import sha256_file
from bridge.core.fitting import CV_SUFFIX, METRIC_NAMES, fitted_name
from bridge.core.runtime import KINDS, MASKED_KINDS, manifest_path, model_filename
from bridge.core.spec import FRAMEWORKS
from bridge.core.training import RUN_FILE, SIDE_BY_SIDE, best_checkpoint, run_folder

log = logging.getLogger(__name__)

TRAINERS = {"torch": "torch_models.train", "keras": "tf_models.train"}
FINETUNE = ("vgg16",)  # backbones whose metric heads the demo fits to ratings


def export_kinds(arch: str) -> tuple[str, ...]:
    """What the demo exports of a run: every kind, and the masked scorers of `FINETUNE`."""
    return (*KINDS, *MASKED_KINDS) if arch.removesuffix("_tiny") in FINETUNE else KINDS


HEARTBEAT_S = 60.0  # how often steps running side by side report their last log line


@dataclass(frozen=True)
class Task:
    """One process of the demo.

    Attributes:
        name: What it does (its log file is named after it).
        argv: Its arguments to python.
        after: Names of the tasks that must have finished before it starts.
    """

    name: str
    argv: list[str]
    after: tuple[str, ...] = ()


class Timings:
    """Wall and CPU seconds of each task (CPU: the task's process and its children).

    Tasks may overlap, so the total's wall time is the span from the first start to the
    last end, not the sum of the rows.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float | str]] = []
        self._span: list[float] = []

    def add(self, title: str, begun: float, ended: float, cpu: float) -> None:
        """Record a task that ran from `begun` to `ended` (time.time()) and used `cpu` s."""
        self._span += [begun, ended]
        self.rows.append({
            "step": title, "start_s": 0.0, "wall_s": round(ended - begun, 1),
            "cpu_s": round(cpu, 1), "_begun": begun,
        })  # fmt: skip

    def table(self) -> str:
        """The tasks in start order: start, wall and CPU seconds, CPU use (100%: one core)."""
        rows = [*self.public(), self.total()]
        width = max([len(str(r["step"])) for r in rows] + [5])
        lines = [f"{'step':<{width}}  {'start s':>8}  {'wall s':>8}  {'CPU s':>8}  {'CPU use':>7}"]
        for r in rows:
            use = 100 * float(r["cpu_s"]) / max(float(r["wall_s"]), 1e-9)
            lines.append(
                f"{r['step']:<{width}}  {r['start_s']:8.1f}  {r['wall_s']:8.1f}  "
                f"{r['cpu_s']:8.1f}  {use:6.0f}%"
            )
        return "\n".join(lines)

    def public(self) -> list[dict[str, float | str]]:
        """The rows in start order, with their start as seconds from the first start."""
        first = min(self._span, default=0.0)
        rows = sorted(self.rows, key=lambda r: float(r["_begun"]))
        return [
            {**{k: v for k, v in r.items() if k != "_begun"},
             "start_s": round(float(r["_begun"]) - first, 1)}
            for r in rows
        ]  # fmt: skip

    def total(self) -> dict[str, float | str]:
        """From the first start to the last end, and the CPU seconds of every task."""
        wall = max(self._span, default=0.0) - min(self._span, default=0.0)
        return {
            "step": "total",
            "start_s": 0.0,
            "wall_s": round(wall, 1),
            "cpu_s": round(sum(float(r["cpu_s"]) for r in self.rows), 1),
        }


def _step(title: str, argv: Sequence[str], timings: Timings) -> None:
    """Run one process in the foreground (its output on the terminal) and time it."""
    log.info("== %s: %s", title, " ".join(argv))
    begun, before = time.time(), _children_cpu()
    result = subprocess.run([sys.executable, *argv], check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{title} failed (exit {result.returncode}): python {' '.join(argv)}")
    timings.add(title, begun, time.time(), _children_cpu() - before)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _schedule(tasks: Sequence[Task], jobs: int, logs: Path, timings: Timings) -> None:
    """Run the tasks as processes, at most `jobs` at once, each logging to `logs/<name>.log`.

    A task starts as soon as its `after` tasks are done (in list order among those ready).

    Each process gets an equal share of the cores (`OMP_NUM_THREADS`; the trainers are
    also told `--threads` by the caller), so the frameworks' times compare. On a failure
    no further task starts, the running ones are waited for (finished work is kept), and
    the failure is raised naming the task and its log, with the log's tail logged.
    """
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # two OpenMP pools spinning on the same cores slow each other down: split the cores
    env.setdefault("OMP_NUM_THREADS", str(threads_each(jobs)))
    env[SIDE_BY_SIDE] = str(jobs)  # recorded with the trainers' times
    pending, done = list(tasks), set()
    running: dict[int, tuple[Task, Path, subprocess.Popen, float]] = {}
    failed: list[tuple[Task, int, Path]] = []
    heartbeat = time.time()
    while pending or running:
        ready = [t for t in pending if all(a in done for a in t.after)]
        while ready and len(running) < jobs and not failed:
            task = ready.pop(0)
            pending.remove(task)
            path = logs / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', task.name)}.log"
            log.info("== %s: %s (log: %s)", task.name, " ".join(task.argv), path)
            with open(path, "w") as out:
                process = subprocess.Popen(
                    [sys.executable, *task.argv], stdout=out, stderr=subprocess.STDOUT, env=env
                )
            running[process.pid] = (task, path, process, time.time())
        if not running:
            if failed or pending:  # nothing can start: a failure, or a task never ready
                break
            continue
        pid, status, usage = os.wait4(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(0.5)
            if time.time() - heartbeat >= HEARTBEAT_S:  # show that the silent tasks move on
                heartbeat = time.time()
                for task, path, _, begun in running.values():
                    log.info("   %s (%.0f s): %s", task.name, heartbeat - begun, _last_line(path))
            continue
        if pid not in running:
            continue
        task, path, process, begun = running.pop(pid)
        process.returncode = os.waitstatus_to_exitcode(status)
        code = process.returncode
        log.info("   %s: %s in %.0f s", task.name, "done" if code == 0 else f"failed (exit {code})",
                 time.time() - begun)  # fmt: skip
        if code == 0:
            done.add(task.name)
            timings.add(task.name, begun, time.time(), usage.ru_utime + usage.ru_stime)
        else:
            tail = path.read_text(errors="replace").splitlines()[-15:]
            log.error("   last lines of %s:\n%s", path, "\n".join(tail))
            failed.append((task, code, path))
    if failed:
        task, code, path = failed[0]
        raise RuntimeError(
            f"{task.name} failed (exit {code}; log {path}): python {' '.join(task.argv)}"
        )
    if pending:
        raise RuntimeError(f"tasks never ready: {', '.join(t.name for t in pending)}")


def threads_each(steps: int) -> int:
    """CPU threads per process when `steps` processes share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, steps))


def _last_line(path: Path, width: int = 100) -> str:
    """The last non-empty line (or progress-bar update) of a log, cut to `width`."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        tail = f.read().decode("utf-8", errors="replace")
    parts = [p.strip() for p in re.split(r"[\r\n]", tail) if p.strip()]
    return parts[-1][:width] if parts else "(no output yet)"


def _stale_runs(run_root: Path, models: Path, origin: str) -> list[Path]:
    """Finished runs whose exports are missing or come from another checkpoint."""
    stale = []
    for run_json in sorted(run_root.glob(f"*/{RUN_FILE}")):
        run = run_json.parent
        info = json.loads(run_json.read_text())
        sha = sha256_file(best_checkpoint(run, info["framework"]))
        origins = {"native": [info["framework"]], "both": list(FRAMEWORKS)}.get(origin, [origin])
        manifests = [
            manifest_path(models / model_filename(f"{run_root.name}-{run.name}", kind, o))
            for kind in export_kinds(info["arch"])
            for o in origins
        ]
        if not all(
            m.is_file() and json.loads(m.read_text())["source_weights"]["sha256"] == sha
            for m in manifests
        ):
            stale.append(run)
    return stale


def _fitted(run: Path, name: str, models: Path) -> bool:
    """Whether both metrics were fitted on this run's current best checkpoint."""
    info = json.loads((run / RUN_FILE).read_text())
    sha = sha256_file(best_checkpoint(run, info["framework"]))
    records = [models / (fitted_name(f"{name}-{run.name}", m) + CV_SUFFIX) for m in METRIC_NAMES]
    return all(
        r.is_file() and json.loads(r.read_text())["fit"]["source"]["sha256"] == sha for r in records
    )


def _tasks(
    args: argparse.Namespace, archs: Sequence[str], run_root: Path, models: Path, rated: list[str]
) -> list[Task]:
    """Every process still to run before the comparison, in the order they should start.

    Each missing run is trained alone (an interrupted one resumed), then exported by its
    framework's exporter and, for `FINETUNE` backbones, its metric heads fitted; runs
    already trained are exported or fitted only where that is not up to date. The
    trainers come first, then the exports and fits from the slowest backbone (ViT) down,
    so the last task to finish is a short one and no core waits long.
    """
    threads = ["--threads", str(threads_each(args.jobs))]  # equal shares: times compare
    trains, after = [], {}
    for arch in archs:
        for framework, module in TRAINERS.items():
            run = run_folder(run_root, arch, framework)
            if (run / RUN_FILE).is_file():
                continue
            argv = ["-m", module, "--config", args.config, "--arch", arch, *threads]
            name = f"train {arch} ({framework})"
            if (run / "resume" / "state.json").is_file():  # an interrupted earlier run
                argv, name = [*argv, "--resume"], f"resume {arch} ({framework})"
            trains.append(Task(name, argv))
            after[run.name] = (name,)
    trained = {r.name for r in _stale_runs(run_root, models, args.origin)} | set(after)
    weight = {"vit_b16": 0, "vgg16": 1}  # slowest first; the rest after
    order = sorted(
        ((a, f) for a in archs for f in TRAINERS),
        key=lambda af: (weight.get(af[0].removesuffix("_tiny"), 2), af),
    )
    later = []
    for arch, framework in order:
        run = run_folder(run_root, arch, framework)
        if run.name in trained:
            later.append(Task(
                f"export {run.name}",
                ["-m", "bridge.export", "--run", str(run), "--kind", ",".join(export_kinds(arch)),
                 "--origin", args.origin, "--out", str(models)],
                after.get(run.name, ()),
            ))  # fmt: skip
        fit = arch.removesuffix("_tiny") in FINETUNE
        if fit and (run.name in after or not _fitted(run, run_root.name, models)):
            later.append(Task(
                f"fit metrics {run.name}",
                ["-m", "bridge.finetune_metric", "--run", str(run), "--metric", "both",
                 "--bootstrap", str(args.bootstrap), "--out", str(models), *rated],
                after.get(run.name, ()),
            ))  # fmt: skip
    return trains + later


def main(argv: Sequence[str] | None = None) -> int:
    """Train, export and compare; print the report's path."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", default="configs/demo.toml", help="shared training config")
    parser.add_argument("--fresh", action="store_true", help="retrain and re-export everything")
    parser.add_argument(
        "--origin",
        default="native",
        choices=("native", "torch", "both"),
        help="exporter: the framework that trained each model (default), torch.onnx for "
        "all, or both",
    )
    parser.add_argument("--models", default=None, help="ONNX output folder (models/<name>)")
    parser.add_argument("--out", default=None, help="report folder (reports/<name>)")
    parser.add_argument(
        "--bootstrap", type=int, default=2000, help="bootstrap resamples of the comparison"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="processes side by side: trainings, exports and metric fits (default 2)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = load_config(args.config)
    run_root = config.run_dir
    models = Path(args.models) if args.models else Path("models") / config.name
    out = Path(args.out) if args.out else Path("reports") / config.name
    if args.fresh:
        for folder in (run_root, models):
            if folder.exists():
                log.info("--fresh: removing %s", folder)
                shutil.rmtree(folder)
    timings = Timings()
    logs = run_root / "logs"
    rated = ["--rated", str(Path(config.data.path) / synth.RATED_DIR)]
    if config.data.source != "synthetic":
        rated = []
    else:
        synth.current(config.data.path)  # generated once here, not by two trainers at once
    tasks = _tasks(args, config.train.archs, run_root, models, rated)
    _schedule(tasks, args.jobs, logs, timings)
    compare = ["-m", "evaluation.compare", "--models", str(models), "--name", config.name,
               "--out", str(out), "--bootstrap", str(args.bootstrap)]  # fmt: skip
    compare += rated  # the rated cases of the same synthetic set
    _step("compare", compare, timings)
    log.info("\n%s", timings.table())
    steps_file = logs / "steps.json"
    steps_file.parent.mkdir(parents=True, exist_ok=True)
    steps_file.write_text(json.dumps([*timings.public(), timings.total()], indent=2) + "\n")
    print(out / "report.html")
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
