"""Framework neutrality: same ported weights + same batch -> same loss and same SGD step."""

import numpy as np
import pytest
import torch

import tf_models
import torch_models
from bridge.core import spec
from bridge.core.weights import init_state_dict, random_state_dict
from tf_models import train as tf_train
from torch_models import train as torch_train


def _step_both(arch, state, images, labels, lr=0.05):
    k = int(state[f"{spec.get_arch(arch).head}.weight"].shape[0])
    t_model = torch_models.create_model(arch, k, weights=state)
    for m in t_model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    t_model.train()
    t_opt = torch.optim.SGD(t_model.parameters(), lr=lr)
    t_loss, t_logits = torch_train.train_step(
        t_model, t_opt, torch_train.to_tensor(images, torch.device("cpu")), torch.from_numpy(labels)
    )

    k_model = tf_models.create_model(arch, k, weights=state)
    for layer in k_model.layers:
        if layer.__class__.__name__ == "Dropout":
            layer.rate = 0.0
    import keras
    import tensorflow as tf

    k_opt = keras.optimizers.SGD(learning_rate=lr)
    step = tf_train.make_train_step(k_model, k_opt, k, 0.0, tf.distribute.get_strategy())
    k_loss, k_logits = tf_train.train_step(step, images, labels)
    return (
        float(t_loss), t_logits.numpy(), torch_models.torch_state_dict(t_model),
        k_loss, k_logits, tf_models.torch_state_dict(k_model),
    )  # fmt: skip


@pytest.mark.parametrize("arch", spec.TINY_ARCHS)
@pytest.mark.parametrize("weights", ["init", "random"])
def test_first_step_loss_and_sgd_update_agree(arch, weights):
    s = spec.get_arch(arch)
    k = 3
    make = init_state_dict if weights == "init" else random_state_dict
    state = make(arch, k, seed=7)
    rng = np.random.default_rng(0)
    size = s.contract.native_size
    images = rng.normal(size=(6, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, k, 6).astype(np.int64)
    t_loss, t_logits, t_state, k_loss, k_logits, k_state = _step_both(arch, state, images, labels)
    assert abs(t_loss - k_loss) <= 1e-5 * max(1.0, abs(t_loss))
    assert np.abs(t_logits - k_logits).max() <= 1e-4 * max(1.0, np.abs(t_logits).max())
    changed = 0
    for key, before in state.items():
        a, b = t_state[key], k_state[key]
        if key.endswith("num_batches_tracked"):
            continue  # a torch step counter, no Keras counterpart
        # The step is compared as an update, relative to its own size. A difference in what
        # the step does (learning rate, loss reduction, batch statistics, a missing gradient)
        # is of the order of the update itself; the convolution kernels' float32 gradients
        # differ by CPU: on one CI machine torch's conv1 update differed from Keras's (and
        # from torch's on another machine) by 3e-3 of its size, the forward pass agreeing;
        # on an AMD EPYC (2026-12) the tiny ResNet's layer4.0.conv3 update (a 1x1 grid, so
        # batch norm over 6 values, which amplifies float32 differences) differed by 2.4e-2,
        # the same with the code of earlier commits: 5e-2 still catches a wrong step (~1).
        step_t, step_k = a - before, b - before
        scale = max(np.abs(step_t).max(), 1e-12)
        assert np.abs(step_t - step_k).max() / scale <= 5e-2, key
        changed += not np.array_equal(a, before)
    assert changed > len(state) // 2  # the step really moved the weights
