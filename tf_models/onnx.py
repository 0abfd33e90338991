"""Keras graphs for `bridge.export`: classifier, features, LPIPS, DISTS (masked too) -> ONNX.

The Keras models are NHWC; each graph takes float32 NCHW RGB in [0, 1], transposes
and normalises inside, so files from both origins share one contract. Converted with
tf2onnx from a `tf.function` (opset 18). torch_models/onnx.py mirrors this file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from bridge.core.graphs import GraphSpec
from tf_models.backbones import create_model, features_model
from tf_models.metrics import DISTS, LPIPS, lpips_distance, lpips_distance_masked, lpips_maps

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)


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


def lpips_masked_outputs(metric: LPIPS, a, b, mask_a, mask_b) -> dict:
    """Masked LPIPS `distance` (N,) and `distance_map` (N, 1, H, W) of NHWC batches.

    The distance is `lpips_distance_masked`; the map is `LPIPS.spatial` times the joint
    weight m_a m_b at the input size. The twin of torch_models/onnx.py's
    `MaskedLPIPSScorer`.
    """
    fa, fb = metric.features(a), metric.features(b)
    size = tf.shape(a)[1:3]
    total = 0
    for m in lpips_maps(fa, fb, metric.heads):
        total = total + tf.image.resize(m, size, method="bilinear", antialias=False)
    return {
        "distance": lpips_distance_masked(fa, fb, metric.heads, mask_a, mask_b),
        "distance_map": tf.transpose(total * (mask_a * mask_b), (0, 3, 1, 2)),
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

    elif g.kind == "lpips_masked":
        metric = LPIPS(model, g.heads.weights)

        def body(image_a, image_b, mask_a, mask_b):
            a, b, ma, mb = (nhwc(x) for x in (image_a, image_b, mask_a, mask_b))
            return lpips_masked_outputs(metric, a, b, ma, mb)

    elif g.kind == "dists_masked":
        metric = DISTS(model, *g.heads.weights)

        def body(image_a, image_b, mask_a, mask_b):
            a, b, ma, mb = (nhwc(x) for x in (image_a, image_b, mask_a, mask_b))
            return {"distance": metric.masked(a, b, ma, mb)}

    else:
        metric = DISTS(model, *g.heads.weights)

        def body(image_a, image_b):
            return {"distance": metric((nhwc(image_a), nhwc(image_b)))}

    return body, g.input_names, g.output_names


def export(
    g: GraphSpec, path: str | os.PathLike, opset: int, dynamic: bool = True
) -> Callable[..., dict[str, np.ndarray]]:
    """Write the ONNX file; return the native model as numpy in, {output: array} out."""
    body, inputs, outputs = graph(g)
    side = None if dynamic else g.contract.native_size
    signature = [
        tf.TensorSpec([None, g.input_channels[name], side, side], tf.float32, name=name)
        for name in inputs
    ]

    @tf.function(input_signature=signature)
    def function(*images):
        out = body(*images)
        return {name: tf.identity(out[name], name=name) for name in outputs}

    quiet = logging.getLogger("tf2onnx")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its transpose optimiser logs tracebacks it recovers from
    try:
        model = convert(function.get_concrete_function(*signature), opset)
    finally:
        quiet.setLevel(level)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())

    def native(*arrays: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in function(*(tf.constant(a) for a in arrays)).items()}

    return native


def convert(concrete, opset: int) -> onnx.ModelProto:
    """tf2onnx's `convert.from_function`, without the steps that made Keras exports slow.

    The same building blocks, in the same order, with three changes:

    * Freezing keeps the graph def that TF writes (tf2onnx's `large_model` freezing)
      instead of loading it back into a concrete function and running grappler on it:
      about 30 s for a ViT-B/16, which tf2onnx's own constant folding and optimisers
      make up for.
    * Large constants are kept out of the TF graph that tf2onnx reads (its
      `compress_graph_def`), and handed over beside it: TF does not copy them again.
    * The optimisers run without a rollback copy of the whole graph, weights included,
      before each of them (a dozen optimisers, two or three rounds). Should one fail,
      the conversion is redone with the copies, which roll the failing optimiser
      back as tf2onnx does.

    Args:
        concrete: A `tf.function`'s concrete function (named inputs, dict of outputs).
        opset: ONNX opset.

    Returns:
        The ONNX model, weights inline.
    """
    from tf2onnx import optimizer, tf_loader, tf_utils
    from tf2onnx.tfonnx import process_tf_graph

    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    specs = tf.nest.flatten(concrete.structured_input_signature)
    renames = {t: s.name for t, s in zip(inputs, specs, strict=True)}  # ONNX names: ours
    renames.update({t.name: key for key, t in concrete.structured_outputs.items()})
    with tf.device("/cpu:0"):
        frozen = tf_loader.from_function(concrete, inputs, outputs, large_model=True)
        values = tf_utils.compress_graph_def(frozen)
        for rollback in (False, True):
            with tf.Graph().as_default() as tf_graph:
                tf.import_graph_def(frozen, name="")
                onnx_graph = process_tf_graph(
                    tf_graph,
                    continue_on_error=True,
                    opset=opset,
                    input_names=inputs,
                    output_names=outputs,
                    const_node_values=values,
                    tensors_to_rename=renames,
                )
            try:
                onnx_graph = optimizer.optimize_graph(onnx_graph, catch_errors=rollback)
            except Exception:  # any optimiser's failure: redo it the slow, safe way
                if rollback:
                    raise
                log.warning("a tf2onnx optimiser failed; converting again with rollbacks")
                continue
            return onnx_graph.make_model(f"converted from {concrete.name}")
    raise AssertionError("unreachable")
