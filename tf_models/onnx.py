"""Keras graphs for `bridge.export`: classifier, features, LPIPS, DISTS -> ONNX.

The Keras models are NHWC; each graph takes float32 NCHW RGB in [0, 1], transposes
and normalises inside, so files from both origins share one contract. Converted with
tf2onnx from a `tf.function` (opset 18). torch_models/onnx.py mirrors this file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from bridge.core.graphs import GraphSpec
from tf_models.backbones import create_model, features_model
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


def graph(g: GraphSpec) -> tuple[Callable[..., dict], list[str], list[str]]:
    """What to export: a function of NCHW [0, 1] images, its input names, its output names.

    The function returns {output name: tensor}.
    """
    model = create_model(g.spec, g.num_classes, weights=g.state)
    mean = np.asarray(g.contract.mean, np.float32).reshape(1, 1, 1, 3)
    std = np.asarray(g.contract.std, np.float32).reshape(1, 1, 1, 3)

    def nhwc(x):
        return tf.transpose(x, (0, 2, 3, 1))

    if g.kind == "classifier":

        def body(image):
            return {"logits": model((nhwc(image) - mean) / std, training=False)}

    elif g.kind == "features":
        extractor = features_model(model)

        def body(image):
            taps = extractor((nhwc(image) - mean) / std, training=False)
            return {
                name: tf.transpose(t, (0, 3, 1, 2)) if len(t.shape) == 4 else t
                for name, t in taps.items()
            }

    elif g.kind == "lpips":
        metric = LPIPS(model, g.heads.weights)

        def body(image_a, image_b):
            return lpips_outputs(metric, nhwc(image_a), nhwc(image_b))

    else:
        metric = DISTS(model, *g.heads.weights)

        def body(image_a, image_b):
            return {"distance": metric((nhwc(image_a), nhwc(image_b)))}

    return body, g.input_names, g.output_names


def export(
    g: GraphSpec, path: str | os.PathLike, opset: int, dynamic: bool = True
) -> Callable[..., dict[str, np.ndarray]]:
    """Write the ONNX file; return the native model as numpy in, {output: array} out."""
    import tf2onnx

    body, inputs, outputs = graph(g)
    side = None if dynamic else g.contract.native_size
    signature = [tf.TensorSpec([None, 3, side, side], tf.float32, name=name) for name in inputs]

    @tf.function(input_signature=signature)
    def function(*images):
        out = body(*images)
        return {name: tf.identity(out[name], name=name) for name in outputs}

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
