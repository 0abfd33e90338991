"""Full-size checks (the `full` group): minutes on 2 CPU cores, run once by `tox -e test`."""

import numpy as np
import pytest
import torch

import tf_models
import torch_models
from bridge import spec
from bridge.parity import measure
from bridge.port import keras_to_torch, torch_to_keras
from bridge.weights import random_state_dict

pytestmark = pytest.mark.full


@pytest.mark.parametrize("arch", spec.FULL_ARCHS)
def test_full_size_keras_port_matches_torch(arch):
    """Logits and every tap within 1e-4 x max(1, max|ref|) at 224 (and 160 for the CNNs);
    dermsim torch equals the reference library exactly; parameter counts equal the references."""
    rows = measure(arch, batch=2, seed=0)
    assert {r.size for r in rows} == ({224} if arch == "vit_b16" else {224, 160})
    for row in rows:
        assert row.ok, [(o.name, o.max_abs_error, o.bound) for o in row.outputs if not o.ok]
        assert row.params == spec.get_arch(arch).reference_params


@pytest.mark.parametrize("arch", spec.FULL_ARCHS)
def test_full_size_round_trips_are_exact(arch):
    state = random_state_dict(arch, seed=1)
    keras_model = tf_models.create_model(arch)
    tf_models.set_torch_state_dict(keras_model, state)
    back = tf_models.torch_state_dict(keras_model)
    assert all(np.array_equal(back[k], state[k]) for k in state)
    # Keras -> torch -> Keras
    fresh = tf_models.create_model(arch, seed=2)
    torch_model = torch_models.create_model(arch)
    torch_model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in tf_models.torch_state_dict(fresh).items()}
    )
    again = keras_to_torch(torch_to_keras(torch_models.state_dict_numpy(torch_model), arch), arch)
    tf_models.set_torch_state_dict(keras_model, again)
    for a, b in zip(fresh.weights, keras_model.weights, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b)), a.path
