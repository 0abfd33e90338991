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
