"""evaluation.features: tap distances and the ONNX feature extractor (tiny exports)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bridge.core.data.image import Box, crop, fit
from evaluation.features import TAP_MODES, VIT_TAP_MODES, FeatureExtractor, tap_distances


@pytest.fixture(scope="module")
def exported(tiny_exports):
    """A CNN and a ViT feature extractor and one (non-features) LPIPS scorer (shared exports)."""
    pytest.importorskip("torch")
    return {
        (arch, kind): tiny_exports(arch, "torch", kind)
        for arch, kind in (
            ("vgg16_tiny", "features"),
            ("vit_b16_tiny", "features"),
            ("vit_b16_tiny", "lpips"),
        )
    }


@pytest.fixture(scope="module")
def vgg(exported):
    return FeatureExtractor(exported["vgg16_tiny", "features"], prefer_gpu=False)


@pytest.fixture(scope="module")
def vit(exported):
    return FeatureExtractor(exported["vit_b16_tiny", "features"], prefer_gpu=False)


def cos_distance(u, v):
    """1 - cos of two vectors, with the zero-vector rules, one pair at a time."""
    u, v = np.ravel(u), np.ravel(v)
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        return 0.0 if nu == nv else 1.0
    return 1.0 - float(np.dot(u, v) / (nu * nv))


def loop_reference(feats_a, feats_b, taps):
    """tap_distances written sample by sample, position by position."""
    feats_a = {k: np.asarray(v, np.float64) for k, v in feats_a.items()}
    feats_b = {k: np.asarray(v, np.float64) for k, v in feats_b.items()}
    out = {}
    for tap in taps:
        if tap.endswith("_cls"):
            continue
        b = feats_b[tap]
        n, _, h, w = b.shape
        a = feats_a[tap] if len(feats_a[tap]) == n else np.repeat(feats_a[tap], n, axis=0)
        rows = {mode: [] for mode in TAP_MODES + VIT_TAP_MODES}
        for i in range(n):
            rows["flat"].append(cos_distance(a[i], b[i]))
            rows["gap"].append(cos_distance(a[i].mean(axis=(1, 2)), b[i].mean(axis=(1, 2))))
            per = [cos_distance(a[i][:, y, x], b[i][:, y, x]) for y in range(h) for x in range(w)]
            rows["position"].append(np.mean(per))
            if f"{tap}_cls" in feats_b:
                ca = feats_a[f"{tap}_cls"][min(i, len(feats_a[tap]) - 1)]
                cb = feats_b[f"{tap}_cls"][i]
                rows["cls"].append(cos_distance(ca, cb))
                tokens_a = np.concatenate([ca, a[i].reshape(-1)])
                tokens_b = np.concatenate([cb, b[i].reshape(-1)])
                rows["tokens"].append(cos_distance(tokens_a, tokens_b))
        for mode, values in rows.items():
            if values:
                out[f"{tap}/{mode}"] = np.array(values)
    return out


def random_feats(n, seed, vit=False):
    rng = np.random.default_rng(seed)
    feats = {
        "conv": rng.normal(size=(n, 6, 3, 4)).astype(np.float32),
        "relu": np.maximum(rng.normal(size=(n, 5, 2, 2)), 0).astype(np.float32),
    }
    if vit:
        feats["conv_cls"] = rng.normal(size=(n, 6)).astype(np.float32)
    return feats


@pytest.mark.parametrize("vit", [False, True], ids=["cnn", "vit"])
def test_tap_distances_match_a_per_sample_loop(vit):
    taps = ["conv", "relu", *(["conv_cls"] if vit else [])]
    a, b = random_feats(4, 0, vit), random_feats(4, 1, vit)
    a["relu"][1] = 0  # a zero map against a non-zero one: distance 1
    a["relu"][2] = b["relu"][2] = 0  # two zero maps: distance 0
    got = tap_distances(a, b, taps)
    expected = loop_reference(a, b, taps)
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].shape == (4,) and got[key].dtype == np.float64
        assert np.abs(got[key] - value).max() <= 1e-9, key
    assert got["relu/flat"][1] == 1.0 and got["relu/flat"][2] == 0.0
    conv_modes = TAP_MODES + (VIT_TAP_MODES if vit else ())
    keys = [f"conv/{m}" for m in conv_modes] + [f"relu/{m}" for m in TAP_MODES]
    assert list(got) == keys  # taps in order, no separate keys for the class token


def test_batch_one_reference_broadcasts():
    ref, others = random_feats(1, 2, vit=True), random_feats(5, 3, vit=True)
    taps = ["conv", "conv_cls", "relu"]
    broadcast = tap_distances(ref, others, taps)
    repeated = tap_distances({k: np.repeat(v, 5, axis=0) for k, v in ref.items()}, others, taps)
    expected = loop_reference(ref, others, taps)
    for key in repeated:
        np.testing.assert_array_equal(broadcast[key], repeated[key])
        assert np.abs(broadcast[key] - expected[key]).max() <= 1e-9


def test_same_features_are_at_distance_zero():
    feats = random_feats(3, 4, vit=True)
    single = {k: v[1:2] for k, v in feats.items()}
    for a, b in ((feats, feats), (single, feats)):
        distances = tap_distances(a, b, ["conv", "conv_cls", "relu"])
        assert len(distances) == 8
        zero = distances if a is feats else {k: v[1] for k, v in distances.items()}
        assert all(np.all(v == 0) for v in zero.values()), zero


def test_tap_distances_refuse_mismatches():
    a, b = random_feats(2, 0), random_feats(3, 1)
    with pytest.raises(ValueError, match=r"output 'conv': expected the same \(N, ...\) shapes"):
        tap_distances(a, b, ["conv"])
    with pytest.raises(ValueError, match="feats_b has no output 'pool'; it has conv, relu"):
        tap_distances({**a, "pool": a["conv"]}, random_feats(2, 1), ["pool"])
    with pytest.raises(ValueError, match=r"expected an \(N, C, h, w\) grid"):
        tap_distances({"v": np.ones((2, 4))}, {"v": np.ones((2, 4))}, ["v"])
    with pytest.raises(ValueError, match="expected at least one tap"):
        tap_distances(a, a, [])


def test_cnn_extractor_distances(vgg, tmp_path):
    assert vgg.size == 32 and vgg.taps == ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 1, (40 + 7 * k, 50, 3)).astype(np.float32) for k in range(3)]
    batch = np.stack([vgg.prepare(x) for x in images])
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], fit(images[0], 32).transpose(2, 0, 1))
    same = vgg.distances(batch, batch)
    assert sorted(same) == sorted(f"{t}/{m}" for t in vgg.taps for m in TAP_MODES)
    assert all(np.all(v == 0) for v in same.values())
    pairs = vgg.distances(batch, batch[::-1])
    expected = tap_distances(vgg.features(batch), vgg.features(batch[::-1]), vgg.taps)
    for key, value in expected.items():
        np.testing.assert_allclose(pairs[key], value, rtol=0, atol=1e-12)
        assert pairs[key][1] == 0 and pairs[key][0] > 0  # the middle image meets itself


def test_distances_many_costs_one_plus_k_passes(vgg, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (60, 80, 3)).astype(np.float32)
    path = tmp_path / "lesion.png"
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    decoded = np.round(image * 255) / 255
    box, boxes = Box(4, 6, 40, 36), [None, "10,10,48,40", Box(4, 6, 40, 36)]
    batches = []
    run = vgg.model.run

    def counting_run(**inputs):
        batches.append(len(inputs["image"]))
        return run(**inputs)

    monkeypatch.setattr(vgg.model, "run", counting_run)
    many = vgg.distances_many(path, [path, decoded, path], box=box, boxes=boxes)
    assert batches == [1, 3]
    assert all(v.shape == (3,) for v in many.values())
    ref = vgg.prepare(crop(decoded, box))[None]
    others = np.stack([vgg.prepare(decoded), vgg.prepare(decoded, boxes[1]), ref[0]])
    expected = vgg.distances(ref, others)
    for key, value in expected.items():
        np.testing.assert_allclose(many[key], value, rtol=0, atol=1e-6)
    assert max(abs(v[2]) for v in many.values()) < 1e-6  # the reference region itself
    with pytest.raises(ValueError, match="3 comparison images but 2 regions"):
        vgg.distances_many(path, [path] * 3, boxes=[None, None])


def test_prepare_keeps_the_last_eight_paths(vgg, tmp_path):
    for k in range(10):
        Image.fromarray(np.full((36, 36, 3), 20 * k, np.uint8)).save(tmp_path / f"{k}.png")
        vgg.prepare(tmp_path / f"{k}.png")
    assert vgg._recent.paths == [str(tmp_path / f"{k}.png") for k in range(2, 10)]


def test_vit_extractor_has_class_token_distances(vit):
    assert vit.size == 64 and vit.taps == ["block2", "block2_cls", "block4", "block4_cls"]
    rng = np.random.default_rng(2)
    batch = np.stack([vit.prepare(rng.uniform(0, 1, (70, 90, 3))) for _ in range(3)])
    assert batch.min() >= 0 and batch.max() <= 1  # bicubic overshoot clipped
    distances = vit.distances(batch[:1], batch)
    modes = TAP_MODES + VIT_TAP_MODES
    assert sorted(distances) == sorted(f"{t}/{m}" for t in ("block2", "block4") for m in modes)
    assert all(v.shape == (3,) and v[0] == 0 and np.all(v[1:] > 0) for v in distances.values())
    feats_ref, feats = vit.features(batch[:1]), vit.features(batch)
    expected = loop_reference(feats_ref, feats, vit.taps)
    for key, value in expected.items():
        assert np.abs(distances[key] - value).max() <= 1e-9, key


def test_fixed_size_model_refuses_another_size(exported, vit):
    with pytest.raises(ValueError, match="takes 64x64 inputs only, not 96"):
        FeatureExtractor(exported["vit_b16_tiny", "features"], size=96, prefer_gpu=False)
    with pytest.raises(ValueError, match="takes 64x64 inputs only, not 32x32"):
        vit.features(np.zeros((1, 3, 32, 32), np.float32))


def test_dynamic_model_takes_another_size(exported):
    extractor = FeatureExtractor(exported["vgg16_tiny", "features"], size=48, prefer_gpu=False)
    batch = extractor.prepare(np.random.default_rng(3).uniform(0, 1, (50, 70, 3)))
    assert batch.shape == (3, 48, 48)
    assert extractor.features(batch)["relu1_2"].shape == (1, 8, 48, 48)
    with pytest.raises(ValueError, match="too small for vgg16_tiny; expected >= 32"):
        FeatureExtractor(exported["vgg16_tiny", "features"], size=16, prefer_gpu=False)


def test_non_features_model_is_refused(exported):
    with pytest.raises(ValueError, match="is a lpips model; feature distances need a features"):
        FeatureExtractor(exported["vit_b16_tiny", "lpips"], prefer_gpu=False)


def test_bad_inputs_are_refused(vgg):
    with pytest.raises(ValueError, match=r"expected an H x W x 3 image, got shape \(32, 32\)"):
        vgg.prepare(np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="holds NaN or infinite pixels"):
        vgg.prepare(np.full((32, 32, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"values outside \[0, 1\]"):
        vgg.features(np.full((1, 3, 32, 32), 1.5, np.float32))
    with pytest.raises(ValueError, match="the first hold one reference"):
        vgg.distances(np.zeros((2, 3, 32, 32)), np.zeros((3, 3, 32, 32)))
    with pytest.raises(ValueError, match=r"expected a prepared \(N, 3, H, W\) batch"):
        vgg.features(np.zeros((1, 4, 32, 32), np.float32))


def test_modules_import_no_framework():
    code = (
        "import sys, evaluation.classical, evaluation.features\n"
        "loaded = sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
