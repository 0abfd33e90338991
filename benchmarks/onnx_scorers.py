"""Benchmark: dermsim's ONNX scorers and feature extractor, fp32 and int8, against PyTorch.

    .tox/test/bin/python benchmarks/onnx_scorers.py [--batches 1,8,16] [--size 224]
        [--repeats 3] [--kinds lpips,dists,features] [--precisions fp32,int8]
        [--calibration DIR] [--out table.md]

Measured in one run, on the same inputs and the same seeded random VGG16 (no
download: the weights are written into a temporary torch hub cache that the reference
packages read):

* throughput (pairs/s, images/s for the feature extractor) of the dermsim ONNX files
  (onnxruntime, CPU) at each batch size and precision, beside the reference packages
  (lpips, DISTS_pytorch, torchvision's VGG16 features; eval mode, no_grad); ratios
  against the reference package and against the fp32 file, both from this run;
* the backbone's attained GFLOP/s (VGG16 up to relu5_3, float32-equivalent operations)
  against two peaks: the float32 matrix product measured in the same run with numpy's
  BLAS (in a child process without OpenBLAS's core-type variables, so that it picks
  the machine's best kernel; threadpoolctl names the kernel), and the theoretical peak
  (cores x clock x FLOP per cycle of the vector units, from /proc/cpuinfo);
* the agreement of each int8 copy with its fp32 file (`bridge.precision`'s probe set:
  SRCC, differences, recall@16), and whether it passes the default gate. The copies are
  built with the gate off, so that their speed is measured either way;
* whether onnxruntime's CPU provider takes bfloat16 at all (a one-node probe);
* the shared-reference case: one region against K regions costs 1 + K backbone passes
  instead of 2K.

Prints Markdown tables. Run it with a python that has dermsim and its `test` extra
installed (`tox -e test` makes one: `.tox/test/bin/python`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import torch_models  # noqa: F401  (torchvision importable on the CPU torch)
from bridge.core.runtime import open_model, read_manifest
from bridge.core.spec import get_arch, vgg_features_layout
from bridge.core.weights import random_state_dict
from bridge.export import export, source_from_weights
from bridge.precision import Calibration, Gate, reduce

KINDS = ("lpips", "dists", "features")
REFERENCE = {"lpips": "lpips package", "dists": "DISTS_pytorch", "features": "torchvision VGG16"}
BLAS_CORE_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_VERBOSE", "GOTOBLAS_CORETYPE")


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


_PEAK_CHILD = """
import json, time, numpy as np, threadpoolctl
n = 3072
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(8):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({"gflops": 2 * n**3 / best / 1e9,
                  "kernel": " ".join(f"{i['internal_api']} {i.get('architecture') or ''}"
                                     for i in info).strip()}))
"""


def measured_peak() -> dict:
    """float32 matmul GFLOP/s and BLAS kernel, in a child without core-type overrides.

    Best of 8 products of 3072 x 3072 matrices. `main` measures it before and after the
    models and keeps the higher: on a shared machine one measurement can come out low.
    """
    env = {k: v for k, v in os.environ.items() if k not in BLAS_CORE_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def this_process_kernel() -> str:
    """The BLAS kernel numpy uses in this process (what the environment's variables chose)."""
    import threadpoolctl

    info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    kernels = {f"{i['internal_api']} {i.get('architecture') or ''}".strip() for i in info}
    return ", ".join(sorted(kernels)) + f" ({len(info)} BLAS libraries loaded)"


def theoretical_peak() -> tuple[float, str]:
    """float32 GFLOP/s of the vector units, and how it was reckoned.

    FLOP per cycle per core: two FMA pipes of the widest vector unit (AVX-512 on Intel
    and on AMD Zen 5, double-pumped 256-bit on Zen 4, AVX2 otherwise). The clock is the
    one /proc/cpuinfo reports (boost may run above it).
    """
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                      if ln.startswith("flags")), []))  # fmt: skip
    mhz = max((float(ln.split(":")[1]) for ln in text.splitlines() if ln.startswith("cpu MHz")),
              default=0.0)  # fmt: skip
    vendor = next((ln.split(":")[1].strip() for ln in text.splitlines()
                   if ln.startswith("vendor_id")), "")  # fmt: skip
    family = next((int(ln.split(":")[1]) for ln in text.splitlines()
                   if ln.startswith("cpu family")), 0)  # fmt: skip
    if "avx512f" in flags and (vendor != "AuthenticAMD" or family >= 26):
        per_cycle, unit = 64, "2 x 512-bit FMA"
    elif "avx512f" in flags or ("avx2" in flags and "fma" in flags):
        per_cycle, unit = (
            32,
            "2 x 256-bit FMA" + (" (AVX-512 double-pumped)" if "avx512f" in flags else ""),
        )
    else:
        per_cycle, unit = 16, "SSE"
    cores = len(os.sched_getaffinity(0))
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16") if f in flags]
    peak = cores * mhz / 1000 * per_cycle
    return peak, (f"{cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle ({unit}); "
                  f"ISA: {', '.join(isa) or 'no AVX2'}")  # fmt: skip


def bf16_probe() -> str:
    """Whether onnxruntime's CPU provider runs a bfloat16 Conv and MatMul, in words."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    results = []
    for op, x_shape, w_shape in (("Conv", [1, 8, 8, 8], [8, 8, 3, 3]), ("MatMul", [8, 8], [8, 8])):
        x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, x_shape)
        y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, None)
        zeros = np.zeros(int(np.prod(w_shape)), np.uint16).tobytes()
        w = helper.make_tensor("w", TensorProto.BFLOAT16, w_shape, zeros, raw=True)
        graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"])], "probe", [x], [y], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            results.append(f"{op}: loads")
        except Exception as err:  # onnxruntime's own failure types
            reason = str(err).split(":")[-1].strip()[:90]
            results.append(f"{op}: refused ({reason})")
    return "; ".join(results)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(fn, repeats: int) -> float:
    """Median seconds of `fn` after one warm-up call."""
    fn()
    return statistics.median(_timed(fn) for _ in range(repeats))


def setup(home: Path, kinds, precisions, calibration: Calibration):
    """Export the fp32 files, their reduced copies, and build the reference modules.

    Returns:
        ({(kind, precision): open model}, {kind: reference callable maker},
        {(kind, precision): agreement record}).
    """
    import torch

    hub = home / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    weights = hub / "vgg16-397923af.pth"
    state = random_state_dict("vgg16", seed=0)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, weights)
    source = source_from_weights("vgg16", weights)
    models, agreements = {}, {}
    for kind in kinds:
        fp32 = export(source, kind, "torch", home / "models")
        models[kind, "fp32"] = open_model(fp32, prefer_gpu=False)
        for precision in (p for p in precisions if p != "fp32"):
            copy = reduce(fp32, precision, calibration=calibration, gate=Gate(0.0, 0.0))
            agreements[kind, precision] = read_manifest(copy)["agreement"]
            models[kind, precision] = open_model(copy, prefer_gpu=False)
    os.environ["TORCH_HOME"] = str(home)
    references = {}
    if "lpips" in kinds:
        import lpips

        references["lpips"] = lpips.LPIPS(net="vgg", verbose=False).eval()
    if "dists" in kinds:
        from DISTS_pytorch import DISTS

        references["dists"] = DISTS().eval()
    if "features" in kinds:
        import torchvision

        vgg = torchvision.models.vgg16()
        vgg.load_state_dict(torch.load(weights))
        references["features"] = vgg.features[:30].eval()  # up to relu5_3
    return models, references, agreements


def throughput_rows(models, references, kinds, precisions, batches, size, repeats, flops_image):
    """(kind, name, batch, items/s, ms/item, vs reference, vs fp32, GFLOP/s) per measurement."""
    import torch

    rows = []
    rng = np.random.default_rng(0)
    for kind in kinds:
        passes = 1 if kind == "features" else 2
        for batch in batches:
            a = rng.uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
            b = rng.uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            module = references[kind]

            def reference(module=module, ta=ta, tb=tb, kind=kind):
                with torch.no_grad():
                    if kind == "lpips":
                        return module(ta, tb, normalize=True)
                    return module(ta, tb) if kind == "dists" else module(ta)

            seconds = {"reference": measure(reference, repeats)}
            for precision in precisions:
                model = models[kind, precision]
                inputs = {"image": a} if kind == "features" else {"image_a": a, "image_b": b}
                seconds[precision] = measure(lambda m=model, x=inputs: m.run(**x), repeats)
            for name, s in seconds.items():
                label = REFERENCE[kind] + " (PyTorch)" if name == "reference" else (
                    f"dermsim ONNX {kind} {name}")  # fmt: skip
                vs_fp32 = seconds["fp32"] / s if "fp32" in seconds and name != "reference" else None
                gflops = flops_image * passes * batch / s / 1e9
                rows.append((kind, label, batch, batch / s, 1000 * s / batch,
                             seconds["reference"] / s, vs_fp32, gflops))  # fmt: skip
    return rows


def shared_rows(models, kinds, precisions, k: int, size: int, repeats: int) -> list[tuple]:
    """(scorer, K, pairs/s as pairs, pairs/s shared, speed-up): one region against K."""
    rng = np.random.default_rng(1)
    rows = []
    for kind in (k_ for k_ in kinds if k_ != "features"):
        for precision in precisions:
            model = models[kind, precision]
            ref = rng.uniform(0, 1, (1, 3, size, size)).astype(np.float32)
            others = rng.uniform(0, 1, (k, 3, size, size)).astype(np.float32)
            pairwise = measure(
                lambda m=model, r=ref, o=others: m.run(image_a=np.repeat(r, k, 0), image_b=o),
                repeats,
            )
            shared = measure(lambda m=model, r=ref, o=others: m.run(image_a=r, image_b=o), repeats)
            rows.append((f"{kind} {precision}", k, k / pairwise, k / shared, pairwise / shared))
    return rows


def tables(header: list[str], rows, agreements, shared, k, measured, theoretical) -> str:
    """The Markdown tables of a run."""
    lines = [*header, "",
             "| model | batch | items/s | ms/item | vs reference | vs fp32 | backbone GFLOP/s "
             "| % measured peak | % theoretical peak |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for _, name, batch, per_s, ms, vs_ref, vs_fp32, gflops in rows:
        fp32 = "" if vs_fp32 is None else f"{vs_fp32:.2f}x"
        lines.append(
            f"| {name} | {batch} | {per_s:.2f} | {ms:.1f} | {vs_ref:.2f}x | {fp32} | {gflops:.0f} "
            f"| {100 * gflops / measured:.0f}% | {100 * gflops / theoretical:.0f}% |"
        )
    lines += ["", "Items are pairs for the scorers, images for the feature extractor. GFLOP/s "
              "counts float32-equivalent operations (an int8 copy does the same arithmetic in "
              "integers).", ""]  # fmt: skip
    if agreements:
        gate = Gate()
        lines += [
            f"Agreement with the fp32 file on the probe set (default gate: SRCC >= "
            f"{gate.min_srcc}, recall@{gate.k} >= {gate.min_recall} for features):",
            "",
            "| copy | probe pairs | SRCC | max abs diff | mean abs diff | fp32 range "
            f"| recall@{gate.k} | gate |",
            "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
        ]
        for (kind, precision), a in agreements.items():
            recall = a.get("recall_at_k")
            passed = a["srcc"] >= gate.min_srcc and (recall is None or recall >= gate.min_recall)
            low, high = a["reference_range"]
            lines.append(
                f"| {kind} {precision} | {a['pairs']} | {a['srcc']:.5f} | {a['max_abs_diff']:.2e} "
                f"| {a['mean_abs_diff']:.2e} | {low:.3g} to {high:.3g} "
                f"| {'' if recall is None else f'{recall:.3f}'} | {'pass' if passed else 'FAIL'} |"
            )
        lines.append("")
    if shared:
        lines += [
            f"Shared reference: one region against K = {k} regions (2K = {2 * k} backbone "
            f"passes as pairs, 1 + K = {k + 1} shared).",
            "",
            "| scorer | K | pairs/s as pairs | pairs/s shared | speed-up |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, kk, as_pairs, as_shared, ratio in shared:
            lines.append(
                f"| dermsim ONNX {name} | {kk} | {as_pairs:.2f} | {as_shared:.2f} | {ratio:.2f}x |"
            )
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8,16", help="batch sizes (default 1,8,16)")
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median (3)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="lpips,dists,features")
    parser.add_argument("--precisions", default="fp32,int8", help="fp32 and reduced copies")
    parser.add_argument("--calibration", default=None, help="calibration images (synthetic set)")
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    kinds = args.kinds.split(",")
    precisions = args.precisions.split(",")
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")
    calibration = Calibration(args.calibration, size=args.size)
    before = measured_peak()
    theoretical, how = theoretical_peak()
    flops_image = vgg16_backbone_flops(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        models, references, agreements = setup(Path(tmp), kinds, precisions, calibration)
        rows = throughput_rows(
            models, references, kinds, precisions, batches, args.size, args.repeats, flops_image
        )
        k = max(batches)
        shared = shared_rows(models, kinds, precisions, k, args.size, args.repeats)
        provider = models[kinds[0], "fp32"].provider
    after = measured_peak()
    measured = max(before, after, key=lambda m: m["gflops"])
    header = [
        f"VGG16 backbone at {args.size}x{args.size}: {flops_image / 1e9:.1f} GFLOP per image "
        f"(to relu5_3; a pair is two). onnxruntime provider {provider}.",
        "",
        f"* float32 matmul peak, measured: {measured['gflops']:.0f} GFLOP/s (before the models "
        f"{before['gflops']:.0f}, after {after['gflops']:.0f}; numpy, BLAS kernel "
        f"{measured['kernel']}, OpenBLAS core-type variables unset); this process's kernel: "
        f"{this_process_kernel()}",
        f"* float32 theoretical peak: {theoretical:.0f} GFLOP/s ({how})",
        f"* bfloat16 on onnxruntime's CPU provider: {bf16_probe()}",
    ]
    text = tables(header, rows, agreements, shared, k, measured["gflops"], theoretical)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
