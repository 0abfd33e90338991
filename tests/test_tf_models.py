"""tf_models: Keras twins that port torch weights exactly.

Tiny variants here; the full-size checks are in test_full.py.
"""

import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import save_torch_file

import tf_models
from bridge.core import spec
from bridge.core.weights import random_state_dict, write_state_dict
from bridge.parity import measure
from tf_models import create_model


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
def test_keras_matches_torch_logits_and_taps(arch):
    """Logits and every tap, at the native size and a second size for the CNNs."""
    rows = measure(arch, batch=2, seed=3)
    sizes = {r.size for r in rows}
    assert len(sizes) == (1 if arch.startswith("vit") else 2)
    for row in rows:
        assert row.ok, [(o.name, o.max_abs_error, o.bound) for o in row.outputs if not o.ok]
        assert row.params == spec.param_count(arch)
        names = [o.name for o in row.outputs]
        assert names == ["logits", *spec.get_arch(arch).tap_names]


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
def test_torch_keras_torch_round_trip_is_exact(arch):
    state = random_state_dict(arch, num_classes=7, seed=4)
    model = create_model(arch, num_classes=7)
    tf_models.set_torch_state_dict(model, state)
    back = tf_models.torch_state_dict(model)
    assert set(back) == set(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype, key
        assert np.array_equal(back[key], value), key


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
def test_keras_torch_keras_round_trip_is_exact(arch):
    first = create_model(arch, seed=5)
    second = create_model(arch, seed=6)
    tf_models.set_torch_state_dict(second, tf_models.torch_state_dict(first))
    for a, b in zip(first.weights, second.weights, strict=True):
        assert a.path == b.path
        assert np.array_equal(np.asarray(a), np.asarray(b)), a.path


def test_random_init_is_seeded():
    a, b, c = (create_model("vit_b16_tiny", seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))
    assert not np.array_equal(
        a.get_layer("head").get_weights()[0], c.get_layer("head").get_weights()[0]
    )


def test_state_dict_in_memory_is_checked_and_ported():
    state = random_state_dict("vit_b16_tiny", num_classes=3, seed=2)
    model = create_model("vit_b16_tiny", num_classes=3, weights=state)
    loaded = tf_models.torch_state_dict(model)
    assert all(np.array_equal(loaded[k], state[k]) for k in state)
    with pytest.raises(ValueError, match=r"state dict: head 'head' has 3 classes"):
        create_model("vit_b16_tiny", weights=state)


def test_layer_names_mirror_torch_modules():
    model = create_model("resnet50_tiny")
    names = {layer.name for layer in model.layers}
    for layer in spec.layer_specs("resnet50_tiny"):
        assert layer.name in names
    assert {t.layer for t in model.spec.taps} <= names


def test_features_model_is_cached_and_nhwc():
    model = create_model("vgg16_tiny")
    features = tf_models.features_model(model)
    assert tf_models.features_model(model) is features
    out = features(np.zeros((1, 32, 32, 3), np.float32))
    assert out["relu3_3"].shape == (1, 8, 8, 32)


def test_vit_gelu_is_exact_erf():
    from tf_models.backbones import GELU

    x = np.linspace(-4, 4, 101).astype(np.float32)
    import torch

    expected = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    assert np.abs(np.asarray(GELU()(x)) - expected).max() < 1e-6


def test_adaptive_pool_matches_torch_on_odd_sizes():
    import torch

    from tf_models.backbones import AdaptiveAveragePooling2D

    x = np.random.default_rng(0).normal(size=(2, 11, 5, 3)).astype(np.float32)
    ours = np.asarray(AdaptiveAveragePooling2D(7)(x))
    ref = torch.nn.AdaptiveAvgPool2d(7)(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert np.abs(ours - ref.transpose(0, 2, 3, 1)).max() < 1e-6


# ----------------------------------------------------------- weights files


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torch_weights_port_on_the_fly(tmp_path, suffix):
    state = random_state_dict("vgg16_tiny", seed=8)
    save = save_torch_file if suffix == ".pth" else write_state_dict
    path = save(state, tmp_path / f"w{suffix}")
    model = create_model("vgg16_tiny", weights=path)
    assert np.array_equal(
        tf_models.torch_state_dict(model)["classifier.0.weight"], state["classifier.0.weight"]
    )


def test_keras_weights_file_round_trip(tmp_path):
    model = create_model("resnet50_tiny", num_classes=4, seed=9)
    path = tmp_path / "m.weights.h5"
    tf_models.save_weights(model, path)
    assert tf_models.keras_file_info(path) == ("resnet50_tiny", 4)
    again = create_model("resnet50_tiny", num_classes=4, weights=path)
    assert all(
        np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights(), strict=True)
    )
    assert [p.name for p in tmp_path.iterdir()] == ["m.weights.h5"]  # no temporary left over


def test_keras_file_of_another_arch_or_head(tmp_path):
    path = tmp_path / "m.weights.h5"
    tf_models.save_weights(create_model("resnet50_tiny", num_classes=4), path)
    with pytest.raises(ValueError, match=r"holds resnet50_tiny weights, not vgg16_tiny"):
        create_model("vgg16_tiny", weights=path)
    with pytest.raises(ValueError, match=r"has 4 classes but num_classes=10 .* pass num_classes=4"):
        create_model("resnet50_tiny", weights=path)


def test_untagged_keras_file_that_does_not_fit(tmp_path):
    path = tmp_path / "foreign.weights.h5"
    tf_models.save_weights(create_model("vit_b16_tiny"), path)
    with h5py.File(path, "a") as f:
        del f.attrs["dermsim_arch"], f.attrs["dermsim_num_classes"]
    with pytest.raises(ValueError, match=r"foreign.weights.h5: does not fit vgg16_tiny"):
        create_model("vgg16_tiny", weights=path)


def test_truncated_keras_file(tmp_path):
    path = tmp_path / "cut.weights.h5"
    tf_models.save_weights(create_model("vgg16_tiny"), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut.weights.h5: unreadable Keras weights file"):
        create_model("vgg16_tiny", weights=path)


def test_refuses_a_non_tensorflow_backend():
    code = "import os; os.environ['KERAS_BACKEND'] = 'torch'; import tf_models"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert (
        "tf_models needs Keras on the TensorFlow backend, but Keras runs on 'torch'"
        in result.stderr
    )


def test_random_init_follows_the_numpy_reference_scheme():
    from bridge.core.weights import init_state_dict

    model = create_model("resnet50_tiny", seed=11)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            tf_models.torch_state_dict(model).values(),
            init_state_dict("resnet50_tiny", seed=11).values(),
            strict=True,
        )
    )


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
def test_random_init_is_the_same_in_both_frameworks(arch):
    """create_model(weights=None) with one seed: the same weights in torch and Keras."""
    import torch_models

    ours = tf_models.torch_state_dict(create_model(arch, num_classes=3, seed=4))
    theirs = torch_models.torch_state_dict(torch_models.create_model(arch, 3, seed=4))
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and np.array_equal(ours[key], value), key
