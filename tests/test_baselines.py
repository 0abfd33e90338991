"""evaluation.baselines: nested cross-validation of the learned baselines, leakage checks."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import Ridge
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedGroupKFold
from sklearn.pipeline import Pipeline

from bridge.core.data.splits import kfold
from evaluation.baselines import (
    CLASSIFIERS,
    NAIVE,
    REGRESSORS,
    FittedClassifier,
    OrdinalResult,
    RatingPrediction,
    _common,
    classification_baselines,
    classifiers,
    ordinal_baseline,
    pooled_features,
    rater_agreement,
    rating_baselines,
)

CATEGORIES = tuple(range(1, 8))


@pytest.fixture
def small_forest(monkeypatch):
    """The random forest with 30 trees instead of 100: same grid, a fraction of the time."""
    _, grid = CLASSIFIERS["random_forest"]

    def factory(seed: int) -> Pipeline:
        forest = classifiers._random_forest(seed)
        return forest.set_params(model__n_estimators=30)

    monkeypatch.setitem(CLASSIFIERS, "random_forest", (factory, grid))


class SpySearch(GridSearchCV):
    """GridSearchCV that records what each fit sees and what each prediction is asked for.

    Column 0 of X holds the group id, so the groups on either side can be read back.
    """

    calls: ClassVar[list] = []

    def fit(self, X, y=None, **params):
        SpySearch.calls.append(("fit", set(X[:, 0]), self.cv, X, y, params.get("groups")))
        return super().fit(X, y, **params)

    def predict(self, X):
        SpySearch.calls.append(("predict", set(X[:, 0])))
        return super().predict(X)


@pytest.fixture
def spy(monkeypatch):
    SpySearch.calls = []
    monkeypatch.setattr(_common, "GridSearchCV", SpySearch)  # the one grid search of all
    return SpySearch.calls


@pytest.fixture
def outer_spy(monkeypatch):
    """Every outer split the rating baselines make (they all come from `outer_splits`)."""
    calls = []
    real = _common.outer_splits

    def record(n, folds, seed, groups):
        splits = real(n, folds, seed, groups)
        calls.append((groups, splits))
        return splits

    monkeypatch.setattr(_common, "outer_splits", record)
    return calls


def assert_groups_kept_together(groups, splits, folds: int) -> None:
    """No group on both sides of any split, every item held out once."""
    assert groups is not None and len(splits) == folds
    held = np.concatenate([test for _, test in splits])
    assert sorted(held) == list(range(len(groups)))
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])


def blobs(n: int, k: int = 3, d: int = 8, sep: float = 4.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    centers = rng.normal(size=(k, d)) * sep
    return centers[y] + rng.normal(size=(n, d)), y


# ---------------------------------------------------------------------------------------------
# registries


def test_registries_are_seeded_pipelines_with_small_grids() -> None:
    assert list(CLASSIFIERS) == ["logistic_regression", "linear_svm", "random_forest", "knn"]
    assert list(REGRESSORS) == ["ridge", "svr", "median_predictor"] and NAIVE == "median_predictor"
    for registry in (CLASSIFIERS, REGRESSORS):
        for name, (factory, grid) in registry.items():
            estimator = factory(7)
            assert isinstance(estimator, Pipeline), name
            model = estimator.steps[-1][1]
            params = model.get_params()
            if "class_weight" in params:
                assert params["class_weight"] == "balanced", name
            if "random_state" in params:
                assert params["random_state"] == 7, name
            n_combinations = int(np.prod([len(v) for v in grid.values()]))
            assert 1 < n_combinations <= 8 or (name == NAIVE and not grid), name
            for key, values in grid.items():
                clone(estimator).set_params(**{key: values[0]})  # the grid addresses the model
    forest = CLASSIFIERS["random_forest"][0](0).steps[-1][1]
    assert isinstance(forest, RandomForestClassifier) and forest.n_estimators == 100


# ---------------------------------------------------------------------------------------------
# classification


@pytest.mark.usefixtures("small_forest")
def test_every_classifier_separates_blobs() -> None:
    X, y = blobs(240)
    results = classification_baselines(X[:120], y[:120], X[120:], inner_folds=3)
    assert [r.name for r in results] == list(CLASSIFIERS)
    for r in results:
        assert isinstance(r, FittedClassifier)
        assert balanced_accuracy_score(y[120:], r.predictions) > 0.9, r.name
        assert r.inner_score > 0.9, r.name
        assert r.predictions.shape == (120,) and r.predictions.dtype.kind == "i"
        assert not any(key.startswith("model__") for key in r.best_params), r.best_params
        if r.name == "linear_svm":
            assert r.proba is None
        else:
            assert r.proba.shape == (120, 3)
            np.testing.assert_allclose(r.proba.sum(axis=1), 1.0)
            np.testing.assert_array_equal(r.proba.argmax(axis=1), r.predictions)


@pytest.mark.usefixtures("small_forest")
def test_noise_labels_give_chance_held_out_while_the_forest_memorises() -> None:
    k, held_out = 3, []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        X, y = rng.normal(size=(300, 10)), rng.integers(0, k, 300)
        names = ("logistic_regression", "random_forest", "knn") if seed == 0 else ("knn",)
        # the test rows first, then the training rows again: the second half shows memorising
        results = classification_baselines(
            X[:150], y[:150], X[np.r_[150:300, 0:150]], inner_folds=3, seed=seed, names=names
        )
        held_out += [balanced_accuracy_score(y[150:], r.predictions[:150]) for r in results]
        if seed == 0:
            forest = results[1]
            assert balanced_accuracy_score(y[:150], forest.predictions[150:]) > 0.9
            assert forest.inner_score < 0.5  # while its inner folds see chance
    assert abs(np.mean(held_out) - 1 / k) < 0.06, held_out
    assert max(held_out) < 0.5, held_out


def test_inner_folds_never_split_a_lesion(spy) -> None:
    X, y = blobs(90, k=2, seed=1)
    lesions = np.arange(90) // 3  # three images per lesion
    X[:, 0] = lesions
    classification_baselines(X, y, X[:10], groups_train=lesions, inner_folds=3, names=["knn"])
    (_, _, cv, X_fit, y_fit, groups), _ = spy
    assert isinstance(cv, StratifiedGroupKFold)
    np.testing.assert_array_equal(groups, lesions)
    for train, test in cv.split(X_fit, y_fit, groups):
        assert not set(groups[train]) & set(groups[test])


def test_grouped_inner_folds_see_through_duplicate_images() -> None:
    """Near-identical images of one lesion with a random lesion label: only groups keep the
    inner score at chance (ungrouped, each image's twin is in the training fold)."""
    rng = np.random.default_rng(3)
    lesion_x, lesion_y = rng.normal(size=(40, 6)), np.arange(40) % 2
    rng.shuffle(lesion_y)
    lesions = np.repeat(np.arange(40), 3)
    X = lesion_x[lesions] + 0.01 * rng.normal(size=(120, 6))
    y = lesion_y[lesions]
    (grouped,) = classification_baselines(X, y, X[:5], groups_train=lesions, names=["knn"])
    (plain,) = classification_baselines(X, y, X[:5], names=["knn"])
    assert plain.inner_score > 0.9
    assert grouped.inner_score < 0.7


def test_proba_columns_follow_the_class_indices() -> None:
    X, y = blobs(60, k=2, seed=2)
    y = np.where(y == 1, 2, 0)  # class 1 absent from the training labels
    (r,) = classification_baselines(X, y, X, inner_folds=3, names=["logistic_regression"])
    assert r.proba.shape == (60, 3)
    assert np.all(r.proba[:, 1] == 0)
    assert set(np.unique(r.predictions)) <= {0, 2}


def test_classification_rejects_bad_input() -> None:
    X, y = blobs(30, k=2)
    with pytest.raises(ValueError, match="NaN"):
        classification_baselines(np.where(X > 3, np.nan, X), y, X)
    with pytest.raises(ValueError, match="same features"):
        classification_baselines(X, y, X[:, :3])
    with pytest.raises(ValueError, match="unknown classifier 'svm'"):
        classification_baselines(X, y, X, names=["svm"])
    with pytest.raises(ValueError, match="integer class indices"):
        classification_baselines(X, y + 0.5, X)
    with pytest.raises(ValueError, match="at least 5 samples of every class"):
        classification_baselines(X[:6], y[:6], X)
    with pytest.raises(ValueError, match="at least 2 classes"):
        classification_baselines(X, np.zeros(30, int), X)


# ---------------------------------------------------------------------------------------------
# rating regression


def test_ridge_recovers_a_linear_signal() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 6))
    y = 4 + X @ np.array([1.0, -0.5, 0.3, 0.0, 0.0, 0.0]) + 0.3 * rng.normal(size=150)
    ridge, svr, median = rating_baselines(X, y)
    assert isinstance(ridge, RatingPrediction) and ridge.name == "ridge"
    assert ridge.srcc > 0.8 and svr.srcc > 0.7
    assert ridge.mae < 0.5
    assert median.name == NAIVE and median.mae > 2 * ridge.mae  # the models beat the naive one
    assert np.isnan(median.srcc) and median.chosen_params == ({},) * 5
    assert ridge.folds == 5 and len(ridge.chosen_params) == 5
    assert set(ridge.chosen_params[0]) == {"alpha"}
    assert set(svr.chosen_params[0]) == {"C", "epsilon"}
    assert ridge.predictions.shape == (150,) and np.isfinite(ridge.predictions).all()


def test_noise_ratings_give_chance_srcc() -> None:
    values = []
    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        X, y = rng.normal(size=(120, 8)), rng.normal(4, 1, size=120)
        values += [r.srcc for r in rating_baselines(X, y, seed=seed, inner_folds=3)]
    values = np.nan_to_num(values)
    assert abs(np.mean(values)) < 0.15, values
    assert np.max(np.abs(values)) < 0.35, values


def test_predictions_are_cross_fitted() -> None:
    """An item alone in its own direction with an extreme target: a model that saw it would
    reproduce the target (high leverage), a model that did not predicts an ordinary value."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    X[:, 2] = 0.0
    y = 4 + X[:, 0] + 0.2 * rng.normal(size=60)
    X[17, 2], y[17] = 30.0, 100.0
    leaky = Ridge(alpha=1e-3).fit(X, y).predict(X[17:18])[0]
    assert abs(leaky - 100) < 5  # the test can tell a leak
    for r in rating_baselines(X, y):
        assert abs(r.predictions[17]) < 20, (r.name, r.predictions[17])
        others = np.delete(np.arange(60), 17)
        assert abs(r.predictions[others] - y[others]).mean() < 1.5, r.name


def test_rating_folds_respect_cases_inside_and_out(spy) -> None:
    rng = np.random.default_rng(2)
    cases = np.repeat(np.arange(30), 2)
    X = np.column_stack([cases, rng.normal(size=(60, 2))])
    y = X[:, 1] + rng.normal(size=60)
    rating_baselines(X, y, outer_folds=3, inner_folds=3, groups=cases, names=["ridge"])
    fits = [call for call in spy if call[0] == "fit"]
    predictions = [call for call in spy if call[0] == "predict"]
    assert len(fits) == len(predictions) == 3
    covered = set()
    for (_, seen, cv, X_fit, y_fit, groups), (_, predicted) in zip(fits, predictions, strict=True):
        assert not seen & predicted  # outer: the held-out cases were never trained on
        covered |= predicted
        assert isinstance(cv, GroupKFold)
        np.testing.assert_array_equal(groups, X_fit[:, 0])
        for train, test in cv.split(X_fit, y_fit, groups):  # inner: no case split either
            assert not set(groups[train]) & set(groups[test])
    assert covered == set(range(30))


def test_the_median_predictor_is_each_training_parts_median() -> None:
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(30, 2)), rng.exponential(size=30)
    patients = np.arange(30) // 3
    (median,) = rating_baselines(X, y, 3, 3, seed=5, groups=patients, names=[NAIVE])
    for train, test in kfold(3, 5, grouped=True).split(X, groups=patients):  # the same folds
        np.testing.assert_allclose(median.predictions[test], np.median(y[train]))
    assert median.mae == pytest.approx(np.mean(np.abs(median.predictions - y)))


def test_grouped_rating_folds_never_split_a_group(outer_spy, spy) -> None:
    """Outer folds of both baselines, and the inner folds of every regressor (the naive one
    too): no patient on both sides. Patients are interleaved, not in blocks."""
    rng = np.random.default_rng(7)
    patients = rng.permutation(np.repeat(np.arange(12), 3))
    X = np.column_stack([patients, rng.normal(size=(36, 2))])
    y = X[:, 1] + rng.normal(size=36)
    rating_baselines(X, y, outer_folds=4, inner_folds=3, groups=patients)
    columns, table, raters = severity_data(36, seed=7)
    ordinal_baseline(columns, table, raters, outer_folds=4, groups=patients)
    assert len(outer_spy) == 2
    for groups, splits in outer_spy:
        np.testing.assert_array_equal(groups, patients)
        assert_groups_kept_together(groups, splits, 4)
    fits = [call for call in spy if call[0] == "fit"]
    predictions = [call for call in spy if call[0] == "predict"]
    assert len(fits) == len(predictions) == 4 * len(REGRESSORS)
    for (_, seen, cv, X_fit, y_fit, groups), (_, predicted) in zip(fits, predictions, strict=True):
        assert not seen & predicted  # no held-out patient was trained on
        assert isinstance(cv, GroupKFold)
        np.testing.assert_array_equal(groups, X_fit[:, 0])
        for train, test in cv.split(X_fit, y_fit, groups):
            assert not set(groups[train]) & set(groups[test])


def test_rating_nan_targets_are_dropped_and_nan_columns_refused() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    y = X[:, 0] + 0.1 * rng.normal(size=40)
    y[[3, 9]] = np.nan
    X[3, 1] = np.nan  # only on an item without a target: fine
    (r,) = rating_baselines(X, y, outer_folds=4, inner_folds=3, names=["ridge"])
    assert np.isnan(r.predictions[[3, 9]]).all()
    assert np.isfinite(np.delete(r.predictions, [3, 9])).all()
    X[[5, 6], 0], X[7, 2] = np.nan, np.inf
    with pytest.raises(ValueError, match="2 column"):
        rating_baselines(X, y)
    with pytest.raises(ValueError, match="one target per row"):
        rating_baselines(X, y[:-1])
    with pytest.raises(ValueError, match="at least 5 items in every outer training part"):
        rating_baselines(X[:8, 1:2], y[:8], outer_folds=2, inner_folds=5)
    with pytest.raises(ValueError, match="at least 5 groups"):
        rating_baselines(X[:, 1:2] * 0, y * 0, groups=np.arange(40) % 4)


# ---------------------------------------------------------------------------------------------
# ordinal severity


def severity_data(n: int, seed: int = 0, raters: int = 3):
    """Latent severity in [1, 7], raters that round it with a little noise, and a distance
    that follows it (with a noise column beside it)."""
    rng = np.random.default_rng(seed)
    latent = rng.uniform(0.6, 7.4, n)
    table = np.clip(np.round(latent[:, None] + 0.4 * rng.normal(size=(n, raters))), 1, 7)
    columns = {
        "noise": rng.uniform(0, 1, n),
        "signal": latent / 8 + 0.01 * rng.normal(size=n),
    }
    return columns, table, [f"r{j}" for j in range(raters)]


def reference(table: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(np.nanmean(table, axis=1) + 0.5), 1, 7).astype(int)


def test_ordinal_recovers_a_determining_distance() -> None:
    columns, table, raters = severity_data(150)
    result = ordinal_baseline(columns, table, raters)
    assert isinstance(result, OrdinalResult)
    assert result.feature == ("signal",) * 5 and result.folds == 5
    assert result.qwk > 0.9 and result.accuracy > 0.6 and result.mae < 0.5
    assert set(result.naive) == {"accuracy", "mae", "qwk"}
    assert result.naive["mae"] > 3 * result.mae and abs(result.naive["qwk"]) < 0.2
    assert set(result.per_rater) == set(raters)
    for scores in result.per_rater.values():
        assert scores["qwk"] > 0.8


def test_ordinal_scores_are_the_sklearn_definitions() -> None:
    columns, table, raters = severity_data(80, seed=1)
    table[4, :] = np.nan  # no rating: left out
    table[5, 1] = np.nan  # one rating missing: rated by the others
    columns["signal"][6] = np.nan  # a NaN distance: left out
    result = ordinal_baseline(columns, table, raters, outer_folds=4)
    assert np.isnan(result.predictions[[4, 6]]).all()
    kept = np.isfinite(result.predictions)
    assert kept.sum() == 78
    predicted, ref = result.predictions[kept].astype(int), reference(table[kept])
    assert set(np.unique(predicted)) <= set(CATEGORIES)
    assert result.accuracy == pytest.approx(np.mean(predicted == ref))
    assert result.mae == pytest.approx(np.mean(np.abs(predicted - ref)))
    expected = cohen_kappa_score(ref, predicted, weights="quadratic", labels=list(CATEGORIES))
    assert result.qwk == pytest.approx(expected)
    for j, rater in enumerate(raters):
        scored = ~np.isnan(table[kept, j])
        own = table[kept, j][scored].astype(int)
        got = result.per_rater[rater]
        assert got["accuracy"] == pytest.approx(np.mean(own == predicted[scored]))
        assert got["qwk"] == pytest.approx(
            cohen_kappa_score(own, predicted[scored], weights="quadratic", labels=CATEGORIES)
        )


def test_ordinal_noise_is_chance() -> None:
    kappas = []
    for seed in range(3):
        columns, table, raters = severity_data(120, seed=20 + seed)
        noise = {"a": columns["noise"], "b": np.random.default_rng(seed).normal(size=120)}
        kappas.append(ordinal_baseline(noise, table, raters, seed=seed).qwk)
    assert abs(np.mean(kappas)) < 0.15, kappas
    assert max(np.abs(kappas)) < 0.3, kappas


def test_ordinal_categories_missing_from_a_fold_do_not_crash() -> None:
    rng = np.random.default_rng(5)
    n = 40
    category = np.array([2] * 15 + [3] * 15 + [6] * 9 + [7])  # 7: in one held-out fold only
    table = category[:, None].astype(float).repeat(2, axis=1)
    distance = category + 0.2 * rng.normal(size=n)
    result = ordinal_baseline({"d": distance}, table, ["a", "b"])
    assert set(np.unique(result.predictions)) <= {2, 3, 6}
    assert result.accuracy > 0.8
    # training parts holding one category only: the most frequent category is predicted
    single = np.array([4.0] * 39 + [5.0])[:, None]
    result = ordinal_baseline({"d": rng.normal(size=40)}, single, ["a"], outer_folds=4)
    assert "" in result.feature and set(result.feature) <= {"", "d"}
    assert np.isfinite(result.predictions).all()
    # a constant distance cannot order anything either
    result = ordinal_baseline({"d": np.ones(n)}, table, ["a", "b"])
    assert result.feature == ("",) * 5


def test_ordinal_naive_is_each_training_parts_median_category() -> None:
    columns, table, raters = severity_data(40, seed=8)
    patients = np.arange(40) // 4
    result = ordinal_baseline(columns, table, raters, outer_folds=5, seed=2, groups=patients)
    ref = reference(table)
    naive = np.empty(40)
    for train, test in kfold(5, 2, grouped=True).split(ref, groups=patients):
        naive[test] = np.floor(np.median(ref[train]) + 0.5)
    assert result.naive["mae"] == pytest.approx(np.mean(np.abs(naive - ref)))
    assert result.naive["accuracy"] == pytest.approx(np.mean(naive == ref))


def test_ordinal_with_groups_and_bad_input() -> None:
    columns, table, raters = severity_data(60, seed=4)
    result = ordinal_baseline(columns, table, raters, groups=np.arange(60) // 3)
    assert result.qwk > 0.8
    with pytest.raises(ValueError, match="consecutive"):
        ordinal_baseline(columns, table, raters, categories=(1, 3, 5))
    with pytest.raises(ValueError, match="2 raters"):
        ordinal_baseline(columns, table, raters[:2])
    with pytest.raises(ValueError, match="at least one candidate"):
        ordinal_baseline({}, table, raters)
    with pytest.raises(ValueError, match="one distance per item"):
        ordinal_baseline({"x": np.zeros(60), "y": np.zeros(5)}, table, raters)


# ---------------------------------------------------------------------------------------------
# rater agreement


def test_rater_agreement_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(6)
    table = np.clip(np.round(rng.uniform(1, 7, 50)[:, None] + rng.normal(size=(50, 3))), 1, 7)
    table[rng.random((50, 3)) < 0.15] = np.nan
    table[0] = [np.nan, np.nan, 5.0]  # rater 2 alone: no comparison
    raters = ["ann", "bob", "cy"]
    got = rater_agreement(table, raters)
    assert set(got) == {"ann", "bob", "cy", "mean"}
    for j, rater in enumerate(raters):
        rows = []
        for i in range(50):
            others = [table[i, m] for m in range(3) if m != j and not np.isnan(table[i, m])]
            if not np.isnan(table[i, j]) and others:
                mean = sum(others) / len(others)
                rows.append((int(table[i, j]), min(7, max(1, int(np.floor(mean + 0.5))))))
        own, rest = np.array(rows).T
        assert got[rater]["accuracy"] == pytest.approx(np.mean(own == rest))
        assert got[rater]["mae"] == pytest.approx(np.mean(np.abs(own - rest)))
        assert got[rater]["qwk"] == pytest.approx(
            cohen_kappa_score(own, rest, weights="quadratic", labels=list(CATEGORIES))
        )
    for key in ("accuracy", "mae", "qwk"):
        assert got["mean"][key] == pytest.approx(np.mean([got[r][key] for r in raters]))


def test_rounding_is_half_up_and_clipped() -> None:
    # rater a against the others' mean of 2.5 and 4.5: half up gives 3 and 5, a's own scores
    # (numpy's round-half-even would give 2 and 4)
    table = np.array([[3.0, 2.0, 3.0], [5.0, 4.0, 5.0]] * 3)
    got = rater_agreement(table, ["a", "b", "c"])
    assert got["a"]["accuracy"] == 1.0 and got["a"]["mae"] == 0.0
    # the reference category: means 2.5, 4.5 -> 3, 5; means outside the scale are clipped
    halves = np.array([[2.0, 3.0], [4.0, 5.0], [-1.0, 0.0], [7.0, 10.0]] * 5)
    distance = np.array([0.3, 0.5, 0.1, 0.9] * 5)
    result = ordinal_baseline({"d": distance}, halves, ["a", "b"], outer_folds=2)
    np.testing.assert_array_equal(result.predictions[:4], [3, 5, 1, 7])
    assert result.accuracy == 1.0
    with pytest.raises(ValueError, match="at least 2 raters"):
        rater_agreement(table[:, :1], ["a"])
    with pytest.raises(ValueError, match="'mean'"):
        rater_agreement(table[:, :2], ["a", "mean"])


# ---------------------------------------------------------------------------------------------
# pooled features


class FakeViT:
    """A stand-in extractor: one grid tap and its class token, as a ViT export gives them."""

    taps: ClassVar[list[str]] = ["blocks.3", "blocks.3_cls"]

    def __init__(self):
        self.batches = []

    def features(self, batch):
        self.batches.append(len(batch))
        grid = batch[:, :1].repeat(4, axis=1)[:, :, :2, :2] * np.arange(4)[None, :, None, None]
        return {"blocks.3": grid, "blocks.3_cls": batch.mean(axis=(2, 3)) + 1}


def test_pooled_features_keep_class_tokens_and_batch() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((5, 3, 4, 4)).astype(np.float32)
    fake = FakeViT()
    features = pooled_features(fake, images, batch=2)
    assert fake.batches == [2, 2, 1]
    assert features.shape == (5, 4 + 3) and features.dtype == np.float64
    whole = fake.features(images)
    np.testing.assert_allclose(features[:, :4], whole["blocks.3"].mean(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_allclose(features[:, 4:], whole["blocks.3_cls"], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 3, S, S\)"):
        pooled_features(fake, images[:, :2])
    with pytest.raises(ValueError, match="batch size"):
        pooled_features(fake, images, batch=0)


@pytest.fixture(scope="module")
def vgg_extractor(tiny_exports):
    pytest.importorskip("torch")
    from evaluation.features import FeatureExtractor

    path = tiny_exports("vgg16_tiny", "torch", "features")  # shared with other files
    return FeatureExtractor(path, prefer_gpu=False)


def test_pooled_features_of_an_onnx_extractor(vgg_extractor) -> None:
    fx = vgg_extractor
    rng = np.random.default_rng(1)
    images = rng.random((5, 3, fx.size, fx.size)).astype(np.float32)
    features = pooled_features(fx, images, batch=2)
    outputs = fx.features(images)
    channels = [outputs[tap].shape[1] for tap in fx.taps]
    assert features.shape == (5, sum(channels))
    manual = np.concatenate(
        [outputs[tap].astype(np.float64).mean(axis=(2, 3)) for tap in fx.taps], axis=1
    )
    np.testing.assert_allclose(features, manual, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the comparison's rating baselines (evaluation.learned)


def test_the_comparisons_rating_baselines_fold_by_the_items_groups(outer_spy) -> None:
    """`learned` passes `RatedItems.groups` to both baselines, and adds the naive rows."""
    from evaluation.item_scores import Scores
    from evaluation.items import RatedItems
    from evaluation.learned import NAIVE_CATEGORY, _rating_baselines
    from evaluation.options import Options

    rng = np.random.default_rng(9)
    n = 30
    patients = tuple(f"P{i}" for i in rng.permutation(np.repeat(np.arange(10), 3)))
    latent = rng.uniform(1, 7, n)
    table = np.clip(np.round(latent[:, None] + 0.5 * rng.normal(size=(n, 3))), 1, 7)
    table[4] = np.nan  # an unrated item is left out; its patient's other items stay
    target = table.mean(axis=1)  # NaN for the unrated item
    image = (Path("unused.jpg"), None)
    items = RatedItems(
        tuple(f"CASE{i:03d}" for i in range(n)), (image,) * n, ((image,),) * n,
        {"overall": table}, ("a", "b", "c"), True, "test items", groups=patients,
    )  # fmt: skip
    noisy = {name: latent + s * rng.normal(size=n) for name, s in (("a", 0.3), ("b", 3.0))}
    scores = Scores(
        columns={"layer a": noisy["a"], "layer b": noisy["b"], "ssim": noisy["b"]},
        info={"layer a": {"family": "layer"}, "layer b": {"family": "layer"},
              "ssim": {"family": "classical"}},
    )  # fmt: skip
    out = _rating_baselines(scores, items, "overall", target, Options())
    assert len(outer_spy) == 2  # regression, ordinal
    kept = np.delete(np.asarray(patients), 4)
    for groups, splits in outer_spy:
        np.testing.assert_array_equal(groups, kept)
        assert_groups_kept_together(groups, splits, 5)
    assert out["groups"] == items.n_groups == 10
    rows = {r["method"]: r for r in out["regression"]}
    assert list(rows) == ["ridge", "svr", NAIVE, NAIVE_CATEGORY]
    assert rows[NAIVE_CATEGORY]["mae"] == out["ordinal"]["naive"]["mae"]
    assert rows["ridge"]["mae"] < rows[NAIVE]["mae"]
