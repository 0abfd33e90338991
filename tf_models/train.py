"""Keras 3 (TensorFlow backend) trainer.

    tox -e tf-train -- --config configs/demo.toml [--arch vgg16|resnet50|vit_b16|all]
                       [--set key=value ...] [--resume]

Data, splits, batches, initial weights, schedule, metrics and the end of every epoch
(validation, metrics.jsonl, checkpoint, best) come from `bridge.core.training`, shared
with the torch trainer (torch_models/train.py mirrors this file); what is Keras's own is
the model, the optimiser step (a compiled `tf.function`) and the checkpoints
(`.weights.h5`). Training runs inside a `tf.distribute` strategy: several GPUs are
mirrored, otherwise the default strategy.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import weakref
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from bridge.core import training
from bridge.core.config import Config, TrainConfig, load_config
from bridge.core.data.stream import BatchStream
from bridge.core.files import atomic_path
from tf_models.backbones import create_model, load_weights, save_weights

log = logging.getLogger(__name__)


# ------------------------------------------------------------ distribution


class Distributed:
    """The `tf.distribute` strategy: mirrored over several GPUs, else the default."""

    def __init__(self):
        gpus = tf.config.list_logical_devices("GPU")
        self.strategy = (
            tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
        )
        self.world = self.strategy.num_replicas_in_sync

    @property
    def main(self) -> bool:
        """Always true: one process drives every replica."""
        return True


def set_threads(threads: int | None) -> None:
    """Use `threads` intra-op CPU threads (`--threads`; None: TensorFlow's default).

    Call it before TensorFlow's runtime starts (`Distributed` starts it). One inter-op
    thread then, so that the count compares with torch's.
    """
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(training.check_threads(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)


def threads_in_use() -> int:
    """The intra-op CPU threads in use (recorded in run.json)."""
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


# ------------------------------------------------------------------- model


def set_trainable(model: keras.Model, prefixes: tuple[str, ...] | None) -> None:
    """Freeze every layer outside the trainable prefixes (frozen batch norms infer)."""
    for layer in model.layers:
        if layer.weights:
            layer.trainable = training.is_trainable(layer.name, prefixes)


def disable_dropout(model: keras.Model) -> None:
    """Set every dropout layer's rate to 0 (`train.dropout = false`)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0


def seed_dropout(model: keras.Model, seed: int) -> None:
    """Set every dropout layer's random state from `seed`.

    Assigning the layers' seed-generator state is a variable update; resetting TF's
    global seed instead would rebuild the compiled step (seconds per epoch).
    """
    for i, layer in enumerate(model.layers):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            generator.state.assign(np.array([seed, i], dtype=generator.state.dtype))


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """AdamW or SGD with momentum; Keras applies weight decay decoupled in both."""
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay or None
        )
    return keras.optimizers.AdamW(learning_rate=cfg.lr, weight_decay=cfg.weight_decay, epsilon=1e-7)


def make_train_step(model: keras.Model, optimizer, num_classes: int, smoothing: float, strategy):
    """A compiled step: (images, labels) -> (loss, logits), averaged over the global batch."""
    loss_fn = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=smoothing, reduction="none"
    )

    def replica_step(images, labels, global_size):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = loss_fn(tf.one_hot(labels, num_classes), logits)
            loss = tf.reduce_sum(per_example) / tf.cast(global_size, per_example.dtype)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss, logits

    @tf.function(reduce_retracing=True)
    def step(images, labels):
        global_size = tf.shape(labels)[0]
        if strategy.num_replicas_in_sync == 1:
            return replica_step(images, labels, global_size)
        n = strategy.num_replicas_in_sync

        def shard(ctx):
            i = ctx.replica_id_in_sync_group
            return images[i::n], labels[i::n]

        parts = strategy.experimental_distribute_values_from_function(shard)
        loss, logits = strategy.run(lambda p: replica_step(p[0], p[1], global_size), args=(parts,))
        return strategy.reduce("SUM", loss, axis=None), tf.concat(
            strategy.experimental_local_results(logits), 0
        )

    return step


def train_step(step, images: np.ndarray, labels: np.ndarray):
    """One optimisation step; returns (loss, logits) as numpy."""
    loss, logits = step(tf.constant(images), tf.constant(labels))
    return float(loss), np.asarray(logits)


def predict(model: keras.Model, stream: BatchStream) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a whole (unaugmented) stream."""
    infer = _INFERENCE.get(model)
    if infer is None:
        infer = _INFERENCE[model] = _inference(model)
    logits, labels = [], []
    for batch in stream.epoch(0):
        logits.append(np.asarray(infer(tf.constant(batch.images))))
        labels.append(batch.labels)
    return np.concatenate(logits), np.concatenate(labels)


_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inference(model: keras.Model):
    @tf.function(reduce_retracing=True)
    def infer(images):
        return model(images, training=False)

    return infer


# ------------------------------------------------------------- checkpoints


def save_checkpoint(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, run: training.Run, epoch: int
) -> None:
    """Write an epoch's checkpoint and the optimiser state `--resume` reads."""
    save_weights(model, run.checkpoint(epoch))
    with atomic_path(run.optimizer_state(epoch, ".npz")) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"v{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})


def load_checkpoint(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    run: training.Run,
    epoch: int,
) -> None:
    """Restore an epoch's checkpoint and the optimiser state (`--resume`)."""
    load_weights(model, run.checkpoint(epoch))
    saved = np.load(run.optimizer_state(epoch, ".npz"))
    for i, variable in enumerate(optimizer.variables):
        variable.assign(saved[f"v{i}"])


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
    run = training.prepare(config, arch, "keras", data, resume)
    with ddp.strategy.scope():
        model = create_model(run.spec, run.num_classes, weights=run.init_path)
        if not config.train.dropout:
            disable_dropout(model)
        set_trainable(model, run.trainable)
        optimizer = make_optimizer(config.train)
        optimizer.build(model.trainable_variables)
    runlog = training.RunLog(run)
    start = runlog.resume() if resume else 0
    if start:
        load_checkpoint(model, optimizer, run, start)
    compiled = make_train_step(
        model, optimizer, run.num_classes, config.train.label_smoothing, ddp.strategy
    )

    for epoch in range(start, config.train.epochs):
        began = time.perf_counter()
        seed_dropout(model, config.seed * 100_003 + epoch)  # same draws after --resume
        losses, all_logits, all_labels = [], [], []
        bar = tqdm(
            run.train.epoch(epoch), total=len(run.train), disable=not ddp.main,
            desc=f"{run.spec.name} keras epoch {epoch + 1}/{config.train.epochs}", leave=False,
        )  # fmt: skip
        for step, batch in enumerate(bar):
            lr = run.lr(epoch, step)
            optimizer.learning_rate.assign(lr)
            loss, logits = train_step(compiled, batch.images, batch.labels)
            losses.append(loss)
            all_logits.append(logits)
            all_labels.append(batch.labels)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        all_labels = np.concatenate(all_labels)
        all_logits = np.concatenate(all_logits)
        if ddp.main:
            training.end_epoch(
                run, runlog, epoch, lr=lr, began=began, labels=all_labels, logits=all_logits,
                losses=losses, predict=partial(predict, model),
                save=partial(save_checkpoint, model, optimizer, run),
            )  # fmt: skip

    if ddp.main:
        load_weights(model, run.best)
        versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
        predict_best = partial(predict, model)
        training.end_run(run, runlog, predict_best, versions, threads_in_use())
    return run.dir


def main(argv: Sequence[str] | None = None) -> int:
    """Train every requested architecture of a config."""
    parser = argparse.ArgumentParser(
        prog="python -m tf_models.train", description=__doc__.split("\n\n")[0]
    )
    training.add_arguments(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    config = load_config(args.config, args.overrides)
    archs = training.resolve_archs(config, args.arch)
    ddp = Distributed()
    data = training.load_run_data(config)
    for arch in archs:
        train(config, arch, args.resume, data, ddp)
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
