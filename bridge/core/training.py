"""What the torch and Keras trainers share, so the comparison isolates the framework.

Both trainers call `prepare` and get the same data set, splits, batch streams,
initial weights, learning-rate schedule, trainable layers and metrics, and close every
epoch with `end_epoch` and the run with `end_run`; only the model, the optimiser step
and the checkpoint format are their own.

A run folder (`runs/<name>/`) holds what is shared between frameworks:
`splits.csv` and `init/<arch>.safetensors`. Each arch x framework gets its own folder
`runs/<name>/<arch>-<framework>/` with `run.json` (config, data, provenance, results),
`metrics.jsonl` (one line per epoch), `best.*`, `test.json`, `curves.png` and
`confusion.png`. While it trains, `resume/` holds the last finished epoch's weights
and optimiser state for `--resume`; it goes when the run finishes. `train.checkpoints`
says what else stays: `last.*` (`last`) or `checkpoints/epoch_NNN.*` (`every`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.config import Config
from bridge.core.data.readers import ClassificationSet
from bridge.core.data.sources import load_dataset
from bridge.core.data.splits import load_or_make_splits, select
from bridge.core.data.stream import BatchStream, ImageCache, channel_stats
from bridge.core.files import atomic_path, link_or_copy, sha256_file
from bridge.core.spec import FRAMEWORKS, FULL_ARCHS, ArchSpec, InputContract, get_arch
from bridge.core.weights import (
    KERAS_SUFFIX,
    check_state_dict,
    init_state_dict,
    read_state_dict,
    resolve_imagenet,
    write_state_dict,
)

log = logging.getLogger(__name__)

RUN_FILE = "run.json"  # a finished run: config, data, provenance, results
SELECTION_METRIC = "balanced_accuracy"  # best epoch: highest validation balanced accuracy
SIDE_BY_SIDE = "DERMSIM_SIDE_BY_SIDE"  # set by bridge.demo: how many steps run at once


# ------------------------------------------------------------------------ data


def run_folder(run_root: str | os.PathLike, arch: str, framework: str) -> Path:
    """The folder of one arch x framework of a run: `runs/<name>/<arch>-<framework>`."""
    return Path(run_root) / f"{arch}-{framework}"


def checkpoint_suffix(framework: str) -> str:
    """A framework's checkpoint suffix: `.safetensors` (torch) or `.weights.h5` (Keras)."""
    return ".safetensors" if framework == "torch" else KERAS_SUFFIX


def best_checkpoint(run_dir: str | os.PathLike, framework: str) -> Path:
    """The best checkpoint of a run folder (highest validation balanced accuracy)."""
    return Path(run_dir) / f"best{checkpoint_suffix(framework)}"


@dataclass
class RunData:
    """The data of one run: the same for every arch and framework of the run."""

    dataset: ClassificationSet
    classes: tuple[str, ...]
    split: dict[str, str]
    cache: ImageCache

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class."""
        out: dict[str, dict[str, int]] = {}
        for sample in self.dataset.samples:
            per_class = out.setdefault(self.split[sample.id], {})
            per_class[sample.label] = per_class.get(sample.label, 0) + 1
        return out


def load_run_data(config: Config) -> RunData:
    """Data set, classes and the run's shared splits file (made on first use)."""
    dataset = load_dataset(config.data, config.seed)
    d = config.data
    split = load_or_make_splits(
        dataset, config.run_dir / "splits.csv", d.val_fraction, d.test_fraction, config.seed
    )
    classes = tuple(c for c in dataset.classes if any(s.label == c for s in dataset.samples))
    cache = ImageCache(d.image_size, d.resize_policy, d.interpolation, keep=d.cache)
    return RunData(dataset, classes, split, cache)


# ------------------------------------------------------------------------- run


@dataclass
class Run:
    """One arch x framework of a run: paths, data streams, weights, schedule."""

    config: Config
    spec: ArchSpec
    framework: str
    data: RunData
    contract: InputContract
    init_path: Path
    init_source: str
    train: BatchStream
    val: BatchStream | None
    test: BatchStream
    trainable: tuple[str, ...] | None
    started: float = field(default_factory=time.time)
    cpu_started: float = field(default_factory=time.process_time)

    @property
    def dir(self) -> Path:
        """`runs/<name>/<arch>-<framework>`."""
        return run_folder(self.config.run_dir, self.spec.name, self.framework)

    @property
    def num_classes(self) -> int:
        """Head size."""
        return len(self.data.classes)

    @property
    def suffix(self) -> str:
        """Checkpoint suffix of the framework."""
        return checkpoint_suffix(self.framework)

    def checkpoint(self, epoch: int) -> Path:
        """The weights at the end of a (1-based) epoch, under `resume/` until the run ends."""
        return self.dir / "resume" / f"epoch_{epoch:03d}{self.suffix}"

    def optimizer_state(self, epoch: int, suffix: str) -> Path:
        """The optimiser state at the end of a (1-based) epoch, in the trainer's format."""
        return self.dir / "resume" / f"optimizer_{epoch:03d}{suffix}"

    @property
    def best(self) -> Path:
        """The best checkpoint (highest validation balanced accuracy)."""
        return best_checkpoint(self.dir, self.framework)

    def lr(self, epoch: int, step: int) -> float:
        """Learning rate at `step` (0-based) of `epoch` (0-based)."""
        return learning_rate(self.config, epoch + step / len(self.train))


def prepare(
    config: Config, arch: str, framework: str, data: RunData | None = None, resume: bool = False
) -> Run:
    """Set up one arch x framework: folders, streams, shared initial weights.

    Raises:
        ValueError: If the run folder already holds a finished or started run and
            `resume` is False, or nothing to resume when it is True.
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework {framework!r}: expected torch or keras")
    data = data or load_run_data(config)
    spec = get_arch(arch).at_size(config.data.image_size)
    init_path, source = shared_init(config, spec, len(data.classes))
    contract = spec.contract
    if config.data.normalization == "dataset":
        mean, std = channel_stats(select(data.dataset, data.split, "train"), data.cache)
        contract = InputContract(
            tuple(mean), tuple(std), config.data.image_size, contract.fixed_size,
            interpolation=config.data.interpolation, source=f"{config.name} training split",
        )  # fmt: skip
    else:
        contract = InputContract(
            contract.mean, contract.std, config.data.image_size, contract.fixed_size,
            interpolation=config.data.interpolation, source=contract.source,
        )  # fmt: skip

    def stream(name: str, train: bool) -> BatchStream | None:
        samples = select(data.dataset, data.split, name)
        if not samples:
            return None
        return BatchStream(
            samples, data.classes, data.cache, contract.mean, contract.std,
            config.train.batch_size, augment=config.augment if train else None,
            shuffle=train, seed=config.seed, drop_last=train,
        )  # fmt: skip

    train_stream, test_stream = stream("train", True), stream("test", False)
    if train_stream is None or test_stream is None:
        raise ValueError(f"{config.name}: the train or test split is empty; use more data")
    run = Run(
        config, spec, framework, data, contract, init_path, source,
        train_stream, stream("val", False), test_stream,
        trainable_layers(spec, config.train.trainable),
    )  # fmt: skip
    state = run.dir / "resume" / "state.json"
    if resume and not state.exists():
        raise ValueError(f"{run.dir}: nothing to resume (no resume/state.json)")
    if not resume and (run.dir / "metrics.jsonl").exists():
        raise ValueError(
            f"{run.dir}: already holds a run; pass --resume to continue it, or another name "
            "(--set name=...)"
        )
    (run.dir / "resume").mkdir(parents=True, exist_ok=True)
    return run


def shared_init(config: Config, spec: ArchSpec, num_classes: int) -> tuple[Path, str]:
    """Initial weights every framework of the run starts from (made on first use).

    `random`: the reference libraries' init scheme drawn in numpy with the run seed.
    `imagenet` or a file: its weights with a freshly initialised head when the head
    size differs (fine-tuning to the run's classes).
    """
    init = config.train.init
    path = config.run_dir / "init" / f"{spec.name}-{num_classes}.safetensors"
    fresh = init_state_dict(spec, num_classes, config.seed)
    if init == "random":
        source = f"random (reference init scheme, seed {config.seed})"
        state = fresh
    else:
        src = resolve_imagenet(get_arch(spec.name)) if init == "imagenet" else Path(init)
        state = read_state_dict(src)
        head = spec.head
        if (
            state.get(f"{head}.weight") is not None
            and state[f"{head}.weight"].shape[0] != num_classes
        ):
            log.info(
                "%s: new %d-class head (the file has %d)",
                src,
                num_classes,
                state[f"{head}.weight"].shape[0],
            )
            state = {
                **state,
                f"{head}.weight": fresh[f"{head}.weight"],
                f"{head}.bias": fresh[f"{head}.bias"],
            }
        state = check_state_dict(state, spec, num_classes, source=str(src))
        source = f"{init} ({src}, sha256 {sha256_file(src)[:12]})"
    if path.exists():
        existing = check_state_dict(read_state_dict(path), spec, num_classes, str(path))
        if all(np.array_equal(existing[k], state[k]) for k in state):
            return path, source
        raise ValueError(f"{path}: differs from the configured init {init!r}; use another run name")
    write_state_dict(state, path)
    return path, source


# ------------------------------------------------------------------- training


def learning_rate(config: Config, progress: float) -> float:
    """Learning rate after `progress` epochs (fractional), with warm-up and schedule."""
    t = config.train
    if progress < t.warmup_epochs:
        return t.lr * progress / t.warmup_epochs
    rest = (progress - t.warmup_epochs) / max(t.epochs - t.warmup_epochs, 1e-9)
    if t.schedule == "cosine":
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * min(rest, 1.0)))
    if t.schedule == "step":
        return t.lr * (0.1 ** ((rest >= 0.6) + (rest >= 0.85)))
    return t.lr


def trainable_layers(spec: ArchSpec, policy: str) -> tuple[str, ...] | None:
    """Module / layer name prefixes that train under `policy` (None: everything).

    Blocks, from the input: VGG conv stages then the hidden classifier layers;
    ResNet stem then stages; ViT embeddings, each transformer block, then the final
    norm. `head` trains only the classification layer, `last:N` also the last N
    blocks.
    """
    if policy == "all":
        return None
    n = 0 if policy == "head" else int(policy.split(":")[1])
    blocks = architecture_blocks(spec)
    chosen = blocks[len(blocks) - n :] if n else []
    return (spec.head, *(name for block in chosen for name in block))


def architecture_blocks(spec: ArchSpec) -> list[tuple[str, ...]]:
    """The trainable blocks of an architecture, input first, head excluded."""
    from bridge.core.spec import vgg_features_layout

    cfg = spec.config
    if spec.family == "vgg":
        blocks, current = [], []
        for i, (kind, _) in enumerate(vgg_features_layout(cfg.stages)):
            if kind == "conv":
                current.append(f"features.{i}")
            elif kind == "pool":
                blocks.append(tuple(current))
                current = []
        return [*blocks, ("classifier.0", "classifier.3")]
    if spec.family == "resnet":
        return [("conv1", "bn1"), *((f"layer{i + 1}",) for i in range(len(cfg.blocks)))]
    return [("tokens", "patch_embed"), *((f"blocks.{b}",) for b in range(cfg.depth)), ("norm",)]


def is_trainable(name: str, prefixes: tuple[str, ...] | None) -> bool:
    """True when a module / layer `name` trains under the chosen prefixes."""
    if prefixes is None:
        return True
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# --------------------------------------------------------------------- metrics


def classification_metrics(
    labels: np.ndarray, logits: np.ndarray, classes: Sequence[str], confusion: bool = False
) -> dict[str, Any]:
    """Loss, accuracy, balanced accuracy, macro-F1 and per-class ROC AUC of logits.

    The loss is the mean cross-entropy computed here (numpy, float64), so both
    frameworks' validation losses are measured alike. A class absent from `labels`
    gets no AUC (None).
    """
    from sklearn.metrics import (
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        roc_auc_score,
    )

    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    predicted = logits.argmax(axis=1)
    k = len(classes)
    out: dict[str, Any] = {
        "loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(
            f1_score(labels, predicted, average="macro", labels=range(k), zero_division=0)
        ),
        "roc_auc": {},
    }
    for i, name in enumerate(classes):
        positives = labels == i
        out["roc_auc"][name] = (
            float(roc_auc_score(positives, probs[:, i]))
            if 0 < positives.sum() < len(labels)
            else None
        )
    if confusion:
        out["confusion"] = confusion_matrix(labels, predicted, labels=range(k)).tolist()
    return out


# ------------------------------------------------------------ logging / resume


class RunLog:
    """metrics.jsonl, best-epoch tracking and the resume state of one run."""

    def __init__(self, run: Run):
        self.run = run
        self.path = run.dir / "metrics.jsonl"
        self.state_path = run.dir / "resume" / "state.json"
        self.rows: list[dict[str, Any]] = []
        self.best_epoch = 0
        self.best_score = -math.inf

    def resume(self) -> int:
        """Load the state of the last finished epoch; returns how many epochs are done.

        Lines of metrics.jsonl from an epoch that did not finish are dropped.
        """
        state = json.loads(self.state_path.read_text())
        done = int(state["epoch"])
        self.best_epoch, self.best_score = int(state["best_epoch"]), float(state["best_score"])
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        self.rows = [r for r in rows if r["epoch"] <= done]
        self._write_rows()
        log.info("%s: resuming after epoch %d", self.run.dir, done)
        return done

    def epoch_done(self, row: dict[str, Any]) -> bool:
        """Record an epoch's metrics; True when it is the best so far."""
        self.rows.append(row)
        self._write_rows()
        score = (row.get("val") or row["train"])[SELECTION_METRIC]
        better = score > self.best_score
        if better:
            self.best_epoch, self.best_score = row["epoch"], score
        return better

    def save_state(self, epoch: int) -> None:
        """Mark `epoch` complete (after its checkpoint and resume files are written)."""
        state = {"epoch": epoch, "best_epoch": self.best_epoch, "best_score": self.best_score}
        write_json(self.state_path, state)

    def _write_rows(self) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.rows))


def log_epoch(run: Run, row: dict[str, Any]) -> None:
    """One log line per epoch: losses, validation balanced accuracy, time."""
    val = row["val"] or {}
    log.info(
        "%s %s epoch %d: train loss %.4f, val loss %s, val balanced acc %s (%.1f s)",
        run.spec.name, run.framework, row["epoch"], row["train"]["step_loss"],
        f"{val['loss']:.4f}" if val else "-", f"{val['balanced_accuracy']:.3f}" if val else "-",
        row["seconds"],
    )  # fmt: skip


def keep_best(run: Run, epoch: int) -> None:
    """Make an epoch's checkpoint `best.*` (a hard link where possible)."""
    link_or_copy(run.checkpoint(epoch), run.best)


def prune_resume(run: Run, epoch: int) -> None:
    """Remove the resume files of every epoch but `epoch` (after its state is saved).

    The files of the epoch before stay until `resume/state.json` names the new one,
    so a kill at any moment leaves a consistent state to resume from.
    """
    keep = f"_{epoch:03d}"
    for path in (run.dir / "resume").glob("*_[0-9][0-9][0-9]*"):
        if path.name.startswith(("epoch_", "optimizer_")) and keep not in path.name:
            path.unlink(missing_ok=True)


def finish(
    run: Run, runlog: RunLog, test: dict[str, Any], versions: dict[str, str], threads: int
) -> Path:
    """Write test.json, run.json, curves.png and confusion.png; return run.json's path.

    `threads` is the trainer's intra-op thread count, recorded with the times (`timing`).
    """
    write_json(run.dir / "test.json", test)
    plot_curves(runlog.rows, run.dir / "curves.png", run)
    plot_confusion(np.asarray(test["confusion"]), run.data.classes, run.dir / "confusion.png", run)
    info = {
        "arch": run.spec.name,
        "framework": run.framework,
        "classes": list(run.data.classes),
        "num_classes": run.num_classes,
        "image_size": run.config.data.image_size,
        "resize_policy": run.config.data.resize_policy,
        "input_contract": run.contract.to_dict(),
        "init": {
            "source": run.init_source,
            "file": str(run.init_path),
            "sha256": sha256_file(run.init_path),
        },
        "trainable": list(run.trainable) if run.trainable is not None else "all",
        "data": {
            "name": run.data.dataset.name,
            "synthetic": run.data.dataset.synthetic,
            "group_by": run.data.dataset.group_by,
            "splits_file": str(run.config.run_dir / "splits.csv"),
            "counts": run.data.counts(),
        },
        "best_epoch": runlog.best_epoch,
        "selection": f"validation {SELECTION_METRIC}",
        "test": {k: v for k, v in test.items() if k != "confusion"},
        "train_seconds": round(sum(r["seconds"] for r in runlog.rows), 2),
        "timing": timing(run, runlog, threads),
        "config": run.config.to_dict(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **versions},
    }
    last = runlog.rows[-1]["epoch"]
    if run.config.train.checkpoints == "last":
        link_or_copy(run.checkpoint(last), run.dir / f"last{run.suffix}")
    path = run.dir / RUN_FILE
    write_json(path, info)
    shutil.rmtree(run.dir / "resume", ignore_errors=True)  # finished: nothing to resume
    return path


Predict = Callable[[BatchStream], tuple[np.ndarray, np.ndarray]]
"""A trainer's inference on a whole stream: (logits, labels), in the stream's order."""


def end_epoch(
    run: Run,
    runlog: RunLog,
    epoch: int,
    *,
    lr: float,
    began: float,
    labels: np.ndarray,
    logits: np.ndarray,
    losses: Sequence[float],
    predict: Predict,
    save: Callable[[int], None],
) -> dict[str, Any]:
    """Close a training epoch, the same way in both frameworks.

    Scores the epoch's training batches and the validation split, appends the epoch's
    row to metrics.jsonl, saves the checkpoint, copies it to `best.*` when its score is
    the best so far, marks the epoch done for `--resume` and logs one line.

    Args:
        run: The run.
        runlog: Its log.
        epoch: The epoch just trained (0-based).
        lr: The learning rate of its last step.
        began: `time.perf_counter()` when it began; the row's `seconds` end after
            validation.
        labels: The labels of its training batches, in order.
        logits: Their logits from the training steps.
        losses: The steps' losses.
        predict: Inference on a stream (the validation split).
        save: Writes the checkpoint of a 1-based epoch (`run.checkpoint`) and its
            optimiser state (`run.optimizer_state`).

    Returns:
        The epoch's row of metrics.jsonl.
    """
    train = classification_metrics(labels, logits, run.data.classes)
    train["step_loss"] = float(np.mean(losses))
    val = None
    if run.val:
        val_logits, val_labels = predict(run.val)
        val = classification_metrics(val_labels, val_logits, run.data.classes)
    row = {
        "epoch": epoch + 1,
        "lr": lr,
        "seconds": round(time.perf_counter() - began, 3),
        "train": train,
        "val": val,
    }
    save(epoch + 1)
    if runlog.epoch_done(row):
        keep_best(run, epoch + 1)
    if run.config.train.checkpoints == "every":
        link_or_copy(
            run.checkpoint(epoch + 1), run.dir / "checkpoints" / run.checkpoint(epoch + 1).name
        )
    runlog.save_state(epoch + 1)
    prune_resume(run, epoch + 1)
    log_epoch(run, row)
    return row


def timing(run: Run, runlog: RunLog, threads: int) -> dict[str, Any]:
    """How long the run took, and under what load, so that times compare honestly.

    `train_seconds` sums the epochs (training and validation); `wall_seconds` and
    `cpu_seconds` (every thread of this process) run from `prepare` to now (a resumed
    run: since the resume);
    `threads` is the intra-op thread count the trainer set; `side_by_side` is how many
    steps `bridge.demo` ran at once (1: alone), from `DERMSIM_SIDE_BY_SIDE`.
    """
    return {
        "train_seconds": round(sum(r["seconds"] for r in runlog.rows), 2),
        "wall_seconds": round(time.time() - run.started, 2),
        "cpu_seconds": round(time.process_time() - run.cpu_started, 2),
        "threads": threads,
        "cores": os.cpu_count(),
        "side_by_side": int(os.environ.get(SIDE_BY_SIDE, "1") or 1),
    }


def end_run(
    run: Run, runlog: RunLog, predict: Predict, versions: dict[str, str], threads: int
) -> Path:
    """Score the test split with the best weights (loaded by the trainer) and `finish`.

    Returns:
        The path of run.json.
    """
    logits, labels = predict(run.test)
    test = classification_metrics(labels, logits, run.data.classes, confusion=True)
    path = finish(run, runlog, test, versions, threads)
    log.info(
        "%s: test balanced accuracy %.3f (best epoch %d) -> %s",
        run.dir, test["balanced_accuracy"], runlog.best_epoch, path,
    )  # fmt: skip
    return path


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


# ----------------------------------------------------------------------- plots


def _title(run: Run, what: str) -> str:
    synthetic = " (SYNTHETIC data)" if run.data.dataset.synthetic else ""
    return f"{run.spec.name} · {run.framework} · {what}{synthetic}"


def plot_curves(rows: list[dict[str, Any]], path: Path, run: Run) -> None:
    """Loss and balanced accuracy per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", SELECTION_METRIC), strict=True):
        ax.plot(epochs, [r["train"][metric] for r in rows], "o-", label="train")
        if all(r.get("val") for r in rows):
            ax.plot(epochs, [r["val"][metric] for r in rows], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(_title(run, "training curves"))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, run: Run) -> None:
    """Test-split confusion matrix with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.1 * len(classes) + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color=color)
    ax.set_title(_title(run, "test confusion"), fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def resolve_archs(config: Config, arch: str | None) -> list[str]:
    """Architectures to train: `--arch` (a name or `all`), else the config's list."""
    if arch is None:
        names = list(config.train.archs)
    elif arch == "all":
        names = list(FULL_ARCHS)
    else:
        names = arch.split(",")
    for name in names:
        get_arch(name)
    return names


def add_arguments(parser) -> None:
    """The command-line options both trainers share."""
    parser.add_argument("--config", required=True, help="TOML config (see configs/demo.toml)")
    parser.add_argument(
        "--arch", default=None, help="vgg16, resnet50, vit_b16, a *_tiny variant, or all"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=1e-3 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op CPU threads (default: the framework's own); recorded in run.json",
    )


def check_threads(threads: int) -> int:
    """A `--threads` value, checked.

    Raises:
        ValueError: Below 1.
    """
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    return threads


__all__ = [
    "FRAMEWORKS",
    "Run",
    "RunData",
    "RunLog",
    "add_arguments",
    "best_checkpoint",
    "check_threads",
    "checkpoint_suffix",
    "classification_metrics",
    "end_epoch",
    "end_run",
    "finish",
    "is_trainable",
    "keep_best",
    "learning_rate",
    "load_run_data",
    "log_epoch",
    "prepare",
    "resolve_archs",
    "run_folder",
    "trainable_layers",
    "write_json",
]
