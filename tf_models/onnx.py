"""Keras graphs for `bridge.export`: classifier, features, LPIPS, DISTS -> ONNX.

The Keras models are NHWC; each graph takes float32 NCHW RGB in [0, 1], transposes
and normalises inside, so files from both origins share one contract. Converted with
tf2onnx from a `tf.function` (opset 18). torch_models/onnx.py mirrors this file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from bridge.core.metrics import Heads
from bridge.core.spec import ArchSpec, InputContract
from bridge.core.weights import StateDict
from tf_models.backbones import create_model, features_model, set_torch_state_dict
from tf_models.metrics import DISTS, LPIPS, lpips_distance, lpips_maps


def lpips_outputs(metric: LPIPS, a, b) -> dict:
    """LPIPS `distance` (N,) and `distance_map` (N, 1, H, W) of NHWC batches in [0, 1].

    The map is `LPIPS.spatial` (every tap's map upsampled bilinearly to the input size,
    summed), written with the input's dynamic size, which `keras.ops.image.resize`
    does not take; both outputs come from one backbone pass per batch. The twin of
    torch_models/onnx.py's `LPIPSScorer`.
    """
    fa, fb = metric.features(a), metric.features(b)
    size = tf.shape(a)[1:3]
    total = 0
    for m in lpips_maps(fa, fb, metric.heads):
        total = total + tf.image.resize(m, size, method="bilinear", antialias=False)
    return {
        "distance": lpips_distance(fa, fb, metric.heads),
        "distance_map": tf.transpose(total, (0, 3, 1, 2)),
    }


def graph(
    spec: ArchSpec,
    num_classes: int,
    state: StateDict,
    kind: str,
    contract: InputContract,
    heads: Heads | None,
) -> tuple[Callable, list[str]]:
    """A function of NCHW [0, 1] images returning {output name: tensor}, and its input names."""
    model = create_model(spec, num_classes)
    set_torch_state_dict(model, state)
    mean = np.asarray(contract.mean, np.float32).reshape(1, 1, 1, 3)
    std = np.asarray(contract.std, np.float32).reshape(1, 1, 1, 3)

    def nhwc(x):
        return tf.transpose(x, (0, 2, 3, 1))

    if kind == "classifier":
        return (lambda image: {"logits": model((nhwc(image) - mean) / std, training=False)}), [
            "image"
        ]
    if kind == "features":
        extractor = features_model(model)

        def features(image):
            taps = extractor((nhwc(image) - mean) / std, training=False)
            return {
                name: tf.transpose(t, (0, 3, 1, 2)) if len(t.shape) == 4 else t
                for name, t in taps.items()
            }

        return features, ["image"]
    if kind == "lpips":
        metric = LPIPS(model, heads.weights)
        return (lambda image_a, image_b: lpips_outputs(metric, nhwc(image_a), nhwc(image_b))), [
            "image_a",
            "image_b",
        ]
    metric = DISTS(model, *heads.weights)
    return (lambda image_a, image_b: {"distance": metric((nhwc(image_a), nhwc(image_b)))}), [
        "image_a",
        "image_b",
    ]


def export(
    spec: ArchSpec,
    num_classes: int,
    state: StateDict,
    kind: str,
    contract: InputContract,
    heads: Heads | None,
    path,
    opset: int,
    dynamic: bool = True,
) -> Callable[..., dict[str, np.ndarray]]:
    """Write the ONNX file; return the native model as numpy in, {output: array} out."""
    import tf2onnx

    body, inputs = graph(spec, num_classes, state, kind, contract, heads)
    side = None if dynamic else contract.native_size
    signature = [tf.TensorSpec([None, 3, side, side], tf.float32, name=name) for name in inputs]
    function = tf.function(
        lambda *x: {k: tf.identity(v, name=k) for k, v in body(*x).items()},
        input_signature=signature,
    )
    quiet = logging.getLogger("tf2onnx")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its transpose optimiser logs tracebacks it recovers from
    try:
        tf2onnx.convert.from_function(
            function, input_signature=signature, opset=opset, output_path=str(path)
        )
    finally:
        quiet.setLevel(level)

    def native(*arrays: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in function(*(tf.constant(a) for a in arrays)).items()}

    return native
