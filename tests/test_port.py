"""bridge.port: numpy conversions and the command line."""

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, run_module, save_torch_file

from bridge.core import spec
from bridge.core.porting import keras_to_torch, torch_to_keras
from bridge.core.weights import random_state_dict, read_state_dict


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
def test_numpy_round_trip(arch):
    state = random_state_dict(arch, seed=1)
    back = keras_to_torch(torch_to_keras(state, arch), arch)
    assert all(np.array_equal(back[k], state[k]) for k in state)


def test_vgg_fc1_rows_follow_the_keras_flatten_order():
    """Row (h, w, c) of the Keras kernel is column (c, h, w) of the torch weight."""
    state = random_state_dict("vgg16_tiny", seed=2)
    kernel = torch_to_keras(state, "vgg16_tiny")["classifier.0"][0]
    weight = state["classifier.0.weight"]  # (hidden, 64 * 7 * 7)
    c, h, w = 5, 2, 6
    assert np.array_equal(kernel[(h * 7 + w) * 64 + c], weight[:, c * 49 + h * 7 + w])


def test_conv_and_bn_layouts():
    state = random_state_dict("resnet50_tiny", seed=3)
    k = torch_to_keras(state, "resnet50_tiny")
    assert k["conv1"][0].shape == (7, 7, 3, 64)
    gamma, beta, mean, var = k["bn1"]
    assert np.array_equal(gamma, state["bn1.weight"]) and np.array_equal(beta, state["bn1.bias"])
    assert np.array_equal(mean, state["bn1.running_mean"])
    assert np.array_equal(var, state["bn1.running_var"])


def test_missing_keras_layer():
    weights = torch_to_keras(random_state_dict("vit_b16_tiny"), "vit_b16_tiny")
    del weights["norm"]
    with pytest.raises(ValueError, match=r"Keras weights lack layer 'norm' of vit_b16_tiny"):
        keras_to_torch(weights, "vit_b16_tiny")


def _port(arch: str, origin: str, weights, out, run=run_module):
    """Run `python -m bridge.port` (`run=run_cli`: in this process)."""
    args = ["--arch", arch, "--from", origin, "--weights", str(weights), "--out", str(out)]
    return run("bridge.port", *args)


def test_cli_torch_to_keras_to_torch(tmp_path):
    state = random_state_dict("vgg16_tiny", num_classes=3, seed=4)
    src = save_torch_file(state, tmp_path / "in.pth")
    keras_file = tmp_path / "out.weights.h5"
    result = _port("vgg16_tiny", "torch", src, keras_file)
    assert result.returncode == 0, result.stderr
    for name in ("back.safetensors", "back.pth"):  # torch's own pickle, read back without it
        back = tmp_path / name
        # in this process: the command's __main__ block ran just above
        result = _port("vgg16_tiny", "keras", keras_file, back, run=run_cli)
        assert result.returncode == 0, result.stderr
        again = read_state_dict(back)
        assert all(np.array_equal(again[k], state[k]) for k in state), name


def test_cli_wrong_arch_is_one_line_and_writes_nothing(tmp_path):
    src = save_torch_file(random_state_dict("resnet50_tiny"), tmp_path / "r.pth")
    result = _port("vgg16_tiny", "torch", src, tmp_path / "out.weights.h5", run=run_cli)
    assert_one_line_error(result, "r.pth: holds resnet50_tiny weights, not vgg16_tiny")
    assert list(tmp_path.iterdir()) == [src]


def test_cli_bad_values(tmp_path):
    """In this process (`run_cli`): each mistake stops the command before it writes."""
    result = _port("alexnet", "torch", "x.pth", "y.weights.h5", run=run_cli)
    assert_one_line_error(result, "unknown arch 'alexnet'")
    missing = tmp_path / "missing.pth"
    result = _port("vgg16_tiny", "torch", missing, tmp_path / "y.weights.h5", run=run_cli)
    assert_one_line_error(result, "missing.pth: no such weights file")
    result = _port("vgg16_tiny", "torch", "x.pth", "y.h5", run=run_cli)
    assert_one_line_error(result, "y.h5: a Keras output must end with .weights.h5")


def test_parity_cli_tiny(tmp_path):
    out = tmp_path / "parity.md"
    result = run_module("bridge.parity", "--tiny", "--arch", "vit_b16_tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "| vit_b16_tiny | 64x64 | keras | dermsim torch | 151,450 |" in result.stdout
    assert "| NO |" not in result.stdout
    assert out.read_text().strip() == result.stdout.strip()
    result = run_cli("bridge.parity", "--tiny", "--sizes", "a,b")
    assert_one_line_error(result, "--sizes must be comma-separated integers")


@pytest.mark.parametrize("arch", spec.FULL_ARCHS)
def test_init_scheme_matches_the_reference_libraries(arch):
    """The numpy init draws the same distributions as torchvision / timm (std per tensor).

    The reference is the libraries' own model (`bridge.parity.reference_model`, seeded
    through torch's global generator), not `torch_models.create_model`, which draws
    `init_state_dict` itself (so that torch and Keras start alike).

    Two independent draws of n values differ by chance: their means by about
    std * sqrt(2 / n), their stds by about std / sqrt(n) (normal values; uniform ones
    less). The bounds are five of those standard errors (at least 5% for the std), so
    a wrong scheme (a fan or gain off by sqrt(2) or more) fails while chance does not.
    """
    import torch

    from bridge.core.weights import init_state_dict
    from bridge.parity import reference_model

    ours = init_state_dict(arch, seed=0)
    torch.manual_seed(0)  # the reference libraries draw from torch's global generator
    ref = {k: v.detach().numpy() for k, v in reference_model(arch).state_dict().items()}
    for key, value in ours.items():
        if value.size < 1000:
            assert (
                np.allclose(value, ref[key], atol=1e-5) or value.size < 2 or key.endswith("bias")
            ), key
            continue
        n, std = value.size, float(np.std(ref[key]))
        assert np.std(value) == pytest.approx(std, rel=max(0.05, 5 / np.sqrt(n))), key
        assert np.mean(value) == pytest.approx(
            np.mean(ref[key]), abs=5 * std * np.sqrt(2 / n) + 1e-6
        ), key
