"""Reduced-precision copies (`bridge.precision`): the agreement gate, manifests, labels.

Made from the shared tiny VGG16 exports (random weights, 32 px), calibrated and probed
on a small synthetic set. The full-size figures come from `benchmarks/onnx_scorers.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, copy_export, run_module

from bridge.core.runtime import manifest_path, model_label, read_manifest
from bridge.precision import Calibration, Gate, probe_pairs, recall_at_k, reduce

SMALL = {"images": 8, "probes": 16}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from bridge.core.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("precision")
    return generate(root / "synthetic", SynthConfig(per_class=10, size=48, cases=2, raters=2))


@pytest.fixture(scope="module")
def lpips_int8(tiny_exports, data, tmp_path_factory) -> tuple[Path, Path]:
    """(fp32 copy, its int8 copy) of the tiny LPIPS scorer, under the default gate."""
    folder = tmp_path_factory.mktemp("lpips-int8")
    fp32 = copy_export(tiny_exports("vgg16_tiny", "torch", "lpips"), folder)
    return fp32, reduce(fp32, "int8", calibration=Calibration(str(data), **SMALL))


def test_int8_copy_passes_the_default_gate_and_says_so(lpips_int8) -> None:
    import onnx

    fp32, int8 = lpips_int8
    assert int8.name == "vgg16_tiny-lpips-torch-int8.onnx"
    manifest = read_manifest(int8)
    assert manifest["precision"] == "int8"
    assert read_manifest(fp32)["precision"] == "fp32"
    assert manifest["reduced_from"]["sha256"] == read_manifest(fp32)["onnx_sha256"]
    agreement = manifest["agreement"]
    assert agreement["passed"] and agreement["srcc"] >= Gate().min_srcc
    assert agreement["pairs"] == SMALL["probes"] * 8  # 7 distortions + another image
    assert 0 < agreement["mean_abs_diff"] <= agreement["max_abs_diff"]
    calibration = manifest["calibration"]
    assert len(calibration["calibration_images"]) == SMALL["images"]
    assert not set(calibration["calibration_images"]) & set(calibration["probe_images"])
    assert calibration["synthetic"] is True
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert manifest["reduction"]["quantized_nodes"] > 0
    assert model_label(manifest).endswith("torch export · int8")


def test_scorer_and_score_command_say_which_precision_ran(lpips_int8, data) -> None:
    from evaluation.score import Scorer

    fp32, int8 = lpips_int8
    assert Scorer(fp32).identity()["precision"] == "fp32"
    assert Scorer(int8).identity()["precision"] == "int8"
    image = next((data / "isic2019").rglob("*.jpg"))
    result = run_module("evaluation.score", str(int8), str(image), str(image), "--json", "--cpu")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["precision"] == "int8" and printed["distance"] == pytest.approx(0.0, abs=1e-6)


def test_a_broken_calibration_is_refused_and_nothing_written(tiny_exports, tmp_path) -> None:
    """Black calibration images leave the activations' ranges far too narrow."""
    fp32 = copy_export(tiny_exports("vgg16_tiny", "torch", "lpips"), tmp_path)
    rng = np.random.default_rng(0)
    probes = rng.uniform(0.2, 0.8, (16, 3, 32, 32)).astype(np.float32)
    black = np.zeros((8, 3, 32, 32), np.float32)
    with pytest.raises(ValueError, match=r"fails the agreement gate.*not written"):
        reduce(fp32, "int8", images=(black, probes))
    assert {p.name for p in tmp_path.iterdir()} == {fp32.name, manifest_path(fp32).name}


def test_feature_extractor_copy_records_recall(tiny_exports, data, tmp_path) -> None:
    """The tiny random extractor's neighbours are near-ties: its gate is set loose here."""
    fp32 = copy_export(tiny_exports("vgg16_tiny", "torch", "features"), tmp_path)
    calibration = Calibration(str(data), **SMALL)
    int8 = reduce(fp32, "int8", calibration=calibration, gate=Gate(0.5, 0.3))
    agreement = read_manifest(int8)["agreement"]
    assert agreement["k"] == 16 and 0.3 <= agreement["recall_at_k"] <= 1.0
    assert agreement["distance"].startswith("cosine")
    with pytest.raises(ValueError, match=r"recall@16 >= 1\.01"):
        reduce(fp32, "int8", tmp_path / "strict", calibration, Gate(0.5, 1.01))
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").iterdir())


def test_fp16_copy_keeps_float32_inputs(tiny_exports, data, tmp_path) -> None:
    import onnx

    fp32 = copy_export(tiny_exports("vgg16_tiny", "torch", "dists"), tmp_path)
    fp16 = reduce(fp32, "fp16", calibration=Calibration(str(data), **SMALL))
    manifest = read_manifest(fp16)
    assert manifest["precision"] == "fp16" and manifest["calibration"] is None
    graph = onnx.load(str(fp16)).graph
    assert {i.type.tensor_type.elem_type for i in graph.input} == {onnx.TensorProto.FLOAT}
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)


def test_catalog_keeps_a_reduced_copy_apart(lpips_int8) -> None:
    from evaluation.catalog import discover

    entries, problems = discover(lpips_int8[0].parent)
    assert not problems
    assert sorted(e.label for e in entries) == ["vgg16_tiny torch", "vgg16_tiny torch int8"]


def test_recall_at_k() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert recall_at_k(x, x, 16) == 1.0
    assert recall_at_k(x, x[rng.permutation(40)], 16) < 0.8  # neighbours of other points


def test_probe_pairs_are_graded() -> None:
    base = np.random.default_rng(0).uniform(0, 1, (3, 3, 16, 16)).astype(np.float32)
    a, b, what = probe_pairs(base)
    assert a.shape == b.shape == (24, 3, 16, 16) and len(what) == 24
    noise = [float(np.abs(b[i] - a[i]).mean()) for i in (0, 3, 6)]  # 0.02, 0.05, 0.10
    assert noise == sorted(noise)
    assert np.array_equal(b[-3:], np.roll(base, -1, axis=0))


def test_refusals(lpips_int8, tiny_exports, tmp_path) -> None:
    fp32, int8 = lpips_int8
    with pytest.raises(ValueError, match="already int8"):
        reduce(int8, "fp16")
    with pytest.raises(ValueError, match="unknown precision 'bf16'"):
        reduce(fp32, "bf16")
    classifier = copy_export(tiny_exports("vgg16_tiny", "torch", "classifier"), tmp_path)
    with pytest.raises(ValueError, match="classifier export has no reduced-precision copy"):
        reduce(classifier, "int8")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    result = run_module(
        "bridge.export", "--arch", "vgg16_tiny", "--weights", str(weights), "--precision", "int4"
    )
    assert_one_line_error(result, "unknown precision 'int4'")


def test_precision_command(lpips_int8, data, tmp_path) -> None:
    fp32 = copy_export(lpips_int8[0], tmp_path)
    result = run_module(
        "bridge.precision", str(fp32), "--precision", "int8", "--out", str(tmp_path / "out"),
        "--calibration", str(data), "--calibration-images", "8", "--probe-images", "16",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = Path(result.stdout.strip())
    assert written == tmp_path / "out" / "vgg16_tiny-lpips-torch-int8.onnx"
    assert "SRCC" in result.stderr and "QuantizeLinear" not in result.stderr
    result = run_module("bridge.precision", str(fp32), "--calibration", str(tmp_path / "none"))
    assert_one_line_error(result, "none")


def test_export_command_writes_fp32_and_int8(data, tmp_path) -> None:
    """`bridge.export --precision fp32,int8`: the fp32 file, then its copy; no classifier copy."""
    from conftest import tiny_state

    from bridge.core.weights import write_state_dict

    weights = write_state_dict(tiny_state("vgg16_tiny"), tmp_path / "w.safetensors")
    out = tmp_path / "models"
    result = run_module(
        "bridge.export", "--arch", "vgg16_tiny", "--weights", str(weights),
        "--kind", "features,classifier", "--origin", "torch", "--out", str(out),
        "--precision", "fp32,int8", "--calibration", str(data), "--calibration-images", "8",
        "--probe-images", "16", "--min-srcc", "0.5", "--min-recall", "0.3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.onnx")) == [
        "vgg16_tiny-classifier-torch.onnx", "vgg16_tiny-features-torch-int8.onnx",
        "vgg16_tiny-features-torch.onnx",
    ]  # fmt: skip
    assert "no reduced-precision copy of a classifier export" in result.stderr
    assert read_manifest(out / "vgg16_tiny-features-torch-int8.onnx")["agreement"]["gate"] == {
        "min_srcc": 0.5, "min_recall": 0.3
    }  # fmt: skip


def test_vit_copy_quantizes_its_linear_layers(tiny_exports, data, tmp_path) -> None:
    """torch feeds a linear weight to MatMul through a Transpose: folded, it is quantized."""
    import onnx

    from bridge.precision import fold_weight_transposes, quantized_nodes

    fp32 = copy_export(tiny_exports("vit_b16_tiny", "torch", "features"), tmp_path)
    model = onnx.load(str(fp32))
    assert not [n for n in quantized_nodes(model)[0] if "MatMul" in n]
    assert fold_weight_transposes(model) > 0
    linear = [n for n in quantized_nodes(model)[0] if "MatMul" in n]
    int8 = reduce(fp32, "int8", calibration=Calibration(str(data), **SMALL), gate=Gate(0.5, 0.3))
    manifest = read_manifest(int8)
    assert manifest["reduction"]["quantized_nodes"] == len(linear) > 0
    graph = onnx.load(str(int8)).graph
    fed = {i for n in graph.node if n.op_type == "MatMul" for i in n.input}
    assert any(n.op_type == "DequantizeLinear" and n.output[0] in fed for n in graph.node)
