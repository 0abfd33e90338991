"""Shared training core and both trainers, on a small synthetic set."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_cli, run_module

from bridge.core import training
from bridge.core.config import AugmentConfig, load_config
from bridge.core.data.readers import ClassificationSet, Sample
from bridge.core.data.splits import make_splits, read_splits, write_splits
from bridge.core.data.stream import BatchStream, ImageCache
from bridge.core.data.synth import SynthConfig, generate
from bridge.core.spec import get_arch


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    """A small synthetic set (36 lesions x 2 views per class... at 32 px)."""
    root = tmp_path_factory.mktemp("synthetic") / "set"
    generate(
        root, SynthConfig(seed=0, per_class=24, size=32, cases=6, raters=5, views_per_lesion=2)
    )
    return root


def write_config(tmp_path: Path, synthetic: Path, **train) -> Path:
    lines = [
        'name = "t"', f'output = "{tmp_path / "runs"}"', "seed = 0", "[data]",
        'source = "synthetic"', f'path = "{synthetic}"', "image_size = 32",
        "val_fraction = 0.2", "test_fraction = 0.2", "[augment]", "crop_scale = [0.8, 1.0]",
        "[train]",
    ]  # fmt: skip
    settings = {"epochs": 2, "batch_size": 8, "lr": 1e-3, "warmup_epochs": 0, **train}
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------- config


def test_demo_config_and_overrides():
    config = load_config(
        ROOT / "configs" / "demo.toml", ["train.lr=1e-3", 'data.classes=["MEL","NV"]']
    )
    assert config.train.lr == 1e-3 and config.data.classes == ("MEL", "NV")
    assert load_config(ROOT / "configs" / "isic2019_thesis.toml").train.init == "imagenet"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=fast", "config train.lr = 'fast': expected a number"),
        ("train.speed=1", "config: unknown key train.speed"),
        ("train.epochs=0", "config train.epochs = 0: expected >= 1"),
        ("train.trainable=some", "config train.trainable = 'some': expected all, head or last:N"),
        ("data.source=imagenet", "config data.source = 'imagenet': expected one of synthetic"),
        ("lr", "--set 'lr': expected key=value"),
    ],
)
def test_config_errors(override, message):
    with pytest.raises(ValueError) as err:
        load_config(ROOT / "configs" / "demo.toml", [override])
    assert message in str(err.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("name = \n")
    with pytest.raises(ValueError, match=r"bad.toml: not valid TOML"):
        load_config(tmp_path / "bad.toml")


# ---------------------------------------------------------------------- splits


def _grouped_set(n_groups=60, per_group=3) -> ClassificationSet:
    rng = np.random.default_rng(0)
    samples = []
    for g in range(n_groups):
        label = ["A", "B", "C"][g % 3]
        for v in range(int(rng.integers(1, per_group + 1))):
            samples.append(Sample(f"img{g}_{v}", Path(f"{g}_{v}.jpg"), label, f"lesion{g}"))
    return ClassificationSet("test", tuple(samples), ("A", "B", "C"), "lesion_id")


def test_splits_keep_groups_together_and_are_stratified(tmp_path):
    dataset = _grouped_set()
    split = make_splits(dataset, 0.15, 0.2, seed=3)
    groups: dict[str, set] = {}
    for s in dataset.samples:
        groups.setdefault(s.group, set()).add(split[s.id])
    assert all(len(where) == 1 for where in groups.values())
    for name in ("train", "val", "test"):
        labels = [s.label for s in dataset.samples if split[s.id] == name]
        assert set(labels) == {"A", "B", "C"}, name
    assert make_splits(dataset, 0.15, 0.2, seed=3) == split
    assert make_splits(dataset, 0.15, 0.2, seed=4) != split
    path = write_splits(dataset, split, tmp_path / "splits.csv")
    assert read_splits(path, dataset) == split


def test_split_file_of_other_data_is_refused(tmp_path):
    dataset = _grouped_set()
    path = write_splits(dataset, make_splits(dataset), tmp_path / "splits.csv")
    extra = Sample("new", Path("n.jpg"), "A", None)
    other = ClassificationSet("test", (*dataset.samples[:-1], extra), dataset.classes, "lesion_id")
    with pytest.raises(ValueError, match=r"splits.csv line \d+: image .* is not in the data set"):
        read_splits(path, other)


def test_synthetic_split_has_no_lesion_in_two_splits(tmp_path, synthetic):
    config = load_config(write_config(tmp_path, synthetic))
    data = training.load_run_data(config)
    assert data.dataset.synthetic and data.dataset.group_by == "lesion_id"
    lesions: dict[str, set] = {}
    for s in data.dataset.samples:
        lesions.setdefault(s.group, set()).add(data.split[s.id])
    assert all(len(v) == 1 for v in lesions.values())
    assert (config.run_dir / "splits.csv").is_file()


# ---------------------------------------------------------------------- stream


def test_stream_is_seeded_and_independent_of_batch_size(tmp_path, synthetic):
    config = load_config(write_config(tmp_path, synthetic))
    data = training.load_run_data(config)
    samples = [s for s in data.dataset.samples if data.split[s.id] == "train"]
    cache = ImageCache(32, "shorter_center_crop", "bilinear")

    def stream(batch, seed=0):
        return BatchStream(samples, data.classes, cache, (0.5,) * 3, (0.25,) * 3, batch,
                           augment=AugmentConfig(), shuffle=True, seed=seed)  # fmt: skip

    a = np.concatenate([b.images for b in stream(8).epoch(1)])
    b = np.concatenate([b.images for b in stream(5).epoch(1)])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, np.concatenate([b.images for b in stream(8).epoch(2)]))
    assert not np.array_equal(a, np.concatenate([b.images for b in stream(8, seed=1).epoch(1)]))
    assert a.shape[1:] == (32, 32, 3) and a.dtype == np.float32
    assert a.min() >= -2.0 - 1e-6 and a.max() <= 2.0 + 1e-6  # (x - .5) / .25, x in [0, 1]
    plain = BatchStream(samples, data.classes, cache, (0.0,) * 3, (1.0,) * 3, 4)
    first = next(plain.epoch(0))
    assert np.array_equal(first.images[0], cache.get(samples[0]))


# -------------------------------------------------------------------- schedule


def test_learning_rate_schedule():
    config = load_config(None, ["train.epochs=10", "train.lr=1.0", "train.warmup_epochs=2"])
    lr = [training.learning_rate(config, e) for e in (0, 1, 2, 6, 10)]
    assert lr == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    step = load_config(None, ["train.epochs=10", "train.lr=1.0", "train.schedule=step"])
    assert [training.learning_rate(step, e) for e in (0, 6, 9)] == pytest.approx([1.0, 0.1, 0.01])


def test_trainable_layers():
    vgg = get_arch("vgg16")
    assert training.trainable_layers(vgg, "all") is None
    assert training.trainable_layers(vgg, "head") == ("classifier.6",)
    assert training.trainable_layers(vgg, "last:1") == (
        "classifier.6",
        "classifier.0",
        "classifier.3",
    )
    resnet = training.trainable_layers(get_arch("resnet50"), "last:2")
    assert resnet == ("fc", "layer3", "layer4")
    assert training.is_trainable("layer4.2.conv1", resnet)
    assert not training.is_trainable("layer2.0.conv1", resnet)
    assert not training.is_trainable("layer40", ("layer4",))
    vit = training.trainable_layers(get_arch("vit_b16"), "last:2")
    assert vit == ("head", "blocks.11", "norm")


# --------------------------------------------------------------------- metrics


def test_classification_metrics_agree_with_sklearn():
    from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + np.eye(3)[labels] * 1.5
    m = training.classification_metrics(labels, logits, ["A", "B", "C"], confusion=True)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    predicted = logits.argmax(1)
    assert m["loss"] == pytest.approx(log_loss(labels, probs), abs=1e-9)
    assert m["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels, predicted), abs=1e-9
    )
    assert m["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-9)
    assert m["roc_auc"]["B"] == pytest.approx(roc_auc_score(labels == 1, probs[:, 1]), abs=1e-9)
    assert np.trace(np.asarray(m["confusion"])) == (predicted == labels).sum()


# -------------------------------------------------------------------- trainers


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic):
    """`get(module, policy)`: one finished vgg16_tiny run of a trainer (2 epochs, one
    thread), trained once for the tests that read it; (folder, config, result)."""
    done = {}

    def get(module: str, policy: str):
        if module not in done:
            root = tmp_path_factory.mktemp(module.split(".")[0])
            config = write_config(root, synthetic, checkpoints=policy)
            result = run_module(
                module, "--config", str(config), "--arch", "vgg16_tiny", "--threads", "1"
            )
            done[module] = (root, config, result)
        return done[module]

    return get


@pytest.mark.parametrize(
    "module, suffix, policy",
    [("torch_models.train", ".safetensors", "best"), ("tf_models.train", ".weights.h5", "every")],
)
def test_trainer_end_to_end(trained, module, suffix, policy):
    root, config, result = trained(module, policy)
    assert result.returncode == 0, result.stderr[-3000:]
    framework = "torch" if module.startswith("torch") else "keras"
    run_dir = root / "runs" / "t" / f"vgg16_tiny-{framework}"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("loss", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
        assert key in rows[0]["train"] and key in rows[0]["val"]
    for name in (f"best{suffix}", "curves.png", "confusion.png", "test.json", "run.json"):
        assert (run_dir / name).is_file(), name
    # finished: the resume state is gone; per-epoch checkpoints only when asked for
    assert not (run_dir / "resume").exists()
    expected = [f"epoch_00{e}{suffix}" for e in (1, 2)] if policy == "every" else []
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*")) == expected
    info = json.loads((run_dir / "run.json").read_text())
    assert info["data"]["synthetic"] is True and info["classes"] == ["MEL", "NV", "BCC"]
    assert info["init"]["sha256"] and info["input_contract"]["native_size"] == 32
    timing = info["timing"]  # the conditions the times were measured in
    assert timing["threads"] == 1 and timing["side_by_side"] == 1
    assert 0 < timing["train_seconds"] <= timing["wall_seconds"]
    again = run_cli(module, "--config", str(config), "--arch", "vgg16_tiny")
    assert_one_line_error(again, "already holds a run; pass --resume")


def test_trainer_bad_input_is_one_line(tmp_path, synthetic):
    """In this process (`run_cli`): each mistake stops the trainer before it trains."""
    config = write_config(tmp_path, synthetic)
    result = run_cli("torch_models.train", "--config", str(config), "--set", "train.optimizer=lion")
    assert_one_line_error(result, "config train.optimizer = 'lion': expected adamw or sgd")
    result = run_cli(
        "torch_models.train", "--config", str(config), "--arch", "vgg16_tiny", "--resume"
    )
    assert_one_line_error(result, "nothing to resume")
    result = run_cli("tf_models.train", "--config", str(tmp_path / "none.toml"))
    assert_one_line_error(result, "none.toml: no such config file")


def _metrics(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, synthetic):
    """torch, CPU: kill -9 after epoch 1 of 3, resume, and end with identical metrics."""
    whole = write_config(tmp_path / "a", synthetic, epochs=3)
    assert (
        run_module(
            "torch_models.train",
            "--config",
            str(whole),
            "--arch",
            "resnet50_tiny",
            "--threads",
            "1",  # one thread: the sums' order cannot depend on the load
        ).returncode
        == 0
    )
    cut = write_config(tmp_path / "b", synthetic, epochs=3)
    run_dir = tmp_path / "b" / "runs" / "t" / "resnet50_tiny-torch"
    state = run_dir / "resume" / "state.json"
    command = ["-m", "torch_models.train", "--config", str(cut), "--arch", "resnet50_tiny",
               "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 1):
        assert proc.poll() is None and time.time() < deadline, "trainer ended before the kill"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["epoch"]
    assert killed_at < 3
    # the state names an epoch whose weights and optimiser state are both there
    resume = run_dir / "resume"
    assert (resume / f"epoch_{killed_at:03d}.safetensors").is_file()
    assert (resume / f"optimizer_{killed_at:03d}.pt").is_file()
    result = run_module(
        "torch_models.train", "--config", str(cut), "--arch", "resnet50_tiny", "--resume",
        "--threads", "1", "--set", "train.checkpoints=last",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not resume.exists() and (run_dir / "last.safetensors").is_file()
    first = tmp_path / "a" / "runs" / "t" / "resnet50_tiny-torch"
    assert _metrics(run_dir / "metrics.jsonl") == _metrics(first / "metrics.jsonl")
    assert json.loads((run_dir / "test.json").read_text()) == json.loads(
        (first / "test.json").read_text()
    )


def test_torch_trainer_under_torchrun_with_two_processes(tmp_path, synthetic):
    config = write_config(tmp_path, synthetic, epochs=1)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "torch_models.train", "--config", str(config), "--arch", "vit_b16_tiny"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t" / "vit_b16_tiny-torch"
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((run_dir / "run.json").read_text())["test"]["balanced_accuracy"] >= 0


MIRRORED = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
import tf_models
from bridge.core.weights import init_state_dict
from tf_models import train as kt

state = init_state_dict("vit_b16_tiny", 3, seed=1)
x = np.random.default_rng(0).normal(size=(8, 64, 64, 3)).astype("float32")
y = np.random.default_rng(1).integers(0, 3, 8)
out = []
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for strategy in (tf.distribute.get_strategy(), mirrored):
    with strategy.scope():
        model = tf_models.create_model("vit_b16_tiny", 3)
        tf_models.set_torch_state_dict(model, state)
        optimizer = keras.optimizers.SGD(learning_rate=0.1)
        optimizer.build(model.trainable_variables)
    step = kt.make_train_step(model, optimizer, 3, 0.0, strategy)
    loss, _ = kt.train_step(step, x, y)
    out.append((strategy.num_replicas_in_sync, loss, tf_models.torch_state_dict(model)))
(n1, loss1, w1), (n2, loss2, w2) = out
assert (n1, n2) == (1, 2)
assert abs(loss1 - loss2) < 1e-5, (loss1, loss2)
assert max(float(np.abs(w1[k] - w2[k]).max()) for k in w1) < 1e-5
print("mirrored ok")
"""


def test_keras_step_under_a_mirrored_strategy_equals_one_device():
    """The tf.distribute path: two replicas (logical CPUs) take the same step as one device."""
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored ok" in result.stdout


def test_dataset_normalization_uses_training_split_statistics(tmp_path, synthetic):
    config = load_config(write_config(tmp_path, synthetic), ["data.normalization=dataset"])
    data = training.load_run_data(config)
    run = training.prepare(config, "vgg16_tiny", "torch", data)
    train = [data.cache.get(s) for s in data.dataset.samples if data.split[s.id] == "train"]
    pixels = np.concatenate([im.reshape(-1, 3) for im in train]).astype(np.float64)
    assert run.contract.mean == pytest.approx(pixels.mean(0), abs=1e-9)
    assert run.contract.std == pytest.approx(pixels.std(0), abs=1e-7)
    assert run.contract.source == "t training split"


def test_init_from_a_file_gets_a_new_head_and_is_shared(tmp_path, synthetic):
    from bridge.core.weights import random_state_dict, read_state_dict, write_state_dict

    weights = write_state_dict(
        random_state_dict("vgg16_tiny", 10, seed=5), tmp_path / "w.safetensors"
    )
    config = load_config(
        write_config(tmp_path, synthetic), [f"train.init={json.dumps(str(weights))}"]
    )
    data = training.load_run_data(config)
    torch_run = training.prepare(config, "vgg16_tiny", "torch", data)
    keras_run = training.prepare(config, "vgg16_tiny", "keras", data)
    assert torch_run.init_path == keras_run.init_path
    init = read_state_dict(torch_run.init_path)
    source = read_state_dict(weights)
    assert np.array_equal(init["features.0.weight"], source["features.0.weight"])
    assert init["classifier.6.weight"].shape == (3, 64)
    assert str(weights) in torch_run.init_source


def test_export_from_a_training_run(trained, tmp_path):
    """The Keras-trained run of `test_trainer_end_to_end`, exported by torch.onnx (its weights
    ported from the Keras file). Native exports of runs: the demo (test_compare.py)."""
    root, _, result = trained("tf_models.train", "every")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = root / "runs" / "t" / "vgg16_tiny-keras"
    out = tmp_path / "models"
    result = run_module(
        "bridge.export",
        "--run",
        str(run_dir.parent),  # a folder of runs: every run in it
        "--kind",
        "classifier,dists",
        "--origin",
        "torch",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "t-vgg16_tiny-keras-classifier-torch.json").read_text())
    assert manifest["synthetic"] is True and manifest["num_classes"] == 3
    assert "training run" in manifest["source_weights"]["provenance"]
    run = manifest["training_run"]
    assert run["classes"] == ["MEL", "NV", "BCC"] and run["framework"] == "keras"
    assert run["dir"] == str(run_dir) and run["train_seconds"] > 0
    assert manifest["heads"] is None
    scorer = json.loads((out / "t-vgg16_tiny-keras-dists-torch.json").read_text())
    assert scorer["heads"]["source"] == "uniform"
    assert_one_line_error(
        run_cli("bridge.export", "--run", str(tmp_path)), "not a finished training run"
    )
