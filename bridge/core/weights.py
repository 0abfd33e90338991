"""Weight files: safe reading, checks against a spec, and finding ImageNet weights.

State dicts travel between the frameworks as `dict[str, numpy.ndarray]` in torch
layout and naming. `.safetensors` and `.pth` files are both read with numpy alone
(`.pth` through `bridge.core.torchfile`, which rebuilds tensors and nothing else).

`weights="imagenet"` never downloads: `resolve_imagenet` looks in the standard
places and, when nothing is there, says which file to put where.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.core.files import atomic_path, sha256_file
from bridge.core.spec import ARCHS, ArchSpec, get_arch, state_dict_shapes
from bridge.core.torchfile import read_torch_file

log = logging.getLogger(__name__)

StateDict = dict[str, np.ndarray]

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
KERAS_SUFFIX = ".weights.h5"
# Keys a torch checkpoint may wrap its state dict in.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
# Buffers that torch fills in itself when a checkpoint predates them.
_OPTIONAL_SUFFIX = "num_batches_tracked"


@dataclass(frozen=True)
class ReferenceWeights:
    """Where the reference ImageNet weights of an architecture live on disk.

    Attributes:
        filename: File name in the torch hub cache (torchvision's own names).
        sha256_prefix: Leading hex digits of the file's sha256, where known
            (torchvision puts them in the file name).
        origin: Which published weights these are.
        hf_repo: Hugging Face repo whose cached `model.safetensors` also counts.
    """

    filename: str
    sha256_prefix: str | None
    origin: str
    hf_repo: str | None = None


REFERENCE_WEIGHTS: Mapping[str, ReferenceWeights] = {
    "vgg16": ReferenceWeights(
        "vgg16-397923af.pth", "397923af", "torchvision.models.VGG16_Weights.IMAGENET1K_V1"
    ),
    "resnet50": ReferenceWeights(
        "resnet50-0676ba61.pth", "0676ba61", "torchvision.models.ResNet50_Weights.IMAGENET1K_V1"
    ),
    "vit_b16": ReferenceWeights(
        "vit_base_patch16_224.augreg2_in21k_ft_in1k.safetensors",
        None,
        "timm vit_base_patch16_224.augreg2_in21k_ft_in1k",
        hf_repo="timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    ),
}


# --------------------------------------------------------------- where to look


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))


def torch_hub_checkpoints() -> Path:
    """The torch hub checkpoint folder (`$TORCH_HOME/hub/checkpoints`)."""
    torch_home = os.environ.get("TORCH_HOME") or _cache_home() / "torch"
    return Path(torch_home) / "hub" / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or _cache_home() / "huggingface"
    return Path(hf_home) / "hub"


def candidate_paths(arch: str) -> list[Path]:
    """Every place `weights="imagenet"` looks for `arch`, in order."""
    ref = REFERENCE_WEIGHTS[arch]
    paths = []
    if os.environ.get("DERMSIM_WEIGHTS"):
        paths.append(Path(os.environ["DERMSIM_WEIGHTS"]) / ref.filename)
    paths.append(torch_hub_checkpoints() / ref.filename)
    if ref.hf_repo:
        repo_dir = hf_hub_cache() / f"models--{ref.hf_repo.replace('/', '--')}"
        paths += sorted(repo_dir.glob("snapshots/*/model.safetensors"))
    return paths


def resolve_imagenet(arch: str | ArchSpec) -> Path:
    """Find the reference ImageNet weights of `arch` on disk; never download.

    Raises:
        ValueError: If `arch` has no reference weights, or the file found has the
            wrong checksum.
        FileNotFoundError: If no candidate file exists; the message names the file
            expected and where to put it.
    """
    spec = get_arch(arch)
    if spec.name not in REFERENCE_WEIGHTS:
        raise ValueError(
            f"weights='imagenet' exists only for {', '.join(REFERENCE_WEIGHTS)}; "
            f"{spec.name} has none (use weights=None or a file path)"
        )
    ref = REFERENCE_WEIGHTS[spec.name]
    for path in candidate_paths(spec.name):
        if path.is_file():
            verify_reference(path, ref)
            log.info("imagenet weights for %s: %s", spec.name, path)
            return path
    where = [os.environ.get("DERMSIM_WEIGHTS") and "$DERMSIM_WEIGHTS", str(torch_hub_checkpoints())]
    if ref.hf_repo:
        where.append(f"the Hugging Face cache of {ref.hf_repo}")
    checksum = f", sha256 starting {ref.sha256_prefix}" if ref.sha256_prefix else ""
    raise FileNotFoundError(
        f"no ImageNet weights for {spec.name}: expected {ref.filename} ({ref.origin}{checksum}) "
        f"in {' or '.join(w for w in where if w)}; dermsim never downloads, copy the file there"
    )


def verify_reference(path: Path, ref: ReferenceWeights) -> None:
    """Check a reference weight file's sha256 prefix, where one is known.

    Raises:
        ValueError: If the checksum does not match.
    """
    if ref.sha256_prefix is None:
        return
    digest = sha256_file(path)
    if not digest.startswith(ref.sha256_prefix):
        raise ValueError(
            f"{path}: sha256 {digest[:16]}... does not start with {ref.sha256_prefix} "
            f"({ref.origin}); the file is damaged or not the reference weights"
        )


# ------------------------------------------------------------- reading/writing


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a torch-layout state dict from `.safetensors` or `.pth` as numpy arrays.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file type is not supported or the file cannot be read
            (truncated, not a state dict).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    name = path.name.lower()
    if name.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{path}: unreadable safetensors file ({err})") from None
    if name.endswith(TORCH_SUFFIXES):
        return _read_torch_file(path)
    if name.endswith(".h5"):
        raise ValueError(
            f"{path}: Keras weights; load them with tf_models.create_model(weights=...) or "
            "convert with `python -m bridge.port --from keras`"
        )
    raise ValueError(f"{path}: unsupported weights file; expected .safetensors or .pth")


def _read_torch_file(path: Path) -> StateDict:
    obj = read_torch_file(path)
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    return dict(obj)


def write_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write a numpy state dict atomically as `.safetensors`.

    `.pth` files are torch's own pickles: `torch_models.save_weights` writes them.

    Raises:
        ValueError: If the suffix is not `.safetensors`.
    """
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise ValueError(f"{path}: expected a .safetensors output path")
    from safetensors.numpy import save_file

    arrays = {k: np.asarray(v, order="C") for k, v in state_dict.items()}  # keeps 0-d shapes
    with atomic_path(path) as tmp:
        save_file(arrays, tmp)
    return path


# ---------------------------------------------------------------------- checks


def head_size(state_dict: Mapping[str, np.ndarray], arch: str | ArchSpec) -> int | None:
    """Return the number of classes of the state dict's head, if it has one."""
    weight = state_dict.get(f"{get_arch(arch).head}.weight")
    return None if weight is None else int(weight.shape[0])


def check_state_dict(
    state_dict: Mapping[str, np.ndarray],
    arch: str | ArchSpec,
    num_classes: int | None = None,
    source: str = "state dict",
) -> StateDict:
    """Check a state dict against `arch` and return it complete.

    A missing `num_batches_tracked` (older checkpoints) is filled with 0, as torch
    does when loading.

    Args:
        state_dict: Torch-layout state dict as numpy arrays.
        arch: Architecture the weights should belong to.
        num_classes: Head size asked for (None: the architecture's default).
        source: Name of the file, for messages.

    Raises:
        ValueError: Naming the mismatch: another architecture's weights, missing or
            unexpected keys, a head of another size, or a tensor of another shape.
    """
    spec = get_arch(arch)
    k = spec.resolve_num_classes(num_classes)
    expected = state_dict_shapes(spec, k)
    missing = [
        key for key in expected if key not in state_dict and not key.endswith(_OPTIONAL_SUFFIX)
    ]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        _mismatch(
            state_dict,
            spec,
            source,
            f"{source}: not a {spec.name} state dict ({len(missing)} keys missing, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})",
        )
    found = head_size(state_dict, spec)
    if found != k:
        raise ValueError(
            f"{source}: head '{spec.head}' has {found} classes but num_classes={k} was asked "
            f"for; pass num_classes={found}"
        )
    for key, shape in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != shape:
            found_shape = tuple(state_dict[key].shape)
            _mismatch(
                state_dict,
                spec,
                source,
                f"{source}: '{key}' has shape {found_shape}, {spec.name} expects {shape}",
            )
    complete = dict(state_dict)
    for key in expected:
        if key.endswith(_OPTIONAL_SUFFIX) and key not in complete:
            complete[key] = np.zeros((), dtype=np.int64)
    return complete


def _mismatch(
    state_dict: Mapping[str, np.ndarray], spec: ArchSpec, source: str, detail: str
) -> None:
    """Raise: naming the architecture the weights belong to, else `detail`."""
    other = _guess_arch(state_dict, exclude=spec.name)
    raise ValueError(f"{source}: holds {other} weights, not {spec.name}" if other else detail)


def _guess_arch(state_dict: Mapping[str, np.ndarray], exclude: str) -> str | None:
    """Name the registered architecture whose every key and shape (head aside) match."""
    for name, spec in ARCHS.items():
        if name == exclude:
            continue
        n = head_size(state_dict, spec)
        if n is None:
            continue
        expected = state_dict_shapes(spec, n)
        keys = {key for key in expected if not key.endswith(_OPTIONAL_SUFFIX)}
        if keys <= set(state_dict) <= set(expected) and all(
            tuple(state_dict[key].shape) == expected[key] for key in keys
        ):
            return name
    return None


def random_state_dict(
    arch: str | ArchSpec, num_classes: int | None = None, seed: int = 0
) -> StateDict:
    """Make a seeded random state dict in which every tensor matters.

    Library initialisation leaves biases at 0 and batch-norm statistics at 0 / 1, so
    a port that swapped or dropped them would still agree. Here every weight, bias,
    norm scale and running statistic is random (scaled to keep activations finite),
    which makes parity checks meaningful. numpy only: tests write these as `.pth`,
    `.safetensors` or Keras files without any pretrained download.

    Args:
        arch: Architecture.
        num_classes: Head size (None: the default head).
        seed: Seed of the numpy generator.
    """
    from bridge.core.spec import layer_specs

    rng = np.random.default_rng(seed)
    state: StateDict = {}
    for layer in layer_specs(arch, num_classes):
        for key, shape in layer.entries:
            suffix = key.rsplit(".", 1)[-1]
            if suffix == "num_batches_tracked":
                state[key] = np.zeros((), dtype=np.int64)
                continue
            if suffix == "weight" and len(shape) > 1:  # conv / linear: He-scaled normal
                fan_in = int(np.prod(shape[1:]))
                value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
            elif suffix in ("weight", "running_var"):  # norm scales, variances
                value = rng.uniform(0.5, 1.5, shape)
            elif key in ("cls_token", "pos_embed"):
                value = rng.normal(0.0, 0.1, shape)
            else:  # biases, norm shifts, running means
                value = rng.normal(0.0, 0.1, shape)
            state[key] = value.astype(np.float32)
    return state


def init_state_dict(
    arch: str | ArchSpec, num_classes: int | None = None, seed: int = 0
) -> StateDict:
    """Draw initial weights with the reference library's scheme, in numpy.

    Both trainers start from these (ported by name), so a torch run and a Keras run
    of one config begin from identical weights without needing each other's
    framework. The distributions are the references' own:

    * torchvision VGG: convs kaiming-normal (fan_out, ReLU gain), linears N(0, 0.01),
      biases 0;
    * torchvision ResNet: convs kaiming-normal (fan_out), batch norm 1 / 0, the head
      U(+-1/sqrt(fan_in)) (torch's default Linear init);
    * timm ViT: linears truncated N(0, 0.02) with zero bias, patch embedding
      U(+-1/sqrt(fan_in)) (torch's default Conv2d init), position embedding truncated
      N(0, 0.02), class token N(0, 1e-6), LayerNorm 1 / 0.

    Args:
        arch: Architecture.
        num_classes: Head size (None: the default head).
        seed: Seed of the numpy generator.
    """
    from bridge.core.spec import layer_specs

    spec = get_arch(arch)
    rng = np.random.default_rng(seed)

    def trunc_normal(std, shape):  # timm's trunc_normal_: cut at +-2 (absolute)
        return np.clip(rng.normal(0.0, std, shape), -2.0, 2.0)

    state: StateDict = {}
    for layer in layer_specs(spec, num_classes):
        weight_shape = layer.entries[0][1]
        fan_in = int(np.prod(weight_shape[1:])) if len(weight_shape) > 1 else 0
        fan_out = weight_shape[0] * int(np.prod(weight_shape[2:])) if len(weight_shape) > 1 else 0
        bound = 1.0 / np.sqrt(fan_in) if fan_in else 0.0
        values: list[np.ndarray]
        if layer.kind == "conv" and spec.family == "vit":
            values = [rng.uniform(-bound, bound, s) for _, s in layer.entries]
        elif layer.kind == "conv":
            std = np.sqrt(2.0 / fan_out)
            biases = [np.zeros(s) for _, s in layer.entries[1:]]
            values = [rng.normal(0.0, std, weight_shape), *biases]
        elif layer.kind == "linear" and spec.family == "vgg":
            values = [rng.normal(0.0, 0.01, weight_shape), np.zeros(layer.entries[1][1])]
        elif layer.kind == "linear" and spec.family == "resnet":
            values = [rng.uniform(-bound, bound, s) for _, s in layer.entries]
        elif layer.kind == "linear":
            values = [trunc_normal(0.02, weight_shape), np.zeros(layer.entries[1][1])]
        elif layer.kind == "tokens":
            (_, cls_shape), (_, pos_shape) = layer.entries
            values = [rng.normal(0.0, 1e-6, cls_shape), trunc_normal(0.02, pos_shape)]
        elif layer.kind == "bn":
            c = weight_shape
            values = [np.ones(c), np.zeros(c), np.zeros(c), np.ones(c)]
        else:  # ln
            values = [np.ones(weight_shape), np.zeros(weight_shape)]
        for (key, _), value in zip(layer.entries, values, strict=False):
            state[key] = value.astype(np.float32)
        if layer.kind == "bn":
            state[layer.entries[-1][0]] = np.zeros((), dtype=np.int64)
    return state
