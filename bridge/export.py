"""Export to ONNX through one bridge, from either framework, under one contract.

    python -m bridge.export --arch vgg16 --weights W.pth --kind lpips --origin keras --out models/
    python -m bridge.export --run runs/demo/vgg16-torch --kind all --out models/
    python -m bridge.export --run runs/demo --kind all --out models/demo   # every run in it
    python -m bridge.export --arch vgg16 --weights W.pth --kind lpips --precision fp32,int8

Kinds (the contract: docs/architecture.md), all float32 NCHW RGB in [0, 1] with normalisation inside
the graph, dynamic batch and (convolutional backbones) dynamic height / width:

* `classifier`: input `image` -> output `logits` (N, K);
* `features`: input `image` -> one NCHW output per tap;
* `lpips` / `dists`: inputs `image_a`, `image_b` -> output `distance` (N,); `image_a`
  may also hold a single reference scored against all N images of `image_b`. LPIPS
  scorers also output `distance_map` (N, 1, H, W), the LPIPS spatial map at the input
  size (its mean over H, W is close to `distance`, not equal: the taps' maps are
  upsampled before averaging).

torch graphs go through `torch.onnx` (dynamo exporter, opset 18, one file, without
its graph optimiser, which drops LPIPS's 1e-10 epsilon and turns 0/0 into NaN);
Keras graphs through tf2onnx (the NHWC model is wrapped in a function that transposes
inside the graph). Every file is checked against its native model on a probe batch
and refused above tolerance; a JSON manifest sits beside it.

`--precision fp32,int8` (or fp16) also writes a reduced-precision copy of each scorer
and feature extractor (`bridge.precision`: calibrated on `--calibration` images, kept
only when it agrees with the fp32 file); the fp32 file is always written, it is the
reference.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bridge.core.files import atomic_path, sha256_file
from bridge.core.graphs import GraphSpec
from bridge.core.metrics import Heads, reference_heads, uniform_heads
from bridge.core.runtime import (
    EXPORT_KINDS,
    FP32,
    KINDS,
    MANIFEST_FORMAT,
    is_masked,
    manifest_path,
    metric_of,
    model_filename,
)
from bridge.core.spec import FRAMEWORKS, ArchSpec, InputContract, get_arch
from bridge.core.training import RUN_FILE, best_checkpoint
from bridge.core.weights import KERAS_SUFFIX, StateDict, check_state_dict, read_state_dict
from bridge.precision import (
    PRECISIONS,
    REDUCIBLE_KINDS,
    add_precision_arguments,
    reduce,
    settings,
)

log = logging.getLogger(__name__)

OPSET = 18
SCORE_BOUND = 1e-5  # absolute on distances; relative to max(1, max |ref|) on LPIPS maps
FEATURE_BOUND = 1e-4  # relative to max(1, max |ref|), on logits and taps


@dataclass(frozen=True)
class Source:
    """The weights an export starts from.

    Attributes:
        name: Stem of the output files (`vgg16`, or `<run>-<arch>-<framework>`).
        spec: Architecture (at the run's image size for a ViT).
        num_classes: Head size.
        weights: The weights file (torch `.safetensors` / `.pth` or Keras `.weights.h5`).
        provenance: Where the weights come from, in words.
        contract: Input contract (normalisation put inside the graph).
        synthetic: Trained on the synthetic data set.
        run: For a training run: its folder, classes, image size, resize policy,
            splits file, best epoch and training time (copied into the manifest).
    """

    name: str
    spec: ArchSpec
    num_classes: int
    weights: Path
    provenance: str
    contract: InputContract
    synthetic: bool = False
    run: dict | None = None

    def state_dict(self) -> StateDict:
        """The weights as a checked torch-layout state dict (Keras files are ported)."""
        if self.weights.name.endswith(KERAS_SUFFIX):
            import tf_models

            model = tf_models.create_model(self.spec, self.num_classes, weights=self.weights)
            return tf_models.torch_state_dict(model)
        state = read_state_dict(self.weights)
        return check_state_dict(state, self.spec, self.num_classes, source=str(self.weights))


def source_from_weights(
    arch: str,
    weights: str | os.PathLike,
    num_classes: int | None = None,
    image_size: int | None = None,
) -> Source:
    """A source from an architecture and a weights file (head size read from the file)."""
    spec = get_arch(arch)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if num_classes is None and not path.name.endswith(KERAS_SUFFIX):
        weight = read_state_dict(path).get(f"{spec.head}.weight")
        num_classes = None if weight is None else int(weight.shape[0])
    if image_size:
        spec = spec.at_size(image_size)
    k = spec.resolve_num_classes(num_classes)
    return Source(
        spec.name, spec, k, path, f"file {path} (sha256 {sha256_file(path)})", spec.contract
    )


def run_folders(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Training run folders: each path is one, or a folder of runs (all its runs, sorted)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir() and not (path / RUN_FILE).exists():
            inner = sorted(p.parent for p in path.glob(f"*/{RUN_FILE}"))
            if inner:
                found.extend(inner)
                continue
        found.append(path)
    return found


def source_from_run(run_dir: str | os.PathLike) -> Source:
    """A source from a training run folder (its best checkpoint and run.json)."""
    run_dir = Path(run_dir)
    info_path = run_dir / RUN_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished training run (no run.json)")
    info = json.loads(info_path.read_text())
    best = best_checkpoint(run_dir, info["framework"])
    if not best.is_file():
        raise FileNotFoundError(f"{best}: the run's best checkpoint is missing")
    spec = get_arch(info["arch"]).at_size(info["image_size"])
    c = info["input_contract"]
    contract = InputContract(
        tuple(c["mean"]), tuple(c["std"]), c["native_size"], c["fixed_size"],
        interpolation=c["interpolation"], source=c["source"],
    )  # fmt: skip
    name = f"{run_dir.parent.name}-{run_dir.name}"
    provenance = (
        f"training run {run_dir} ({info['framework']}, best epoch {info['best_epoch']}, "
        f"sha256 {sha256_file(best)})"
    )
    run = {
        "dir": str(run_dir),
        "framework": info["framework"],
        "classes": list(info["classes"]),
        "image_size": info["image_size"],
        "resize_policy": info["resize_policy"],
        "splits_file": info["data"].get("splits_file"),
        "data": info["data"].get("name"),
        "best_epoch": info["best_epoch"],
        "train_seconds": info.get("train_seconds"),
        "timing": info.get("timing"),
        "seed": info.get("config", {}).get("seed"),
    }
    return Source(
        name, spec, info["num_classes"], best, provenance, contract, info["data"]["synthetic"], run
    )


def default_heads(kind: str, spec: ArchSpec, choice: str | None) -> Heads | None:
    """Heads for a scorer: `published` (ImageNet VGG16 only), `uniform` or a file path.

    Default: published heads on `vgg16` when the lpips / DISTS_pytorch packages that
    hold them are installed (else uniform, with a warning), uniform heads on every
    other backbone. A file
    is either fitted heads (`bridge.finetune_metric`, any backbone whose taps they fit;
    they carry their fit record) or the reference packages' heads (vgg16 only).
    """
    from bridge.core.metrics import is_fitted_heads, read_fitted_heads

    kind = metric_of(kind)  # a masked scorer has its metric's heads
    if kind is None:
        return None
    if choice is None and spec.name == "vgg16":
        try:
            return reference_heads(kind, spec)
        except FileNotFoundError as err:  # the packages holding them are not installed
            log.warning("%s; using uniform %s heads", err, kind)
            return uniform_heads(kind, spec)
    choice = choice or "uniform"
    if choice == "uniform":
        return uniform_heads(kind, spec)
    if choice == "published":
        return reference_heads(kind, spec)
    if is_fitted_heads(choice) or spec.name != "vgg16":
        return read_fitted_heads(choice, kind, spec)
    return reference_heads(kind, spec, path=choice)


# ------------------------------------------------------------------ exporting


def export(
    source: Source, kind: str, origin: str, out_dir: str | os.PathLike, heads: str | None = None
) -> Path:
    """Write `<name>-<kind>-<origin>.onnx` and its manifest; return the ONNX path.

    Raises:
        ValueError: Unknown kind / origin, or the export disagrees with the native
            model beyond tolerance (nothing is written then).
    """
    if kind not in EXPORT_KINDS:
        raise ValueError(
            f"unknown kind {kind!r}; expected one of {', '.join(EXPORT_KINDS)}, or all "
            f"({', '.join(KINDS)})"
        )
    if origin not in FRAMEWORKS:
        raise ValueError(f"unknown origin {origin!r}; expected torch or keras")
    chosen = default_heads(kind, source.spec, heads)
    state = source.state_dict()
    path = Path(out_dir) / model_filename(source.name, kind, origin)
    probes = _probes(source.spec, kind, source.contract.native_size)
    with atomic_path(path) as tmp:
        if origin == "torch":
            from torch_models import onnx as exporter
        else:
            from tf_models import onnx as exporter
        graph = GraphSpec(source.spec, source.num_classes, state, kind, source.contract, chosen)
        native = exporter.export(graph, tmp, OPSET, dynamic=dynamic_size(source.spec, kind))
        _name_dynamic_axes(tmp, dynamic_size(source.spec, kind))
        error, bound = _parity(tmp, native, probes, kind)
        shared = _shared_reference_works(tmp, probes[-1]) if metric_of(kind) else False
        if error > bound:
            raise ValueError(
                f"{path.name}: ONNX differs from the native {origin} model by {error:.2e} "
                f"(bound {bound:.1e}); not written"
            )
    manifest = _manifest(source, kind, origin, path, chosen, error, bound, probes)
    manifest["shared_reference"] = shared
    with atomic_path(manifest_path(path)) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("wrote %s (parity %.2e <= %.1e)", path, error, bound)
    return path


def use_python_protobuf() -> None:
    """Make protobuf use its pure-python backend; call it where an export process starts.

    tf2onnx rewrites every node's proto after each of its ~36 optimiser passes. With the
    C++ (upb) backend the replaced copies of the weights stay in protobuf's arenas, so a
    Keras export grows by the weights' size per pass (over 12 GiB for a ViT-B/16, more
    for VGG16); the pure-python backend frees them and, since `tf_models.onnx.convert`
    skips tf2onnx's proto-heavy steps, costs little time (docs/environment.md).
    protobuf reads the choice once, when it is first imported, so a process that has
    imported it already keeps its backend (a warning says so).
    """
    if "google.protobuf" in sys.modules:
        if os.environ.get("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION") != "python":
            log.warning("protobuf is already imported: Keras exports keep its C++ backend")
        return
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")


def dynamic_size(spec: ArchSpec, kind: str) -> bool:
    """Whether a graph takes any height / width.

    ViTs have a fixed grid. A VGG classifier too: ONNX has no adaptive average pool,
    so its 7 x 7 pooling is fixed to the native size when exported.
    """
    return not spec.contract.fixed_size and not (kind == "classifier" and spec.family == "vgg")


def _probes(spec: ArchSpec, kind: str, n: int) -> list[tuple[int, int, int]]:
    """Probe batch shapes (N, H, W): `n` x `n`, plus a non-square size if dynamic.

    `n` is the source's native size (a training run's image size).
    """
    shapes = [(2, n, n)]
    if dynamic_size(spec, kind):
        shapes.append((3, max(32, n // 2 + 16), max(48, n // 2 + 48)))
    return shapes


def _parity(onnx_file: Path, native, probes, kind: str) -> tuple[float, float]:
    """Max error of the ONNX file against `native` over the probes, and its bound.

    Distances are compared in absolute terms. Every other output is compared relative
    to its scale, max(1, max |native|): logits and taps against `FEATURE_BOUND`, and
    LPIPS's `distance_map` against `SCORE_BOUND`. A map is not averaged like a
    distance, so float32 rounding shows pixel by pixel, in proportion to its values.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    worst, bound = 0.0, SCORE_BOUND
    rng = np.random.default_rng(0)
    channels = [i.shape[1] for i in session.get_inputs()]
    for n, h, w in probes:
        inputs = [rng.uniform(0, 1, (n, c, h, w)).astype(np.float32) for c in channels]
        outputs = [o.name for o in session.get_outputs()]
        got = session.run(outputs, dict(zip(names, inputs, strict=True)))
        expected = native(*inputs)
        if sorted(expected) != sorted(outputs):
            raise ValueError(f"{onnx_file.name}: outputs {outputs} != native {sorted(expected)}")
        for name, g in zip(outputs, got, strict=True):
            e = expected[name]
            if g.shape != e.shape:
                raise ValueError(f"{onnx_file.name}: output shape {g.shape} != native {e.shape}")
            err = float(np.abs(g - e).max())
            if not metric_of(kind):
                bound = FEATURE_BOUND
            if metric_of(kind) and name == "distance":
                worst = max(worst, err)
            else:  # relative to scale
                worst = max(worst, err / max(1.0, float(np.abs(e).max())))
    return worst, bound


def _shared_reference_works(onnx_file: Path, probe: tuple[int, int, int]) -> bool:
    """Whether one reference in `image_a` scores against all of `image_b` as pairs would.

    Every output is compared (`distance`, and `distance_map` on LPIPS). True for the
    Keras-origin scorers and the torch-origin CNN scorers; a graph that ties the two
    batch sizes (the torch ViT's reshapes) cannot, and is scored pairwise.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    _, h, w = probe
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 1, (1, 3, h, w)).astype(np.float32)
    others = rng.uniform(0, 1, (3, 3, h, w)).astype(np.float32)
    masks = {}
    if "mask_a" in (i.name for i in session.get_inputs()):
        masks = {"mask_a": rng.uniform(0, 1, (1, 1, h, w)).astype(np.float32),
                 "mask_b": rng.uniform(0, 1, (3, 1, h, w)).astype(np.float32)}  # fmt: skip
    try:
        shared = session.run(outputs, {"image_a": ref, "image_b": others, **masks})
    except Exception:  # onnxruntime's own failure types
        return False
    repeated = {k: np.repeat(v, 3, axis=0) if k.endswith("_a") else v for k, v in masks.items()}
    pairs = session.run(
        outputs, {"image_a": np.repeat(ref, 3, axis=0), "image_b": others, **repeated}
    )
    for name, s, p in zip(outputs, shared, pairs, strict=True):
        scale = 1.0 if name == "distance" else max(1.0, float(np.abs(p).max()))
        if s.shape != p.shape or float(np.abs(s - p).max()) > SCORE_BOUND * scale:
            return False
    return True


def _name_dynamic_axes(onnx_file: Path, dynamic: bool) -> None:
    """Name the inputs' and outputs' dynamic axes; let scorer inputs differ in batch.

    Axes read `batch`, `height`, `width`. A scorer's two inputs get their own batch
    axes (`batch_a`, `batch_b`), so `image_a` may hold one reference scored against
    every image of `image_b` (1 + K backbone passes; the distance math broadcasts).
    Its outputs have one row per pair (`batch`); LPIPS's `distance_map` reads
    (`batch`, 1, `height`, `width`), the inputs' size. Intermediate shape annotations,
    which would tie the two batches, are dropped; onnxruntime infers them.
    """
    import onnx

    model = onnx.load(str(onnx_file))
    scorer = len(model.graph.input) >= 2
    del model.graph.value_info[:]
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        batch = f"batch_{value.name[-1]}" if scorer else "batch"
        for i, label in ((0, batch), (2, "height"), (3, "width")) if dynamic else ((0, batch),):
            dims[i].dim_param = label
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        if len(dims) and (dims[0].dim_param or not dims[0].dim_value):
            dims[0].dim_param = "batch"
        if scorer and value.name == "distance_map" and len(dims) == 4:
            dims[1].dim_value = 1
            if dynamic:
                dims[2].dim_param, dims[3].dim_param = "height", "width"
            else:  # the inputs' fixed size
                size = model.graph.input[0].type.tensor_type.shape.dim
                dims[2].dim_value, dims[3].dim_value = size[2].dim_value, size[3].dim_value
    onnx.save(model, str(onnx_file))


def _manifest(source, kind, origin, path, heads, error, bound, probes) -> dict:
    import onnx
    import onnxruntime

    model = onnx.load(str(path), load_external_data=False)
    tools = {
        "python": platform.python_version(),
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    if origin == "torch":
        import torch

        tools["torch"] = torch.__version__
    else:
        import tensorflow as tf
        import tf2onnx

        tools.update(tensorflow=tf.__version__, tf2onnx=tf2onnx.__version__)
    contract = source.contract.to_dict()
    inside = "mean / std above, inside the graph"
    if metric_of(kind) == "lpips" and source.spec.family == "vgg":
        inside = "lpips scaling inside the graph: (2x - 1 - shift) / scale"
    elif metric_of(kind) == "dists":
        inside = "stage 0 raw; mean / std above applied inside the graph after it"
    contract.update(layout="NCHW", dtype="float32", normalization=inside)
    return {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "precision": FP32,
        "metric": metric_of(kind),
        "masked": is_masked(kind),
        "backbone": source.spec.name,
        "num_classes": source.num_classes if kind == "classifier" else None,
        "taps": list(source.spec.tap_names) if kind == "features" else None,
        "origin": origin,
        "source_weights": {
            "file": str(source.weights),
            "sha256": sha256_file(source.weights),
            "provenance": source.provenance,
        },
        "heads": None if heads is None else heads.manifest_entry(),
        "synthetic": source.synthetic,
        "training_run": source.run,
        "input_contract": contract,
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "dynamic_size": dynamic_size(source.spec, kind),
        "opset": OPSET,
        "onnx_file": path.name,
        "onnx_sha256": sha256_file(path),
        "parity": {
            "max_error": error,
            "bound": bound,
            "measure": {
                "lpips": "absolute on distance, relative to max(1, max |native|) on distance_map",
                "dists": "absolute",
            }.get(metric_of(kind) or kind, "relative to max(1, max |native|)"),
            "probes": [list(p) for p in probes],
            "native": origin,
        },
        "tools": tools,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Export one or more kinds from a run folder or an arch + weights file."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.export", description=__doc__.split("\n\n")[0]
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--run",
        nargs="+",
        help="training run folders (runs/<name>/<arch>-<framework>), or runs/<name> for all",
    )
    src.add_argument("--arch", help="vgg16, resnet50, vit_b16 or a *_tiny variant (with --weights)")
    parser.add_argument(
        "--weights", help="torch .safetensors/.pth or Keras .weights.h5 (with --arch)"
    )
    parser.add_argument(
        "--num-classes", type=int, default=None, help="head size (default: from the file)"
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="ViT input size (default: native)"
    )
    parser.add_argument(
        "--kind",
        default="all",
        help="comma-separated: classifier, features, lpips, dists, lpips_masked, dists_masked; "
        "all: the first four (masked scorers are asked for by name)",
    )
    parser.add_argument(
        "--origin",
        default="both",
        help="torch, keras, both, or native (the framework that trained the run)",
    )
    parser.add_argument(
        "--heads", default=None, help="published, uniform or a heads file (scorers)"
    )
    parser.add_argument("--out", default="models", help="output folder (default models/)")
    parser.add_argument(
        "--precision",
        default=FP32,
        help=f"comma-separated: fp32 (always written), {', '.join(PRECISIONS)}: reduced-precision "
        "copies of scorers and feature extractors (bridge.precision)",
    )
    add_precision_arguments(parser)  # --calibration, --calibration-images, --min-srcc...
    args = parser.parse_args(argv)
    reduced = [p for p in args.precision.split(",") if p != FP32]
    unknown = [p for p in reduced if p not in PRECISIONS]
    if unknown:
        raise ValueError(
            f"unknown precision {unknown[0]!r}; expected fp32, {', '.join(PRECISIONS)}"
        )
    calibration, gate = settings(args)
    if args.arch and not args.weights:
        raise ValueError(
            "--arch needs --weights (a weights file); or export a training run with --run"
        )
    sources = (
        [source_from_run(run) for run in run_folders(args.run)]
        if args.run
        else [source_from_weights(args.arch, args.weights, args.num_classes, args.image_size)]
    )
    kinds = KINDS if args.kind == "all" else args.kind.split(",")
    if args.origin == "native" and not args.run:
        raise ValueError("--origin native (the framework that trained it) needs --run")
    for source in sources:
        if args.origin == "native":
            origins = [source.run["framework"]]
        else:
            origins = list(FRAMEWORKS) if args.origin == "both" else args.origin.split(",")
        for kind in kinds:
            for origin in origins:
                path = export(source, kind, origin, args.out, args.heads)
                print(path)  # the path, for scripts
                for precision in reduced if kind in REDUCIBLE_KINDS else ():
                    print(reduce(path, precision, args.out, calibration, gate))
                if reduced and kind not in REDUCIBLE_KINDS:
                    log.info("%s: no reduced-precision copy of a %s export", path.name, kind)
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    use_python_protobuf()
    run(main)
