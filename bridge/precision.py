r"""Reduced-precision copies of an export, kept only when they agree with the fp32 file.

    python -m bridge.precision models/vgg16-lpips-torch.onnx --precision int8 \\
        [--calibration data/ISIC_2019] [--calibration-images 32] [--probe-images 32]
    python -m bridge.export --arch vgg16 --weights W.pth --kind lpips --precision fp32,int8

The exact fp32 export stays the reference. From it come (`PRECISIONS`):

* `int8`: onnxruntime's static quantization in QDQ form: per-channel int8 weights and
  uint8 activations whose ranges are calibrated (min / max) on images of the user's
  data or the built-in synthetic set. Only the backbone's convolutions and matrix
  products are quantized (not the first convolution, which sees the raw image, nor a
  metric's own arithmetic: LPIPS's heads, DISTS's statistics stay float32). For the
  CPU provider: VNNI / AVX2 integer kernels.
* `fp16`: float16 weights and arithmetic, float32 inputs and outputs (the contract is
  unchanged); norms, means and divisions stay float32. For the CUDA provider.

bfloat16 is not offered: ONNX's `Conv` does not take it, and onnxruntime's CPU
provider has no fast bfloat16 kernels on x86 (`benchmarks/onnx_scorers.py` probes it).

**The gate.** A copy is written only when it agrees with the fp32 file on a fixed
probe set (`probe_pairs`): images disjoint from the calibration images, each paired
with graded distortions of itself (noise, blur, brightness, contrast) and with another
image. Scorers: the Spearman correlation of their distances must reach `Gate.min_srcc`
(0.999). Feature extractors: the same on the cosine distance of their embedding (the
deepest tap, averaged over the grid, as `evaluation.embedding` pools it), and the
recall@16 of exact nearest neighbours among the probe images must reach
`Gate.min_recall` (0.98). Max and mean absolute differences are stored beside. The
manifest says the precision, the calibration data and the agreement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bridge.core.files import atomic_path, sha256_file
from bridge.core.runtime import (
    FP32,
    MASKED_KINDS,
    SCORER_KINDS,
    manifest_path,
    metric_of,
    model_filename,
    model_name,
    precision_of,
    read_manifest,
    verify,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """A number format an export can be copied to.

    Attributes:
        name: `int8`, `fp16`.
        description: What the copy holds, in words (copied into its manifest).
        provider: The onnxruntime provider it is meant to run fast on.
        calibrated: Whether it needs calibration images.
    """

    name: str
    description: str
    provider: str
    calibrated: bool


PRECISIONS = {
    p.name: p
    for p in (
        Precision(
            "int8",
            "static QDQ quantization: int8 per-channel weights, uint8 activations "
            "calibrated (min / max) on images; backbone convolutions and matrix products "
            "only (not the first convolution, not the metric's arithmetic)",
            "CPUExecutionProvider",
            True,
        ),
        Precision(
            "fp16",
            "float16 weights and arithmetic, float32 inputs and outputs; norms, means and "
            "divisions in float32",
            "CUDAExecutionProvider",
            False,
        ),
    )
}
INT8_PASS_THROUGH = ("Relu", "MaxPool")
"""Ops an int8 copy runs on int8 values between quantized convolutions (the backbone's
ReLU folds into the quantization, max-pooling is order-preserving), so that onnxruntime
chains integer convolutions without going back to float in between."""
REDUCIBLE_KINDS = (*SCORER_KINDS, *MASKED_KINDS, "features")
FP16_FLOAT32_OPS = ("Sqrt", "Pow", "Div", "ReduceSum", "ReduceMean", "Resize", "Reciprocal")
"""Ops an fp16 copy keeps in float32: the metric's norms, means and divisions (LPIPS's
1e-10 epsilon is below float16's range)."""

# Graded distortions of the probe set: (name, kind, strength).
DISTORTIONS = (
    ("noise 0.02", "noise", 0.02),
    ("noise 0.05", "noise", 0.05),
    ("noise 0.10", "noise", 0.10),
    ("blur 1 px", "blur", 1.0),
    ("blur 2 px", "blur", 2.0),
    ("brighter +0.08", "brightness", 0.08),
    ("contrast x0.8", "contrast", 0.8),
)


@dataclass(frozen=True)
class Gate:
    """The agreement a reduced-precision copy must reach with its fp32 file.

    Attributes:
        min_srcc: Spearman correlation of the distances on the probe set.
        min_recall: Feature extractors: recall@k of the reduced copy's nearest
            neighbours against the fp32 file's.
        k: The neighbours counted.
    """

    min_srcc: float = 0.999
    min_recall: float = 0.98
    k: int = 16


@dataclass(frozen=True)
class Calibration:
    """Where the calibration and probe images come from.

    Attributes:
        data: A folder or table of images (anything `evaluation.archive.read_archive`
            reads: ISIC / HAM10000 tables, class folders, plain images). None: the
            built-in synthetic set.
        images: Calibration images (int8).
        probes: Probe images, drawn after the calibration images (never the same);
            each gives one pair per distortion and one with another image.
        size: Side every image is fitted to (default: the export's native size).
        seed: The draw of the images and of the noise.
    """

    data: str | None = None
    images: int = 32
    probes: int = 32
    size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.images < 1 or self.probes < 2:
            raise ValueError(
                f"calibration needs >= 1 image and >= 2 probe images, got {self.images} "
                f"and {self.probes}"
            )


# ------------------------------------------------------------------ images


def load_images(
    calibration: Calibration, size: int, policy: str | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Calibration and probe images (N, 3, size, size) in [0, 1], and where they came from.

    The images are a seeded draw from the source; the probe images follow the
    calibration images in that draw, so the two never overlap. Each is fitted to
    `size` by the project's one input chain, under `policy` (default: its default).

    Raises:
        ValueError: If the source holds fewer images than both sets need, or an image
            cannot be read.
    """
    from bridge.core.data import synth
    from bridge.core.data.image import DEFAULT_POLICY, decode_image, model_input
    from evaluation.archive import read_archive

    source = Path(calibration.data) if calibration.data else synth.default_root()
    archive = read_archive(source)
    need = calibration.images + calibration.probes
    if len(archive.items) < need:
        raise ValueError(
            f"{source}: {len(archive.items)} images; calibration needs {need} "
            f"({calibration.images} to calibrate, {calibration.probes} to probe)"
        )
    order = np.random.default_rng(calibration.seed).permutation(len(archive.items))[:need]
    items = [archive.items[i] for i in order]
    policy = policy or DEFAULT_POLICY
    pixels = np.stack(
        [model_input(decode_image(it.path), size, policy, box=it.box).transpose(2, 0, 1)
         for it in items]
    ).astype(np.float32)  # fmt: skip
    record = {
        "data": str(source),
        "synthetic": archive.synthetic,
        "format": archive.format,
        "calibration_images": [it.id for it in items[: calibration.images]],
        "probe_images": [it.id for it in items[calibration.images :]],
        "size": size,
        "policy": policy,
        "seed": calibration.seed,
    }
    return pixels[: calibration.images], pixels[calibration.images :], record


def distort(images: np.ndarray, kind: str, strength: float, seed: int) -> np.ndarray:
    """One graded distortion of (N, 3, H, W) images in [0, 1] (`DISTORTIONS`)."""
    from scipy.ndimage import gaussian_filter

    if kind == "noise":
        noise = np.random.default_rng(seed).normal(0.0, strength, images.shape)
        out = images + noise
    elif kind == "blur":
        out = gaussian_filter(images, (0, 0, strength, strength), mode="reflect")
    elif kind == "brightness":
        out = images + strength
    elif kind == "contrast":
        mean = images.mean(axis=(1, 2, 3), keepdims=True)
        out = mean + strength * (images - mean)
    else:
        raise ValueError(f"unknown distortion {kind!r}; expected noise, blur, brightness, contrast")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def probe_pairs(base: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The probe set: each image against each distortion of itself and the next image.

    Returns:
        (a, b, what) with a, b (P * (len(DISTORTIONS) + 1), 3, H, W) and what each pair is.
    """
    a, b, what = [], [], []
    for i, (name, kind, strength) in enumerate(DISTORTIONS):
        a.append(base)
        b.append(distort(base, kind, strength, seed + i))
        what += [name] * len(base)
    a.append(base)
    b.append(np.roll(base, -1, axis=0))
    what += ["another image"] * len(base)
    return np.concatenate(a), np.concatenate(b), what


# ---------------------------------------------------------------- building


def fold_weight_transposes(model) -> int:
    """Replace each Transpose of a stored tensor by the transposed tensor; how many.

    torch's exporter feeds a linear layer's weight to MatMul through a Transpose: folded,
    the weight is a stored tensor the quantizer treats as a weight (per output channel).
    """
    from onnx import helper, numpy_helper

    stored = {i.name: i for i in model.graph.initializer}
    kept, folded = [], 0
    for node in model.graph.node:
        if node.op_type == "Transpose" and len(node.input) == 1 and node.input[0] in stored:
            weight = numpy_helper.to_array(stored[node.input[0]])
            perm = next(
                (helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"), None
            )
            transposed = np.ascontiguousarray(np.transpose(weight, perm))
            model.graph.initializer.append(numpy_helper.from_array(transposed, node.output[0]))
            folded += 1
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return folded


def quantized_nodes(model) -> tuple[list[str], list[str]]:
    """The backbone nodes an int8 copy quantizes, and the weighted ones it keeps float.

    Quantized: convolutions and matrix products whose weight is a stored tensor with
    more than one output channel, not grouped, and not fed the raw image (3 input
    channels). Kept: LPIPS's 1-channel heads, DISTS's grouped L2 pooling, the first
    convolution, products of two activations (attention).
    """
    from onnx import helper

    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    quantize, keep = [], []
    for node in model.graph.node:
        if node.op_type in INT8_PASS_THROUGH:
            quantize.append(node.name)
            continue
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        dims = weights.get(node.input[1])
        if dims is None:
            continue  # two activations (attention), or a weight computed in the graph
        groups = next(
            (helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1
        )
        if node.op_type == "Conv":
            out_channels, in_channels = dims[0], dims[1]
        else:  # MatMul (K, N) / Gemm (K, N) or transposed: the smaller side counts
            out_channels, in_channels = dims[-1], dims[0]
        if out_channels <= 1 or groups != 1 or in_channels == 3:
            keep.append(node.name)
        else:
            quantize.append(node.name)
    return quantize, keep


def _inputs(kind: str, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """The graph inputs of one batch: a features export sees `a` only."""
    if kind == "features":
        return {"image": a}
    inputs = {"image_a": a, "image_b": b}
    if kind in MASKED_KINDS:
        ones = np.ones((len(a), 1, *a.shape[2:]), np.float32)
        inputs.update(mask_a=ones, mask_b=ones)
    return inputs


def quantize_int8(source: Path, out: Path, kind: str, images: np.ndarray, seed: int) -> dict:
    """Write the int8 copy of `source` to `out`, calibrated on `images`; what was done."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from tqdm import tqdm

    model = onnx.load(str(source))
    fold_weight_transposes(model)
    quantize, keep = quantized_nodes(model)
    if not any(n.op_type not in INT8_PASS_THROUGH for n in model.graph.node if n.name in quantize):
        # an empty list would make onnxruntime quantize every node, metric arithmetic included
        raise ValueError(f"{source.name}: no backbone convolution or matrix product to quantize")
    # scorers calibrate on pairs as they score them, an image and a distortion of it, in
    # both orders: a graph with one backbone per input then gets the same ranges in both,
    # so that a region scored against itself is still at distance 0
    distorted = [distort(images[i : i + 1], "noise", 0.05, seed + i) for i in range(len(images))]
    partners = np.concatenate(distorted)
    batches = []
    for i in range(0, len(images), 4):
        batches.append(_inputs(kind, images[i : i + 4], partners[i : i + 4]))
        if kind != "features":
            batches.append(_inputs(kind, partners[i : i + 4], images[i : i + 4]))

    class Reader(CalibrationDataReader):
        def __init__(self, bar):
            self._batches, self._bar = iter(batches), bar

        def get_next(self):
            batch = next(self._batches, None)
            self._bar.update(batch is not None)
            return batch

    with (
        tempfile.TemporaryDirectory(prefix="dermsim-calibrate-") as tmp,
        _quiet_quantizer(),
        tqdm(total=len(batches), desc="calibrating", unit="batch") as bar,
    ):
        folded = Path(tmp) / "folded.onnx"
        onnx.save(model, str(folded))
        quantize_static(
            str(folded), str(out), Reader(bar), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "MatMul", "Gemm", *INT8_PASS_THROUGH],
            nodes_to_quantize=quantize,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibTmpDir": tmp},  # its augmented model, not beside the export
        )  # fmt: skip
    return {
        "method": "onnxruntime quantize_static, QDQ, min / max calibration",
        "weights": "int8, per output channel, symmetric",
        "activations": "uint8, per tensor",
        "quantized_nodes": len(quantize),
        "float_nodes": keep,
    }


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Hold back onnxruntime's quantizer chatter while it runs.

    It logs a line per node on the root logger, and its calibration sessions warn
    about reused buffers.
    """
    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        root.setLevel(level)
        ort.set_default_logger_severity(2)


def convert_fp16(source: Path, out: Path) -> dict:
    """Write the fp16 copy of `source` to `out` (float32 inputs and outputs); what was done."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(source))
    blocked = sorted({*DEFAULT_OP_BLOCK_LIST, *FP16_FLOAT32_OPS})
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    _drop_repeated_casts(half)
    onnx.save(half, str(out))
    return {"method": "onnxruntime float16 converter", "float32_ops": list(FP16_FLOAT32_OPS)}


def _drop_repeated_casts(model) -> None:
    """Remove the converter's second copy of a cast, and give clashing node names a suffix.

    Where one tensor feeds two float32 ops, onnxruntime's float16 converter adds the
    same cast (same input, same output name) once per op: an invalid graph.
    """
    produced: dict[str, tuple] = {}
    names: set[str] = set()
    kept = []
    for i, node in enumerate(model.graph.node):
        key = (node.op_type, tuple(node.input), tuple(str(a) for a in node.attribute))
        if node.op_type == "Cast" and node.output[0] in produced:
            if produced[node.output[0]] != key:
                raise ValueError(f"float16 converter: two different casts make {node.output[0]}")
            continue
        for output in node.output:
            produced[output] = key
        if node.name in names:
            node.name = f"{node.name}_{i}"
        names.add(node.name)
        kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)


# --------------------------------------------------------------- agreement


def _session(path: Path, provider: str):
    import onnxruntime as ort

    from bridge.core.runtime import providers

    options = ort.SessionOptions()
    options.log_severity_level = 3
    wanted = providers(prefer_gpu=provider == "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), options, providers=wanted)
    except Exception as err:  # onnxruntime's own failure types
        raise ValueError(
            f"{path.name}: onnxruntime cannot load it ({str(err).splitlines()[0][:200]})"
        ) from None


def _distances(
    session, kind: str, a: np.ndarray, b: np.ndarray, label: str, tap: str | None, batch: int = 16
) -> np.ndarray:
    """Distances of probe pairs (scorers), or the extractor's embeddings of `a` from `tap`."""
    from tqdm import tqdm

    out = []
    for start in tqdm(range(0, len(a), batch), desc=f"probing {label}", unit="batch"):
        inputs = _inputs(kind, a[start : start + batch], b[start : start + batch])
        if kind == "features":
            out.append(_embed(session, inputs, tap))
        else:
            out.append(session.run(["distance"], inputs)[0].astype(np.float64))
    return np.concatenate(out)


def _embed(session, inputs: dict[str, np.ndarray], tap: str) -> np.ndarray:
    """L2-normalised grid averages of a tap, as `evaluation.embedding` pools them."""
    from evaluation.embedding import normalise, pool

    output = session.run([tap], inputs)[0]
    return normalise(pool(np.asarray(output, np.float64), "gap")).astype(np.float64)


def recall_at_k(reference: np.ndarray, reduced: np.ndarray, k: int) -> float:
    """Mean share of each vector's k exact nearest neighbours (itself left out) kept.

    Both are (N, D) unit vectors; neighbours by inner product, ties by index.
    """
    k = min(k, len(reference) - 1)

    def neighbours(x):
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    ref, red = neighbours(reference), neighbours(reduced)
    return float(np.mean([len(set(r) & set(q)) / k for r, q in zip(ref, red, strict=True)]))


def agreement(
    reference: Path, reduced: Path, manifest: dict, probes: np.ndarray, gate: Gate,
    provider: str, seed: int = 0,
) -> dict:  # fmt: skip
    """How the reduced copy agrees with the fp32 file (its `manifest`) on the probe set."""
    from scipy.stats import spearmanr

    from evaluation.embedding import grid_taps

    kind = manifest["kind"]
    tap = grid_taps(manifest)[-1] if kind == "features" else None  # the embedding's default

    a, b, _ = probe_pairs(probes, seed)
    ref_session, red_session = _session(reference, provider), _session(reduced, provider)
    result: dict = {"pairs": len(a), "probe_images": len(probes),
                    "distortions": [d[0] for d in DISTORTIONS] + ["another image"],
                    "provider": red_session.get_providers()[0]}  # fmt: skip
    if kind == "features":
        images = np.concatenate([probes, b[: len(b) - len(probes)]])  # each image once
        ref_vectors = _distances(ref_session, kind, images, images, FP32, tap)
        red_vectors = _distances(red_session, kind, images, images, "copy", tap)
        n = len(probes)
        pair_index = [(i % n, n + i) for i in range(len(b) - n)] + [
            (i, (i + 1) % n) for i in range(n)
        ]
        ref_d = np.array([1.0 - ref_vectors[i] @ ref_vectors[j] for i, j in pair_index])
        red_d = np.array([1.0 - red_vectors[i] @ red_vectors[j] for i, j in pair_index])
        result["recall_at_k"] = recall_at_k(ref_vectors, red_vectors, gate.k)
        result["k"] = gate.k
        result["distance"] = f"cosine distance of {tap}'s grid average"
    else:
        ref_d = _distances(ref_session, kind, a, b, FP32, None)
        red_d = _distances(red_session, kind, a, b, "copy", None)
        result["distance"] = metric_of(kind)
    diff = np.abs(red_d - ref_d)
    result.update(
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        srcc=float(spearmanr(ref_d, red_d).statistic),
        reference_range=[float(ref_d.min()), float(ref_d.max())],
        gate={"min_srcc": gate.min_srcc, **({"min_recall": gate.min_recall} if kind == "features"
                                          else {})},
    )  # fmt: skip
    result["passed"] = bool(
        np.isfinite(red_d).all()
        and result["srcc"] >= gate.min_srcc
        and (kind != "features" or result["recall_at_k"] >= gate.min_recall)
    )
    return result


def agreement_text(result: dict) -> str:
    """One line: SRCC, recall and differences of an agreement record."""
    text = (
        f"SRCC {result['srcc']:.5f} over {result['pairs']} probe pairs, max |diff| "
        f"{result['max_abs_diff']:.2e}, mean |diff| {result['mean_abs_diff']:.2e}"
    )
    if "recall_at_k" in result:
        text += f", recall@{result['k']} {result['recall_at_k']:.3f}"
    return text


# ------------------------------------------------------------------ reduce


def reduce(
    onnx_path: str | os.PathLike,
    precision: str,
    out_dir: str | os.PathLike | None = None,
    calibration: Calibration = Calibration(),
    gate: Gate = Gate(),
    images: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write a reduced-precision copy of an fp32 export, if it passes the gate.

    Args:
        onnx_path: The fp32 scorer or feature extractor (`bridge.export`).
        precision: `int8` or `fp16` (`PRECISIONS`).
        out_dir: Where the copy goes (default: beside the fp32 file), named
            `<name>-<kind>-<origin>-<precision>.onnx` with its manifest.
        calibration: Where the calibration and probe images come from.
        gate: The agreement it must reach.
        images: (calibration, probe) images (N, 3, H, W) in [0, 1] given directly,
            instead of `calibration`'s source (its seed still draws the noise).

    Returns:
        The copy's ONNX path.

    Raises:
        ValueError: Unknown precision, a kind that has no reduced copy, a file that is
            not fp32, or a copy that fails the gate (nothing is written then).
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)} "
            f"(fp32 is the export itself)"
        )
    spec = PRECISIONS[precision]
    source = Path(onnx_path)
    manifest = read_manifest(source)
    verify(source, manifest)
    kind = manifest["kind"]
    if kind not in REDUCIBLE_KINDS:
        raise ValueError(
            f"{source.name}: a {kind} export has no reduced-precision copy; expected one of "
            f"{', '.join(REDUCIBLE_KINDS)}"
        )
    if precision_of(manifest) != FP32:
        raise ValueError(
            f"{source.name}: already {precision_of(manifest)}; start from the fp32 file"
        )
    out_dir = Path(out_dir) if out_dir is not None else source.parent
    name = model_name(source, manifest)
    path = out_dir / model_filename(name, kind, manifest["origin"], precision)
    size = calibration.size or int(manifest["input_contract"]["native_size"])
    if images is None:
        policy = (manifest.get("training_run") or {}).get("resize_policy")
        calibration_images, probes, record = load_images(calibration, size, policy)
    else:
        calibration_images, probes = images
        record = {"data": "arrays given to bridge.precision.reduce",
                  "calibration_images": len(calibration_images),
                  "probe_images": len(probes), "size": int(probes.shape[-1]),
                  "seed": calibration.seed}  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if precision == "int8":
            how = quantize_int8(source, tmp, kind, calibration_images, calibration.seed)
        else:
            how = convert_fp16(source, tmp)
        result = agreement(source, tmp, manifest, probes, gate, spec.provider, calibration.seed)
        if not result["passed"]:
            raise ValueError(
                f"{path.name}: {precision} copy fails the agreement gate "
                f"(SRCC >= {gate.min_srcc}"
                + (f", recall@{gate.k} >= {gate.min_recall}" if kind == "features" else "")
                + f"): {agreement_text(result)}; not written"
            )
    copy = dict(manifest)
    copy.update(
        precision=precision,
        onnx_file=path.name,
        onnx_sha256=sha256_file(path),
        reduced_from={
            "file": source.name,
            "sha256": manifest["onnx_sha256"],
            "precision": FP32,
        },
        reduction={
            "precision": precision,
            "description": spec.description,
            "runs_fast_on": spec.provider,
            **how,
        },
        calibration=record if spec.calibrated else None,
        agreement=result,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    with atomic_path(manifest_path(path)) as tmp:
        tmp.write_text(json.dumps(copy, indent=2) + "\n")
    log.info("wrote %s (%s)", path, agreement_text(result))
    return path


def add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    """The calibration and gate options (`bridge.precision` and `bridge.export`)."""
    parser.add_argument(
        "--calibration",
        default=None,
        help="images to calibrate and probe on: a folder or table (ISIC / HAM10000, class "
        "folders, plain images); default: the built-in synthetic set",
    )
    parser.add_argument(
        "--calibration-images", type=int, default=Calibration.images, help="int8: (32)"
    )
    parser.add_argument(
        "--probe-images", type=int, default=Calibration.probes, help="agreement probes (32)"
    )
    parser.add_argument(
        "--calibration-size", type=int, default=None, help="their side (the export's native size)"
    )
    parser.add_argument(
        "--min-srcc", type=float, default=Gate.min_srcc, help="gate: SRCC vs fp32 (0.999)"
    )
    parser.add_argument(
        "--min-recall",
        type=float,
        default=Gate.min_recall,
        help="gate: recall@16 of feature extractors vs fp32 (0.98)",
    )


def settings(args: argparse.Namespace) -> tuple[Calibration, Gate]:
    """The calibration and gate of parsed `add_precision_arguments`."""
    calibration = Calibration(
        args.calibration, args.calibration_images, args.probe_images, args.calibration_size
    )
    return calibration, Gate(args.min_srcc, args.min_recall)


def main(argv: Sequence[str] | None = None) -> int:
    """Write reduced-precision copies of fp32 exports."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.precision", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("models", nargs="+", help="fp32 scorer / feature extractor .onnx files")
    parser.add_argument(
        "--precision", default="int8", help=f"comma-separated: {', '.join(PRECISIONS)} (int8)"
    )
    parser.add_argument("--out", default=None, help="output folder (default: beside each file)")
    add_precision_arguments(parser)
    args = parser.parse_args(argv)
    calibration, gate = settings(args)
    for model in args.models:
        for precision in args.precision.split(","):
            print(reduce(model, precision, args.out, calibration, gate))
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
