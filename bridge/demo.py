"""The whole pipeline offline on the built-in synthetic data set (`tox -e demo`).

    python -m bridge.demo [--config configs/demo.toml] [--fresh]

1. both trainers on the demo config (synthetic data generated on first use);
2. export of every trained model's classifier, feature extractor, LPIPS and DISTS
   scorer to ONNX (`models/<name>/`), parity-gated, by the framework that trained it
   (Keras-trained through tf2onnx, torch-trained through torch.onnx). `--origin torch`
   sends every model through torch.onnx (Keras weights are ported first, exactly),
   `--origin both` writes both;
3. LPIPS and DISTS fitted to the synthetic ratings on VGG16 (`FINETUNE`), the torch-
   trained model in torch and the Keras-trained one in Keras, in cross-validation
   (`python -m bridge.finetune_metric`), and their fitted scorers exported;
4. `python -m evaluation.compare` on them -> `reports/<name>/report.html`.

Each step runs in its own process (the frameworks never share one). The exports and
the metric fits run `--jobs` processes side by side, and so do the torch and Keras
trainers, each with an equal share of the cores (`--threads`, recorded in run.json with
the times, so the two frameworks' times compare); each logs to `<runs>/logs/` and
reports its last line every minute; a failed one is named with the tail of its log.
The wall and CPU seconds of every step end the run (also in `<runs>/logs/steps.json`).
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
from pathlib import Path

from bridge.core.config import load_config
from bridge.core.data import synth
from bridge.core.files import sha256_file
from bridge.core.fitting import CV_SUFFIX, METRIC_NAMES, fitted_name
from bridge.core.runtime import KINDS, manifest_path, model_filename
from bridge.core.spec import FRAMEWORKS
from bridge.core.training import RUN_FILE, SIDE_BY_SIDE, best_checkpoint, run_folder

log = logging.getLogger(__name__)

TRAINERS = {"torch": "torch_models.train", "keras": "tf_models.train"}
FINETUNE = ("vgg16",)  # backbones whose metric heads the demo fits to ratings
HEARTBEAT_S = 60.0  # how often steps running side by side report their last log line


class Timings:
    """Wall and CPU seconds of each step (CPU: every process the step ran, children too)."""

    def __init__(self):
        self.rows: list[dict[str, float | str]] = []

    def start(self) -> tuple[float, float]:
        """A mark to measure from."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.time(), usage.ru_utime + usage.ru_stime

    def stop(self, title: str, mark: tuple[float, float]) -> None:
        """Record a step that began at `mark` (its processes have all been waited for)."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, cpu = time.time() - mark[0], usage.ru_utime + usage.ru_stime - mark[1]
        self.rows.append({"step": title, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)})

    def table(self) -> str:
        """The steps, their wall and CPU seconds and CPU use (100% = one core busy)."""
        width = max([len(str(r["step"])) for r in self.rows] + [5])
        lines = [f"{'step':<{width}}  {'wall s':>8}  {'CPU s':>8}  {'CPU use':>7}"]
        for r in [*self.rows, self.total()]:
            use = 100 * float(r["cpu_s"]) / max(float(r["wall_s"]), 1e-9)
            lines.append(
                f"{r['step']:<{width}}  {r['wall_s']:8.1f}  {r['cpu_s']:8.1f}  {use:6.0f}%"
            )
        return "\n".join(lines)

    def total(self) -> dict[str, float | str]:
        """The sum over steps."""
        return {
            "step": "total",
            "wall_s": round(sum(float(r["wall_s"]) for r in self.rows), 1),
            "cpu_s": round(sum(float(r["cpu_s"]) for r in self.rows), 1),
        }


def _step(title: str, argv: Sequence[str], timings: Timings) -> None:
    log.info("== %s: %s", title, " ".join(argv))
    mark = timings.start()
    result = subprocess.run([sys.executable, *argv], check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{title} failed (exit {result.returncode}): python {' '.join(argv)}")
    timings.stop(title, mark)


def _side_by_side(
    title: str, steps: Sequence[tuple[str, list[str]]], logs: Path, timings: Timings
) -> None:
    """Run steps as concurrent processes, each logging to `logs/<step>.log`.

    Every process is waited for (finished work is kept); then a failure is raised,
    naming the step and its log, with the log's tail in the error output.
    """
    if len(steps) <= 1:
        for step in steps:
            _step(*step, timings)
        return
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # two OpenMP pools spinning on the same cores slow each other down: split the cores
    env.setdefault("OMP_NUM_THREADS", str(threads_each(len(steps))))
    env[SIDE_BY_SIDE] = str(len(steps))  # recorded with the trainers' times
    mark = timings.start()
    running = []
    for name, argv in steps:
        path = logs / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.log"
        log.info("== %s: %s (log: %s)", name, " ".join(argv), path)
        with open(path, "w") as out:
            process = subprocess.Popen(
                [sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        running.append((name, argv, path, process, time.time()))
    failed = []
    heartbeat = time.time()
    while running:
        time.sleep(0.5)
        if time.time() - heartbeat >= HEARTBEAT_S:  # show that the silent steps move on
            heartbeat = time.time()
            for name, _, path, _, begun in running:
                log.info("   %s (%.0f s): %s", name, heartbeat - begun, _last_line(path))
        for entry in [e for e in running if e[3].poll() is not None]:
            running.remove(entry)
            name, argv, path, process, begun = entry
            code = process.returncode
            outcome = "done" if code == 0 else f"failed (exit {code})"
            log.info("   %s: %s in %.0f s", name, outcome, time.time() - begun)
            if code != 0:
                tail = path.read_text(errors="replace").splitlines()[-15:]
                log.error("   last lines of %s:\n%s", path, "\n".join(tail))
                failed.append((name, code, path, argv))
    if failed:
        name, code, path, argv = failed[0]
        raise RuntimeError(f"{name} failed (exit {code}; log {path}): python {' '.join(argv)}")
    timings.stop(f"{title} ({len(steps)} side by side)", mark)


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


def _missing_archs(run_root: Path, archs: Sequence[str], framework: str) -> list[str]:
    """Archs without a finished run (run.json) for this framework."""
    return [a for a in archs if not (run_folder(run_root, a, framework) / RUN_FILE).is_file()]


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
            for kind in KINDS
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
        help="exports and metric fits run this many processes side by side (default 2)",
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
    trainers, resumes = [], []
    for framework, module in TRAINERS.items():
        missing = _missing_archs(run_root, config.train.archs, framework)
        stopped = [
            a
            for a in missing
            if (run_folder(run_root, a, framework) / "resume" / "state.json").is_file()
        ]
        new = [a for a in missing if a not in stopped]
        base = ["-m", module, "--config", args.config, "--arch"]
        if new:
            trainers.append((f"train {','.join(new)} ({framework})", [*base, ",".join(new)]))
        for arch in stopped:  # an interrupted earlier run: continue it
            resumes.append((f"resume {arch} ({framework})", [*base, arch, "--resume"]))
    # the torch and Keras trainers each keep ~1.5-1.8 of 2 cores busy: together ~20% sooner
    for steps in (trainers, resumes):
        for start in range(0, len(steps), args.jobs):
            batch = steps[start : start + args.jobs]
            threads = ["--threads", str(threads_each(len(batch)))]  # equal: times compare
            batch = [(name, [*argv, *threads]) for name, argv in batch]
            _side_by_side(f"train {len(batch)} frameworks", batch, logs, timings)
    stale = _stale_runs(run_root, models, args.origin)
    groups = [stale[k :: args.jobs] for k in range(min(args.jobs, len(stale)))]
    _side_by_side(
        f"export {len(stale)} runs",
        [
            (f"export {', '.join(r.name for r in group)}",
             ["-m", "bridge.export", "--run", *map(str, group), "--kind", ",".join(KINDS),
              "--origin", args.origin, "--out", str(models)])
            for group in groups
        ],
        logs,
        timings,
    )  # fmt: skip
    rated = ["--rated", str(Path(config.data.path) / synth.RATED_DIR)]
    if config.data.source != "synthetic":
        rated = []
    fits = []
    for run_json in sorted(run_root.glob(f"*/{RUN_FILE}")):
        info = json.loads(run_json.read_text())
        if info["arch"].removesuffix("_tiny") not in FINETUNE or _fitted(
            run_json.parent, run_root.name, models
        ):
            continue
        fits.append((
            f"fit metrics {run_json.parent.name}",
            ["-m", "bridge.finetune_metric", "--run", str(run_json.parent), "--metric", "both",
             "--bootstrap", str(args.bootstrap), "--out", str(models), *rated],
        ))  # fmt: skip
    for start in range(0, len(fits), args.jobs):
        batch = fits[start : start + args.jobs]
        _side_by_side(f"fit metrics on {len(batch)} runs", batch, logs, timings)
    compare = ["-m", "evaluation.compare", "--models", str(models), "--name", config.name,
               "--out", str(out), "--bootstrap", str(args.bootstrap)]  # fmt: skip
    compare += rated  # the rated cases of the same synthetic set
    _step("compare", compare, timings)
    log.info("\n%s", timings.table())
    steps_file = logs / "steps.json"
    steps_file.parent.mkdir(parents=True, exist_ok=True)
    steps_file.write_text(json.dumps([*timings.rows, timings.total()], indent=2) + "\n")
    print(out / "report.html")
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
