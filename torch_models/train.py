"""PyTorch trainer.

    tox -e torch-train -- --config configs/demo.toml [--arch vgg16|resnet50|vit_b16|all]
                          [--set key=value ...] [--resume]
    torchrun --nproc_per_node 2 -m torch_models.train --config ...   # DDP (gloo on CPU)

Data, splits, batches, initial weights, schedule, metrics and the end of every epoch
(validation, metrics.jsonl, checkpoint, best) come from `bridge.core.training`, shared
with the Keras trainer (tf_models/train.py mirrors this file); what is torch's own is
the model, the optimiser step and the checkpoints (`.safetensors`). On CPU the model
runs channels-last.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from bridge.core import training
from bridge.core.config import Config, TrainConfig, load_config
from bridge.core.data.stream import BatchStream
from bridge.core.files import atomic_path
from torch_models.backbones import create_model, load_weights, save_weights

log = logging.getLogger(__name__)


# ------------------------------------------------------------ distribution


class Distributed:
    """The process group under torchrun (one process otherwise)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = torch.device("cpu")
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if torch.cuda.is_available():
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda")

    @property
    def main(self) -> bool:
        """True on the process that writes files."""
        return self.rank == 0

    def shard(self, array: np.ndarray) -> np.ndarray:
        """This process's share of a global batch."""
        return array[self.rank :: self.world]

    def gather(self, array: np.ndarray) -> np.ndarray:
        """Concatenate every process's array (process order)."""
        if self.world == 1:
            return array
        parts: list = [None] * self.world
        dist.all_gather_object(parts, array)
        return np.concatenate(parts)

    def barrier(self) -> None:
        """Wait for every process."""
        if self.world > 1:
            dist.barrier()


def set_threads(threads: int | None) -> None:
    """Use `threads` intra-op CPU threads (`--threads`; None: torch's default)."""
    if threads is not None:
        torch.set_num_threads(training.check_threads(threads))


def threads_in_use() -> int:
    """The intra-op CPU threads in use (recorded in run.json)."""
    return torch.get_num_threads()


# ------------------------------------------------------------------- model


def set_trainable(model: nn.Module, prefixes: tuple[str, ...] | None) -> None:
    """Freeze every parameter outside the trainable prefixes."""
    for name, param in model.named_parameters():
        param.requires_grad = training.is_trainable(name.rsplit(".", 1)[0], prefixes)


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout layer's rate to 0 (`train.dropout = false`)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def train_mode(model: nn.Module, prefixes: tuple[str, ...] | None) -> None:
    """Training mode, except that frozen batch norms keep their running statistics."""
    model.train()
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d) and not training.is_trainable(name, prefixes):
            module.eval()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled decay) or SGD (L2 decay, momentum) on the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-7)


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """NHWC numpy -> NCHW tensor, channels-last in memory (no copy on CPU)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).to(device)


def train_step(
    model, optimizer, images: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0
):
    """One optimisation step; returns (loss, logits)."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(images)
    loss = nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


@torch.no_grad()
def predict(
    model: nn.Module, stream: BatchStream, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a whole (unaugmented) stream."""
    model.eval()
    logits, labels = [], []
    for batch in stream.epoch(0):
        logits.append(model(to_tensor(batch.images, device)).float().cpu().numpy())
        labels.append(batch.labels)
    return np.concatenate(logits), np.concatenate(labels)


# ------------------------------------------------------------- checkpoints


def save_checkpoint(
    model: nn.Module, optimizer: torch.optim.Optimizer, run: training.Run, epoch: int
) -> None:
    """Write an epoch's checkpoint and the optimiser state `--resume` reads."""
    save_weights(model, run.checkpoint(epoch))
    with atomic_path(run.optimizer_state(epoch, ".pt")) as tmp:
        torch.save(optimizer.state_dict(), tmp)


def load_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run: training.Run,
    epoch: int,
    device: torch.device,
) -> None:
    """Restore an epoch's checkpoint and the optimiser state (`--resume`)."""
    load_weights(model, run.checkpoint(epoch))
    path = run.optimizer_state(epoch, ".pt")
    optimizer.load_state_dict(torch.load(path, map_location=device, weights_only=True))


# ------------------------------------------------------------------ training


def train(
    config: Config,
    arch: str,
    resume: bool = False,
    data: training.RunData | None = None,
    distributed: Distributed | None = None,
) -> Path:
    """Train one architecture; returns the run folder."""
    ddp = distributed or Distributed()
    run = training.prepare(config, arch, "torch", data, resume)
    model = create_model(run.spec, run.num_classes, weights=run.init_path)
    model = model.to(ddp.device, memory_format=torch.channels_last)
    if not config.train.dropout:
        disable_dropout(model)
    set_trainable(model, run.trainable)
    optimizer = make_optimizer(model, config.train)
    runlog = training.RunLog(run)
    start = runlog.resume() if resume else 0
    if start:
        load_checkpoint(model, optimizer, run, start, ddp.device)
    net = nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model

    for epoch in range(start, config.train.epochs):
        began = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout: same draws after --resume
        train_mode(net, run.trainable)
        losses, all_logits, all_labels = [], [], []
        bar = tqdm(
            run.train.epoch(epoch), total=len(run.train), disable=not ddp.main,
            desc=f"{run.spec.name} torch epoch {epoch + 1}/{config.train.epochs}", leave=False,
        )  # fmt: skip
        for step, batch in enumerate(bar):
            lr = run.lr(epoch, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = to_tensor(ddp.shard(batch.images), ddp.device)
            labels = torch.from_numpy(ddp.shard(batch.labels)).to(ddp.device)
            loss, logits = train_step(net, optimizer, images, labels, config.train.label_smoothing)
            losses.append(loss.item())
            all_logits.append(logits.float().cpu().numpy())
            all_labels.append(labels.cpu().numpy())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        all_labels = ddp.gather(np.concatenate(all_labels))
        all_logits = ddp.gather(np.concatenate(all_logits))
        if ddp.main:
            training.end_epoch(
                run, runlog, epoch, lr=lr, began=began, labels=all_labels, logits=all_logits,
                losses=losses, predict=partial(predict, model, device=ddp.device),
                save=partial(save_checkpoint, model, optimizer, run),
            )  # fmt: skip
        ddp.barrier()

    if ddp.main:
        load_weights(model, run.best)
        versions = {"torch": torch.__version__}
        predict_best = partial(predict, model, device=ddp.device)
        training.end_run(run, runlog, predict_best, versions, threads_in_use())
    ddp.barrier()
    return run.dir


def main(argv: Sequence[str] | None = None) -> int:
    """Train every requested architecture of a config."""
    parser = argparse.ArgumentParser(
        prog="python -m torch_models.train", description=__doc__.split("\n\n")[0]
    )
    training.add_arguments(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    config = load_config(args.config, args.overrides)
    archs = training.resolve_archs(config, args.arch)
    ddp = Distributed()
    if ddp.main:  # the first process makes the shared files (synthetic data, splits)
        data = training.load_run_data(config)
    ddp.barrier()
    if not ddp.main:
        data = training.load_run_data(config)
    for arch in archs:
        train(config, arch, args.resume, data, ddp)
    if ddp.world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
