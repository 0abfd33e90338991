"""LPIPS / DISTS: dermsim against lpips 0.1.4 and DISTS_pytorch 0.1 on the same VGG16 weights."""

import numpy as np
import pytest
import torch
from conftest import save_torch_file

import torch_models
from bridge.core.metrics import reference_heads, uniform_heads
from bridge.core.weights import random_state_dict, write_state_dict
from torch_models.metrics import DISTS, LPIPS

SIZES = [(64, 64), (224, 224), (72, 104)]


@pytest.fixture(scope="module")
def vgg_cache(tmp_path_factory):
    """Seeded random VGG16 weights under torchvision's file name in a torch hub cache."""
    home = tmp_path_factory.mktemp("torch_home")
    path = home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    path.parent.mkdir(parents=True)
    save_torch_file(random_state_dict("vgg16", seed=3), path)
    return home, path


@pytest.fixture(scope="module")
def references(vgg_cache):
    import os

    home, _ = vgg_cache
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        import lpips
        from DISTS_pytorch import DISTS as RefDISTS

        ref_lpips = lpips.LPIPS(net="vgg", version="0.1", verbose=False).eval()
        ref_dists = RefDISTS().eval()
        ref_spatial = lpips.LPIPS(net="vgg", version="0.1", spatial=True, verbose=False).eval()
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = old
    return ref_lpips, ref_dists, ref_spatial


@pytest.fixture(scope="module")
def ours(vgg_cache):
    _, path = vgg_cache
    backbone = torch_models.create_model("vgg16", weights=path)
    lp = LPIPS(backbone, reference_heads("lpips").weights)
    alpha, beta = reference_heads("dists").weights
    return lp, DISTS(backbone, alpha, beta)


def _pair(size, n=2, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, (n, 3, *size)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.15, a.shape), 0, 1).astype(np.float32)
    return torch.from_numpy(a), torch.from_numpy(b)


@pytest.mark.parametrize("size", SIZES)
def test_torch_lpips_matches_lpips_package(references, ours, size):
    a, b = _pair(size)
    with torch.no_grad():
        expected = references[0](a, b, normalize=True).reshape(-1)
        got = ours[0](a, b)
    assert got.shape == (2,)
    assert torch.abs(got - expected).max().item() <= 1e-5


@pytest.mark.parametrize("size", SIZES)
def test_torch_dists_matches_dists_package(references, ours, size):
    a, b = _pair(size)
    with torch.no_grad():
        expected = references[1](a, b).reshape(-1)
        got = ours[1](a, b)
    assert torch.abs(got - expected).max().item() <= 1e-5


def test_lpips_spatial_map_matches(references, ours):
    a, b = _pair((64, 80))
    with torch.no_grad():
        expected = references[2](a, b, normalize=True)
        got = ours[0].spatial(a, b)
    assert got.shape == (2, 1, 64, 80)
    assert torch.abs(got - expected).max().item() <= 1e-5


def test_dists_leaves_the_callers_backbone_alone(vgg_cache):
    backbone = torch_models.create_model("vgg16_tiny")
    DISTS(backbone, *uniform_heads("dists", "vgg16_tiny").weights)
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in backbone.features)


@pytest.mark.parametrize("arch", ["vgg16_tiny", "resnet50_tiny", "vit_b16_tiny"])
def test_scorer_properties_on_every_backbone(arch):
    backbone = torch_models.create_model(arch)
    size = backbone.spec.contract.native_size
    lp = LPIPS(backbone, uniform_heads("lpips", arch).weights)
    ds = DISTS(backbone, *uniform_heads("dists", arch).weights)
    a, b = _pair((size, size), n=3)
    with torch.no_grad():
        for metric in (lp, ds):
            assert torch.abs(metric(a, a)).max().item() <= 1e-6
            assert torch.allclose(metric(a, b), metric(b, a), atol=1e-6)
            batch = metric(a, b)
            single = torch.cat([metric(a[i : i + 1], b[i : i + 1]) for i in range(3)])
            assert torch.allclose(batch, single, atol=1e-6)
            assert (batch > 0).all()


def test_heads_errors(tmp_path):
    with pytest.raises(ValueError, match="published lpips heads exist for ImageNet vgg16 only"):
        reference_heads("lpips", "resnet50")
    with pytest.raises(ValueError, match="unknown metric 'ssim'"):
        reference_heads("ssim")
    write_state_dict({"x": np.zeros(3, np.float32)}, tmp_path / "h.safetensors")
    with pytest.raises(ValueError, match=r"not lpips v0.1 vgg heads"):
        reference_heads("lpips", path=str(tmp_path / "h.safetensors"))
    backbone = torch_models.create_model("vgg16_tiny")
    with pytest.raises(ValueError, match=r"DISTS needs alpha and beta of 187 values"):
        DISTS(backbone, np.ones(10), np.ones(10))


# ------------------------------------------------------------------- Keras twin


@pytest.fixture(scope="module")
def ours_keras(vgg_cache):
    import tf_models
    from tf_models.metrics import DISTS as KerasDISTS
    from tf_models.metrics import LPIPS as KerasLPIPS

    _, path = vgg_cache
    backbone = tf_models.create_model("vgg16", weights=path)
    return KerasLPIPS(backbone, reference_heads("lpips").weights), KerasDISTS(
        backbone, *reference_heads("dists").weights
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("metric", [0, 1], ids=["lpips", "dists"])
def test_keras_metrics_match_the_reference_packages(references, ours_keras, size, metric):
    a, b = _pair(size)
    with torch.no_grad():
        if metric == 0:
            expected = references[0](a, b, normalize=True).reshape(-1).numpy()
        else:
            expected = references[1](a, b).reshape(-1).numpy()
    nhwc = (a.numpy().transpose(0, 2, 3, 1), b.numpy().transpose(0, 2, 3, 1))
    got = np.asarray(ours_keras[metric](nhwc))
    assert got.shape == (2,)
    assert np.abs(got - expected).max() <= 1e-5


def test_keras_lpips_spatial_matches_torch(ours, ours_keras):
    a, b = _pair((64, 80))
    with torch.no_grad():
        expected = ours[0].spatial(a, b).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(
        ours_keras[0].spatial(a.numpy().transpose(0, 2, 3, 1), b.numpy().transpose(0, 2, 3, 1))
    )
    assert np.abs(got - expected).max() <= 1e-5


def test_l2_pooling_layers_agree():
    """torch's L2Pooling2D pads by 1 itself; the Keras one takes the padded input."""
    from tf_models.backbones import L2Pooling2D as KerasL2Pooling2D
    from torch_models.backbones import L2Pooling2D

    x = np.random.default_rng(0).uniform(0, 2, (2, 5, 11, 8)).astype(np.float32)
    with torch.no_grad():
        expected = L2Pooling2D(5)(torch.from_numpy(x)).numpy()
    padded = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    got = np.asarray(KerasL2Pooling2D()(padded)).transpose(0, 3, 1, 2)
    assert got.shape == expected.shape == (2, 5, 6, 4)
    assert np.abs(got - expected).max() <= 1e-6


@pytest.mark.parametrize("arch", ["vgg16_tiny", "resnet50_tiny", "vit_b16_tiny"])
def test_keras_metrics_equal_torch_metrics_on_every_backbone(arch):
    import tf_models
    from tf_models.metrics import DISTS as KerasDISTS
    from tf_models.metrics import LPIPS as KerasLPIPS

    t_backbone = torch_models.create_model(arch)
    k_backbone = tf_models.create_model(arch, weights=torch_models.torch_state_dict(t_backbone))
    size = t_backbone.spec.contract.native_size
    a, b = _pair((size, size), n=3)
    nhwc = (a.numpy().transpose(0, 2, 3, 1), b.numpy().transpose(0, 2, 3, 1))
    lp, ds = uniform_heads("lpips", arch).weights, uniform_heads("dists", arch).weights
    with torch.no_grad():
        expected = [LPIPS(t_backbone, lp)(a, b).numpy(), DISTS(t_backbone, *ds)(a, b).numpy()]
    got = [
        np.asarray(KerasLPIPS(k_backbone, lp)(nhwc)),
        np.asarray(KerasDISTS(k_backbone, *ds)(nhwc)),
    ]
    for e, g in zip(expected, got, strict=True):
        assert np.abs(e - g).max() <= 1e-5 * max(1.0, np.abs(e).max())


# ------------------------------------------------------------------ masked metrics


def _masks(size, n=2, seed=1):
    """A blob per image (weights 1 inside, a soft edge) and all-ones masks."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        r = rng.uniform(0.2, 0.35) * min(h, w)
        d = np.hypot(yy - cy, xx - cx)
        out.append(np.clip(r + 1 - d, 0, 1))
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32))


@pytest.mark.parametrize("size", [(64, 64), (72, 104)])
def test_all_ones_masks_equal_the_reference_packages(references, ours, ours_keras, size):
    a, b = _pair(size)
    ones = torch.ones(2, 1, *size)
    nhwc = [x.numpy().transpose(0, 2, 3, 1) for x in (a, b, ones, ones)]
    with torch.no_grad():
        expected = [
            references[0](a, b, normalize=True).reshape(-1),
            references[1](a, b).reshape(-1),
        ]
        unmasked = [ours[0](a, b), ours[1](a, b)]
        masked = [ours[0].masked(a, b, ones, ones), ours[1].masked(a, b, ones, ones)]
    keras_masked = [np.asarray(m.masked(*nhwc)) for m in ours_keras]
    for e, u, m, k in zip(expected, unmasked, masked, keras_masked, strict=True):
        assert torch.abs(m - u).max().item() <= 1e-6
        assert torch.abs(m - e).max().item() <= 1e-5
        assert np.abs(k - e.numpy()).max() <= 1e-5


@pytest.mark.parametrize("arch", ["vgg16_tiny", "resnet50_tiny", "vit_b16_tiny"])
def test_masked_keras_equals_masked_torch_on_every_backbone(arch):
    import tf_models
    from tf_models.metrics import DISTS as KerasDISTS
    from tf_models.metrics import LPIPS as KerasLPIPS

    t_backbone = torch_models.create_model(arch)
    k_backbone = tf_models.create_model(arch, weights=torch_models.torch_state_dict(t_backbone))
    size = t_backbone.spec.contract.native_size
    a, b = _pair((size, size), n=3)
    ma, mb = _masks((size, size), n=3, seed=2), _masks((size, size), n=3, seed=3)
    nhwc = [x.numpy().transpose(0, 2, 3, 1) for x in (a, b, ma, mb)]
    lp, ds = uniform_heads("lpips", arch).weights, uniform_heads("dists", arch).weights
    with torch.no_grad():
        expected = [
            LPIPS(t_backbone, lp).masked(a, b, ma, mb),
            DISTS(t_backbone, *ds).masked(a, b, ma, mb),
        ]
        plain = [LPIPS(t_backbone, lp)(a, b), DISTS(t_backbone, *ds)(a, b)]
    got = [KerasLPIPS(k_backbone, lp).masked(*nhwc), KerasDISTS(k_backbone, *ds).masked(*nhwc)]
    for e, g, p in zip(expected, got, plain, strict=True):
        assert np.abs(e.numpy() - np.asarray(g)).max() <= 1e-5 * max(1.0, e.abs().max().item())
        assert torch.abs(e - p).min().item() > 1e-4  # a mask changes the distance


def test_masks_reach_every_tap_by_area_averaging():
    import torch.nn.functional as F

    from tf_models.metrics import mask_to_grid as keras_grid
    from torch_models.metrics import mask_to_grid

    rng = np.random.default_rng(0)
    for (h, w), (gh, gw) in [((224, 224), (14, 14)), ((37, 52), (5, 7)), ((33, 33), (17, 33))]:
        m = torch.from_numpy(rng.uniform(0, 1, (2, 1, h, w)).astype(np.float32))
        expected = F.adaptive_avg_pool2d(m, (gh, gw))
        assert torch.abs(mask_to_grid(m, (gh, gw)) - expected).max().item() <= 1e-6
        k = np.asarray(keras_grid(m.numpy().transpose(0, 2, 3, 1), (gh, gw)))
        assert np.abs(k.transpose(0, 3, 1, 2) - expected.numpy()).max() <= 1e-6


def test_a_tight_mask_sees_the_lesion_not_the_skin_around_it():
    """A lesion inside, different skin outside, against the same lesion on other skin.

    The box (the whole image) sees the skin differ. LPIPS under the lesion's own mask sees
    less of it, not nothing: receptive fields near the outline reach the skin (the
    leakage of docs/metrics.md). With `fill` (outside the mask: the region's mean colour)
    the two inputs are the same lesion, and both masked metrics find no difference.
    """
    from bridge.core.data.masks import fill_outside

    backbone = torch_models.create_model("vgg16_tiny")
    lpips = LPIPS(backbone, uniform_heads("lpips", "vgg16_tiny").weights)
    dists = DISTS(backbone, *uniform_heads("dists", "vgg16_tiny").weights)
    rng = np.random.default_rng(4)
    size = 64
    lesion = rng.uniform(0.2, 0.4, (1, 3, size, size)).astype(np.float32)
    skin_a = np.array([0.85, 0.6, 0.5], np.float32).reshape(1, 3, 1, 1)
    skin_b = np.array([0.55, 0.75, 0.35], np.float32).reshape(1, 3, 1, 1)
    mask = np.zeros((1, 1, size, size), np.float32)
    mask[..., 16:48, 16:48] = 1
    a = mask * lesion + (1 - mask) * skin_a
    b = mask * lesion + (1 - mask) * skin_b
    filled = [
        torch.from_numpy(fill_outside(x[0].transpose(1, 2, 0), mask[0, 0]).transpose(2, 0, 1)[None])
        for x in (a, b)
    ]
    a, b, m = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(mask)
    with torch.no_grad():
        whole = lpips(a, b).item()
        assert lpips.masked(a, b, m, m).item() < 0.75 * whole
        for metric in (lpips, dists):
            assert metric(a, b).item() > 0.01
            assert abs(metric.masked(*filled, m, m).item()) < 1e-5
