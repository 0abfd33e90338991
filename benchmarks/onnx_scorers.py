"""Benchmark: dermsim's ONNX LPIPS / DISTS scorers against lpips and DISTS_pytorch.

    .tox/test/bin/python benchmarks/onnx_scorers.py [--batches 1,16] [--size 224] [--repeats 5]
        [--out table.md]

Measured in one run, on the same inputs and the same seeded random VGG16 (no
download: the weights are written into a temporary torch hub cache that the reference
packages read):

* pairs per second of the dermsim ONNX scorers (onnxruntime, CPU) and of the reference
  packages (PyTorch, eval mode, no_grad), at each batch size;
* the backbone's attained GFLOP/s (VGG16 up to relu5_3, two passes per pair) against a
  float32 matrix-product peak measured in the same run (numpy);
* the shared-reference case: one region against K regions costs 1 + K backbone
  passes instead of 2K.

Prints a Markdown table; ratios are against the reference package in the same run.
Run it with a python that has dermsim and its `test` extra installed (`tox -e test`
makes one: `.tox/test/bin/python`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import torch_models  # noqa: F401  (torchvision importable on the CPU torch)
from bridge.core.metrics import METRICS
from bridge.core.runtime import open_model
from bridge.core.spec import get_arch, vgg_features_layout
from bridge.core.weights import random_state_dict
from bridge.export import export, source_from_weights


def vgg16_backbone_flops(size: int) -> float:
    """Multiply-adds x 2 of VGG16's convolutions up to relu5_3 at size x size."""
    flops, side, in_ch = 0.0, size, 3
    layout = vgg_features_layout(get_arch("vgg16").config.stages)
    for kind, width in layout[:-1]:  # the last max-pool feeds no tap
        if kind == "conv":
            flops += 2.0 * in_ch * width * 9 * side * side
            in_ch = width
        elif kind == "pool":
            side //= 2
    return flops


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """float32 matrix-product GFLOP/s (numpy / BLAS) on this machine, best of `repeats`."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(fn, repeats: int) -> float:
    """Median seconds of `fn` after one warm-up call."""
    fn()
    return statistics.median(_timed(fn) for _ in range(repeats))


def setup(home: Path) -> tuple[dict, dict]:
    """Export dermsim's scorers and build the reference packages on one random VGG16.

    The weights go into `home` as torchvision's file in a torch hub cache, where lpips
    and DISTS_pytorch look for them (`TORCH_HOME` is pointed there).

    Returns:
        ({metric: open ONNX model}, {metric: reference module in eval mode}).
    """
    import torch

    hub = home / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    weights = hub / "vgg16-397923af.pth"
    state = random_state_dict("vgg16", seed=0)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, weights)
    source = source_from_weights("vgg16", weights)
    onnx_files = {m: export(source, m, "torch", home / "models") for m in METRICS}
    os.environ["TORCH_HOME"] = str(home)
    import lpips
    from DISTS_pytorch import DISTS

    references = {"lpips": lpips.LPIPS(net="vgg", verbose=False).eval(), "dists": DISTS().eval()}
    scorers = {m: open_model(f, prefer_gpu=False) for m, f in onnx_files.items()}
    return scorers, references


def pair_rows(scorers, references, batches, size, repeats, flops_pair, peak) -> list[tuple]:
    """(name, batch, pairs/s, ms/pair, speed vs package, GFLOP/s, % of peak) per scorer."""
    import torch

    rows = []
    rng = np.random.default_rng(0)
    for metric in METRICS:
        for batch in batches:
            a = rng.uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
            b = rng.uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            ref = references[metric]

            def reference(ref=ref, ta=ta, tb=tb, metric=metric):
                with torch.no_grad():
                    return ref(ta, tb, normalize=True) if metric == "lpips" else ref(ta, tb)

            model = scorers[metric]
            seconds_ref = measure(reference, repeats)
            seconds_onnx = measure(lambda m=model, a=a, b=b: m.run(image_a=a, image_b=b), repeats)
            for name, seconds in (
                (f"{metric} package (PyTorch)", seconds_ref),
                (f"dermsim ONNX {metric}", seconds_onnx),
            ):
                pairs = batch / seconds
                gflops = flops_pair * pairs / 1e9
                ratio = seconds_ref / seconds
                rows.append((name, batch, pairs, 1000 / pairs, ratio, gflops, 100 * gflops / peak))
    return rows


def shared_rows(scorers, k: int, size: int, repeats: int) -> list[tuple]:
    """(metric, K, pairs/s as pairs, pairs/s shared, speed-up): one region against K."""
    rng = np.random.default_rng(1)
    rows = []
    for metric in METRICS:
        model = scorers[metric]
        ref = rng.uniform(0, 1, (1, 3, size, size)).astype(np.float32)
        others = rng.uniform(0, 1, (k, 3, size, size)).astype(np.float32)
        pairwise = measure(
            lambda m=model, r=ref, o=others: m.run(image_a=np.repeat(r, k, 0), image_b=o), repeats
        )
        shared = measure(lambda m=model, r=ref, o=others: m.run(image_a=r, image_b=o), repeats)
        rows.append((metric, k, k / pairwise, k / shared, pairwise / shared))
    return rows


def table(size, flops_pair, peak, provider, rows, shared, k) -> str:
    """The Markdown tables of a run."""
    lines = [
        f"VGG16 backbone at {size}x{size}: {flops_pair / 1e9:.1f} GFLOP per pair "
        f"(two passes to relu5_3); float32 matmul peak {peak:.0f} GFLOP/s (numpy, same run); "
        f"{os.cpu_count()} CPU threads; provider {provider}",
        "",
        "| scorer | batch | pairs/s | ms/pair | speed vs package | backbone GFLOP/s "
        "| % of matmul peak |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, batch, pairs, ms, ratio, gflops, pct in rows:
        lines.append(
            f"| {name} | {batch} | {pairs:.2f} | {ms:.1f} | {ratio:.2f}x | {gflops:.0f} "
            f"| {pct:.0f}% |"
        )
    lines += [
        "",
        f"Shared reference: one region against K = {k} regions, dermsim ONNX "
        f"(2K = {2 * k} backbone passes as pairs, 1 + K = {k + 1} shared).",
        "",
        "| scorer | K | pairs/s as pairs | pairs/s shared | speed-up |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for metric, kk, as_pairs, as_shared, ratio in shared:
        lines.append(
            f"| dermsim ONNX {metric} | {kk} | {as_pairs:.2f} | {as_shared:.2f} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,16", help="batch sizes (default 1,16)")
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, median (default 5)")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        scorers, references = setup(Path(tmp))
        peak = matmul_peak()
        flops_pair = 2 * vgg16_backbone_flops(args.size)
        rows = pair_rows(scorers, references, batches, args.size, args.repeats, flops_pair, peak)
        k = max(batches)
        shared = shared_rows(scorers, k, args.size, args.repeats)
    text = table(args.size, flops_pair, peak, scorers["lpips"].provider, rows, shared, k)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
