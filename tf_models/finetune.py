"""Fitting LPIPS heads / DISTS alpha, beta to ratings in Keras, on a frozen backbone.

Both metrics are linear in their heads given per-channel terms, so the terms of every
(reference, comparison) pair are computed once with this framework's own LPIPS / DISTS
module (NHWC inside; the images come in NCHW, as everywhere in the protocol), and only
the heads are trained on them: full batch, Adam on the negative Pearson correlation
between case distances and ratings, projected onto heads >= 0 after every step (a
clamp, as the original lpips training does). The term layout is `bridge.core.fitting`'s;
the protocol (folds, validation) is `bridge.fit_protocol`'s. torch_models/finetune.py
mirrors this file function for function.

Keras's Adam adds epsilon to sqrt(v) before the bias correction, torch's after it, so
Keras's epsilon is in effect eps / sqrt(1 - beta2^t); `FitConfig.eps` is kept far below
every real gradient, where that difference does not show. Keras also keeps its betas in
float32, which moves its bias correction by ~1e-5 (relative) in the first steps: the
two frameworks' fits agree to ~1e-5 relative, not to float64 rounding.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from bridge.core.fitting import HEADS_SUM_FLOOR, FitConfig
from bridge.core.metrics import DISTS_C1, DISTS_C2, Heads
from bridge.core.spec import ArchSpec
from bridge.core.weights import StateDict
from tf_models.backbones import create_model
from tf_models.metrics import DISTS, LPIPS, normalize_channels

CORRELATION_EPS = 1e-12  # keeps the loss defined (0) when every distance is equal


def build_metric(
    metric: str, spec: ArchSpec, num_classes: int, state: StateDict, heads: Heads
) -> keras.Model:
    """This framework's LPIPS or DISTS module on a backbone with the given weights.

    Args:
        metric: `lpips` or `dists`.
        spec: The backbone.
        num_classes: Its head size (the state dict's).
        state: Torch-layout weights (`Source.state_dict()`), checked, ported by name.
        heads: The heads the module carries (only its own distance uses them).
    """
    model = create_model(spec, num_classes, weights=state)
    if metric == "lpips":
        return LPIPS(model, heads.weights)
    if metric == "dists":
        return DISTS(model, *heads.weights)
    raise ValueError(f"unknown metric {metric!r}; expected lpips or dists")


def pair_terms(
    module: keras.Model, a: np.ndarray, b: np.ndarray, index: np.ndarray | None = None
) -> np.ndarray:
    """Per-channel terms of image pairs: the metric is linear in its heads given these.

    LPIPS: per tap and channel, the mean over positions of
    (normalize_channels(f_a) - normalize_channels(f_b))^2, taps concatenated.
    DISTS: per stage and channel (stage 0 = the raw image), first every texture term
    (2 mu_a mu_b + c1) / (mu_a^2 + mu_b^2 + c1), then every structure term
    (2 sigma_ab + c2) / (sigma_a^2 + sigma_b^2 + c2).

    Args:
        module: From `build_metric`.
        a: Reference images, NCHW float32 in [0, 1]: one per pair, one shared by every
            pair, or any number with `index`.
        b: Comparison images, NCHW float32 in [0, 1], one per pair.
        index: For each image of `b`, the row of `a` it is compared with (each image
            goes through the backbone once, however many pairs it is in).

    Returns:
        (N, T) float64: T = sum of tap channels (LPIPS) or 2 * (3 + sum) (DISTS).
    """
    fa = module.features(_nhwc(a))
    fb = module.features(_nhwc(b))
    if index is not None:
        rows = np.asarray(index, np.int64)
        fa = [ops.take(f, rows, axis=0) for f in fa]
    if isinstance(module, LPIPS):
        terms = [
            ops.mean((normalize_channels(x) - normalize_channels(y)) ** 2, axis=(1, 2))
            for x, y in zip(fa, fb, strict=True)
        ]
        return np.asarray(ops.concatenate(terms, axis=1), np.float64)
    texture, structure = [], []
    for x, y in zip(fa, fb, strict=True):
        mx = ops.mean(x, axis=(1, 2), keepdims=True)
        my = ops.mean(y, axis=(1, 2), keepdims=True)
        texture.append(ops.mean((2 * mx * my + DISTS_C1) / (mx**2 + my**2 + DISTS_C1), (1, 2)))
        vx = ops.mean((x - mx) ** 2, axis=(1, 2), keepdims=True)
        vy = ops.mean((y - my) ** 2, axis=(1, 2), keepdims=True)
        cov = ops.mean(x * y, axis=(1, 2), keepdims=True) - mx * my
        structure.append(ops.mean((2 * cov + DISTS_C2) / (vx + vy + DISTS_C2), (1, 2)))
    return np.asarray(ops.concatenate([*texture, *structure], axis=1), np.float64)


def pair_distances(module: keras.Model, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The module's own distances (N,) of image pairs (NCHW float32 in [0, 1])."""
    a = np.broadcast_to(a, b.shape)
    return np.asarray(module((_nhwc(a), _nhwc(b))))


def term_distances(metric: str, terms, theta):
    """Distances from terms (N, T) and flat heads `theta` (T / 2 alpha, then beta for DISTS).

    LPIPS: terms @ theta. DISTS: 1 - terms @ theta / sum(theta), the joint normalisation
    of alpha and beta, the sum floored at `HEADS_SUM_FLOOR` (`bridge.core.fitting`).
    """
    if metric == "lpips":
        return ops.matmul(terms, theta)
    return 1 - ops.matmul(terms, theta) / ops.maximum(ops.sum(theta), HEADS_SUM_FLOOR)


def correlation_loss(distances, target):
    """The negative Pearson correlation of distances with the target (scale-free)."""
    d = distances - ops.mean(distances)
    y = target - ops.mean(target)
    return -ops.sum(d * y) / ops.sqrt(ops.sum(d * d) * ops.sum(y * y) + CORRELATION_EPS)


def fit_heads(
    metric: str,
    terms: np.ndarray,
    target: np.ndarray,
    start: np.ndarray,
    config: FitConfig,
    checkpoints: Iterable[int],
    trainable: np.ndarray | None = None,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Train flat heads on case terms: full-batch Adam on -Pearson, clamped at 0.

    Runs in float64 (the problem is tiny); deterministic, so nothing to seed. One epoch
    is one step over every case given.

    Args:
        metric: `lpips` or `dists`.
        terms: (cases, T) case terms (`pair_terms`, averaged over a case's comparisons).
        target: (cases,) the ratings to agree with (higher = more different).
        start: (T,) non-negative starting heads.
        config: Epochs and Adam's lr, beta1, beta2, eps.
        checkpoints: Epochs whose heads to return (0: the start).
        trainable: (T,) bool: the heads that move; the others keep their start (their
            gradient is zeroed, so Adam leaves them exactly). Default: all.

    Returns:
        Heads (T,) float64 per checkpoint epoch, and the training loss before every step
        (epochs,).
    """
    t = tf.constant(np.asarray(terms, np.float64))
    y = tf.constant(np.asarray(target, np.float64))
    theta = keras.Variable(np.array(start, np.float64), dtype="float64", name="heads")
    mask = tf.constant(np.ones(len(start)) if trainable is None else trainable, tf.float64)
    optimizer = keras.optimizers.Adam(
        learning_rate=config.lr, beta_1=config.beta1, beta_2=config.beta2, epsilon=config.eps
    )

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = correlation_loss(term_distances(metric, t, theta), y)
        optimizer.apply_gradients([(tape.gradient(loss, theta) * mask, theta)])
        theta.assign(ops.maximum(theta, 0.0))
        return loss

    wanted = set(checkpoints)
    snapshots = {0: np.array(theta.numpy())} if 0 in wanted else {}
    losses = np.empty(config.epochs)
    for epoch in range(1, config.epochs + 1):
        losses[epoch - 1] = float(step())
        if epoch in wanted:
            snapshots[epoch] = np.array(theta.numpy())
    return snapshots, losses


def _nhwc(x: np.ndarray):
    return ops.convert_to_tensor(np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)), np.float32))
