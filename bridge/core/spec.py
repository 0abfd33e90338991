"""Framework-neutral architecture specs (numpy-free, framework-free, plain data).

One `ArchSpec` per architecture says everything both frameworks must agree on:

* the layer configuration (`VGGConfig`, `ResNetConfig`, `ViTConfig`);
* the named taps, each tied to the module whose output it is. A Keras layer carries
  the same name as the torch module it mirrors (`layer1.0.conv1`), so one name
  addresses the same tensor in both frameworks;
* the input contract per weight source (value range, mean/std, native size);
* the parameter layout (`layer_specs`): every torch state-dict key with its shape.
  The port, the parameter counts and the weight-file checks all derive from it.

Tiny variants (`*_tiny`) go through exactly the same builders with smaller widths,
depths and resolution, so the fast test suite exercises the real code paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

FRAMEWORKS = ("torch", "keras")  # the twins: torch_models and tf_models

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class InputContract:
    """What a network expects to be fed.

    Images are RGB float32 in `value_range`, resized by `interpolation` to
    `native_size` (or any size when `fixed_size` is False), then normalised as
    `(x - mean) / std`. The models take normalised input; an exported ONNX graph
    applies the normalisation itself.

    Attributes:
        mean: Per-channel mean subtracted after scaling to `value_range`.
        std: Per-channel standard deviation divided by.
        native_size: Side length the weights were trained at.
        fixed_size: True when the network accepts only `native_size` (ViT).
        value_range: Range of the raw pixel values before normalisation.
        interpolation: Interpolation of the weights' own evaluation transform.
        source: Where the weights (and so this contract) come from.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    fixed_size: bool = False
    value_range: tuple[float, float] = (0.0, 1.0)
    interpolation: str = "bilinear"
    source: str = ""

    def to_dict(self) -> dict[str, object]:
        """Return the contract as JSON-ready plain data (for manifests)."""
        return {
            "layout": "RGB",
            "value_range": list(self.value_range),
            "mean": list(self.mean),
            "std": list(self.std),
            "native_size": self.native_size,
            "fixed_size": self.fixed_size,
            "interpolation": self.interpolation,
            "source": self.source,
        }


@dataclass(frozen=True)
class TapSpec:
    """A named intermediate output.

    Attributes:
        name: Public tap name (`relu3_3`, `layer2`, `block6`).
        layer: Torch module path, and Keras layer name, whose output this is.
        channels: Channel count of the tap.
        stride: Spatial stride relative to the input.
        tokens: True for ViT blocks: patch tokens are reshaped to a grid and the
            class token is returned separately as `<name>_cls`.
    """

    name: str
    layer: str
    channels: int
    stride: int
    tokens: bool = False


@dataclass(frozen=True)
class VGGConfig:
    """torchvision VGG without batch norm.

    Attributes:
        stages: Conv widths per stage; a 2x2 max-pool follows every stage.
        hidden: Width of the two hidden classifier layers.
        pool_size: Output side of the adaptive average pool before the classifier.
        dropout: Classifier dropout (inactive in eval mode).
    """

    stages: tuple[tuple[int, ...], ...]
    hidden: int = 4096
    pool_size: int = 7
    dropout: float = 0.5


@dataclass(frozen=True)
class ResNetConfig:
    """torchvision ResNet v1.5 with bottleneck blocks (stride on the 3x3 conv).

    Attributes:
        blocks: Bottleneck blocks per stage.
        width: Stem width; stage `i` has `width * 2**i` inner channels.
        expansion: Bottleneck output expansion.
        bn_eps: Batch-norm epsilon.
    """

    blocks: tuple[int, int, int, int]
    width: int = 64
    expansion: int = 4
    bn_eps: float = 1e-5


@dataclass(frozen=True)
class ViTConfig:
    """timm VisionTransformer, pre-norm, class token first, token pooling.

    Attributes:
        image_size: Input side (fixed: the position embedding has a size).
        patch_size: Patch side.
        dim: Embedding width.
        depth: Number of transformer blocks.
        heads: Attention heads.
        mlp_ratio: MLP hidden width over `dim`.
        ln_eps: LayerNorm epsilon.
        tap_blocks: 1-based block numbers exposed as taps.
    """

    image_size: int
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-6
    tap_blocks: tuple[int, ...] = ()

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def tokens(self) -> int:
        """Sequence length: class token plus patches."""
        return self.grid**2 + 1

    @property
    def mlp_dim(self) -> int:
        """MLP hidden width."""
        return int(self.dim * self.mlp_ratio)


ArchConfig = VGGConfig | ResNetConfig | ViTConfig


@dataclass(frozen=True)
class LayerSpec:
    """One parameterised layer: its torch state-dict entries, in torch order.

    Attributes:
        name: Torch module path, equal to the Keras layer name.
        kind: `conv`, `linear`, `bn`, `ln` or `tokens` (ViT class token and
            position embedding).
        entries: `(state-dict key, shape)` pairs; shapes in torch layout.
        flatten_chw: For a linear layer fed by a flatten of a `(C, H, W)` map:
            torch flattens channel-first, Keras channel-last, so the port permutes.
    """

    name: str
    kind: str
    entries: tuple[tuple[str, tuple[int, ...]], ...]
    flatten_chw: tuple[int, int, int] | None = None


BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class ArchSpec:
    """Everything both frameworks must agree on for one architecture.

    Attributes:
        name: Registry name (`vgg16`, `resnet50_tiny`, ...).
        family: `vgg`, `resnet` or `vit`.
        config: Layer configuration.
        taps: Named taps in forward order.
        contracts: Input contract per weight source (`imagenet`, `random`).
        reference: The reference implementation the torch model reproduces.
        head: Module path of the classification layer.
        num_classes: Head size when `num_classes=None` is asked for.
        reference_params: Published parameter count with the default head.
    """

    name: str
    family: str
    config: ArchConfig
    taps: tuple[TapSpec, ...]
    contracts: Mapping[str, InputContract]
    reference: str
    head: str
    num_classes: int = 1000
    reference_params: int | None = None

    def __deepcopy__(self, memo) -> ArchSpec:
        return self  # immutable: copies of a model share its spec

    @property
    def contract(self) -> InputContract:
        """The default input contract (that of the reference ImageNet weights)."""
        return self.contracts["imagenet"]

    @property
    def tap_names(self) -> tuple[str, ...]:
        """Names of every `forward_features` output, class tokens included."""
        names: list[str] = []
        for tap in self.taps:
            names.append(tap.name)
            if tap.tokens:
                names.append(f"{tap.name}_cls")
        return tuple(names)

    def at_size(self, size: int) -> ArchSpec:
        """This architecture for `size` x `size` inputs.

        Convolutional networks take any size and are returned unchanged. A ViT's
        position embedding has one entry per patch, so its config (and input
        contract) change: reduced resolution is a different-shaped parameter.

        Raises:
            ValueError: If `size` is not a multiple of the ViT patch size.
        """
        if self.family != "vit" or size == self.config.image_size:
            return self
        patch = self.config.patch_size
        if size % patch or size < patch:
            raise ValueError(
                f"{self.name}: image size {size} is not a multiple of the patch {patch}"
            )
        contracts = {k: replace(c, native_size=size) for k, c in self.contracts.items()}
        return replace(
            self,
            config=replace(self.config, image_size=size),
            contracts=MappingProxyType(contracts),
        )

    def resolve_num_classes(self, num_classes: int | None) -> int:
        """Return the head size to build.

        Args:
            num_classes: Requested head size, or None for the default head.

        Raises:
            ValueError: If `num_classes` is not a positive integer.
        """
        if num_classes is None:
            return self.num_classes
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
        return num_classes


# --------------------------------------------------------------------------- VGG


def vgg_features_layout(stages: tuple[tuple[int, ...], ...]) -> list[tuple[str, int]]:
    """List torchvision `make_layers` modules as `(kind, width)`.

    Kinds are `conv` (3x3, padding 1, bias), `relu` and `pool` (2x2, stride 2);
    the list index is the module index inside `features`.
    """
    layout: list[tuple[str, int]] = []
    for stage in stages:
        for width in stage:
            layout += [("conv", width), ("relu", width)]
        layout.append(("pool", stage[-1]))
    return layout


def _vgg_taps(stages: tuple[tuple[int, ...], ...]) -> tuple[TapSpec, ...]:
    taps = []
    layout = vgg_features_layout(stages)
    pool_indices = [i for i, (kind, _) in enumerate(layout) if kind == "pool"]
    for s, (stage, pool_index) in enumerate(zip(stages, pool_indices, strict=True)):
        # the last ReLU of a stage stands just before its pool
        taps.append(
            TapSpec(f"relu{s + 1}_{len(stage)}", f"features.{pool_index - 1}", stage[-1], 2**s)
        )
    return tuple(taps)


def _vgg_layers(cfg: VGGConfig, num_classes: int) -> list[LayerSpec]:
    layers = []
    in_ch = 3
    for i, (kind, width) in enumerate(vgg_features_layout(cfg.stages)):
        if kind == "conv":
            layers.append(_conv(f"features.{i}", in_ch, width, 3, bias=True))
            in_ch = width
    p = cfg.pool_size
    fc1 = _linear("classifier.0", in_ch * p * p, cfg.hidden)
    layers.append(LayerSpec(fc1.name, fc1.kind, fc1.entries, flatten_chw=(in_ch, p, p)))
    layers.append(_linear("classifier.3", cfg.hidden, cfg.hidden))
    layers.append(_linear("classifier.6", cfg.hidden, num_classes))
    return layers


# ------------------------------------------------------------------------ ResNet


def resnet_blocks(cfg: ResNetConfig) -> list[tuple[str, int, int, int, bool]]:
    """List bottleneck blocks as `(path, in_ch, planes, stride, has_downsample)`."""
    blocks = []
    in_ch = cfg.width
    for stage, count in enumerate(cfg.blocks):
        planes = cfg.width * 2**stage
        for b in range(count):
            stride = 2 if stage > 0 and b == 0 else 1
            downsample = b == 0 and (stride != 1 or in_ch != planes * cfg.expansion)
            blocks.append((f"layer{stage + 1}.{b}", in_ch, planes, stride, downsample))
            in_ch = planes * cfg.expansion
    return blocks


def _resnet_taps(cfg: ResNetConfig) -> tuple[TapSpec, ...]:
    taps = [TapSpec("stem", "relu", cfg.width, 2)]
    for stage, count in enumerate(cfg.blocks):
        channels = cfg.width * 2**stage * cfg.expansion
        # a stage's output is its last block's output
        taps.append(
            TapSpec(f"layer{stage + 1}", f"layer{stage + 1}.{count - 1}", channels, 4 * 2**stage)
        )
    return tuple(taps)


def _resnet_layers(cfg: ResNetConfig, num_classes: int) -> list[LayerSpec]:
    layers = [_conv("conv1", 3, cfg.width, 7, bias=False), _bn("bn1", cfg.width)]
    for path, in_ch, planes, _, downsample in resnet_blocks(cfg):
        out_ch = planes * cfg.expansion
        layers += [
            _conv(f"{path}.conv1", in_ch, planes, 1, bias=False),
            _bn(f"{path}.bn1", planes),
            _conv(f"{path}.conv2", planes, planes, 3, bias=False),
            _bn(f"{path}.bn2", planes),
            _conv(f"{path}.conv3", planes, out_ch, 1, bias=False),
            _bn(f"{path}.bn3", out_ch),
        ]
        if downsample:
            layers += [
                _conv(f"{path}.downsample.0", in_ch, out_ch, 1, bias=False),
                _bn(f"{path}.downsample.1", out_ch),
            ]
    final = cfg.width * 2 ** (len(cfg.blocks) - 1) * cfg.expansion
    layers.append(_linear("fc", final, num_classes))
    return layers


# --------------------------------------------------------------------------- ViT


def _vit_taps(cfg: ViTConfig) -> tuple[TapSpec, ...]:
    return tuple(
        TapSpec(f"block{b}", f"blocks.{b - 1}", cfg.dim, cfg.patch_size, tokens=True)
        for b in cfg.tap_blocks
    )


def _vit_layers(cfg: ViTConfig, num_classes: int) -> list[LayerSpec]:
    d = cfg.dim
    layers = [
        LayerSpec(
            "tokens", "tokens", (("cls_token", (1, 1, d)), ("pos_embed", (1, cfg.tokens, d)))
        ),
        _conv("patch_embed.proj", 3, d, cfg.patch_size, bias=True),
    ]
    for b in range(cfg.depth):
        p = f"blocks.{b}"
        layers += [
            _ln(f"{p}.norm1", d),
            _linear(f"{p}.attn.qkv", d, 3 * d),
            _linear(f"{p}.attn.proj", d, d),
            _ln(f"{p}.norm2", d),
            _linear(f"{p}.mlp.fc1", d, cfg.mlp_dim),
            _linear(f"{p}.mlp.fc2", cfg.mlp_dim, d),
        ]
    layers += [_ln("norm", d), _linear("head", d, num_classes)]
    return layers


# ------------------------------------------------------------------ layer kinds


def _conv(name: str, cin: int, cout: int, k: int, *, bias: bool) -> LayerSpec:
    entries = [(f"{name}.weight", (cout, cin, k, k))]
    if bias:
        entries.append((f"{name}.bias", (cout,)))
    return LayerSpec(name, "conv", tuple(entries))


def _linear(name: str, fin: int, fout: int) -> LayerSpec:
    return LayerSpec(name, "linear", ((f"{name}.weight", (fout, fin)), (f"{name}.bias", (fout,))))


def _bn(name: str, c: int) -> LayerSpec:
    entries = [(f"{name}.{s}", (c,)) for s in ("weight", "bias", "running_mean", "running_var")]
    return LayerSpec(name, "bn", (*entries, (f"{name}.num_batches_tracked", ())))


def _ln(name: str, d: int) -> LayerSpec:
    return LayerSpec(name, "ln", ((f"{name}.weight", (d,)), (f"{name}.bias", (d,))))


_LAYER_BUILDERS = {"vgg": _vgg_layers, "resnet": _resnet_layers, "vit": _vit_layers}


def layer_specs(arch: str | ArchSpec, num_classes: int | None = None) -> tuple[LayerSpec, ...]:
    """Every parameterised layer of `arch` with a head of `num_classes`, in torch order."""
    spec = get_arch(arch)
    return tuple(_LAYER_BUILDERS[spec.family](spec.config, spec.resolve_num_classes(num_classes)))


def state_dict_shapes(
    arch: str | ArchSpec, num_classes: int | None = None
) -> dict[str, tuple[int, ...]]:
    """Map every torch state-dict key of `arch` to its shape."""
    return {key: shape for layer in layer_specs(arch, num_classes) for key, shape in layer.entries}


def param_count(arch: str | ArchSpec, num_classes: int | None = None) -> int:
    """Count trainable parameters (batch-norm running statistics excluded)."""
    total = 0
    for key, shape in state_dict_shapes(arch, num_classes).items():
        if key.rsplit(".", 1)[-1] not in BUFFER_SUFFIXES:
            n = 1
            for dim in shape:
                n *= dim
            total += n
    return total


# ---------------------------------------------------------------------- registry


def _contracts(mean, std, size, *, fixed=False, interpolation="bilinear", source=""):
    imagenet = InputContract(mean, std, size, fixed, interpolation=interpolation, source=source)
    random = InputContract(
        mean, std, size, fixed, interpolation=interpolation, source="random init"
    )
    return MappingProxyType({"imagenet": imagenet, "random": random})


@dataclass(frozen=True)
class _Family:
    """What every architecture of a family shares: taps, head, the reference's input."""

    taps: Callable[[Any], tuple[TapSpec, ...]]
    head: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str  # the reference ImageNet weights whose input contract the family keeps
    interpolation: str = "bilinear"
    fixed_size: bool = False


_FAMILIES = MappingProxyType(
    {
        "vgg": _Family(
            lambda cfg: _vgg_taps(cfg.stages), "classifier.6", IMAGENET_MEAN, IMAGENET_STD,
            "torchvision VGG16_Weights.IMAGENET1K_V1",
        ),
        "resnet": _Family(
            _resnet_taps, "fc", IMAGENET_MEAN, IMAGENET_STD,
            "torchvision ResNet50_Weights.IMAGENET1K_V1",
        ),
        "vit": _Family(
            _vit_taps, "head", INCEPTION_MEAN, INCEPTION_STD,
            "timm vit_base_patch16_224.augreg2_in21k_ft_in1k", "bicubic", True,
        ),
    }
)  # fmt: skip


def _arch(
    name: str, family: str, cfg, *, size: int, num_classes: int, ref: str, params=None
) -> ArchSpec:
    f = _FAMILIES[family]
    return ArchSpec(
        name=name,
        family=family,
        config=cfg,
        taps=f.taps(cfg),
        contracts=_contracts(
            f.mean, f.std, size, fixed=f.fixed_size, interpolation=f.interpolation, source=f.weights
        ),
        reference=ref,
        head=f.head,
        num_classes=num_classes,
        reference_params=params,
    )


_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
_TINY_VGG_STAGES = ((8, 8), (16, 16), (32, 32, 32), (64, 64, 64), (64, 64, 64))

ARCHS: Mapping[str, ArchSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _arch(
                "vgg16", "vgg", VGGConfig(_VGG16_STAGES, hidden=4096), size=224,
                num_classes=1000, ref="torchvision.models.vgg16", params=138_357_544,
            ),
            _arch(
                "resnet50", "resnet", ResNetConfig((3, 4, 6, 3)), size=224, num_classes=1000,
                ref="torchvision.models.resnet50", params=25_557_032,
            ),
            _arch(
                "vit_b16", "vit", ViTConfig(224, 16, 768, 12, 12, tap_blocks=(3, 6, 9, 12)),
                size=224, num_classes=1000, ref="timm vit_base_patch16_224", params=86_567_656,
            ),
            # tiny variants: same families, small widths / depths / resolution
            _arch(
                "vgg16_tiny", "vgg", VGGConfig(_TINY_VGG_STAGES, hidden=64), size=32,
                num_classes=10, ref="torchvision VGG",
            ),
            _arch(
                "resnet50_tiny", "resnet", ResNetConfig((1, 1, 1, 1)), size=32, num_classes=10,
                ref="torchvision ResNet",
            ),
            _arch(
                "vit_b16_tiny", "vit", ViTConfig(64, 16, 48, 4, 3, tap_blocks=(2, 4)), size=64,
                num_classes=10, ref="timm VisionTransformer",
            ),
        )
    }
)  # fmt: skip
FULL_ARCHS = ("vgg16", "resnet50", "vit_b16")
TINY_ARCHS = ("vgg16_tiny", "resnet50_tiny", "vit_b16_tiny")


def get_arch(arch: str | ArchSpec) -> ArchSpec:
    """Look up an architecture by name.

    Raises:
        ValueError: If the name is not registered.
    """
    if isinstance(arch, ArchSpec):
        return arch
    try:
        return ARCHS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown arch {arch!r}; expected one of: {', '.join(ARCHS)}") from None


__all__ = [
    "ARCHS",
    "FULL_ARCHS",
    "TINY_ARCHS",
    "ArchSpec",
    "InputContract",
    "LayerSpec",
    "ResNetConfig",
    "TapSpec",
    "VGGConfig",
    "ViTConfig",
    "get_arch",
    "layer_specs",
    "param_count",
    "state_dict_shapes",
]
