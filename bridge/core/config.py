"""The one training config both trainers read: TOML -> frozen dataclasses.

`tox -e torch-train -- --config configs/demo.toml --set train.lr=1e-3 --set data.image_size=96`
Every key is documented on its dataclass; unknown keys and bad values are one-line
errors naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.core.data.image import DEFAULT_POLICY

SOURCES = ("synthetic", "isic2019", "isic2020", "ham10000", "folders")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")
CHECKPOINTS = ("best", "last", "every")  # what a finished run keeps (TrainConfig.checkpoints)


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared.

    Attributes:
        source: `synthetic`, `isic2019`, `isic2020`, `ham10000` or `folders`.
        path: The data: the ground-truth / metadata CSV, the class-folder root, or
            (synthetic) the folder to generate into.
        images: Image folder, when not the format's default place.
        metadata: ISIC 2019 metadata CSV (gives lesion_id groups).
        classes: Classes to keep (empty: all).
        per_class_cap: Keep at most this many images per class (0: all).
        val_fraction: Share of groups for validation.
        test_fraction: Share of groups for the test split.
        image_size: Side of the network input.
        resize_policy: `stretch`, `shorter_center_crop` or `pad`.
        interpolation: Resize interpolation.
        cache: Keep decoded images in memory (small data sets).
        normalization: `weights` (the initial weights' input contract) or `dataset`
            (mean/std of the training split).
    """

    source: str = "synthetic"
    path: str = "data/synthetic"
    images: str = ""
    metadata: str = ""
    classes: tuple[str, ...] = ()
    per_class_cap: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    image_size: int = 224
    resize_policy: str = DEFAULT_POLICY
    interpolation: str = "bilinear"
    cache: bool = True
    normalization: str = "weights"


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (validation and test images are only resized).

    Attributes:
        hflip: Random horizontal flips.
        vflip: Random vertical flips.
        rotation: Maximum rotation in degrees (uniform in +-rotation).
        color_jitter: Brightness, contrast and saturation factors in 1 +- this.
        crop_scale: Area range of the random resized crop ([1, 1]: none).
        crop_ratio: Aspect-ratio range of the random resized crop.
    """

    hflip: bool = True
    vflip: bool = True
    rotation: float = 180.0
    color_jitter: float = 0.1
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation.

    Attributes:
        archs: Architectures to train (`--arch` overrides; `all` = the three).
        init: `random`, `imagenet` or a weights file path (same in both frameworks).
        trainable: `all`, `head`, or `last:N` (the head and the last N blocks).
        epochs: Epochs.
        batch_size: Global batch size (split across processes/replicas).
        optimizer: `adamw` or `sgd`.
        lr: Peak learning rate.
        weight_decay: Decoupled (AdamW) or L2 (SGD) weight decay.
        momentum: SGD momentum.
        schedule: `constant`, `cosine` or `step` (x0.1 at 60% and 85% of training).
        warmup_epochs: Linear warm-up epochs.
        label_smoothing: Cross-entropy label smoothing.
        dropout: Keep the classifiers' dropout active in training.
        checkpoints: Which weights a finished run keeps besides `best.*`: `best`
            (nothing else), `last` (also `last.*`, the final epoch) or `every`
            (also `checkpoints/epoch_NNN.*`). While a run is unfinished, its last
            epoch's weights and optimiser state wait under `resume/`, removed when
            it finishes.
    """

    archs: tuple[str, ...] = ("vgg16", "resnet50", "vit_b16")
    init: str = "random"
    trainable: str = "all"
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 3e-4
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    dropout: bool = True
    checkpoints: str = "best"


@dataclass(frozen=True)
class Config:
    """A whole run: `runs/<name>/` holds one folder per arch x framework.

    Attributes:
        name: Run name.
        output: Folder that holds runs.
        seed: Seed of splits, initial weights, batch order and augmentation.
        data: Data settings.
        augment: Augmentation settings.
        train: Optimisation settings.
    """

    name: str = "run"
    output: str = "runs"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        """The run folder, `output/name`."""
        return Path(self.output) / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), for run.json."""
        return _plain(dataclasses.asdict(self))


def load_config(
    path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read a TOML config and apply `key=value` overrides (`train.lr=1e-3`).

    Values of overrides are TOML literals (`3e-4`, `true`, `["MEL", "NV"]`); anything
    else is taken as a string.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: Malformed TOML, an unknown key, a value of the wrong type or out
            of range, or a malformed override.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML ({err})") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-3")
        _assign(raw, key.strip().split("."), _literal(value.strip()), item)
    config = _build(Config, raw, prefix="")
    validate(config)
    return config


def config_from_dict(raw: dict[str, Any]) -> Config:
    """A checked config from plain data (e.g. the `config` recorded in a run's run.json).

    Raises:
        ValueError: An unknown key, a value of the wrong type or out of range.
    """
    config = _build(Config, raw, prefix="")
    validate(config)
    return config


def validate(config: Config) -> None:
    """Check value ranges and choices.

    Raises:
        ValueError: Naming the key, its value and what is allowed.
    """
    d, t = config.data, config.train
    checks = [
        (d.source in SOURCES, "data.source", d.source, f"one of {', '.join(SOURCES)}"),
        (d.image_size >= 16, "data.image_size", d.image_size, ">= 16"),
        (0 <= d.val_fraction < 0.5, "data.val_fraction", d.val_fraction, "in [0, 0.5)"),
        (0 < d.test_fraction < 0.5, "data.test_fraction", d.test_fraction, "in (0, 0.5)"),
        (d.per_class_cap >= 0, "data.per_class_cap", d.per_class_cap, ">= 0"),
        (d.normalization in ("weights", "dataset"), "data.normalization", d.normalization,
         "weights or dataset"),
        (t.epochs >= 1, "train.epochs", t.epochs, ">= 1"),
        (t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1"),
        (t.optimizer in OPTIMIZERS, "train.optimizer", t.optimizer, "adamw or sgd"),
        (t.schedule in SCHEDULES, "train.schedule", t.schedule, "constant, cosine or step"),
        (t.lr > 0, "train.lr", t.lr, "> 0"),
        (t.weight_decay >= 0, "train.weight_decay", t.weight_decay, ">= 0"),
        (0 <= t.warmup_epochs < t.epochs, "train.warmup_epochs", t.warmup_epochs, "in [0, epochs)"),
        (_valid_trainable(t.trainable), "train.trainable", t.trainable, "all, head or last:N"),
        (t.checkpoints in CHECKPOINTS, "train.checkpoints", t.checkpoints, "best, last or every"),
        (0 < config.augment.crop_scale[0] <= config.augment.crop_scale[1] <= 1,
         "augment.crop_scale", config.augment.crop_scale, "0 < low <= high <= 1"),
    ]  # fmt: skip
    for ok, key, value, allowed in checks:
        if not ok:
            raise ValueError(f"config {key} = {value!r}: expected {allowed}")
    if not config.name or "/" in config.name or config.name.startswith("."):
        raise ValueError(f"config name = {config.name!r}: expected a plain folder name")


def _valid_trainable(value: str) -> bool:
    if value in ("all", "head"):
        return True
    kind, _, n = value.partition(":")
    return kind == "last" and n.isdigit() and int(n) >= 0


def _literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _assign(raw: dict, keys: list[str], value: Any, item: str) -> None:
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {item!r}: {key} is not a section")
    node[keys[-1]] = value


def _build(cls, raw: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(
            f"config: unknown key {prefix}{unknown[0]}; expected one of {', '.join(sorted(names))}"
        )
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"config {key}: expected a [{key}] section")
            values[name] = _build(hint, value, prefix=f"{key}.")
        else:
            values[name] = _coerce(value, hint, key)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"config {key} = {value!r}: expected a list")
        args = typing.get_args(hint)
        item = args[0]
        if len(args) == 2 and args[1] is not Ellipsis and len(value) != 2:
            raise ValueError(f"config {key} = {value!r}: expected a list of two values")
        return tuple(_coerce(v, item, key) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config {key} = {value!r}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config {key} = {value!r}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"config {key} = {value!r}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"config {key} = {value!r}: expected a string")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
