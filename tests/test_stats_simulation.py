"""The statistics' protocol, checked by simulation: seeded replicates with a stated bound.

Each test draws many small studies whose truth is known and checks what a reviewer would ask
of the report: that pure noise rarely looks significant, that the human ceiling compares like
with like, that intervals over lesions cover, and that no split divides a group. Each also
shows that the bound can fail: the protocol it replaces misses it on the same draws.

`python tests/test_stats_simulation.py` prints the measured rates of the replicated claims.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from scipy import stats as sps

from evaluation import stats
from evaluation.stats import crossval
from evaluation.stats._checks import _Groups
from evaluation.stats.bootstrap import _distribution

REPLICATES = 200
N = 48  # items of a small rating study, as the synthetic demo's
WORKERS = min(4, os.cpu_count() or 1)  # the replicates run in parallel: the suite is serial


def _replicated(replicate, base: int) -> list:
    """`replicate(base, k)` for k in 0..REPLICATES-1, in worker processes; results in order."""
    with ProcessPoolExecutor(WORKERS) as pool:
        return list(pool.map(replicate, [base] * REPLICATES, range(REPLICATES), chunksize=10))


def _noise_study(rng: np.random.Generator, n: int = N, raters: int = 6):
    """A metric of pure noise and six raters of pure noise (1-7 scale), their mean rating."""
    table = np.clip(np.round(rng.normal(4, 1.5, size=(n, raters))), 1, 7)
    return rng.uniform(size=n), table.mean(axis=1)


def _excludes_zero(interval: stats.Interval) -> bool:
    return bool(np.isfinite(interval.low) and (interval.low > 0 or interval.high < 0))


def _noise_replicate(base: int, k: int) -> tuple[bool, bool, bool]:
    x, y = _noise_study(np.random.default_rng((base, k)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = stats.agreement(x, y, n_resamples=300, seed=k)
    return (
        _excludes_zero(got["srcc"]),
        _excludes_zero(got["plcc"]),
        got["plcc_in_sample"].estimate > 0,
    )


def test_noise_intervals_of_srcc_and_crossfitted_plcc_rarely_exclude_zero() -> None:
    srcc_hits, plcc_hits, in_sample_positive = np.mean(
        _replicated(_noise_replicate, 20261202), axis=0
    )
    assert srcc_hits <= 0.08
    assert plcc_hits <= 0.08
    # signed like the SRCC, the in-sample PLCC of noise is no longer biased upwards
    assert 0.35 <= in_sample_positive <= 0.65


def _family_replicate(base: int, k: int) -> tuple[bool, bool]:
    rng = np.random.default_rng((base, k))
    truth = rng.normal(size=N)
    columns = {f"m{m}": truth + rng.normal(scale=1.2, size=N) for m in range(8)}
    ratings = truth + rng.normal(scale=0.5, size=N)
    result = stats.compare_to_best(columns, ratings, n_resamples=400, seed=k)
    assert result.family == 28 and len(result.comparisons) == 7
    return (
        any(c.p_adjusted < 0.05 for c in result.comparisons),
        any(c.p < 0.05 for c in result.comparisons),
    )


def test_familywise_rate_of_vs_best_false_positives() -> None:
    """Eight equally good metrics: the best picked on the data is no better than the others."""
    adjusted, raw = np.mean(_replicated(_family_replicate, 7), axis=0)
    assert adjusted <= 0.08
    assert raw > 0.2  # uncorrected, the winner's curse shows


def _ceiling_gaps(studies: int = 60) -> tuple[float, float]:
    """Seven exchangeable raters, the seventh scored like a metric, over `studies` studies.

    Returns the mean of (its like-a-rater SRCC - the ceiling) and of (its SRCC against the
    mean of all six - its like-a-rater SRCC).
    """
    rng = np.random.default_rng(11)
    like, plain = [], []
    for _ in range(studies):
        truth = rng.normal(size=N)
        table = np.clip(np.round(4 + 0.8 * truth[:, None] + rng.normal(size=(N, 7))), 1, 7)
        raters, extra = table[:, :6], table[:, 6]
        got = stats.human_ceiling(raters, {"extra": extra}, n_resamples=2, seed=0)
        like.append(got.metrics[0].vs_others.estimate - got.ceiling.estimate)
        plain.append(stats.srcc(extra, raters.mean(axis=1)) - got.metrics[0].vs_others.estimate)
    return float(np.mean(like)), float(np.mean(plain))


def test_an_extra_rater_scored_as_a_metric_lands_on_the_ceiling() -> None:
    """Seven exchangeable raters: the seventh, scored like a metric, is one more rater."""
    like, plain = _ceiling_gaps()
    assert abs(like) <= 0.02
    # against the mean of all six raters the same rater gains: the old comparison flattered it
    assert plain > 0.005


def _clustered(rng: np.random.Generator, lesions: int = 60, views: int = 3):
    """Views of lesions: whether a view is classified right depends on its lesion."""
    ease = rng.normal(size=lesions).repeat(views)
    right = (1.0 + 1.5 * ease + 0.3 * rng.normal(size=lesions * views)) > 0
    y_true = rng.integers(0, 2, lesions).repeat(views)
    return y_true, np.where(right, y_true, 1 - y_true), np.arange(lesions).repeat(views)


def _coverage() -> tuple[float, float]:
    """Coverage of the 95% accuracy interval over lesions and over images (60 x 3 views)."""
    truth_rng = np.random.default_rng(0)
    big = [_clustered(truth_rng, lesions=20_000)]
    accuracy = float(np.mean(big[0][0] == big[0][1]))  # the population's accuracy
    rng = np.random.default_rng(3)
    grouped = plain = 0
    for seed in range(REPLICATES):
        y_true, y_pred, lesion = _clustered(rng)
        by_lesion = stats.classification_metrics(y_true, y_pred, seed=seed, groups=lesion)
        by_image = stats.classification_metrics(y_true, y_pred, seed=seed)
        grouped += by_lesion["accuracy"].low <= accuracy <= by_lesion["accuracy"].high
        plain += by_image["accuracy"].low <= accuracy <= by_image["accuracy"].high
    return grouped / REPLICATES, plain / REPLICATES


def test_lesion_level_intervals_cover_clustered_accuracy() -> None:
    grouped, plain = _coverage()
    assert grouped >= 0.93
    assert plain < 0.90  # images treated as independent: too narrow


def _mcnemar_rejections() -> tuple[float, float]:
    """Two equally good classifiers on 60 lesions x 3 views: how often each test rejects."""
    rng = np.random.default_rng(5)
    clustered = plain = 0
    for _ in range(REPLICATES):
        lesions, views = 60, 3
        y_true = rng.integers(0, 2, lesions).repeat(views)
        ease = rng.normal(size=(2, lesions)).repeat(views, axis=1)
        right = ease + 0.3 * rng.normal(size=ease.shape) > -0.3
        a, b = (np.where(r, y_true, 1 - y_true) for r in right)
        group = np.arange(lesions).repeat(views)
        clustered += stats.mcnemar_test(y_true, a, b, groups=group)[1] < 0.05
        plain += stats.mcnemar_test(y_true, a, b)[1] < 0.05
    return clustered / REPLICATES, plain / REPLICATES


def test_clustered_mcnemar_holds_its_level() -> None:
    """Two equally good classifiers on clustered views: the clustered test rejects ~5%."""
    clustered, plain = _mcnemar_rejections()
    assert clustered <= 0.08
    assert plain > 0.10


def _grouped_ratings(rng: np.random.Generator, patients: int = 16, per: int = 3):
    group = np.repeat([f"P{k:02d}" for k in range(patients)], per)
    skin = rng.normal(size=patients).repeat(per)
    x = skin + rng.normal(size=patients * per)
    return x, 2 * skin + rng.normal(size=patients * per), group


def test_grouped_folds_never_split_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every split of the statistics (cross-fitting, CV choice, noise band) keeps groups whole."""
    rng = np.random.default_rng(9)
    x, y, group = _grouped_ratings(rng)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    original = crossval.kfold

    class Spy:
        def __init__(self, splitter):
            self.splitter = splitter

        def split(self, *args, **kwargs):
            for train, test in self.splitter.split(*args, **kwargs):
                seen.append((train, test))
                yield train, test

    monkeypatch.setattr(crossval, "kfold", lambda *a, **k: Spy(original(*a, **k)))
    stats.crossfit_plcc(x, y, groups=group, n_resamples=50)
    stats.cv_select({"a": x, "b": -x}, y, folds=4, groups=group)
    stats.noise_band(y, n_draws=3, groups=group)
    stats.agreement(x, y, groups=group, n_resamples=50)
    assert len(seen) >= 4 * 5
    for train, test in seen:
        assert not set(group[train]) & set(group[test])


def test_grouped_resamples_draw_whole_groups() -> None:
    group = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 1, 2, 3, 4, 5])  # unequal sizes
    counts = _distribution(
        lambda i: np.bincount(i, minlength=len(group)), len(group), n_resamples=200, seed=2,
        groups=group,
    )  # fmt: skip
    for row in counts:  # all members of a group are drawn equally often
        for g in range(10):
            assert len(set(row[group == g])) == 1
    assert (counts.sum(axis=1) != len(group)).any()  # resample sizes vary with group sizes
    assert _Groups(group, len(group)).count == 10


def test_p_values_agree_with_the_intervals_beside_them() -> None:
    rng = np.random.default_rng(4)
    for seed in range(30):
        ratings = rng.normal(size=30)
        a = ratings + rng.normal(scale=1.5, size=30)
        b = ratings + rng.normal(scale=1.5, size=30)
        diff, p = stats.paired_difference(a, b, ratings, n_resamples=400, seed=seed)
        assert (p < 0.05) == (not diff.low <= 0 <= diff.high)


def test_no_interval_excludes_its_own_estimate() -> None:
    x = np.arange(12.0)

    def distinct(values):  # resamples always hold fewer distinct values than the data
        return len(np.unique(values)) / len(values)

    got = stats.bootstrap_ci(distinct, x, n_resamples=200, method="percentile")
    assert got.estimate == 1.0
    assert np.isnan(got.low) and np.isnan(got.high)
    assert got.method == "none" and got.note == stats.EXCLUDES_ESTIMATE


def test_logistic_curves_are_monotonic_bounded_and_signed() -> None:
    rng = np.random.default_rng(12)
    for _ in range(40):
        x, y = rng.normal(size=20), rng.normal(size=20)
        for kind in ("logistic4", "logistic5"):
            curve = stats.fit_logistic(x, y, kind)
            steps = np.diff(curve(np.linspace(x.min(), x.max(), 400)))
            direction = np.sign(sps.spearmanr(x, y).statistic) or 1.0
            assert (steps * direction >= -1e-12).all()  # monotonic, in the SRCC's direction
            centre = curve.params[2]
            assert x.min() - 1e-9 <= centre <= x.max() + 1e-9
            width = curve.params[3] if kind == "logistic4" else 1 / curve.params[1]
            assert width >= np.ptp(x) / 20 - 1e-9  # no step
    # decreasing relations get a negative PLCC, in-sample and cross-fitted
    x = rng.uniform(0, 1, 60)
    y = 6 - 4 * x + 0.3 * rng.normal(size=60)
    assert stats.plcc(x, y) < -0.9
    assert stats.crossfit_plcc(x, y, n_resamples=100).plcc.estimate < -0.9


def test_constant_predictions_have_no_plcc_and_no_interval() -> None:
    got = stats.crossfit_plcc(np.ones(20), np.arange(20.0), n_resamples=50)
    assert np.isnan(got.plcc.estimate) and got.plcc.method == "none"
    assert np.isfinite(got.rmse.estimate)


def test_noise_band_brackets_zero_and_matches_its_draws() -> None:
    rng = np.random.default_rng(2)
    _, y = _noise_study(rng)
    band = stats.noise_band(y, n_draws=100, seed=1)
    assert band.draws == 100
    for low, median, high in band.bands.values():
        assert low < median < high and low < 0 < high
    draws = [np.random.default_rng((1, k)).uniform(size=N) for k in range(100)]
    srcc = [stats.srcc(d, y) for d in draws]
    assert band.bands["srcc"][1] == pytest.approx(np.median(srcc))


if __name__ == "__main__":
    noise = np.mean(_replicated(_noise_replicate, 20261202), axis=0)
    family = np.mean(_replicated(_family_replicate, 7), axis=0)
    like, plain = _ceiling_gaps()
    covered = _coverage()
    rejected = _mcnemar_rejections()
    print(f"pure noise, {N} items, {REPLICATES} replicates:")
    print(f"  SRCC 95% interval excludes 0          {noise[0]:.3f}  (bound 0.08)")
    print(f"  cross-fitted PLCC interval excludes 0 {noise[1]:.3f}  (bound 0.08)")
    print(f"  in-sample PLCC > 0                    {noise[2]:.3f}  (0.5 expected)")
    print("8 equally good metrics, any 'vs best' p < 0.05:")
    print(f"  max-T adjusted {family[0]:.3f}  (bound 0.08), raw {family[1]:.3f}")
    print("an extra rater scored as a metric, 60 studies:")
    print(f"  like a rater - ceiling {like:+.4f}  (bound ±0.02)")
    print(f"  vs the all-rater mean - like a rater {plain:+.4f}  (the old comparison's gain)")
    print(f"60 lesions x 3 views, {REPLICATES} replicates, 95% accuracy interval covers:")
    print(f"  over lesions {covered[0]:.3f}  (bound 0.93), over images {covered[1]:.3f}")
    print("equally good classifiers, McNemar p < 0.05:")
    print(f"  clustered {rejected[0]:.3f}  (bound 0.08), plain {rejected[1]:.3f}")
