"""bridge.export, bridge.core.runtime and evaluation.score on the tiny variants."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT, assert_one_line_error, run_cli, run_module, save_torch_file, tiny_state
from PIL import Image

from bridge.core import spec
from bridge.core.runtime import KINDS, open_model
from bridge.core.weights import random_state_dict
from evaluation.score import Scorer


@pytest.fixture(scope="module")
def exported(tiny_exports):
    """Every tiny arch x origin x kind of `tiny_state`, parity-gated by export itself (made
    once per run and shared with the other files that need tiny exports: conftest.py)."""
    return {
        (arch, origin, kind): tiny_exports(arch, origin, kind)
        for arch in spec.TINY_ARCHS
        for origin in ("torch", "keras")
        for kind in KINDS
    }


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
@pytest.mark.parametrize("origin", ["torch", "keras"])
def test_every_export_follows_the_contract(exported, arch, origin):
    s = spec.get_arch(arch)
    for kind in KINDS:
        path = exported[arch, origin, kind]
        manifest = json.loads(path.with_suffix(".json").read_text())
        assert (
            manifest["kind"] == kind
            and manifest["origin"] == origin
            and manifest["backbone"] == arch
        )
        assert manifest["parity"]["max_error"] <= manifest["parity"]["bound"]
        assert manifest["parity"]["bound"] == (1e-5 if kind in ("lpips", "dists") else 1e-4)
        assert manifest["opset"] == 18 and manifest["input_contract"]["layout"] == "NCHW"
        for field in ("onnx_sha256", "source_weights", "tools", "created_at"):
            assert manifest[field]
        graph = onnx.load(str(path)).graph
        inputs = [i.name for i in graph.input]
        outputs = [o.name for o in graph.output]
        expected = {
            "classifier": ["logits"],
            "features": list(s.tap_names),
            "lpips": ["distance", "distance_map"],
        }.get(kind, ["distance"])
        assert sorted(outputs) == sorted(expected) == sorted(manifest["outputs"])
        assert inputs == (
            ["image"] if kind in ("classifier", "features") else ["image_a", "image_b"]
        )
        dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        assert dims[:2] == ["batch" if kind in ("classifier", "features") else "batch_a", 3]
        dynamic = not s.contract.fixed_size and not (kind == "classifier" and s.family == "vgg")
        assert manifest["dynamic_size"] == dynamic
        assert dims[2:] == (["height", "width"] if dynamic else [s.contract.native_size] * 2)
        out_dims = {
            o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in graph.output
        }
        if kind in ("lpips", "dists"):
            assert out_dims["distance"] == ["batch"]
        if kind == "lpips":  # the spatial map at the input size
            assert out_dims["distance_map"] == ["batch", 1, *dims[2:]]


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
@pytest.mark.parametrize("origin", ["torch", "keras"])
def test_lpips_distance_map_is_the_native_spatial_map(exported, arch, origin):
    """`distance_map` = `LPIPS.spatial` of the native module, in pairs and shared-reference."""
    from bridge.export import default_heads

    s = spec.get_arch(arch)
    n = s.contract.native_size
    sizes = [(n, n)] if s.contract.fixed_size else [(n, n), (48, 80)]
    heads = default_heads("lpips", s, None).weights
    state = tiny_state(arch)  # what the fixture exported
    rng = np.random.default_rng(4)
    model = open_model(exported[arch, origin, "lpips"])
    for h, w in sizes:
        a = rng.uniform(0, 1, (2, 3, h, w)).astype(np.float32)
        b = rng.uniform(0, 1, (2, 3, h, w)).astype(np.float32)
        if origin == "torch":
            import torch

            import torch_models
            from torch_models.metrics import LPIPS

            backbone = torch_models.create_model(arch, 4)
            torch_models.set_torch_state_dict(backbone, state)
            with torch.no_grad():
                native = LPIPS(backbone, heads).spatial(torch.from_numpy(a), torch.from_numpy(b))
            native = native.numpy()
        else:
            import tf_models
            from tf_models.metrics import LPIPS

            backbone = tf_models.create_model(arch, 4)
            tf_models.set_torch_state_dict(backbone, state)
            nhwc = (a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1))
            native = np.asarray(LPIPS(backbone, heads).spatial(*nhwc)).transpose(0, 3, 1, 2)
        out = model.run(image_a=a, image_b=b)
        assert out["distance_map"].shape == (2, 1, h, w)
        assert np.abs(out["distance_map"] - native).max() <= 1e-5 * max(1, np.abs(native).max())
        # close to, not equal to, the distance: the maps are upsampled before averaging
        assert np.allclose(out["distance_map"].mean(axis=(1, 2, 3)), out["distance"], rtol=0.2)
        only = model.run(outputs=["distance"], image_a=a, image_b=b)
        assert list(only) == ["distance"] and np.array_equal(only["distance"], out["distance"])
        if model.manifest["shared_reference"]:
            shared = model.run(image_a=a[:1], image_b=b)["distance_map"]
            pairs = model.run(image_a=a[[0, 0]], image_b=b)["distance_map"]
            assert np.abs(shared - pairs).max() <= 1e-5 * max(1, np.abs(pairs).max())


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
@pytest.mark.parametrize("kind", ["lpips", "dists", "classifier"])
def test_torch_and_keras_origins_agree(exported, arch, kind):
    size = spec.get_arch(arch).contract.native_size
    rng = np.random.default_rng(1)
    feed = {"classifier": ["image"]}.get(kind, ["image_a", "image_b"])
    inputs = {name: rng.uniform(0, 1, (3, 3, size, size)).astype(np.float32) for name in feed}
    t = open_model(exported[arch, "torch", kind]).run(**inputs)
    k = open_model(exported[arch, "keras", kind]).run(**inputs)
    assert sorted(t) == sorted(k)
    for name in t:
        scale = 1.0 if name == "distance" else max(1.0, np.abs(t[name]).max())
        bound = (2e-4 if kind == "classifier" else 2e-5) * scale  # twice each one's bound
        assert np.abs(t[name] - k[name]).max() <= bound, name


@pytest.mark.parametrize("arch", ["vgg16_tiny", "resnet50_tiny"])
@pytest.mark.parametrize("kind", ["lpips", "dists"])
def test_scorer_properties_through_onnx(exported, arch, kind):
    model = open_model(exported[arch, "keras", kind])
    rng = np.random.default_rng(2)
    for h, w in ((32, 32), (48, 80)):  # any size the backbone allows
        a = rng.uniform(0, 1, (4, 3, h, w)).astype(np.float32)
        b = rng.uniform(0, 1, (4, 3, h, w)).astype(np.float32)
        d = model.run(image_a=a, image_b=b)["distance"]
        assert np.abs(model.run(image_a=a, image_b=a)["distance"]).max() <= 1e-6
        assert np.allclose(d, model.run(image_a=b, image_b=a)["distance"], atol=1e-6)
        single = [
            model.run(image_a=a[i : i + 1], image_b=b[i : i + 1])["distance"][0] for i in range(4)
        ]
        assert np.allclose(d, single, atol=1e-6)


def test_bicubic_overshoot_is_clipped_before_scoring(exported):
    """A ViT scorer resizes bicubically; sharp noise overshoots [0, 1] and must still score."""
    scorer = Scorer(exported["vit_b16_tiny", "torch", "lpips"])
    assert scorer.interpolation == "bicubic"
    noise = np.random.default_rng(3).integers(0, 2, (50, 70, 3)).astype(np.float32)
    prepared = scorer.prepare(noise)
    assert prepared.min() >= 0 and prepared.max() <= 1
    assert scorer.score(noise, noise[::-1]) > 0


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
@pytest.mark.parametrize("origin", ["torch", "keras"])
def test_shared_reference_equals_pairwise(exported, arch, origin):
    """One reference against K images (1 + K passes where the graph allows) = the K pairs."""
    size = spec.get_arch(arch).contract.native_size
    rng = np.random.default_rng(5)
    ref = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
    others = [rng.uniform(0, 1, (size, size, 3)).astype(np.float32) for _ in range(4)]
    for kind in ("lpips", "dists"):
        path = exported[arch, origin, kind]
        manifest = json.loads(path.with_suffix(".json").read_text())
        # the torch ViT's reshapes tie both batch sizes; every other scorer broadcasts
        assert manifest["shared_reference"] == (origin == "keras" or not arch.startswith("vit"))
        scorer = Scorer(path)
        shared = scorer.score_many(ref, others)
        pairs = [scorer.score(ref, other) for other in others]
        assert np.abs(shared - pairs).max() <= 1e-5  # the ONNX-vs-native bound for scores


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    Image.fromarray((rng.uniform(0, 1, (90, 120, 3)) * 255).astype(np.uint8)).save(root / "a.png")
    Image.fromarray((rng.uniform(0, 1, (70, 60, 3)) * 255).astype(np.uint8)).save(root / "b.jpg")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "tiny.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "pixel.png")
    return root


def test_score_cli_and_api_agree(exported, images, tmp_path):
    model = exported["vgg16_tiny", "torch", "lpips"]
    a, b = str(images / "a.png"), str(images / "b.jpg")
    result = run_module("evaluation.score", str(model), a, b, "--region-a", "10,5,64,48", "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    direct = Scorer(model).score(a, b, box_a="10,5,64,48")
    assert printed["distance"] == pytest.approx(direct, abs=1e-7)
    assert printed["provider"] == "CPUExecutionProvider"
    # a 64x48 region and a 60x70 image differ: both fitted to the native 32 px, said so
    assert printed["size"] == [32, 32] and printed["resized"] is True
    assert printed["scorer"].startswith("LPIPS · vgg16_tiny · ") and printed["heads"]
    # two regions of one size are scored at that size, unless --size asks otherwise
    same = run_module("evaluation.score", str(model), a, b, "--region-a", "0,0,60,70", "--json")
    own = json.loads(same.stdout)
    assert own["size"] == [70, 60] and own["resized"] is False
    assert (
        "scored at 60x70 (their own size)"
        in run_module("evaluation.score", str(model), a, b, "--region-a", "0,0,60,70").stderr
    )
    sized = run_module(
        "evaluation.score", str(model), a, b, "--region-a", "0,0,60,70", "--size", "48", "--json"
    )
    assert json.loads(sized.stdout)["size"] == [48, 48]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f'image_a,box_a,image_b,box_b,R1\n{a},"10,5,64,48",{b},,3\n{b},,{b},,1\n')
    out = tmp_path / "scores.csv"
    result = run_module("evaluation.score", str(model), "--pairs", str(pairs), "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = out.read_text().splitlines()
    assert rows[0] == "id,image_a,box_a,image_b,box_b,lpips"
    assert float(rows[1].rsplit(",", 1)[1]) == pytest.approx(direct, abs=1e-6)
    assert abs(float(rows[2].rsplit(",", 1)[1])) <= 1e-6
    scorer = Scorer(model)
    many = scorer.score_many(a, [b, a, b], box="10,5,64,48", boxes=[None, "10,5,64,48", None])
    assert many[0] == pytest.approx(direct, abs=1e-6) and abs(many[1]) <= 1e-6
    with pytest.raises(ValueError, match="3 comparison images but 2 regions"):
        scorer.score_many(a, [b, a, b], boxes=[None, None])


def test_score_bad_input_is_one_line(exported, images, tmp_path):
    lp = str(exported["vgg16_tiny", "torch", "lpips"])
    a, tiny = str(images / "a.png"), str(images / "tiny.png")
    cases = [
        ([lp, a, a, "--region-a", "100,80,50,50"], "lies outside the 120x90 image"),
        ([lp, a, a, "--region-b", "0,0,0,10"], "0,0,0,10"),
        ([lp, a, a, "--size", "16"], "size 16 is too small for vgg16_tiny"),
        ([str(exported["vgg16_tiny", "keras", "classifier"]), a, a], "is a classifier model"),
        ([lp, a], "give two images"),
        ([lp, a, str(images / "pixel.png")], "pixel.png is 1x1 px; expected at least 16 px"),
        ([lp, a, a, "--region-b", "0,0,15,40"], "region 0,0,15,40 of"),
    ]
    for args, message in cases:
        assert_one_line_error(run_module("evaluation.score", *args), message)
    scorer = Scorer(lp)
    good = np.full((1, 3, 32, 32), 0.5, np.float32)
    with pytest.raises(ValueError, match="must have the same"):
        scorer.score_arrays(good, np.full((1, 3, 32, 40), 0.5, np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        scorer.score_arrays(good, np.full((1, 3, 32, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="too small"):
        scorer.score_arrays(good[:, :, :16, :16], good[:, :, :16, :16])
    assert scorer.score(tiny, tiny) == pytest.approx(0.0, abs=1e-6)  # 16..31 px: fitted up
    pixel = str(images / "pixel.png")
    assert Scorer(lp, min_region=1).score(pixel, pixel) == pytest.approx(0.0, abs=1e-6)


def test_manifest_that_does_not_match_its_onnx_file_is_refused(exported, tmp_path, images):
    import shutil

    src = exported["vit_b16_tiny", "torch", "lpips"]
    copy = tmp_path / src.name
    shutil.copy(src, copy)
    shutil.copy(src.with_suffix(".json"), copy.with_suffix(".json"))
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its manifest"):
        open_model(copy)
    a = str(images / "a.png")
    assert_one_line_error(
        run_module("evaluation.score", str(copy), a, a), "does not match its manifest"
    )
    copy.with_suffix(".json").unlink()
    assert_one_line_error(run_module("evaluation.score", str(copy), a, a), "manifest of")


def test_export_cli_from_a_weights_file(tmp_path):
    """The command on torch's own .pth (head size read from it), through the cheapest of the
    exporters for this backbone (tf2onnx; every kind and origin: the fixture above)."""
    weights = save_torch_file(random_state_dict("resnet50_tiny", 3, seed=4), tmp_path / "w.pth")
    result = run_module(
        "bridge.export", "--arch", "resnet50_tiny", "--weights", str(weights), "--kind",
        "classifier", "--origin", "keras", "--out", str(tmp_path / "models"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = tmp_path / "models" / "resnet50_tiny-classifier-keras.json"
    assert json.loads(manifest.read_text())["num_classes"] == 3
    bad = run_cli(
        "bridge.export", "--arch", "resnet50_tiny", "--weights", str(weights), "--kind", "ssim"
    )
    assert_one_line_error(bad, "unknown kind 'ssim'")
    no_weights = run_cli("bridge.export", "--arch", "vgg16_tiny")
    assert_one_line_error(no_weights, "--arch needs --weights")


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "tensorflow", "keras", "torchvision", "timm"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import evaluation
from evaluation.score import main
sys.exit(main(sys.argv[1:]))
"""


def test_scoring_needs_neither_torch_nor_tensorflow(exported, images):
    model = exported["resnet50_tiny", "keras", "lpips"]
    a = str(images / "a.png")
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(model), a, str(images / "b.jpg")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) > 0


def test_vgg16_heads_fall_back_to_uniform_without_the_reference_packages(monkeypatch):
    """`tox -e demo` has no lpips / DISTS_pytorch: its VGG16 scorers get uniform heads."""
    import bridge.core.metrics
    from bridge.export import default_heads

    vgg16 = spec.get_arch("vgg16")
    assert default_heads("lpips", vgg16, None).source.startswith("lpips package")

    def missing(package, relative):
        raise FileNotFoundError(f"the {package} package is not installed")

    monkeypatch.setattr(bridge.core.metrics, "_package_file", missing)
    assert default_heads("lpips", vgg16, None).source == "uniform"
    with pytest.raises(FileNotFoundError, match="not installed"):
        default_heads("lpips", vgg16, "published")  # asked for by name: no silent fallback
