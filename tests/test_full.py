"""Full-size checks (the `full` group): minutes on 2 CPU cores, run once by `tox -e test`."""

import json

import numpy as np
import pytest
import torch

import tf_models
import torch_models
from bridge.core import spec
from bridge.core.porting import keras_to_torch, torch_to_keras
from bridge.core.weights import random_state_dict
from bridge.parity import measure

pytestmark = pytest.mark.full


# The kinds exported at full size. A feature extractor is the whole backbone up to its last
# tap, so its parity gate checks every full-size layer, from both origins. The classifier,
# LPIPS and DISTS add size-independent arithmetic on top of those taps (a linear head,
# channel normalisation, spatial means and variances), which the tiny exports check for
# every kind, backbone and origin (tests/test_export.py); VGG16's LPIPS and DISTS are also
# exported at full size from torch, to be compared with the reference packages (their
# Keras-origin twins add the same arithmetic to the Keras features checked here, and took
# another two minutes). Exporting all four kinds of all three backbones from both origins
# took about three times the CPU time (minutes per file).
FULL_KINDS = {
    "vgg16": ("features", "lpips", "dists"),
    "resnet50": ("features",),
    "vit_b16": ("features",),
}
BOTH_ORIGINS = ("features",)  # exported from both origins at full size; the rest from torch


def full_origins(kind: str) -> tuple[str, ...]:
    """The origins a kind is exported from at full size."""
    return ("torch", "keras") if kind in BOTH_ORIGINS else ("torch",)


@pytest.fixture(scope="module")
def full_exports(tmp_path_factory):
    """`python -m bridge.export --kind <FULL_KINDS> --origin both` on a seeded random
    full-size model per arch, run once per arch (each export is gated against its native
    model)."""
    import subprocess
    import sys

    from conftest import ROOT, save_torch_file

    from bridge.core.weights import write_state_dict

    done = {}

    def get(arch):
        if arch not in done:
            root = tmp_path_factory.mktemp(f"{arch}_onnx")
            # torchvision's file name, so the reference packages find it in a hub cache
            name = "vgg16-397923af.pth" if arch == "vgg16" else f"{arch}.safetensors"
            (root / "hub" / "checkpoints").mkdir(parents=True)
            save = save_torch_file if name.endswith(".pth") else write_state_dict
            weights = save(random_state_dict(arch, seed=5), root / "hub" / "checkpoints" / name)
            # the CLI uses the pure-python protobuf for tf2onnx (memory; docs/environment.md)
            calls = {}  # one export command per set of origins
            for kind in FULL_KINDS[arch]:
                calls.setdefault(full_origins(kind), []).append(kind)
            for origins, kinds in calls.items():
                result = subprocess.run(
                    [sys.executable, "-m", "bridge.export", "--arch", arch,
                     "--weights", str(weights), "--kind", ",".join(kinds),
                     "--origin", ",".join(origins), "--out", str(root / "models")],
                    cwd=ROOT, capture_output=True, text=True, timeout=3600,
                )  # fmt: skip
                assert result.returncode == 0, result.stderr[-3000:]
            done[arch] = root
        return done[arch]

    return get


@pytest.fixture(scope="module")
def vgg16_scorers(full_exports):
    """Full-size VGG16 LPIPS / DISTS ONNX (torch origin), plus the reference packages,
    all on one seeded random VGG16 placed in a torch hub cache the test creates."""
    import os

    root = full_exports("vgg16")
    files = {
        (kind, origin): root / "models" / f"vgg16-{kind}-{origin}.onnx"
        for kind in ("lpips", "dists")
        for origin in full_origins(kind)
    }
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(root)
    try:
        import lpips
        from DISTS_pytorch import DISTS

        refs = {"lpips": lpips.LPIPS(net="vgg", verbose=False).eval(), "dists": DISTS().eval()}
    finally:
        os.environ.pop("TORCH_HOME") if old is None else os.environ.__setitem__("TORCH_HOME", old)
    return files, refs


class _FullSize:
    """The full-size checks of one backbone. One class per backbone: `tox -e test` runs
    xdist with `--dist loadscope`, which keeps a class on one worker, so the three
    backbones' exports (minutes each) run on both workers, each made once. The export
    test comes first: the worker takes its next scope only when two tests are left."""

    arch: str

    def test_onnx_matches_native_for_every_origin_and_kind(self, full_exports):
        """Each full-size kind (`FULL_KINDS`) from its origins passed the export's parity
        gate (docs/architecture.md) on the native size and, where the graph takes any size,
        a non-square one; two origins' files agree with each other on a fresh batch."""
        arch = self.arch
        from bridge.core.runtime import open_model
        from bridge.export import dynamic_size

        root, s = full_exports(arch), spec.get_arch(arch)
        n = s.contract.native_size
        rng = np.random.default_rng(3)
        image = rng.uniform(0, 1, (2, 3, n, n)).astype(np.float32)
        other = np.clip(image + rng.normal(0, 0.1, image.shape), 0, 1).astype(np.float32)
        assert sorted(p.name for p in (root / "models").glob("*.onnx")) == sorted(
            f"{arch}-{kind}-{origin}.onnx"
            for kind in FULL_KINDS[arch]
            for origin in full_origins(kind)
        )
        for kind in FULL_KINDS[arch]:
            outputs = {}
            for origin in full_origins(kind):
                path = root / "models" / f"{arch}-{kind}-{origin}.onnx"
                manifest = json.loads(path.with_suffix(".json").read_text())
                parity = manifest["parity"]
                assert parity["bound"] == (1e-5 if kind in ("lpips", "dists") else 1e-4)
                assert parity["max_error"] <= parity["bound"], (kind, origin, parity)
                probes = {tuple(p[1:]) for p in parity["probes"]}
                assert (n, n) in probes and (len(probes) == 2) == dynamic_size(s, kind)
                model = open_model(path, prefer_gpu=False)
                feed = {"image": image} if kind in ("classifier", "features") else {
                    "image_a": image, "image_b": other}  # fmt: skip
                outputs[origin] = model.run(**feed)
            for name, t in outputs["torch"].items() if "keras" in outputs else ():
                k = outputs["keras"][name]
                scale = 1.0 if kind in ("lpips", "dists") else max(1.0, float(np.abs(t).max()))
                assert np.abs(t - k).max() <= 2e-4 * scale, (kind, name)

    def test_keras_port_matches_torch(self):
        """Logits and every tap within 1e-4 x max(1, max|ref|) at 224 (and 160 for the CNNs);
        dermsim torch equals the reference library exactly; parameter counts as the references."""
        arch = self.arch
        rows = measure(arch, batch=2, seed=0)
        assert {r.size for r in rows} == ({224} if arch == "vit_b16" else {224, 160})
        for row in rows:
            assert row.ok, [(o.name, o.max_abs_error, o.bound) for o in row.outputs if not o.ok]
            assert row.params == spec.get_arch(arch).reference_params

    def test_round_trips_are_exact(self):
        arch = self.arch
        state = random_state_dict(arch, seed=1)
        keras_model = tf_models.create_model(arch)
        tf_models.set_torch_state_dict(keras_model, state)
        back = tf_models.torch_state_dict(keras_model)
        assert all(np.array_equal(back[k], state[k]) for k in state)
        # Keras -> torch -> Keras
        fresh = tf_models.create_model(arch, seed=2)
        torch_model = torch_models.create_model(arch)
        torch_models.set_torch_state_dict(torch_model, tf_models.torch_state_dict(fresh))
        again = keras_to_torch(
            torch_to_keras(torch_models.torch_state_dict(torch_model), arch), arch
        )
        tf_models.set_torch_state_dict(keras_model, again)
        for a, b in zip(fresh.weights, keras_model.weights, strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b)), a.path


class TestResnet50(_FullSize):
    arch = "resnet50"


class TestVitB16(_FullSize):
    arch = "vit_b16"


class TestVgg16(_FullSize):
    """VGG16, and the reference packages on its exports (the same module fixture)."""

    arch = "vgg16"

    @pytest.mark.parametrize("size", [(64, 64), (224, 224), (72, 104)])
    @pytest.mark.parametrize("kind", ["lpips", "dists"])
    @pytest.mark.parametrize("origin", ["torch"])
    def test_onnx_scorers_match_the_reference_packages(self, vgg16_scorers, size, kind, origin):
        from bridge.core.runtime import open_model

        files, refs = vgg16_scorers
        rng = np.random.default_rng(0)
        a = rng.uniform(0, 1, (2, 3, *size)).astype(np.float32)
        b = np.clip(a + rng.normal(0, 0.15, a.shape), 0, 1).astype(np.float32)
        with torch.no_grad():
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            expected = (
                refs[kind](ta, tb, normalize=True) if kind == "lpips" else refs[kind](ta, tb)
            ).reshape(-1)
        got = open_model(files[kind, origin]).run(image_a=a, image_b=b)["distance"]
        assert np.abs(got - expected.numpy()).max() <= 1e-5

    @pytest.mark.parametrize("kind", ["lpips", "dists"])
    def test_default_score_matches_the_reference_packages_at_the_images_own_size(
        self, vgg16_scorers, kind, tmp_path, capsys
    ):
        """What a user gets by default: two 150x200 files scored at 150x200, as lpips does."""
        from PIL import Image

        from bridge.core.data.image import decode_image
        from evaluation.score import main

        files, refs = vgg16_scorers
        rng = np.random.default_rng(1)
        pixels = rng.uniform(0, 1, (150, 200, 3))
        paths = []
        for i, x in enumerate((pixels, np.clip(pixels + rng.normal(0, 0.1, pixels.shape), 0, 1))):
            paths.append(tmp_path / f"{i}.png")
            Image.fromarray(np.rint(x * 255).astype(np.uint8)).save(paths[-1])
        assert main([str(files[kind, "torch"]), *map(str, paths), "--json", "--cpu"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["size"] == [150, 200] and printed["resized"] is False
        a, b = (torch.from_numpy(decode_image(p).transpose(2, 0, 1)[None].copy()) for p in paths)
        with torch.no_grad():
            expected = float(
                refs[kind](a, b, normalize=True) if kind == "lpips" else refs[kind](a, b)
            )
        assert printed["distance"] == pytest.approx(expected, abs=1e-5)
