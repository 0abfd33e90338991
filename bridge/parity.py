"""Parity report: are the torch and Keras twins the same networks as the references?

For each architecture, one seeded random state dict in which every tensor matters
(`bridge.core.weights.random_state_dict`) is loaded into three models:

* the reference (torchvision `vgg16` / `resnet50`, timm `vit_base_patch16_224`);
* the dermsim torch model, compared with the reference: logits, and every tap
  against a forward hook on the reference module of the same path;
* the dermsim Keras model (ported), compared with the dermsim torch model.

Inputs are seeded uniform [0, 1] images normalised by the arch's input contract.
Bounds (docs/architecture.md, tolerances): torch vs reference exact (<= 1e-6 abs); Keras vs torch
max abs error <= 1e-4 x max(1, max |ref|), per output.

    python -m bridge.parity                  # full-size models, 224 (+160 for CNNs)
    python -m bridge.parity --tiny --detail  # tiny variants, per-tap table
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bridge.core.spec import FULL_ARCHS, TINY_ARCHS, ArchSpec, get_arch, param_count
from bridge.core.weights import random_state_dict

log = logging.getLogger(__name__)

TORCH_BOUND = 1e-6
KERAS_RELATIVE_BOUND = 1e-4


@dataclass(frozen=True)
class OutputError:
    """Max abs error of one output (`logits` or a tap) and its bound."""

    name: str
    max_abs_error: float
    max_abs_ref: float
    bound: float

    @property
    def ok(self) -> bool:
        """True when within the bound."""
        return self.max_abs_error <= self.bound


@dataclass(frozen=True)
class ParityRow:
    """One architecture x input size x framework."""

    arch: str
    size: int
    framework: str
    compared_with: str
    params: int
    outputs: tuple[OutputError, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every output is within its bound."""
        return all(o.ok for o in self.outputs)

    @property
    def logits(self) -> OutputError:
        """The logits' error."""
        return self.outputs[0]

    @property
    def worst_tap(self) -> OutputError:
        """The tap with the largest error relative to its bound."""
        return max(self.outputs[1:], key=lambda o: o.max_abs_error / o.bound)


def reference_model(arch: str | ArchSpec, num_classes: int | None = None):
    """Build the reference library's own model for `arch` (torch, eval mode)."""
    import torch_models  # noqa: F401, I001  (makes torchvision importable: must come first)

    import timm
    import torchvision
    from torch import nn
    from torchvision.models.resnet import Bottleneck
    from torchvision.models.vgg import make_layers

    spec = get_arch(arch)
    k = spec.resolve_num_classes(num_classes)
    cfg = spec.config
    if spec.name == "vgg16":
        model = torchvision.models.vgg16(num_classes=k)
    elif spec.name == "resnet50":
        model = torchvision.models.resnet50(num_classes=k)
    elif spec.name == "vit_b16":
        model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=k)
    elif spec.family == "vgg":
        layers_cfg = [w for stage in cfg.stages for w in (*stage, "M")]
        model = torchvision.models.VGG(make_layers(layers_cfg), num_classes=k)
        # torchvision fixes the classifier at 512*7*7 -> 4096; tiny widths need their own
        flat = cfg.stages[-1][-1] * cfg.pool_size**2
        model.classifier = nn.Sequential(
            nn.Linear(flat, cfg.hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(cfg.hidden, k),
        )  # fmt: skip
    elif spec.family == "resnet":
        model = torchvision.models.ResNet(Bottleneck, list(cfg.blocks), num_classes=k)
    else:
        model = timm.models.vision_transformer.VisionTransformer(
            img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.dim,
            depth=cfg.depth, num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, num_classes=k,
        )  # fmt: skip
    return model.eval()


def probe_images(spec: ArchSpec, size: int, batch: int, seed: int) -> np.ndarray:
    """Seeded uniform [0, 1] images, normalised by the input contract (NCHW)."""
    contract = spec.contract
    x = np.random.default_rng(seed).uniform(0.0, 1.0, (batch, 3, size, size))
    mean = np.asarray(contract.mean).reshape(1, 3, 1, 1)
    std = np.asarray(contract.std).reshape(1, 3, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def measure(
    arch: str | ArchSpec, sizes: Sequence[int] | None = None, batch: int = 2, seed: int = 0
) -> list[ParityRow]:
    """Measure torch-vs-reference and Keras-vs-torch errors for one architecture.

    Args:
        arch: Architecture.
        sizes: Input sides (default: native, plus 160 for convolutional full-size
            archs and 48 for convolutional tiny ones). ViTs run at their native size.
        batch: Images per probe batch.
        seed: Seed of the weights and the images.
    """
    import torch

    import tf_models
    import torch_models

    spec = get_arch(arch)
    native = spec.contract.native_size
    if spec.contract.fixed_size:
        sizes = [native]
    elif sizes is None:
        sizes = [native, 160 if native >= 160 else 48]
    state = random_state_dict(spec, seed=seed)
    ours = torch_models.create_model(spec, weights=state)
    ref = reference_model(spec)
    torch_models.set_torch_state_dict(ref, state)
    keras_model = tf_models.create_model(spec, weights=state)
    features = tf_models.features_model(keras_model)
    keras_params = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    torch_params = sum(p.numel() for p in ours.parameters())

    rows = []
    for size in sizes:
        x = probe_images(spec, size, batch, seed)
        start = time.perf_counter()
        with torch.no_grad():
            ref_taps, hooks = {}, []
            for tap in spec.taps:
                module = ref.get_submodule(tap.layer)
                hooks.append(module.register_forward_hook(_keep(ref_taps, tap.layer)))
            ref_logits = ref(torch.from_numpy(x)).numpy()
            for h in hooks:
                h.remove()
            logits = ours(torch.from_numpy(x)).numpy()
            taps = {k: v.numpy() for k, v in ours.forward_features(torch.from_numpy(x)).items()}
        expected = _reference_taps(spec, ref_taps)
        outputs = [_error("logits", logits, ref_logits, TORCH_BOUND)]
        outputs += [_error(n, taps[n], expected[n], TORCH_BOUND) for n in spec.tap_names]
        torch_seconds = time.perf_counter() - start
        rows.append(
            ParityRow(
                spec.name,
                size,
                "torch",
                spec.reference,
                torch_params,
                tuple(outputs),
                torch_seconds,
            )
        )

        start = time.perf_counter()
        x_nhwc = x.transpose(0, 2, 3, 1)
        k_logits = np.asarray(keras_model(x_nhwc, training=False))
        k_taps = {k: np.asarray(v) for k, v in features(x_nhwc, training=False).items()}
        keras_seconds = time.perf_counter() - start
        outputs = [_error("logits", k_logits, logits, _keras_bound(logits))]
        for name in spec.tap_names:
            value = k_taps[name]
            if value.ndim == 4:
                value = value.transpose(0, 3, 1, 2)
            outputs.append(_error(name, value, taps[name], _keras_bound(taps[name])))
        rows.append(
            ParityRow(
                spec.name,
                size,
                "keras",
                "dermsim torch",
                keras_params,
                tuple(outputs),
                keras_seconds,
            )
        )
    if torch_params != param_count(spec) or keras_params != param_count(spec):
        raise AssertionError(
            f"{spec.name}: parameter counts differ: spec {param_count(spec)}, "
            f"torch {torch_params}, keras {keras_params}"
        )
    return rows


def _keep(store: dict, name: str):
    def hook(module, inputs, output):
        store[name] = output.detach().clone()

    return hook


def _reference_taps(spec: ArchSpec, outputs: dict) -> dict[str, np.ndarray]:
    taps = {}
    for tap in spec.taps:
        value = outputs[tap.layer].numpy()
        if tap.tokens:
            g = spec.config.grid
            taps[tap.name] = value[:, 1:].transpose(0, 2, 1).reshape(value.shape[0], -1, g, g)
            taps[f"{tap.name}_cls"] = value[:, 0]
        else:
            taps[tap.name] = value
    return taps


def _keras_bound(ref: np.ndarray) -> float:
    return KERAS_RELATIVE_BOUND * max(1.0, float(np.abs(ref).max()))


def _error(name: str, value: np.ndarray, ref: np.ndarray, bound: float) -> OutputError:
    if value.shape != ref.shape:
        raise AssertionError(f"{name}: shape {value.shape} != reference {ref.shape}")
    return OutputError(name, float(np.abs(value - ref).max()), float(np.abs(ref).max()), bound)


# ---------------------------------------------------------------------- report


def format_table(rows: Sequence[ParityRow], detail: bool = False) -> str:
    """Render rows as a Markdown table (and, with `detail`, one row per output).

    Errors are max abs errors with the largest reference magnitude in brackets;
    "worst rel." is the largest of err / max(1, max |ref|) over all outputs.
    """
    lines = [
        "| arch | input | framework | compared with | parameters | logits err (max \\|ref\\|) "
        "| worst tap err (max \\|ref\\|) | worst rel. | bound | ok |",
        "| --- | --- | --- | --- | ---: | ---: | --- | ---: | --- | :---: |",
    ]
    for r in rows:
        tap = r.worst_tap
        relative = max(o.max_abs_error / max(1.0, o.max_abs_ref) for o in r.outputs)
        bound = "1e-6 abs" if r.framework == "torch" else f"{KERAS_RELATIVE_BOUND:.0e} rel."
        lines.append(
            f"| {r.arch} | {r.size}x{r.size} | {r.framework} | {r.compared_with} | {r.params:,} "
            f"| {r.logits.max_abs_error:.1e} ({r.logits.max_abs_ref:.3g}) "
            f"| {tap.name}: {tap.max_abs_error:.1e} ({tap.max_abs_ref:.3g}) "
            f"| {relative:.1e} | {bound} | {'yes' if r.ok else 'NO'} |"
        )
    if detail:
        lines += [
            "",
            "| arch | input | framework | output | max abs err | max abs ref | bound | ok |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | :---: |",
        ]
        for r in rows:
            for o in r.outputs:
                lines.append(
                    f"| {r.arch} | {r.size} | {r.framework} | {o.name} | {o.max_abs_error:.2e} "
                    f"| {o.max_abs_ref:.3g} | {o.bound:.1e} | {'yes' if o.ok else 'NO'} |"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the parity table; exit 1 if any output exceeds its bound."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.parity", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--arch", default=None, help="comma-separated archs (default: vgg16,resnet50,vit_b16)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="use the tiny variants (seconds, not minutes)"
    )
    parser.add_argument("--sizes", default=None, help="comma-separated input sides for the CNNs")
    parser.add_argument("--batch", type=int, default=2, help="images per probe batch (default 2)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of weights and images (default 0)"
    )
    parser.add_argument("--detail", action="store_true", help="also print every output's error")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    archs = args.arch.split(",") if args.arch else list(TINY_ARCHS if args.tiny else FULL_ARCHS)
    specs = [get_arch(a) for a in archs]
    sizes = None
    if args.sizes:
        try:
            sizes = [int(s) for s in args.sizes.split(",")]
        except ValueError:
            raise ValueError(
                f"--sizes must be comma-separated integers, got {args.sizes!r}"
            ) from None
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")

    from tqdm import tqdm

    rows: list[ParityRow] = []
    for spec in tqdm(specs, desc="parity", unit="arch"):
        rows += measure(spec, sizes, args.batch, args.seed)
    table = format_table(rows, args.detail)
    print(table)
    if args.out:
        from bridge.core.files import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(table + "\n")
    failed = [f"{r.arch}/{r.framework}/{r.size}" for r in rows if not r.ok]
    if failed:
        log.error("outside the bounds: %s", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
