"""torch_models: exactly the torchvision / timm networks, plus named taps."""

import pickle

import numpy as np
import pytest
import torch
from conftest import save_torch_file

import torch_models
from bridge.core import spec, weights
from bridge.core.weights import init_state_dict, random_state_dict, write_state_dict
from bridge.parity import reference_model
from torch_models import create_model


@pytest.mark.parametrize("arch", spec.FULL_ARCHS + spec.TINY_ARCHS)
def test_outputs_equal_the_reference_library(arch):
    """Same seeded random state dict -> same logits as torchvision / timm (<= 1e-6)."""
    s = spec.get_arch(arch)
    state = random_state_dict(arch, seed=1)
    ours = create_model(arch, weights=state)
    ref = reference_model(arch)
    torch_models.set_torch_state_dict(ref, state)
    x = torch.randn(1, 3, s.contract.native_size, s.contract.native_size)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-6
    assert sum(p.numel() for p in ours.parameters()) == spec.param_count(arch)
    assert set(ours.state_dict()) == set(spec.state_dict_shapes(arch))


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
def test_forward_features_returns_the_spec_taps(arch):
    s = spec.get_arch(arch)
    size = s.contract.native_size
    with torch.no_grad():
        feats = create_model(arch).forward_features(torch.randn(2, 3, size, size))
    assert tuple(feats) == s.tap_names
    for tap in s.taps:
        assert feats[tap.name].shape == (2, tap.channels, size // tap.stride, size // tap.stride)
        if tap.tokens:
            assert feats[f"{tap.name}_cls"].shape == (2, tap.channels)


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_model("vgg16_tiny", seed=3)
    after = torch.rand(1)
    b = create_model("vgg16_tiny", seed=3)
    c = create_model("vgg16_tiny", seed=4)
    assert torch.equal(before, after)
    assert torch.equal(a.features[0].weight, b.features[0].weight)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    assert not a.training


def test_random_init_follows_the_numpy_reference_scheme():
    model = create_model("resnet50_tiny", seed=11)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            torch_models.torch_state_dict(model).values(),
            init_state_dict("resnet50_tiny", seed=11).values(),
            strict=True,
        )
    )


def test_state_dict_in_memory_is_checked_and_loaded():
    state = random_state_dict("vit_b16_tiny", num_classes=3, seed=2)
    model = create_model("vit_b16_tiny", num_classes=3, weights=state)
    loaded = torch_models.torch_state_dict(model)
    assert all(np.array_equal(loaded[k], state[k]) for k in state)
    with pytest.raises(ValueError, match=r"state dict: head 'head' has 3 classes"):
        create_model("vit_b16_tiny", weights=state)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loads_state_dict_files(tmp_path, suffix):
    state = random_state_dict("resnet50_tiny", num_classes=5, seed=2)
    save = save_torch_file if suffix == ".pth" else write_state_dict
    path = save(state, tmp_path / f"w{suffix}")
    model = create_model("resnet50_tiny", num_classes=5, weights=path)
    loaded = torch_models.torch_state_dict(model)
    assert all(np.array_equal(loaded[k], state[k]) for k in state)


def test_loads_wrapped_checkpoint_and_fills_num_batches_tracked(tmp_path):
    state = random_state_dict("resnet50_tiny", seed=2)
    state = {k: torch.from_numpy(v) for k, v in state.items() if "num_batches" not in k}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    model = create_model("resnet50_tiny", weights=tmp_path / "ckpt.pth")
    assert model.bn1.num_batches_tracked.item() == 0


def test_imagenet_weights_resolved_from_torch_home(tmp_path, monkeypatch):
    state = random_state_dict("vgg16_tiny", seed=5)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    path = save_torch_file(state, hub / "vgg16_tiny-imagenet.pth")
    ref = weights.ReferenceWeights(path.name, weights.sha256_file(path)[:8], "test weights")
    monkeypatch.setitem(weights.REFERENCE_WEIGHTS, "vgg16_tiny", ref)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = create_model("vgg16_tiny", weights="imagenet")
    assert np.array_equal(model.features[0].weight.detach().numpy(), state["features.0.weight"])


def test_imagenet_vit_from_hugging_face_cache(tmp_path, monkeypatch):
    state = random_state_dict("vit_b16_tiny", seed=6)
    repo = "timm/vit_tiny_test"
    snapshot = tmp_path / "hf" / "hub" / "models--timm--vit_tiny_test" / "snapshots" / "abc123"
    write_state_dict(state, snapshot / "model.safetensors")
    ref = weights.ReferenceWeights("vit_tiny_test.safetensors", None, "test", hf_repo=repo)
    monkeypatch.setitem(weights.REFERENCE_WEIGHTS, "vit_b16_tiny", ref)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model = create_model("vit_b16_tiny", weights="imagenet")
    assert np.array_equal(model.pos_embed.detach().numpy(), state["pos_embed"])


# ------------------------------------------------------------------ bad input


def test_missing_imagenet_file_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        create_model("vgg16", weights="imagenet")
    message = str(err.value)
    assert "vgg16-397923af.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "397923af" in message and "never downloads" in message
    assert "\n" not in message


def test_imagenet_file_with_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DERMSIM_WEIGHTS", str(tmp_path))
    (tmp_path / "resnet50-0676ba61.pth").write_bytes(b"not the weights")
    with pytest.raises(ValueError, match=r"does not start with 0676ba61"):
        create_model("resnet50", weights="imagenet")


def test_weights_of_another_arch(tmp_path):
    path = write_state_dict(random_state_dict("resnet50_tiny"), tmp_path / "r.safetensors")
    with pytest.raises(
        ValueError, match=r"r.safetensors: holds resnet50_tiny weights, not vgg16_tiny"
    ):
        create_model("vgg16_tiny", weights=path)


def test_full_size_weights_into_tiny_model_name_the_arch(tmp_path):
    state = {k: v for k, v in random_state_dict("vit_b16_tiny").items()}
    state["pos_embed"] = np.zeros((1, 197, 48), np.float32)
    path = write_state_dict(state, tmp_path / "v.safetensors")
    with pytest.raises(
        ValueError,
        match=r"'pos_embed' has shape \(1, 197, 48\), vit_b16_tiny expects \(1, 17, 48\)",
    ):
        create_model("vit_b16_tiny", weights=path)


def test_head_size_mismatch(tmp_path):
    path = save_torch_file(random_state_dict("vgg16_tiny", num_classes=3), tmp_path / "h.pth")
    with pytest.raises(
        ValueError,
        match=r"head 'classifier.6' has 3 classes but num_classes=10 .* pass num_classes=3",
    ):
        create_model("vgg16_tiny", weights=path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tmp_path, suffix):
    save = save_torch_file if suffix == ".pth" else write_state_dict
    path = save(random_state_dict("vgg16_tiny"), tmp_path / f"t{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"t{suffix}: unreadable"):
        create_model("vgg16_tiny", weights=path)


def test_arbitrary_pickle_is_not_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("executed!",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"x": Boom()}))
    with pytest.raises(ValueError, match=r"evil.pth: unreadable torch weights file"):
        create_model("vgg16_tiny", weights=path)


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"not a state dict"):
        create_model("vgg16_tiny", weights=tmp_path / "list.pth")


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.pth: no such weights file"):
        create_model("vgg16_tiny", weights=tmp_path / "nope.pth")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"expected .safetensors or .pth"):
        create_model("vgg16_tiny", weights=tmp_path / "w.npz")


def test_unknown_arch():
    with pytest.raises(ValueError, match=r"unknown arch 'resnet18'"):
        create_model("resnet18")
