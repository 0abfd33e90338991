"""Benchmark: dermsim's ONNX LPIPS / DISTS scorers against lpips and DISTS_pytorch.

    python benchmarks/onnx_scorers.py [--batches 1,16] [--size 224] [--repeats 5] [--out FILE.md]

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch_models  # noqa: F401  (torchvision importable on the CPU torch)
from bridge.core.runtime import open_model
from bridge.core.spec import get_arch, vgg_features_layout
from bridge.core.weights import random_state_dict, write_state_dict
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


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,16", help="batch sizes (default 1,16)")
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, median (default 5)")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        weights = write_state_dict(
            random_state_dict("vgg16", seed=0), home / "hub" / "checkpoints" / "vgg16-397923af.pth"
        )
        source = source_from_weights("vgg16", weights)
        models = home / "models"
        onnx_files = {m: export(source, m, "torch", models) for m in ("lpips", "dists")}
        os.environ["TORCH_HOME"] = str(home)
        import lpips
        from DISTS_pytorch import DISTS

        references = {
            "lpips": lpips.LPIPS(net="vgg", verbose=False).eval(),
            "dists": DISTS().eval(),
        }
        scorers = {m: open_model(f, prefer_gpu=False) for m, f in onnx_files.items()}
        peak = matmul_peak()
        flops_pair = 2 * vgg16_backbone_flops(args.size)
        rows = []
        rng = np.random.default_rng(0)
        for metric in ("lpips", "dists"):
            for batch in batches:
                a = rng.uniform(0, 1, (batch, 3, args.size, args.size)).astype(np.float32)
                b = rng.uniform(0, 1, (batch, 3, args.size, args.size)).astype(np.float32)
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                ref = references[metric]

                def reference(ref=ref, ta=ta, tb=tb, metric=metric):
                    with torch.no_grad():
                        return ref(ta, tb, normalize=True) if metric == "lpips" else ref(ta, tb)

                model = scorers[metric]
                seconds_ref = measure(reference, args.repeats)
                seconds_onnx = measure(
                    lambda m=model, a=a, b=b: m.run(image_a=a, image_b=b), args.repeats
                )
                for name, seconds in (
                    (f"{metric} package (PyTorch)", seconds_ref),
                    (f"dermsim ONNX {metric}", seconds_onnx),
                ):
                    pairs = batch / seconds
                    gflops = flops_pair * pairs / 1e9
                    rows.append(
                        (
                            name,
                            batch,
                            pairs,
                            1000 * seconds / batch,
                            seconds_ref / seconds,
                            gflops,
                            100 * gflops / peak,
                        )
                    )
        # shared reference: one lesion region against K comparison regions
        k = max(batches)
        shared_rows = []
        for metric in ("lpips", "dists"):
            model = scorers[metric]
            ref = rng.uniform(0, 1, (1, 3, args.size, args.size)).astype(np.float32)
            others = rng.uniform(0, 1, (k, 3, args.size, args.size)).astype(np.float32)
            pairwise = measure(
                lambda m=model, r=ref, o=others: m.run(image_a=np.repeat(r, k, 0), image_b=o),
                args.repeats,
            )
            shared = measure(
                lambda m=model, r=ref, o=others: m.run(image_a=r, image_b=o), args.repeats
            )
            shared_rows.append((metric, k, k / pairwise, k / shared, pairwise / shared))
    lines = [
        f"VGG16 backbone at {args.size}x{args.size}: {flops_pair / 1e9:.1f} GFLOP per pair "
        f"(two passes to relu5_3); float32 matmul peak {peak:.0f} GFLOP/s (numpy, same run); "
        f"{os.cpu_count()} CPU threads; provider {scorers['lpips'].provider}",
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
    for metric, kk, as_pairs, as_shared, ratio in shared_rows:
        lines.append(
            f"| dermsim ONNX {metric} | {kk} | {as_pairs:.2f} | {as_shared:.2f} | {ratio:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
