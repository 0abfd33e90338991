"""Keras 3 backbones with named taps: the same networks as torch_models/backbones.py.

Every parameterised Keras layer is named after the torch module it mirrors
(`layer1.0.conv1`, `blocks.3.attn.qkv`), and every tap layer after the torch module
whose output it is, so one name addresses the same tensor in both frameworks and
`bridge.core.porting` moves weights by name. Models are NHWC and take normalised input.

What it takes to be numerically the same network as the torch reference:

* padding as torch places it: an explicit `ZeroPadding2D` before any strided or
  non-"same" conv (Keras "same" pads stride-2 convs asymmetrically);
* ResNet: no conv bias, BN epsilon 1e-5, stride on the 3x3 conv (v1.5); max-pool
  padding with zeros equals torch's -inf padding because its input is a ReLU output;
* VGG: torch's adaptive average pool, and a flatten that is channel-last here; the
  port permutes the first classifier layer's rows to match;
* ViT: fused qkv with torch's (3, heads, head_dim) layout, class token first,
  LayerNorm epsilon 1e-6, exact GELU written with erf (Keras's own gelu exports
  as Erfc, which onnxruntime rejects).

Random initialisation draws the reference library's scheme in numpy
(`bridge.core.weights.init_state_dict`). torch_models/backbones.py mirrors this file.
"""

from __future__ import annotations

import math
import os
import warnings
import weakref
from collections.abc import Mapping

import h5py
import numpy as np

from tf_models._compat import ensure_tensorflow_backend

ensure_tensorflow_backend()

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from bridge.core.files import atomic_path  # noqa: E402
from bridge.core.metrics import L2POOL_EPS, l2pool_filter  # noqa: E402
from bridge.core.porting import keras_to_torch, torch_to_keras  # noqa: E402
from bridge.core.spec import ArchSpec, get_arch, resnet_blocks, vgg_features_layout  # noqa: E402
from bridge.core.weights import (  # noqa: E402
    KERAS_SUFFIX,
    StateDict,
    check_state_dict,
    init_state_dict,
    read_state_dict,
    resolve_imagenet,
)

# ------------------------------------------------------------- custom layers


class AdaptiveAveragePooling2D(layers.Layer):
    """torch `AdaptiveAvgPool2d` on NHWC.

    Output bin i averages rows [floor(i*H/n), ceil((i+1)*H/n)), and likewise columns.
    """

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        if h == self.size and w == self.size:
            return x
        shape = ops.shape(x)
        rows = _bin_matrix(shape[1], self.size, x.dtype)
        cols = _bin_matrix(shape[2], self.size, x.dtype)
        return ops.einsum("ih,nhwc,jw->nijc", rows, x, cols)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def _bin_matrix(n, size: int, dtype):
    """(size, n) matrix whose row i averages torch's adaptive-pool bin i."""
    i = ops.arange(size, dtype="int32")
    j = ops.arange(n, dtype="int32")
    start = (i * n) // size
    end = ((i + 1) * n + size - 1) // size
    inside = ops.logical_and(j[None, :] >= start[:, None], j[None, :] < end[:, None])
    weights = ops.cast(inside, dtype)
    return weights / ops.sum(weights, axis=1, keepdims=True)


class ClassTokenPosition(layers.Layer):
    """Patch grid (N, g, g, D) -> tokens (N, 1 + g*g, D).

    Class token first, then the patches, plus the position embedding (timm's
    `cls_token` and `pos_embed`).
    """

    def __init__(self, tokens: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.tokens, self.dim = tokens, dim

    def build(self, input_shape):
        self.cls_token = self.add_weight(
            shape=(1, 1, self.dim), initializer="zeros", name="cls_token"
        )
        self.pos_embed = self.add_weight(
            shape=(1, self.tokens, self.dim), initializer="zeros", name="pos_embed"
        )

    def call(self, x):
        patches = ops.reshape(x, (-1, self.tokens - 1, self.dim))
        cls = ops.broadcast_to(self.cls_token, (ops.shape(patches)[0], 1, self.dim))
        return ops.concatenate([cls, patches], axis=1) + self.pos_embed

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.tokens, self.dim)

    def get_config(self):
        return {**super().get_config(), "tokens": self.tokens, "dim": self.dim}


class SelfAttention(layers.Layer):
    """Multi-head attention core on a fused qkv tensor (N, T, 3D) -> (N, T, D).

    The qkv channels are laid out as torch's (3, heads, head_dim).
    """

    def __init__(self, heads: int, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads

    def call(self, qkv):
        dim = qkv.shape[-1] // 3
        head_dim = dim // self.heads
        tokens = ops.shape(qkv)[1]
        qkv = ops.reshape(qkv, (-1, tokens, 3, self.heads, head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, N, heads, T, head_dim)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (head_dim**-0.5)
        out = ops.matmul(ops.softmax(scores, axis=-1), v)
        return ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, tokens, dim))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 3)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads}


class BatchNorm(layers.BatchNormalization):
    """Batch norm that updates its running variance as torch does.

    Both frameworks normalise a training batch with its biased variance; torch then
    updates the running variance with the unbiased one (n / (n - 1)), Keras with the
    biased one. This layer follows torch, so the running statistics of a torch run and
    a Keras run stay equal. Inference is Keras's own.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        axes = list(range(len(inputs.shape) - 1))
        mean, variance = ops.moments(inputs, axes)
        shape = ops.shape(inputs)
        n = ops.cast(ops.prod(ops.convert_to_tensor([shape[a] for a in axes])), inputs.dtype)
        unbiased = variance * n / ops.maximum(n - 1.0, 1.0)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + unbiased * (1.0 - m))
        return ops.batch_normalization(
            inputs,
            mean,
            variance,
            axis=-1,
            offset=self.beta,
            scale=self.gamma,
            epsilon=self.epsilon,
        )


class L2Pooling2D(layers.Layer):
    """DISTS's L2 pooling on a padded input: sqrt(depthwise conv(x^2, g) + 1e-12), stride 2."""

    def build(self, input_shape):
        g = l2pool_filter().astype("float32")
        self.filter = np.tile(g[:, :, None, None], (1, 1, input_shape[-1], 1))

    def call(self, x):
        out = ops.depthwise_conv(x**2, self.filter, strides=2, padding="valid")
        return ops.sqrt(out + L2POOL_EPS)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape

        def half(v):
            return None if v is None else (v - 3) // 2 + 1

        return (n, half(h), half(w), c)


class GELU(layers.Layer):
    """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), as torch `nn.GELU()`."""

    def call(self, x):
        return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


class ClassToken(layers.Layer):
    """Tokens (N, T, D) -> the class token (N, D)."""

    def call(self, x):
        return x[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def _conv(x, filters, kernel, stride, padding, *, bias, name):
    """Conv2D with torch's symmetric padding."""
    if padding and (stride != 1 or kernel != 2 * padding + 1):
        x = layers.ZeroPadding2D(padding, name=f"{name}.pad")(x)
        mode = "valid"
    else:
        mode = "same" if padding else "valid"
    return layers.Conv2D(filters, kernel, strides=stride, padding=mode, use_bias=bias, name=name)(x)


# ------------------------------------------------------------------------- VGG


def vgg(spec: ArchSpec, num_classes: int, pooling: str = "max") -> keras.Model:
    """Build torchvision VGG (no batch norm) with the spec's widths.

    `pooling="l2"` puts DISTS's L2 pooling in place of every max-pool (same weights).
    """
    cfg = spec.config
    inputs = keras.Input((None, None, 3), name="image")
    x = inputs
    for i, (kind, width) in enumerate(vgg_features_layout(cfg.stages)):
        name = f"features.{i}"
        if kind == "conv":
            x = _conv(x, width, 3, 1, 1, bias=True, name=name)
        elif kind == "relu":
            x = layers.ReLU(name=name)(x)
        elif pooling == "l2":
            x = L2Pooling2D(name=name)(layers.ZeroPadding2D(1, name=f"{name}.pad")(x))
        else:
            x = layers.MaxPooling2D(2, 2, name=name)(x)
    x = AdaptiveAveragePooling2D(cfg.pool_size, name="avgpool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, width in ((0, cfg.hidden), (3, cfg.hidden), (6, num_classes)):
        x = layers.Dense(width, name=f"classifier.{i}")(x)
        if i < 6:
            x = layers.ReLU(name=f"classifier.{i + 1}")(x)
            x = layers.Dropout(cfg.dropout, name=f"classifier.{i + 2}")(x)
    return keras.Model(inputs, x, name=spec.name)


# ---------------------------------------------------------------------- ResNet


def resnet(spec: ArchSpec, num_classes: int) -> keras.Model:
    """Build torchvision ResNet v1.5 with bottleneck blocks."""
    cfg = spec.config

    def bn(x, name):
        return BatchNorm(momentum=0.9, epsilon=cfg.bn_eps, name=name)(x)

    def conv_bn(x, filters, kernel, stride, padding, name, bn_name):
        return bn(_conv(x, filters, kernel, stride, padding, bias=False, name=name), bn_name)

    inputs = keras.Input((None, None, 3), name="image")
    x = layers.ReLU(name="relu")(conv_bn(inputs, cfg.width, 7, 2, 3, "conv1", "bn1"))
    x = layers.ZeroPadding2D(1, name="maxpool.pad")(x)  # zeros act as -inf: x >= 0
    x = layers.MaxPooling2D(3, 2, name="maxpool")(x)
    for p, _, planes, stride, downsample in resnet_blocks(cfg):
        out_ch = planes * cfg.expansion
        y = conv_bn(x, planes, 1, 1, 0, f"{p}.conv1", f"{p}.bn1")
        y = conv_bn(
            layers.ReLU(name=f"{p}.relu1")(y), planes, 3, stride, 1, f"{p}.conv2", f"{p}.bn2"
        )
        y = conv_bn(layers.ReLU(name=f"{p}.relu2")(y), out_ch, 1, 1, 0, f"{p}.conv3", f"{p}.bn3")
        if downsample:
            x = conv_bn(x, out_ch, 1, stride, 0, f"{p}.downsample.0", f"{p}.downsample.1")
        x = layers.ReLU(name=p)(layers.Add(name=f"{p}.add")([y, x]))
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, x, name=spec.name)


# ------------------------------------------------------------------------- ViT


def vit(spec: ArchSpec, num_classes: int) -> keras.Model:
    """Build timm VisionTransformer: pre-norm blocks, class-token head."""
    cfg = spec.config

    def norm(x, name):
        return layers.LayerNormalization(epsilon=cfg.ln_eps, name=name)(x)

    inputs = keras.Input((cfg.image_size, cfg.image_size, 3), name="image")
    p = cfg.patch_size
    x = _conv(inputs, cfg.dim, p, p, 0, bias=True, name="patch_embed.proj")
    x = ClassTokenPosition(cfg.tokens, cfg.dim, name="tokens")(x)
    for b in range(cfg.depth):
        p = f"blocks.{b}"
        y = layers.Dense(3 * cfg.dim, name=f"{p}.attn.qkv")(norm(x, f"{p}.norm1"))
        y = SelfAttention(cfg.heads, name=f"{p}.attn.core")(y)
        x = layers.Add(name=f"{p}.add1")([x, layers.Dense(cfg.dim, name=f"{p}.attn.proj")(y)])
        y = layers.Dense(cfg.mlp_dim, name=f"{p}.mlp.fc1")(norm(x, f"{p}.norm2"))
        y = layers.Dense(cfg.dim, name=f"{p}.mlp.fc2")(GELU(name=f"{p}.mlp.act")(y))
        x = layers.Add(name=p)([x, y])
    x = ClassToken(name="pool")(norm(x, "norm"))
    x = layers.Dense(num_classes, name="head")(x)
    return keras.Model(inputs, x, name=spec.name)


# --------------------------------------------------------------------- factory

_BUILDERS = {"vgg": vgg, "resnet": resnet, "vit": vit}


def create_model(
    arch: str | ArchSpec,
    num_classes: int | None = None,
    weights: str | os.PathLike | StateDict | None = None,
    seed: int = 0,
) -> keras.Model:
    """Build a backbone (NHWC, normalised input).

    Args:
        arch: `vgg16`, `resnet50`, `vit_b16` or a tiny variant.
        num_classes: Head size; None keeps the reference head (1000 classes).
        weights: None (random init with the reference library's scheme, drawn
            by `bridge.core.weights.init_state_dict` with `seed`), `"imagenet"` (torch
            reference weights found on disk, ported), a torch `.pth` /
            `.safetensors` state dict or such a state dict in memory (numpy arrays),
            ported on the fly, or a Keras `.weights.h5` file.
        seed: Seed of the random init.

    Returns:
        The model; `model.spec` is its `ArchSpec`.

    Raises:
        ValueError: Unknown arch, bad head size, or weights that do not fit.
        FileNotFoundError: Missing weights file.
    """
    spec = get_arch(arch)
    k = spec.resolve_num_classes(num_classes)
    model = _BUILDERS[spec.family](spec, k)
    model.spec = spec
    if weights is None:
        set_torch_state_dict(model, init_state_dict(spec, k, seed))
    else:
        load_weights(model, weights)
    return model


def load_weights(model: keras.Model, weights: str | os.PathLike | StateDict) -> None:
    """Load `"imagenet"`, a torch state dict (file or in memory; ported) or a `.weights.h5` file."""
    if isinstance(weights, Mapping):
        set_torch_state_dict(model, check_state_dict(weights, model.spec, _head_size(model)))
        return
    if str(weights).endswith(KERAS_SUFFIX):
        _load_keras_file(model, weights)
        return
    path = resolve_imagenet(model.spec) if str(weights) == "imagenet" else weights
    state = read_state_dict(path)
    set_torch_state_dict(model, check_state_dict(state, model.spec, _head_size(model), str(path)))


def set_torch_state_dict(model: keras.Model, state_dict: StateDict) -> None:
    """Set the model's weights from a checked torch-layout state dict (ported by name)."""
    for name, arrays in torch_to_keras(state_dict, model.spec, _head_size(model)).items():
        model.get_layer(name).set_weights(arrays)


def torch_state_dict(model: keras.Model) -> StateDict:
    """Return the model's weights as a torch-layout state dict (numpy arrays)."""
    layer_weights = {layer.name: layer.get_weights() for layer in model.layers if layer.weights}
    return keras_to_torch(layer_weights, model.spec, _head_size(model))


def features_model(model: keras.Model) -> keras.Model:
    """A model sharing `model`'s layers that returns the spec's taps (NHWC).

    ViT taps return patch tokens as a (N, g, g, D) grid and the class token as
    `<name>_cls`. Built once per model and cached.
    """
    cached = _FEATURE_MODELS.get(model)
    if cached is not None:
        return cached
    spec = model.spec
    outputs = {}
    for tap in spec.taps:
        t = model.get_layer(tap.layer).output
        if tap.tokens:
            g = spec.config.grid
            outputs[tap.name] = layers.Reshape((g, g, t.shape[-1]), name=f"{tap.name}.grid")(
                layers.Cropping1D((1, 0), name=f"{tap.name}.patches")(t)
            )
            outputs[f"{tap.name}_cls"] = ClassToken(name=f"{tap.name}.cls")(t)
        else:
            outputs[tap.name] = t
    features = keras.Model(model.input, outputs, name=f"{spec.name}_features")
    _FEATURE_MODELS[model] = features
    return features


def save_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Save a Keras `.weights.h5` file atomically, tagged with arch and head size."""
    path = str(path)
    if not path.endswith(KERAS_SUFFIX):
        raise ValueError(f"{path}: Keras weights files must end with {KERAS_SUFFIX}")
    with atomic_path(path) as tmp:
        model.save_weights(tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs["dermsim_arch"] = model.spec.name
            f.attrs["dermsim_num_classes"] = _head_size(model)


def keras_file_info(path: str | os.PathLike) -> tuple[str | None, int | None]:
    """Return the (arch, num_classes) tags of a `.weights.h5` file, where present."""
    try:
        with h5py.File(path, "r") as f:
            arch = f.attrs.get("dermsim_arch")
            k = f.attrs.get("dermsim_num_classes")
    except OSError as err:
        raise ValueError(f"{path}: unreadable Keras weights file ({err})") from None
    return (None if arch is None else str(arch), None if k is None else int(k))


_FEATURE_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _load_keras_file(model: keras.Model, path: str | os.PathLike) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weights file")
    spec, k = model.spec, _head_size(model)
    arch, found = keras_file_info(path)
    if arch is not None and arch != spec.name:
        raise ValueError(f"{path}: holds {arch} weights, not {spec.name}")
    if found is not None and found != k:
        raise ValueError(
            f"{path}: head '{spec.head}' has {found} classes but num_classes={k} was asked "
            f"for; pass num_classes={found}"
        )
    # Keras matches a weights file by layer order and only warns on some mismatches,
    # so check the tensors' shapes first and treat any loading warning as an error.
    expected = sorted(tuple(w.shape) for w in model.weights)
    if _h5_shapes(path) != expected:
        raise ValueError(
            f"{path}: does not fit {spec.name} with {k} classes (tensor shapes differ)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.load_weights(path)
    except (ValueError, KeyError, OSError, UserWarning) as err:
        reason = str(err).splitlines()[0][:200]
        raise ValueError(f"{path}: does not fit {spec.name} with {k} classes ({reason})") from None


def _h5_shapes(path: str | os.PathLike) -> list[tuple[int, ...]]:
    shapes = []

    def visit(_, obj):
        if isinstance(obj, h5py.Dataset):
            shapes.append(tuple(obj.shape))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return sorted(shapes)


def _head_size(model: keras.Model) -> int:
    return int(model.get_layer(model.spec.head).units)


__all__ = [
    "GELU",
    "AdaptiveAveragePooling2D",
    "BatchNorm",
    "ClassToken",
    "ClassTokenPosition",
    "L2Pooling2D",
    "SelfAttention",
    "create_model",
    "features_model",
    "keras_file_info",
    "load_weights",
    "resnet",
    "save_weights",
    "set_torch_state_dict",
    "torch_state_dict",
    "vgg",
    "vit",
]
