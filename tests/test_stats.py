"""evaluation.stats against scipy / scikit-learn / statsmodels / krippendorff on the same data."""

from __future__ import annotations

import importlib
import logging
import math
import pkgutil
import warnings

import krippendorff
import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from evaluation import stats as st
from evaluation.stats import (
    Ceiling,
    CVSelection,
    Interval,
    agreement,
    bootstrap_ci,
    classification,
    classification_metrics,
    correlation,
    correlations,
    crossfit_plcc,
    curves,
    cv_select,
    fit_logistic,
    human_ceiling,
    icc_2_1,
    krcc,
    krippendorff_alpha,
    leave_one_rater_out,
    logistic4,
    logistic5,
    logit_correlation,
    mcnemar_test,
    paired_difference,
    pearson,
    plcc,
    prediction_agreement,
    srcc,
)

TOL = 1e-9


def _pair(n: int = 50, seed: int = 0, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.6 * x + rng.normal(size=n)
    if ties:
        x = np.round(x, 1)
        y = np.round(y * 2) / 2  # rating-like, many ties
    return x, y


# --------------------------------------------------------------------------------------------
# the package's public face


def test_the_package_exports_every_public_name_of_its_submodules() -> None:
    public = set()
    for info in pkgutil.iter_modules(st.__path__):
        module = importlib.import_module(f"{st.__name__}.{info.name}")
        public |= {
            key
            for key, value in vars(module).items()
            if not key.startswith("_")
            and (key.isupper() or getattr(value, "__module__", None) == module.__name__)
        }
    assert sorted(public) == sorted(st.__all__)
    assert all(hasattr(st, key) for key in st.__all__)


# --------------------------------------------------------------------------------------------
# correlations and fits


@pytest.mark.parametrize("ties", [False, True])
def test_correlations_match_scipy(ties: bool) -> None:
    x, y = _pair(ties=ties)
    assert abs(srcc(x, y) - sps.spearmanr(x, y).statistic) <= TOL
    assert abs(krcc(x, y) - sps.kendalltau(x, y).statistic) <= TOL
    assert abs(pearson(x, y) - sps.pearsonr(x, y).statistic) <= TOL
    assert abs(plcc(x, y, fit="none") - pearson(x, y)) <= TOL


@pytest.mark.parametrize("n", [30, 300])  # 300 > the vectorised Kendall limit: scipy per row
def test_vectorised_forms_match_scipy(n: int) -> None:
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=(7, n)), 1)
    y = np.round(x + rng.normal(size=(7, n)))
    for k in range(7):
        assert abs(correlation._srcc_nd(x, y)[k] - sps.spearmanr(x[k], y[k]).statistic) <= TOL
        assert abs(correlation._krcc_nd(x, y)[k] - sps.kendalltau(x[k], y[k]).statistic) <= TOL
        assert abs(correlation._pearson_nd(x, y)[k] - sps.pearsonr(x[k], y[k]).statistic) <= TOL


def test_correlations_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="lengths x 3, y 4"):
        srcc([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="one-dimensional"):
        pearson(np.ones((3, 2)), np.ones((3, 2)))


def test_correlations_drop_nan_cases() -> None:
    x, y = _pair()
    x[3], y[7] = np.nan, np.nan
    keep = ~np.isnan(x) & ~np.isnan(y)
    got = correlations(x, y)
    assert set(got) == {"srcc", "krcc", "plcc"}
    assert abs(got["srcc"] - sps.spearmanr(x[keep], y[keep]).statistic) <= TOL
    assert abs(got["krcc"] - sps.kendalltau(x[keep], y[keep]).statistic) <= TOL
    assert math.isnan(srcc(x, y))  # the plain statistic follows scipy


def test_logistic4_recovers_known_curve() -> None:
    x = np.linspace(-3, 12, 80)
    truth = (5.0, 1.0, 4.0, 1.2)
    y = logistic4(x, *truth)
    curve = fit_logistic(x, y)
    assert curve.kind == "logistic4"
    assert np.abs(curve(x) - y).max() < 1e-6
    b1, b2, b3, b4 = curve.params
    if b4 < 0:  # (b1, b2, b3, b4) and (b2, b1, b3, -b4) are the same curve
        b1, b2, b4 = b2, b1, -b4
    assert np.allclose((b1, b2, b3, b4), truth, atol=1e-5)
    assert plcc(x, y) > 1 - 1e-10


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_logistic4_decreasing_relation_any_scale(scale: float) -> None:
    rng = np.random.default_rng(2)
    x = np.sort(rng.uniform(0, 10, 60)) * scale
    y = 7 - 6 * sps.logistic.cdf((x / scale - 5) / 0.8)  # ratings fall as the distance grows
    curve = fit_logistic(x, y)
    assert curve.kind == "logistic4"
    assert np.abs(curve(x) - y).max() < 1e-6
    assert plcc(x, y) < -1 + 1e-10  # signed like the SRCC: the curve falls
    assert srcc(x, y) == pytest.approx(-1.0)


def test_logistic5_recovers_known_curve() -> None:
    x = np.linspace(0, 10, 70)
    y = logistic5(x, 3.0, 1.5, 5.0, 0.2, 1.0)
    curve = fit_logistic(x, y, kind="logistic5")
    assert curve.kind == "logistic5"
    assert np.abs(curve(x) - y).max() < 1e-6
    assert plcc(x, y, fit="logistic5") > 1 - 1e-10


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("logistic4 rising", (-1.0, 2.0, 0.3, 0.7)),
        ("logistic4 falling", (-1.0, 2.0, 0.3, 0.7)),
        ("logistic5", (2.0, 1.3, 0.3, 0.2, -0.4)),
    ],
)
def test_analytic_jacobians(kind: str, params: tuple[float, ...]) -> None:
    if kind == "logistic5":
        model, jacobian = curves.logistic5, curves._logistic5_jacobian
    else:
        model, jacobian = curves._logistic4_directed(1.0 if "rising" in kind else -1.0)
    x, p, eps = np.linspace(-2, 3, 9), np.array(params), 1e-6
    numeric = np.column_stack(
        [(model(x, *(p + d)) - model(x, *(p - d))) / (2 * eps) for d in np.eye(len(p)) * eps]
    )
    assert np.abs(numeric - jacobian(x, *p)).max() < 1e-7


def test_linear_fit_and_plcc_linear() -> None:
    x, y = _pair(ties=False)
    curve = fit_logistic(x, y, kind="linear")
    slope, intercept = np.polyfit(x, y, 1)
    assert np.allclose(curve.params, (slope, intercept), atol=1e-12)
    assert abs(plcc(x, y, fit="linear") - abs(pearson(x, y))) <= TOL


def test_fit_falls_back_to_linear_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    x, y = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 2.5, 2.9, 4.0])
    with caplog.at_level(logging.WARNING, logger="evaluation.stats.curves"):
        curve = fit_logistic(x, y)
    assert curve.kind == "linear"
    assert "falling back to a linear fit" in caplog.text
    assert np.allclose(curve(x), np.polyval(np.polyfit(x, y, 1), x))


def test_unknown_fit_kind() -> None:
    x, y = _pair()
    with pytest.raises(ValueError, match="unknown fit kind 'cubic'"):
        fit_logistic(x, y, kind="cubic")
    with pytest.raises(ValueError, match="unknown fit kind 'cubic'"):
        plcc(x, y, fit="cubic")
    with pytest.raises(ValueError, match="unknown fit kind"):
        agreement(x, y, fit="cubic", n_resamples=10)


# --------------------------------------------------------------------------------------------
# bootstrap


def test_bootstrap_ci_is_scipy_paired_bootstrap() -> None:
    x, y = _pair(n=30)

    def statistic(a, b):
        return sps.spearmanr(a, b).statistic

    ours = bootstrap_ci(statistic, x, y, n_resamples=300, seed=4)
    ref = sps.bootstrap(
        (x, y),
        statistic,
        paired=True,
        vectorized=False,
        n_resamples=300,
        method="BCa",
        rng=np.random.default_rng(4),
    )
    assert ours.method == "BCa" and ours.level == 0.95
    assert abs(ours.low - ref.confidence_interval.low) <= TOL
    assert abs(ours.high - ref.confidence_interval.high) <= TOL
    assert abs(ours.estimate - statistic(x, y)) <= TOL
    # srcc itself runs vectorised over the resamples: the same interval
    fast = bootstrap_ci(srcc, x, y, n_resamples=300, seed=4)
    assert fast.low == pytest.approx(ours.low, abs=1e-3)
    assert fast.high == pytest.approx(ours.high, abs=1e-3)


def test_bootstrap_ci_percentile_and_degenerate() -> None:
    x, y = _pair(n=30)
    res = bootstrap_ci(np.mean, x, n_resamples=200, method="percentile", seed=1)
    ref = sps.bootstrap((x,), np.mean, n_resamples=200, method="percentile", rng=1)
    assert res.method == "percentile"
    assert abs(res.low - ref.confidence_interval.low) <= TOL
    with pytest.warns(sps.ConstantInputWarning):  # scipy's, on the original data
        constant = bootstrap_ci(srcc, x, np.ones_like(x), n_resamples=100)
    assert constant.method == "none"
    assert math.isnan(constant.low) and math.isnan(constant.high)
    with pytest.raises(ValueError, match="same number of cases"):
        bootstrap_ci(srcc, x, y[:-1])
    with pytest.raises(ValueError, match="unknown bootstrap method"):
        bootstrap_ci(srcc, x, y, method="jackknife")


def test_agreement_intervals() -> None:
    x, y = _pair(n=60, ties=False)
    x[0] = np.nan
    got = agreement(x, y, n_resamples=300, seed=3)
    assert set(got) == {"srcc", "krcc", "plcc", "rmse", "plcc_in_sample"}
    keep = ~np.isnan(x)
    assert abs(got["srcc"].estimate - sps.spearmanr(x[keep], y[keep]).statistic) <= TOL
    assert abs(got["krcc"].estimate - sps.kendalltau(x[keep], y[keep]).statistic) <= TOL
    assert abs(got["plcc_in_sample"].estimate - plcc(x[keep], y[keep])) <= TOL
    assert got["plcc_in_sample"].method == "none"  # in-sample: labelled, no interval
    cross = crossfit_plcc(x, y, seed=3, n_resamples=300)
    assert got["plcc"] == cross.plcc and got["rmse"] == cross.rmse
    assert got["plcc"].estimate < got["plcc_in_sample"].estimate  # held-out is not flattered
    for name in ("srcc", "krcc", "plcc", "rmse"):
        interval = got[name]
        assert isinstance(interval, Interval)
        assert interval.method == "BCa"
        assert interval.low < interval.estimate < interval.high


def test_agreement_too_few_cases() -> None:
    with pytest.raises(ValueError, match=r"at least 3 cases.*got 2 of 4"):
        agreement([1.0, 2.0, np.nan, 4.0], [1.0, 3.0, 2.0, np.nan], n_resamples=10)


def test_bootstrap_coverage_of_spearman() -> None:
    rho = 0.6
    population = 6 / np.pi * np.arcsin(rho / 2)
    cov = [[1.0, rho], [rho, 1.0]]
    rng = np.random.default_rng(2024)
    covered = 0
    draws = 200
    for seed in range(draws):
        x, y = rng.multivariate_normal([0, 0], cov, size=40).T
        ci = bootstrap_ci(srcc, x, y, n_resamples=1000, seed=seed)
        assert ci.method == "BCa"
        covered += ci.low <= population <= ci.high
    assert covered / draws >= 0.90


def test_paired_difference_identical_metrics() -> None:
    x, y = _pair()
    for statistic in ("srcc", "krcc", "plcc"):
        diff, p = paired_difference(x, x, y, statistic=statistic, n_resamples=100)
        assert diff.estimate == 0 and diff.low == 0 and diff.high == 0
        assert diff.method == "percentile"
        assert p == 1.0


def test_paired_difference_signal_vs_noise() -> None:
    rng = np.random.default_rng(5)
    ratings = rng.normal(size=80)
    signal = ratings + 0.5 * rng.normal(size=80)
    noise = rng.normal(size=80)
    diff, p = paired_difference(signal, noise, ratings, n_resamples=1000)
    assert diff.estimate == pytest.approx(srcc(signal, ratings) - srcc(noise, ratings))
    assert diff.low > 0 and p < 0.01
    # signed: a distance (falls as ratings rise) loses to a similarity with the same ranks
    back, _ = paired_difference(-signal, signal, ratings, n_resamples=200)
    assert back.estimate == pytest.approx(-2 * srcc(signal, ratings))
    with pytest.raises(ValueError, match="unknown statistic"):
        paired_difference(signal, noise, ratings, statistic="r2")


# --------------------------------------------------------------------------------------------
# agreement among raters

SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
    dtype=float,
)


def _icc_statsmodels(table: np.ndarray) -> float:
    import pandas as pd
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    n, k = table.shape
    cases, raters = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    long = pd.DataFrame({"score": table.ravel(), "case": cases.ravel(), "rater": raters.ravel()})
    anova = anova_lm(ols("score ~ C(case) + C(rater)", data=long).fit())
    msr = anova.loc["C(case)", "mean_sq"]
    msc = anova.loc["C(rater)", "mean_sq"]
    mse = anova.loc["Residual", "mean_sq"]
    return (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)


def test_icc_textbook_and_statsmodels() -> None:
    assert round(icc_2_1(SHROUT_FLEISS), 2) == 0.29
    assert abs(icc_2_1(SHROUT_FLEISS) - _icc_statsmodels(SHROUT_FLEISS)) <= TOL
    rng = np.random.default_rng(3)
    table = rng.normal(size=(25, 1)) + 0.3 * rng.normal(size=(1, 4)) + rng.normal(size=(25, 4))
    assert abs(icc_2_1(table) - _icc_statsmodels(table)) <= TOL


def test_icc_drops_incomplete_cases() -> None:
    table = np.vstack([SHROUT_FLEISS, [[np.nan, 3, 4, 5]]])
    assert icc_2_1(table) == icc_2_1(SHROUT_FLEISS)


def test_icc_errors() -> None:
    with pytest.raises(ValueError, match=r"at least 2 raters.*got 1"):
        icc_2_1(SHROUT_FLEISS[:, :1])
    with pytest.raises(ValueError, match="at least 2 cases rated by every rater, got 1"):
        icc_2_1([[1, 2], [np.nan, 3], [4, 5]][:2])
    with pytest.raises(ValueError, match="cases x raters"):
        icc_2_1([1, 2, 3])


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_matches_package(level: str) -> None:
    rng = np.random.default_rng(7)
    truth = rng.integers(1, 6, size=(40, 1))
    table = np.clip(truth + rng.integers(-1, 2, size=(40, 5)), 1, 5).astype(float)
    table[rng.random(table.shape) < 0.3] = np.nan
    table[0, 1:] = np.nan  # a unit with one value: not pairable
    ref = krippendorff.alpha(reliability_data=table.T, level_of_measurement=level)
    assert abs(krippendorff_alpha(table, level) - ref) <= TOL


@pytest.mark.parametrize("level", ["interval", "ratio", "ordinal"])
def test_krippendorff_continuous_values(level: str) -> None:
    rng = np.random.default_rng(8)
    table = np.exp(rng.normal(size=(30, 1)) + 0.4 * rng.normal(size=(30, 3)))
    table[rng.random(table.shape) < 0.2] = np.nan
    ref = krippendorff.alpha(reliability_data=table.T, level_of_measurement=level)
    assert abs(krippendorff_alpha(table, level) - ref) <= TOL


def test_krippendorff_published_example() -> None:
    # the krippendorff package's own docstring example (units as columns there)
    data = np.array(
        [
            [np.nan, np.nan, np.nan, np.nan, np.nan, 3, 4, 1, 2, 1, 1, 3, 3, np.nan, 3],
            [1, np.nan, 2, 1, 3, 3, 4, 3, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
            [np.nan, np.nan, 2, 1, 3, 4, 4, np.nan, 2, 1, 1, 3, 3, np.nan, 4],
        ]
    )
    assert round(krippendorff_alpha(data.T, "nominal"), 6) == 0.691358
    assert round(krippendorff_alpha(data.T, "interval"), 6) == 0.810845


def test_krippendorff_errors() -> None:
    with pytest.raises(ValueError, match="unknown level of measurement 'cardinal'"):
        krippendorff_alpha(SHROUT_FLEISS, "cardinal")
    with pytest.raises(ValueError, match="at least one case with 2 or more values"):
        krippendorff_alpha([[1, np.nan], [np.nan, 2]])


def _raters(n: int, k: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1)) + noise * rng.normal(size=(n, k))


def test_leave_one_rater_out_ceiling() -> None:
    n, k, noise = 600, 5, 0.8
    table = _raters(n, k, noise, seed=11)
    rho = 1 / np.sqrt((1 + noise**2) * (1 + noise**2 / (k - 1)))
    expected = 6 / np.pi * np.arcsin(rho / 2)
    ceiling = leave_one_rater_out(table)
    assert isinstance(ceiling, Ceiling)
    assert len(ceiling.per_rater) == k
    assert ceiling.mean == pytest.approx(np.mean(ceiling.per_rater))
    assert ceiling.mean == pytest.approx(expected, abs=0.04)
    others = table[:, 1:].mean(axis=1)
    assert abs(ceiling.per_rater[0] - sps.spearmanr(table[:, 0], others).statistic) <= TOL
    assert leave_one_rater_out(table, "pearson").mean == pytest.approx(rho, abs=0.04)


def test_leave_one_rater_out_tolerates_nan() -> None:
    table = _raters(80, 4, 0.7, seed=12)
    rng = np.random.default_rng(12)
    table[rng.random(table.shape) < 0.25] = np.nan
    table[:, 3] = np.nan
    table[:2, 3] = [1.0, 2.0]  # rater 3 scored only two cases: undefined
    ceiling = leave_one_rater_out(table)
    assert math.isnan(ceiling.per_rater[3])
    assert all(np.isfinite(ceiling.per_rater[:3]))
    assert ceiling.mean == pytest.approx(np.mean(ceiling.per_rater[:3]))
    j = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy: mean of empty slice where no other rater scored
        others = np.nanmean(table[:, 1:], axis=1)
    cases = ~np.isnan(table[:, j]) & ~np.isnan(others)
    ref = sps.spearmanr(table[cases, j], others[cases]).statistic
    assert abs(ceiling.per_rater[j] - ref) <= TOL
    with pytest.raises(ValueError, match="at least 2 raters"):
        leave_one_rater_out(table[:, :1])


def test_human_ceiling_interval_and_upper_bound() -> None:
    table = _raters(60, 4, 0.8, seed=13)
    got = human_ceiling(table, n_resamples=200, seed=1)
    assert got.ceiling.estimate == pytest.approx(leave_one_rater_out(table).mean, abs=TOL)
    assert got.per_rater == pytest.approx(leave_one_rater_out(table).per_rater, abs=TOL)
    assert got.ceiling.method == "percentile"
    assert got.ceiling.low < got.ceiling.estimate < got.ceiling.high
    # the upper bound: each rater against the all-rater mean, itself included
    mean = table.mean(axis=1)
    upper = np.mean([sps.spearmanr(table[:, j], mean).statistic for j in range(4)])
    assert got.upper_bound.estimate == pytest.approx(upper, abs=TOL)
    assert got.upper_bound.estimate > got.ceiling.estimate
    assert got.metrics == () and got.n_cases == 60 and got.n_groups == 60


# --------------------------------------------------------------------------------------------
# classification


def _classification(n: int = 150, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y_true]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, proba.argmax(axis=1), proba


def test_classification_estimates_match_sklearn() -> None:
    y_true, y_pred, proba = _classification()
    got = classification_metrics(
        y_true, y_pred, proba, classes=["MEL", "NV", "BCC"], n_resamples=300
    )
    assert set(got) == {
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "auc_MEL",
        "auc_NV",
        "auc_BCC",
    }
    assert got["accuracy"].estimate == accuracy_score(y_true, y_pred)
    assert got["balanced_accuracy"].estimate == balanced_accuracy_score(y_true, y_pred)
    assert got["macro_f1"].estimate == f1_score(y_true, y_pred, average="macro")
    for c, name in enumerate(["MEL", "NV", "BCC"]):
        assert got[f"auc_{name}"].estimate == roc_auc_score(y_true == c, proba[:, c])
    for interval in got.values():
        assert interval.method == "BCa"
        assert interval.low <= interval.estimate <= interval.high
    plain = classification_metrics(y_true, y_pred, n_resamples=50)
    assert set(plain) == {"accuracy", "balanced_accuracy", "macro_f1"}
    assert set(classification_metrics(y_true, y_pred, proba, n_resamples=50)) >= {"auc_0"}


def test_classification_resamples_match_sklearn() -> None:
    y_true, y_pred, proba = _classification(n=60, k=4, seed=1)
    proba = np.round(proba, 1)  # tied scores
    idx = np.random.default_rng(2).integers(0, 60, size=(25, 60))
    weights = np.stack([np.bincount(i, minlength=60) for i in idx]).astype(float)
    got = classification._classification_resamples(y_true, y_pred, proba, 4, weights)
    for r, i in enumerate(idx):
        t, p = y_true[i], y_pred[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn: y_pred holds classes absent from y_true
            assert abs(got["accuracy"][r] - accuracy_score(t, p)) <= TOL
            assert abs(got["balanced_accuracy"][r] - balanced_accuracy_score(t, p)) <= TOL
            assert abs(got["macro_f1"][r] - f1_score(t, p, average="macro")) <= TOL
        for c in range(4):
            positive = t == c
            if 0 < positive.sum() < len(t):
                assert abs(got[f"auc:{c}"][r] - roc_auc_score(positive, proba[i, c])) <= TOL
            else:
                assert math.isnan(got[f"auc:{c}"][r])


def test_classification_absent_class_has_no_auc_interval() -> None:
    y_true, y_pred, proba = _classification(k=3)
    y_true = np.where(y_true == 2, 1, y_true)
    got = classification_metrics(y_true, y_pred, proba, n_resamples=100)
    assert math.isnan(got["auc_2"].estimate) and got["auc_2"].method == "none"
    with pytest.raises(ValueError, match="one prediction per sample"):
        classification_metrics(y_true, y_pred[:-1])
    with pytest.raises(ValueError, match="proba of shape"):
        classification_metrics(y_true, y_pred, proba[:, :2].T)
    with pytest.raises(ValueError, match="integer class indices"):
        classification_metrics(y_true + 0.5, y_pred)


def _mcnemar_inputs(both: int, only_a: int, only_b: int, neither: int):
    y_true = np.zeros(both + only_a + only_b + neither, dtype=int)
    a = np.concatenate([np.zeros(both + only_a), np.ones(only_b + neither)]).astype(int)
    b = np.concatenate(
        [np.zeros(both), np.ones(only_a), np.zeros(only_b), np.ones(neither)]
    ).astype(int)
    return y_true, a, b


@pytest.mark.parametrize(("cells", "exact"), [((30, 9, 3, 8), True), ((50, 25, 10, 15), False)])
def test_mcnemar_matches_statsmodels(cells: tuple[int, ...], exact: bool) -> None:
    from statsmodels.stats.contingency_tables import mcnemar

    ref = mcnemar(np.array(cells).reshape(2, 2), exact=exact, correction=True)
    statistic, p = mcnemar_test(*_mcnemar_inputs(*cells))
    assert abs(statistic - ref.statistic) <= TOL
    assert abs(p - ref.pvalue) <= TOL
    if not exact:  # chi-square with continuity correction
        assert statistic == pytest.approx((abs(25 - 10) - 1) ** 2 / 35)


def test_prediction_agreement_and_logit_correlation() -> None:
    assert prediction_agreement([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    rng = np.random.default_rng(4)
    a = rng.normal(size=(20, 3))
    b = a + 0.1 * rng.normal(size=(20, 3))
    assert abs(logit_correlation(a, b) - sps.pearsonr(a.ravel(), b.ravel()).statistic) <= TOL
    with pytest.raises(ValueError, match="one shape"):
        logit_correlation(a, b[:, :2])


# --------------------------------------------------------------------------------------------
# selection inside cross-validation


def test_cv_select_does_not_leak() -> None:
    held_out, in_sample = [], []
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        ratings = rng.normal(size=60)
        candidates = {f"layer{j}": rng.normal(size=60) for j in range(40)}
        selection = cv_select(candidates, ratings, folds=5, seed=seed)
        assert isinstance(selection, CVSelection)
        assert selection.folds == 5 and len(selection.chosen) == 5
        assert len(selection.held_out) == 5
        held_out.append(selection.mean)
        in_sample.append(max(srcc(c, ratings) for c in candidates.values()))
    assert abs(np.mean(held_out)) < 0.15
    assert np.mean(in_sample) > 0.25


def test_cv_select_finds_real_signal() -> None:
    rng = np.random.default_rng(21)
    ratings = rng.normal(size=100)
    candidates = {f"noise{j}": rng.normal(size=100) for j in range(10)}
    candidates["signal"] = ratings + 0.7 * rng.normal(size=100)
    selection = cv_select(candidates, ratings, folds=5, seed=3)
    assert selection.chosen == ("signal",) * 5
    assert selection.mean > 0.6 and selection.pooled > 0.6
    sizes = [20] * 5  # 100 cases in 5 folds
    assert selection.mean == pytest.approx(np.average(selection.held_out, weights=sizes))
    groups = np.repeat(np.arange(25), 4)
    grouped = cv_select(candidates, ratings, folds=5, groups=groups)
    assert grouped.chosen == ("signal",) * 5
    by_plcc = cv_select(candidates, ratings, folds=5, statistic="plcc", seed=3)
    assert by_plcc.chosen == ("signal",) * 5 and by_plcc.mean > 0.6


def test_cv_select_keeps_groups_together(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn import model_selection

    seen = []
    split = model_selection.GroupKFold.split

    def spy(self, X, y=None, groups=None):
        for train, test in split(self, X, y, groups):
            seen.append((set(groups[train]), set(groups[test])))
            yield train, test

    monkeypatch.setattr(model_selection.GroupKFold, "split", spy)
    rng = np.random.default_rng(22)
    ratings = rng.normal(size=60)
    groups = rng.integers(0, 15, size=60)
    cv_select({"a": rng.normal(size=60), "b": ratings}, ratings, folds=3, groups=groups)
    assert len(seen) == 3
    assert all(not train & test for train, test in seen)


def test_cv_select_errors() -> None:
    rng = np.random.default_rng(0)
    ratings = rng.normal(size=9)
    with pytest.raises(ValueError, match="at least 10 complete cases, got 9"):
        cv_select({"a": rng.normal(size=9)}, ratings, folds=5)
    with pytest.raises(ValueError, match="lengths"):
        cv_select({"a": rng.normal(size=9), "b": rng.normal(size=8)}, ratings, folds=2)
    with pytest.raises(ValueError, match="at least one candidate"):
        cv_select({}, ratings)


# --------------------------------------------------------------------------------------------
# retrieval


def _retrieval_loop(similarity, q_labels, g_labels, k, mask):
    """precision@k, AP@k and k-NN majority written query by query, rank by rank."""
    out = {"precision": [], "map": [], "knn": []}
    for i, row in enumerate(similarity):
        allowed = [j for j in range(len(row)) if not mask[i, j]]
        ranked = sorted(allowed, key=lambda j: (-row[j], j))[:k]
        rel = [g_labels[j] == q_labels[i] for j in ranked]
        total = sum(g_labels[j] == q_labels[i] for j in allowed)
        hits, ap = 0, 0.0
        for rank, r in enumerate(rel, start=1):
            hits += r
            ap += hits / rank if r else 0.0
        out["precision"].append(sum(rel) / k)
        out["map"].append(ap / max(min(k, total), 1))
        votes = {}
        for j in ranked:
            votes.setdefault(g_labels[j], 0)
            votes[g_labels[j]] += 1
        top = max(votes.values())
        majority = next(g_labels[j] for j in ranked if votes[g_labels[j]] == top)
        out["knn"].append(float(majority == q_labels[i]))
    return {key: np.array(v) for key, v in out.items()}


@pytest.mark.parametrize("ties", [False, True])
def test_retrieval_metrics_match_a_query_by_query_loop(ties: bool) -> None:
    rng = np.random.default_rng(3)
    q, g, k = 25, 40, 7
    similarity = rng.normal(size=(q, g))
    if ties:
        similarity = np.round(similarity, 1)  # many equal similarities: gallery order breaks ties
    q_labels = rng.choice(["MEL", "NV", "BCC"], q)
    g_labels = rng.choice(["MEL", "NV", "BCC"], g)
    mask = rng.random((q, g)) < 0.2
    got = st.retrieval_metrics(similarity, q_labels, g_labels, k, mask)
    want = _retrieval_loop(similarity, q_labels, g_labels, k, mask)
    for key in st.RETRIEVAL_METRICS:
        np.testing.assert_allclose(got[key], want[key], atol=1e-12, err_msg=key)
    assert not np.any(mask[np.arange(q)[:, None], got["neighbours"]])  # masked never retrieved


def test_full_depth_average_precision_is_sklearns() -> None:
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(4)
    similarity = rng.normal(size=(10, 30))
    q_labels = rng.choice(["a", "b"], 10)
    g_labels = rng.choice(["a", "b"], 30)
    got = st.retrieval_metrics(similarity, q_labels, g_labels, k=30)["map"]
    want = [
        average_precision_score(g_labels == y, s) for y, s in zip(q_labels, similarity, strict=True)
    ]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_top_k_pads_and_refuses() -> None:
    sim = np.array([[0.1, 0.9, 0.5]])
    np.testing.assert_array_equal(st.top_k(sim, 2), [[1, 2]])
    np.testing.assert_array_equal(st.top_k(sim, 3, np.array([[True, False, True]])), [[1, -1, -1]])
    with pytest.raises(ValueError, match="k must be in"):
        st.top_k(sim, 4)
    with pytest.raises(ValueError, match="NaN"):
        st.top_k(np.array([[np.nan, 1.0]]), 1)
