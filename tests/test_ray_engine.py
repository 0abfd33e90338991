"""evaluation.ray_engine: `--engine ray` gives the local engine's numbers, in input order,
and a worker killed mid-run loses no row and repeats none.

One local Ray cluster (2 CPUs) serves the whole file. The models are hand-built ONNX
graphs (convolutions, so onnxruntime's threading is exercised) with dermsim manifests:
quick to make, and the engines run them exactly as they run exported ones.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_module

from bridge.core.files import sha256_file
from evaluation.embedding import EmbedJob
from evaluation.engines import EngineOptions, local_map_batches
from evaluation.ray_engine import ROW, in_row_order, ray_map_batches
from evaluation.score import ScoreJob

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray's own

WORKERS = 2


# ------------------------------------------------------------------ fixtures


def _save(graph, path: Path, manifest: dict) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # what onnxruntime 1.31 reads
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "format": "dermsim-onnx/1", "backbone": "test_conv", "origin": "hand-built",
                "dynamic_size": True, "onnx_sha256": sha256_file(path),
                "input_contract": {"native_size": 32, "interpolation": "bilinear"},
                **manifest,
            }
        )
    )  # fmt: skip
    return path


def _weights(rng, name: str, c_in: int, c_out: int):
    from onnx import numpy_helper

    return numpy_helper.from_array(rng.normal(0, 0.3, (c_out, c_in, 3, 3)).astype(np.float32), name)


def _conv(x: str, weights: str, out: str) -> list:
    """A stride-2 3x3 convolution and a ReLU."""
    from onnx.helper import make_node

    return [
        make_node("Conv", [x, weights], [f"{out}_conv"], strides=[2, 2], pads=[1, 1, 1, 1]),
        make_node("Relu", [f"{out}_conv"], [out]),
    ]


def make_features(path: Path) -> Path:
    """A two-tap convolutional feature extractor (taps `block1`, `block2`)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    grid = ["batch", "channels", "h", "w"]
    graph = helper.make_graph(
        _conv("image", "w1", "block1") + _conv("block1", "w2", "block2"),
        "features",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "H", "W"])],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, grid) for t in ("block1", "block2")],
        initializer=[_weights(rng, "w1", 3, 8), _weights(rng, "w2", 8, 16)],
    )
    return _save(
        graph,
        path,
        {"kind": "features", "metric": None, "taps": ["block1", "block2"],
         "inputs": ["image"], "outputs": ["block1", "block2"]},
    )  # fmt: skip


def make_scorer(path: Path) -> Path:
    """An LPIPS-like scorer: mean squared difference of one shared convolution's output."""
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    diff = [
        helper.make_node("Sub", ["fa", "fb"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("ReduceMean", ["d2", "axes"], ["distance"], keepdims=0),
    ]
    image = ["batch", 3, "H", "W"]
    graph = helper.make_graph(
        _conv("image_a", "w", "fa") + _conv("image_b", "w", "fb") + diff,
        "scorer",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, image)
            for n in ("image_a", "image_b")
        ],
        [helper.make_tensor_value_info("distance", TensorProto.FLOAT, ["batch"])],
        initializer=[_weights(np.random.default_rng(1), "w", 3, 8), axes],
    )
    return _save(graph, path, {"kind": "lpips", "metric": "lpips"})


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster of 2 CPUs for the file; its GCS address."""
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    auth_mode = os.environ.get("RAY_AUTH_MODE")  # ray.init sets it for this process
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    # the test's own jobs travel by value: Ray's workers cannot import this file
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.shutdown()
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_mode


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Synthetic images, a pairs table over them, a feature extractor and a scorer."""
    from bridge.core.data import synth

    root = tmp_path_factory.mktemp("ray-engine")
    data = synth.generate(root / "data", synth.SynthConfig(per_class=12, size=48, cases=4))
    images = sorted((data / "isic2019").rglob("*.jpg"))
    boxes = ["", "0,0,32,32", "8,4,24,40", "", "10,10,20,20", "0,0,48,24"]
    pairs = root / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "image_a", "box_a", "image_b", "box_b"])
        for i in range(14):  # mixed sizes: same-size pairs keep theirs, others are fitted
            a, b = images[i], images[(5 * i + 3) % len(images)]
            writer.writerow([f"p{i:02d}", a, boxes[i % 6], b, boxes[(i + 2) % 6]])
    models = root / "models"
    models.mkdir()
    return {
        "data": data,
        "images": images,
        "pairs": pairs,
        "features": make_features(models / "conv-features-test.onnx"),
        "scorer": make_scorer(models / "conv-lpips-test.onnx"),
    }


def ray_options(batch: int) -> EngineOptions:
    return EngineOptions("ray", workers=WORKERS, batch_size=batch)


# ------------------------------------------------------------------ gathering (no Ray)


def test_runs_are_gathered_in_row_order_exactly_once():
    def block(rows):
        rows = np.asarray(rows)
        return {ROW: rows, "x": rows * 10.0, "s": np.array([f"r{r}" for r in rows])}

    blocks = [block([4, 5]), block([1, 0]), block([2, 6, 3])]
    got = list(in_row_order(blocks, 7))
    starts = [start for start, _ in got]
    x = np.concatenate([run["x"] for _, run in got])
    assert starts == sorted(starts) and starts[0] == 0
    assert x.tolist() == [r * 10.0 for r in range(7)]
    assert got[0][1]["s"].dtype == object  # text as the local engine gives it
    with pytest.raises(RuntimeError, match="twice"):
        list(in_row_order([block([0, 1]), block([1])], 2))
    with pytest.raises(RuntimeError, match="returned 2 of 3 rows"):
        list(in_row_order([block([0, 2])], 3))


def test_evaluation_imports_without_ray():
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import evaluation.engines, evaluation.index, evaluation.score, evaluation.ray_engine\n"
        "from evaluation.ray_engine import ray_map_batches\n"
        "from evaluation.engines import EngineOptions\n"
        "try:\n"
        "    list(ray_map_batches(None, {'path': ['a']}, EngineOptions('ray')))\n"
        "except ValueError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'dermsim[scale]'" in result.stdout


# ------------------------------------------------------------------ equal to the local engine


def _index_rows(folder: Path) -> tuple[list[str], np.ndarray]:
    ids, vectors = [], []
    for shard in sorted((folder / "shards").glob("*.npz")):
        with np.load(shard) as data:
            ids += data["id"].tolist()
            vectors.append(data["vectors"])
    return ids, np.concatenate(vectors)


def test_index_build_on_ray_equals_the_local_build(cluster, fx, tmp_path):
    from evaluation.index import BuildOptions, build

    local = build(fx["features"], fx["data"], tmp_path / "local", BuildOptions(prefer_gpu=False))
    on_ray = build(
        fx["features"],
        fx["data"],
        tmp_path / "ray",
        BuildOptions(prefer_gpu=False, shard_size=8, engine=ray_options(4)),
    )
    assert on_ray["count"] == local["count"] == len(fx["images"])
    assert on_ray["last_build"] == local["last_build"]
    ids, vectors = _index_rows(tmp_path / "ray")
    local_ids, local_vectors = _index_rows(tmp_path / "local")
    assert ids == local_ids
    np.testing.assert_allclose(vectors, local_vectors, atol=1e-6, rtol=0)
    assert ray.is_initialized()  # the engine leaves a Ray it did not start as it was


def _scores(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_score_pairs_on_ray_equals_the_local_csv(cluster, fx, tmp_path):
    from bridge.core.data.ratings import read_region_pairs
    from evaluation.score import Scorer
    from evaluation.score import main as score_main

    local, remote = tmp_path / "local.csv", tmp_path / "ray.csv"
    common = [str(fx["scorer"]), "--pairs", str(fx["pairs"]), "--cpu", "--batch", "3"]
    assert score_main([*common, "--out", str(local)]) == 0
    result = run_module(
        "evaluation.score", *common, "--out", str(remote),
        "--engine", "ray", "--address", cluster, "--workers", str(WORKERS),
        env={"RAY_AUTH_MODE": "token"},  # with an explicit address, Ray sends the token only so
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows, ray_rows = _scores(local), _scores(remote)
    assert [r["id"] for r in rows] == [f"p{i:02d}" for i in range(14)]  # input order
    for row, again in zip(rows, ray_rows, strict=True):
        assert {k: v for k, v in again.items() if k != "lpips"} == {
            k: v for k, v in row.items() if k != "lpips"
        }
        assert float(again["lpips"]) == pytest.approx(float(row["lpips"]), abs=1e-6)
    # the local engine writes what Scorer.score_pairs gave before engines existed
    table = read_region_pairs(fx["pairs"])
    scorer = Scorer(fx["scorer"], prefer_gpu=False)
    items = [(p.image_a, p.box_a, p.image_b, p.box_b) for p in table.pairs]
    assert [r["lpips"] for r in rows] == [f"{d:.8g}" for d in scorer.score_pairs(items, 3)]
    assert ray.cluster_resources().get("CPU") == 2  # the CLI left the cluster it joined running


def test_a_workers_user_error_is_one_line_and_writes_nothing(cluster, fx, tmp_path):
    from bridge.core.data.image import parse_box
    from bridge.core.data.ratings import RegionPair
    from evaluation.score import score_table

    a, b = fx["images"][:2]
    pairs = [
        RegionPair(f"q{i}", a, parse_box(box) if box else None, b, None)
        for i, box in enumerate(["", "", "", "0,0,8,8", ""])
    ]  # fmt: skip  (the fourth region is under the 16 px minimum)
    job = ScoreJob(str(fx["scorer"]), prefer_gpu=False)
    with pytest.raises(ValueError) as caught:
        score_table(pairs, job, "lpips", tmp_path / "s.csv", ray_options(2))
    message = str(caught.value)
    assert message.startswith("region 0,0,8,8 of ") and "\n" not in message, message
    assert "Error" not in message and "Traceback" not in message, message  # no Ray wrapper
    assert not list(tmp_path.iterdir())  # the CSV is written whole or not at all


# ------------------------------------------------------------------ faults


@dataclass(frozen=True)
class SlowJob:
    """An embedding job whose workers note their pid in `pids` and take `delay` s a batch."""

    inner: EmbedJob
    pids: str
    delay: float = 0.3

    def open(self):
        worker = self.inner.open()
        Path(self.pids, str(os.getpid())).touch()

        def slow(batch):
            time.sleep(self.delay)
            return worker(batch)

        return slow


def test_a_killed_worker_loses_no_row_and_repeats_none(cluster, fx, tmp_path):
    paths = [str(p) for p in fx["images"]]
    columns = {"path": paths, "box": ["" if i % 3 else "4,4,32,32" for i in range(len(paths))]}
    inner = EmbedJob(str(fx["features"]), "block2", prefer_gpu=False, threads=1)
    want = np.concatenate([out["vector"] for _, out in local_map_batches(inner, columns, 2)])
    pids = tmp_path / "pids"
    pids.mkdir()
    got: dict[int, dict] = {}
    killed = None
    for start, out in ray_map_batches(SlowJob(inner, str(pids)), columns, ray_options(2)):
        assert start not in got
        got[start] = out
        if killed is None and len(got) >= 2:  # mid-run: both workers hold batches
            killed = int(sorted(os.listdir(pids))[0])
            os.kill(killed, signal.SIGKILL)
    assert killed is not None
    starts = sorted(got)
    sizes = [len(got[s]["vector"]) for s in starts]
    assert starts == [0, *np.cumsum(sizes)[:-1].tolist()]  # contiguous: each row once
    assert sum(sizes) == len(paths)
    vectors = np.concatenate([got[s]["vector"] for s in starts])
    np.testing.assert_allclose(vectors, want, atol=1e-6, rtol=0)
    assert all(e == "" for s in starts for e in got[s]["error"])
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    # Ray restarted the actor (which opened the model again) to rerun the batches it held
    assert len(os.listdir(pids)) > WORKERS


# ------------------------------------------------------------------ one-line errors


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_that_does_not_answer_is_one_line(fx, tmp_path):
    address = f"127.0.0.1:{_unused_port()}"
    started = time.monotonic()
    result = run_module(
        "evaluation.index", "build", "--model", str(fx["features"]), "--data", str(fx["data"]),
        "--out", str(tmp_path / "index"), "--cpu", "--engine", "ray", "--address", address,
    )  # fmt: skip
    assert_one_line_error(result, f"ray address {address}", "nothing answers")
    result = run_module(
        "evaluation.score", str(fx["scorer"]), "--pairs", str(fx["pairs"]),
        "--out", str(tmp_path / "s.csv"), "--engine", "ray", "--address", address,
    )  # fmt: skip
    assert_one_line_error(result, f"ray address {address}", "nothing answers")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize(
    ("engine", "address", "message"),
    [
        ("local", "127.0.0.1:6379", "--address is for --engine ray"),
        ("ray", "ray://127.0.0.1:10001", "Ray Data does not run through Ray Client"),
        ("ray", "http://127.0.0.1:6379", "expected HOST:PORT"),
    ],
)
def test_addresses_it_cannot_use_are_one_line(fx, tmp_path, engine, address, message):
    result = run_module(
        "evaluation.score", str(fx["scorer"]), "--pairs", str(fx["pairs"]),
        "--out", str(tmp_path / "s.csv"), "--engine", engine, "--address", address,
    )  # fmt: skip
    assert_one_line_error(result, message)
