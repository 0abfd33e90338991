"""Fitting LPIPS / DISTS heads to ratings: terms, twin fits, constraint, protocol, CLI."""

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, run_module

from bridge import finetune_metric as fm
from bridge import fit_protocol as protocol
from bridge.core import fitting
from bridge.core.data.image import decode_image, fit
from bridge.core.data.splits import kfold
from bridge.core.data.synth import SynthConfig, generate
from bridge.core.files import sha256_file
from bridge.core.metrics import (
    Heads,
    is_fitted_heads,
    read_fitted_heads,
    uniform_heads,
    write_fitted_heads,
)
from bridge.core.spec import FRAMEWORKS, get_arch
from bridge.core.weights import random_state_dict, write_state_dict
from bridge.export import default_heads, source_from_weights
from evaluation import stats

ARCH = "vgg16_tiny"
# Fits are compared over this many epochs; the CLI test runs the default (400).
EPOCHS = 200


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small synthetic rated set (48 cases, 4 raters) and seeded random tiny VGG16 weights.

    48 cases (the synthetic set's default count), not fewer: with 5 folds that leaves
    ~8 validation cases per fold to choose the epoch; on 30 cases (5 per validation
    part) the choice is too coarse for the fitted-beats-unfitted check to mean much.
    """
    root = tmp_path_factory.mktemp("finetune")
    data = generate(
        root / "synthetic", SynthConfig(seed=0, per_class=3, size=40, cases=48, raters=4)
    )
    weights = write_state_dict(random_state_dict(ARCH, 4, seed=2), root / f"{ARCH}.safetensors")
    return root, data / "rated", weights


@pytest.fixture(scope="module")
def source(setup):
    return source_from_weights(ARCH, setup[2])


@pytest.fixture(scope="module")
def rated(setup):
    return fitting.load_rated(setup[1], aspect="overall")


@pytest.fixture(scope="module")
def torch_terms(source, rated):
    """Per-case terms of the rated set from the torch modules, per metric."""
    fw = protocol.framework_module("torch")
    out = {}
    for metric in fitting.METRIC_NAMES:
        heads = protocol.start_heads(metric, source.spec)
        module = fw.build_metric(metric, source.spec, 4, source.state_dict(), heads)
        out[metric] = protocol.case_terms(fw, module, rated.cases, 32, check=heads, progress=False)
    return out


def _images(seed, n, h, w):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 3, h, w)).astype(np.float32)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("metric", fitting.METRIC_NAMES)
def test_term_distances_equal_the_modules_distances(source, framework, metric):
    fw = protocol.framework_module(framework)
    rng = np.random.default_rng(1)
    base = uniform_heads(metric, source.spec)
    heads = Heads(metric, tuple(w * rng.uniform(0.1, 2.0, w.shape) for w in base.weights), "t")
    module = fw.build_metric(metric, source.spec, 4, source.state_dict(), heads)
    theta = fitting.flatten_heads(heads)
    a, b = _images(0, 3, 32, 32), _images(1, 3, 32, 32)
    terms = fw.pair_terms(module, a, b)
    assert terms.shape == (3, theta.size) and terms.dtype == np.float64
    expected = fw.pair_distances(module, a, b)
    assert np.abs(fitting.term_distances(metric, terms, theta) - expected).max() <= 1e-5
    # references shared by several comparisons, at a non-square size
    refs, comps = _images(2, 2, 40, 48), _images(3, 4, 40, 48)
    index = np.array([0, 0, 1, 1])
    terms = fw.pair_terms(module, refs, comps, index)
    expected = fw.pair_distances(module, refs[index], comps)
    assert np.abs(fitting.term_distances(metric, terms, theta) - expected).max() <= 1e-5


@pytest.mark.parametrize("metric", fitting.METRIC_NAMES)
def test_torch_and_keras_fits_agree(torch_terms, rated, metric):
    """Same terms, same start, same Adam settings: the same heads at every checked epoch.

    Both fit in float64. What still differs is Keras's Adam: its betas are float32
    (the bias correction is off by ~1e-5 relative in the first steps) and its epsilon
    sits before the bias correction (FitConfig.eps = 1e-14 is far below every real
    gradient). Measured: <= ~1e-5 of the heads' scale after 400 steps; the bound is 1e-4.
    """
    terms = torch_terms[metric]
    start = np.ones(terms.shape[1])
    config = fitting.FitConfig(epochs=EPOCHS)
    trainable = fitting.varying_channels(terms)
    got = {}
    for framework in FRAMEWORKS:
        fw = protocol.framework_module(framework)
        got[framework], losses = fw.fit_heads(
            metric, terms, rated.target, start, config, config.checkpoints(), trainable
        )
        assert losses[-1] < losses[0]  # it learns
    for epoch in config.checkpoints():
        t, k = got["torch"][epoch], got["keras"][epoch]
        assert np.abs(t - k).max() <= 1e-4 * np.abs(t).max(), epoch
        assert np.array_equal(t[~trainable], start[~trainable])  # constant terms: not trained


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("metric", fitting.METRIC_NAMES)
def test_heads_stay_non_negative_where_descent_would_go_negative(framework, metric):
    rng = np.random.default_rng(0)
    n = 30
    y = rng.uniform(1, 7, n)
    good = (y[:, None] + rng.normal(0, 1.0, (n, 5))) / 10
    bad = (8 - y[:, None] + rng.normal(0, 0.3, (n, 1))) / 10  # raises distances of similar cases
    if metric == "lpips":
        terms = np.hstack([bad, good])
    else:  # DISTS terms are similarities: the distance falls as they rise
        terms = np.hstack([1 - bad, 1 - good, np.full((n, 6), 0.5)])
    start = np.ones(terms.shape[1])
    config = fitting.FitConfig(epochs=EPOCHS)
    fw = protocol.framework_module(framework)
    snapshots, _ = fw.fit_heads(metric, terms, y, start, config, config.checkpoints())
    for theta in snapshots.values():
        assert theta.min() >= 0.0
    final = snapshots[EPOCHS]
    assert final[0] == 0.0  # clamped, not merely small
    assert final.max() > 0

    def loss(theta):
        return -stats.pearson(fitting.term_distances(metric, terms, theta), y)

    step = np.zeros_like(final)
    step[0] = 1e-3
    assert loss(final - step) < loss(final)  # unconstrained descent would take it below 0


def test_epoch_is_chosen_on_validation_cases_not_training_loss():
    """A spy whose epoch 10 is perfect off the fitting cases and epoch 20 perfect on them."""
    n = 20
    target = np.random.default_rng(0).permutation(n).astype(float) + 1
    terms = np.eye(n)  # LPIPS distance of case i = head i
    calls = []

    def spy(metric, t, y, start, config, checkpoints, trainable=None):
        fitted = t.sum(axis=0) > 0
        calls.append(np.flatnonzero(fitted))
        ordered, reversed_ = target, target.max() + 1 - target
        epoch10 = np.where(fitted, reversed_, ordered)
        epoch20 = np.where(fitted, ordered, reversed_)
        return {0: start, 10: epoch10, 20: epoch20}, np.zeros(config.epochs)

    config = fitting.FitConfig(epochs=20, check_every=10)
    train = np.arange(15)
    choice = protocol.choose_epoch(spy, "lpips", terms, target, train, np.ones(n), config, key=0)
    assert choice.epoch == 10
    assert choice.validation_srcc[10] == pytest.approx(1.0)
    assert choice.fit_pearson[20] > choice.fit_pearson[10]  # the training fit prefers 20
    assert np.array_equal(calls[0], choice.fit_cases)
    assert set(choice.fit_cases) | set(choice.validation_cases) == set(train)
    assert not set(choice.fit_cases) & set(choice.validation_cases)


def test_held_out_cases_are_never_trained_on(torch_terms, rated):
    terms, target = torch_terms["lpips"], rated.target
    n = len(target)
    assert len({tuple(row) for row in terms}) == n  # a row names its case
    rows = {tuple(row): i for i, row in enumerate(terms)}
    fw = protocol.framework_module("torch")
    seen = []

    def spy(metric, t, *args, **kwargs):
        seen.append(sorted(rows[tuple(row)] for row in t))
        return fw.fit_heads(metric, t, *args, **kwargs)

    config = fitting.FitConfig(epochs=60, check_every=20)
    start = np.ones(terms.shape[1])
    cv = protocol.cross_validate(spy, "lpips", terms, target, start, config, progress=False)
    assert len(seen) == config.folds
    held = np.concatenate([test for _, test in cv.folds])
    assert sorted(held) == list(range(n))  # every case held out exactly once
    for (train, test), choice, fitted_on in zip(cv.folds, cv.choices, seen, strict=True):
        assert not set(fitted_on) & set(test)
        assert not set(fitted_on) & set(choice.validation_cases)
        assert set(fitted_on) | set(choice.validation_cases) == set(train)
        assert len(choice.validation_cases) == max(3, round(0.2 * len(train)))
        scores = {
            e: (choice.validation_srcc[e], choice.validation_pearson[e], -e)
            for e in choice.validation_srcc
        }
        assert choice.epoch == max(scores, key=scores.get)
        assert np.allclose(
            cv.fitted[test], fitting.term_distances("lpips", terms[test], choice.heads)
        )


def test_grouped_folds_never_split_a_group():
    """Outer folds, validation parts and the final fit's split keep every patient whole."""
    rng = np.random.default_rng(3)
    n = 45
    patients = [f"P{p}" for p in rng.permutation(np.repeat(np.arange(15), 3))]
    groups = np.asarray(patients)
    terms, target = rng.uniform(0.1, 1.0, (n, 4)), rng.uniform(1, 7, n)
    seen = []

    def spy(metric, t, y, start, config, checkpoints, trainable=None):
        seen.append([i for i in range(n) if any(np.array_equal(terms[i], row) for row in t)])
        return {e: start for e in checkpoints}, np.zeros(config.epochs)

    config = fitting.FitConfig(epochs=20, check_every=10)
    cv = protocol.cross_validate(spy, "lpips", terms, target, np.ones(4), config, False, patients)
    assert cv.grouped and len(cv.folds) == len(seen) == config.folds
    assert sorted(np.concatenate([test for _, test in cv.folds])) == list(range(n))
    for (train, test), choice, fitted_on in zip(cv.folds, cv.choices, seen, strict=True):
        assert not set(groups[train]) & set(groups[test])
        assert not set(groups[choice.fit_cases]) & set(groups[choice.validation_cases])
        assert set(fitted_on) == set(choice.fit_cases) and not set(groups[fitted_on]) & set(
            groups[test]
        )
        assert len(choice.validation_cases) >= max(3, round(0.2 * len(train)))
    fit, validation = fitting.validation_split(np.arange(n), 0.2, 0, config.folds, patients)
    assert not set(groups[fit]) & set(groups[validation]) and len(validation) == 9
    # the folds are those of the project's one splitter, over the groups
    splitter = kfold(config.folds, config.seed, grouped=True)
    expected = [np.sort(test) for _, test in splitter.split(terms, groups=groups)]
    assert all(np.array_equal(a, b) for (_, a), b in zip(cv.folds, expected, strict=True))


def test_grouped_folds_need_enough_groups():
    config = fitting.FitConfig()
    fitting.check_enough_cases(48, config, [f"P{i // 3}" for i in range(48)])
    with pytest.raises(ValueError, match=r"^5-fold fitting needs at least 5 groups .* got 4; "):
        fitting.check_enough_cases(48, config, [f"P{i % 4}" for i in range(48)])
    one_big = ["big"] * 30 + [f"P{i}" for i in range(18)]  # a fold holding it trains on 18
    with pytest.raises(ValueError, match=r"^5-fold fitting on 48 cases in 19 groups: .* case"):
        fitting.check_enough_cases(48, fitting.FitConfig(validation=0.9), one_big)
    with pytest.raises(ValueError, match="one group per case"):
        fitting.outer_folds(10, 2, 0, ["a", "b"])


def test_fitted_heads_files(tmp_path, source):
    spec = get_arch(ARCH)
    heads = uniform_heads("lpips", spec)
    record = {"metric": "lpips", "backbone": ARCH, "note": "test"}
    path = write_fitted_heads(tmp_path / "h.heads.safetensors", heads, record)
    assert is_fitted_heads(path)
    back = read_fitted_heads(path, "lpips", spec)
    assert back.fit == record and back.source == str(path)
    for w, v in zip(heads.weights, back.weights, strict=True):
        assert np.array_equal(w, v)
    chosen = default_heads("lpips", spec, str(path))  # any backbone, not only vgg16
    assert chosen.fit == record and chosen.manifest_entry() == {
        "source": str(path),
        "fitted": True,
        "fit": record,
    }
    assert uniform_heads("lpips", spec).manifest_entry() == {"source": "uniform", "fitted": False}
    with pytest.raises(ValueError, match="not dists"):
        read_fitted_heads(path, "dists", spec)
    with pytest.raises(ValueError, match="resnet50_tiny has taps"):
        read_fitted_heads(path, "lpips", "resnet50_tiny")
    negative = Heads("lpips", (-heads.weights[0], *heads.weights[1:]), "x")
    with pytest.raises(ValueError, match="non-negative"):
        write_fitted_heads(tmp_path / "n.heads.safetensors", negative, record)
    plain = write_state_dict({"lpips.relu1_2": np.ones(8, np.float32)}, tmp_path / "p.safetensors")
    assert not is_fitted_heads(plain)
    with pytest.raises(ValueError, match="not a fitted-heads file"):
        default_heads("lpips", get_arch("resnet50_tiny"), str(plain))
    dists = uniform_heads("dists", spec)
    path = write_fitted_heads(
        tmp_path / "d.heads.safetensors", dists, {**record, "metric": "dists"}
    )
    assert read_fitted_heads(path, "dists", spec).weights[0].shape == (3 + 184,)


def test_cli_fits_exports_and_beats_the_unfitted_scorer(setup, tmp_path):
    """LPIPS end to end from torch (DISTS is fitted and exported from Keras below)."""
    _, rated_dir, weights = setup
    out = tmp_path / "models"
    result = run_module(
        "bridge.finetune_metric", "--arch", ARCH, "--weights", str(weights), "--metric", "lpips",
        "--rated", str(rated_dir), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pooled held-out SRCC" in result.stdout
    stem = f"{ARCH}-fitted-lpips"
    heads_file, onnx_file = out / f"{stem}.heads.safetensors", out / f"{stem}-torch.onnx"
    manifest_file, cv_file = onnx_file.with_suffix(".json"), out / f"{stem}.cv.json"
    for path in (heads_file, onnx_file, manifest_file, cv_file):
        assert str(path) in result.stdout and path.is_file()
    heads = read_fitted_heads(heads_file, "lpips", get_arch(ARCH))
    assert all(w.min() >= 0 for w in heads.weights)

    manifest = json.loads(manifest_file.read_text())
    assert manifest["heads"]["fitted"] is True
    assert manifest["heads"]["source"] == str(heads_file)
    assert manifest["parity"]["max_error"] <= manifest["parity"]["bound"] == 1e-5
    record = manifest["heads"]["fit"]
    assert record == heads.fit
    assert record["metric"] == "lpips" and record["framework"] == "torch"
    assert record["source"]["sha256"] == sha256_file(weights)
    assert record["data"]["synthetic"] is True and record["data"]["cases"] == 48
    assert record["data"]["aspect"] == "overall" and len(record["data"]["raters"]) == 4
    folds = record["folds"]["held_out"]
    ids = sorted(c.name for c in rated_dir.glob("CASE*"))
    assert len(folds) == 5 and sorted(i for fold in folds for i in fold) == ids
    # grouped by the synthetic patients (3 cases each): a patient is held out whole
    assert record["folds"]["split"].startswith("GroupKFold(n_splits=5, shuffle=True")
    assert record["data"]["groups"] == 16 and "of 16 groups" in result.stdout
    patient = {c.id: c.group for c in fitting.load_rated(rated_dir).cases}
    for fold in folds:
        inside = {patient[i] for i in fold}
        assert {i for i in ids if patient[i] in inside} == set(fold)
    validation = record["validation"]
    for fold, held_out, choice in zip(
        record["results"]["per_fold"], folds, validation["per_fold"], strict=True
    ):
        assert not set(held_out) & set(choice["fit_cases"] + choice["validation_cases"])
        assert fold["epoch"] == choice["chosen_epoch"]
        assert [c["epoch"] for c in choice["checked"]] == validation["checked_epochs"]
    assert record["chosen_epochs"]["final"] == validation["final"]["chosen_epoch"]
    cv = json.loads(cv_file.read_text())
    assert cv["fit"] == record and len(cv["cases"]) == 48
    _onnx_uses_the_fitted_heads(onnx_file, heads, rated_dir)

    pooled = record["results"]["pooled"]
    assert pooled["fitted"]["srcc"] > pooled["unfitted"]["srcc"]
    assert pooled["difference"]["srcc"] > 0


def _onnx_uses_the_fitted_heads(onnx_file, heads, rated_dir):
    """The exported scorer's distances on one case are the fitted heads' term distances."""
    import onnxruntime as ort

    fw = protocol.framework_module("torch")
    source = source_from_weights(ARCH, rated_dir.parent.parent / f"{ARCH}.safetensors")
    module = fw.build_metric(heads.metric, source.spec, 4, source.state_dict(), heads)
    case = rated_dir / "CASE001"
    load = lambda p: fit(decode_image(p), 32).transpose(2, 0, 1)[None]  # noqa: E731
    a = np.concatenate([load(case / "0.jpg")] * 2)
    b = np.concatenate([load(case / "1.jpg"), load(case / "2.jpg")])
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(["distance"], {"image_a": a, "image_b": b})
    expected = fitting.term_distances(
        heads.metric, fw.pair_terms(module, a, b), fitting.flatten_heads(heads)
    )
    assert np.abs(got - expected).max() <= 1e-5


def test_keras_fit_exports_through_the_same_gate(source, rated, tmp_path):
    config = fitting.FitConfig(epochs=100, bootstrap=200)
    result = fm.fit_metric(source, "dists", "keras", rated, tmp_path, config, progress=False)
    manifest = json.loads(result.onnx.with_suffix(".json").read_text())
    assert result.onnx.name == f"{ARCH}-fitted-dists-keras.onnx"
    assert manifest["origin"] == "keras" and manifest["heads"]["fitted"] is True
    assert manifest["heads"]["fit"]["framework"] == "keras"
    assert manifest["parity"]["max_error"] <= manifest["parity"]["bound"] == 1e-5


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--metric", "ssim"], ["unknown metric 'ssim'"]),
        (["--framework", "jax"], ["unknown framework 'jax'"]),
        (["--folds", "20"], ["20-fold fitting needs at least", "got 48"]),
        (["--aspect", "texture", "--ratings", "COLOR_ONLY"], ["no ratings for aspect 'texture'"]),
    ],
)
def test_cli_errors_are_one_line(setup, tmp_path, args, fragments):
    _, rated_dir, weights = setup
    if "COLOR_ONLY" in args:
        table = tmp_path / "color.csv"
        rows = [
            f"{case.name},R1,color,{1 + i % 4}"
            for i, case in enumerate(sorted(rated_dir.glob("CASE*")))
        ]
        table.write_text("case,rater,aspect,score\n" + "\n".join(rows) + "\n")
        args = [str(table) if a == "COLOR_ONLY" else a for a in args]
    # in this process: each mistake stops the command before any fitting
    result = run_cli(
        "bridge.finetune_metric", "--arch", ARCH, "--weights", str(weights),
        "--rated", str(rated_dir), "--out", str(tmp_path / "out"), *args,
    )  # fmt: skip
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()
