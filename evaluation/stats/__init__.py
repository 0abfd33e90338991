"""Statistics of agreement (metric scores vs raters, raters among themselves) and classification.

What is computed, and why, is set out in docs/statistics.md. This package is the public face
of the statistics: callers import from here (`from evaluation import stats`, then
`stats.srcc(...)`). One submodule per concept, each stating its rules for missing data (NaN):

* `correlation`: SRCC, KRCC, PLCC and Pearson of scores against ratings, and their vectorised
  forms over bootstrap resamples.
* `curves`: the monotonic curves (4- or 5-parameter logistic, linear) fitted before PLCC.
* `bootstrap`: confidence intervals by bootstrap over cases or groups (lesions, patients)
  (`Interval`, `bootstrap_ci`), and the resampling engines every interval goes through.
* `inference`: one metric's correlations with intervals, PLCC and RMSE cross-fitted
  (`agreement`); two metrics compared on the same cases (`paired_difference`); the metric
  chosen on the data against all others, with familywise-adjusted p (`compare_to_best`).
* `raters`: agreement among raters: ICC(2,1), Krippendorff's alpha, the leave-one-rater-out
  human ceiling, its upper bound and metrics set against it like for like (`human_ceiling`).
* `noise`: what pure-noise scores reach on these ratings, over many seeded draws.
* `classification`: accuracy, balanced accuracy, macro F1 and one-vs-rest AUCs with intervals
  over samples or lesions, McNemar's test (clustered with lesions), prediction agreement and
  the correlation of two models' logits.
* `retrieval`: precision@k, AP@k and k-NN majority of nearest-neighbour retrieval by
  diagnosis, per query (`retrieval_metrics`), own lesions masked out.
* `crossval`: choices and fits made by looking at the ratings, made inside cross-validation
  folds and scored on the held-out folds (`cv_select`, `crossfit_plcc`).
* `_checks`: the input checks shared by the submodules.
"""

from evaluation.stats._checks import MIN_CASES
from evaluation.stats.bootstrap import EXCLUDES_ESTIMATE, Interval, bootstrap_ci
from evaluation.stats.classification import (
    classification_metrics,
    logit_correlation,
    mcnemar_test,
    prediction_agreement,
)
from evaluation.stats.correlation import STATISTICS, correlations, krcc, pearson, plcc, srcc
from evaluation.stats.crossval import CrossFit, CVSelection, crossfit_plcc, cv_select
from evaluation.stats.curves import FITS, RESAMPLE_TOLERANCE, fit_logistic, logistic4, logistic5
from evaluation.stats.inference import (
    BestComparison,
    Comparison,
    agreement,
    compare_to_best,
    paired_difference,
)
from evaluation.stats.noise import NoiseBand, noise_band
from evaluation.stats.raters import (
    KRIPPENDORFF_LEVELS,
    Ceiling,
    HumanCeiling,
    MetricVsRaters,
    human_ceiling,
    icc_2_1,
    krippendorff_alpha,
    leave_one_rater_out,
)
from evaluation.stats.retrieval import RETRIEVAL_METRICS, retrieval_metrics, top_k

__all__ = [
    "EXCLUDES_ESTIMATE",
    "FITS",
    "KRIPPENDORFF_LEVELS",
    "MIN_CASES",
    "RESAMPLE_TOLERANCE",
    "RETRIEVAL_METRICS",
    "STATISTICS",
    "BestComparison",
    "CVSelection",
    "Ceiling",
    "Comparison",
    "CrossFit",
    "HumanCeiling",
    "Interval",
    "MetricVsRaters",
    "NoiseBand",
    "agreement",
    "bootstrap_ci",
    "classification_metrics",
    "compare_to_best",
    "correlations",
    "crossfit_plcc",
    "cv_select",
    "fit_logistic",
    "human_ceiling",
    "icc_2_1",
    "krcc",
    "krippendorff_alpha",
    "leave_one_rater_out",
    "logistic4",
    "logistic5",
    "logit_correlation",
    "mcnemar_test",
    "noise_band",
    "paired_difference",
    "pearson",
    "plcc",
    "prediction_agreement",
    "retrieval_metrics",
    "srcc",
    "top_k",
]
