"""Scoring with onnxruntime alone: run by `tox -e eval`, whose env has no torch or tensorflow.

The scorer here is a hand-built ONNX graph (mean squared difference) with a dermsim
manifest: it exercises the runtime, the manifest check and the CLI, not a metric.
"""

import importlib.util
import json
import os

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error, run_module
from onnx import TensorProto, helper
from PIL import Image

from bridge.core.files import sha256_file


@pytest.fixture()
def scorer(tmp_path):
    shape = ["batch", 3, "height", "width"]
    a = helper.make_tensor_value_info("image_a", TensorProto.FLOAT, shape)
    b = helper.make_tensor_value_info("image_b", TensorProto.FLOAT, shape)
    out = helper.make_tensor_value_info("distance", TensorProto.FLOAT, ["batch"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [
        helper.make_node("Sub", ["image_a", "image_b"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("ReduceMean", ["d2", "axes"], ["distance"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "msd", [a, b], [out], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # what onnxruntime 1.31 reads
    path = tmp_path / "msd-lpips.onnx"
    onnx.save(model, str(path))
    manifest = {
        "format": "dermsim-onnx/1", "kind": "lpips", "metric": "lpips", "backbone": "test",
        "origin": "hand-built", "dynamic_size": True, "onnx_sha256": sha256_file(path),
        "input_contract": {"native_size": 32, "interpolation": "bilinear"},
    }  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(manifest))
    return path


def test_scoring_runs_without_torch_or_tensorflow(scorer, tmp_path):
    image = np.random.default_rng(0).uniform(0, 1, (40, 50, 3))
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "a.png")
    Image.fromarray((image[::-1] * 255).astype(np.uint8)).save(tmp_path / "b.png")
    result = run_module(
        "evaluation.score", str(scorer), str(tmp_path / "a.png"), str(tmp_path / "b.png")
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) > 0
    same = run_module(
        "evaluation.score", str(scorer), str(tmp_path / "a.png"), str(tmp_path / "a.png")
    )
    assert float(same.stdout) == 0.0


@pytest.mark.skipif(not os.environ.get("DERMSIM_EVAL_ONLY"), reason="only in `tox -e eval`")
def test_this_environment_has_no_frameworks():
    for name in ("torch", "tensorflow", "keras"):
        assert importlib.util.find_spec(name) is None, name


def test_tampered_file_is_refused(scorer, tmp_path):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    with open(scorer, "ab") as f:
        f.write(b"\0")
    result = run_module(
        "evaluation.score", str(scorer), str(tmp_path / "a.png"), str(tmp_path / "a.png")
    )
    assert_one_line_error(result, "does not match its manifest")


def test_compare_runs_on_onnxruntime_alone(scorer, tmp_path):
    """The comparison report from a scorer and a rated set, with no framework installed
    (in `tox -e eval`) or importable."""
    from bridge.core.data.synth import SynthConfig, generate

    data = generate(tmp_path / "synthetic", SynthConfig(per_class=3, size=40, cases=15, raters=3))
    result = run_module(
        "evaluation.compare", "--models", str(scorer.parent), "--rated", str(data / "rated"),
        "--out", str(tmp_path / "report"), "--bootstrap", "200", "--cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    rows = {r["metric"] for r in results["agreement"]["aspects"]["overall"]["rows"]}
    assert "lpips test hand-built" in rows and "true deviation (synthetic oracle)" in rows
    assert "SYNTHETIC DATA" in (tmp_path / "report" / "report.html").read_text()
