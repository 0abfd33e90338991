"""Statistics of agreement (metric scores vs raters, raters among themselves) and classification.

What is computed, and why, is set out in docs/statistics.md. This package is the public face
of the statistics: callers import from here (`from evaluation import stats`, then
`stats.srcc(...)`). One submodule per concept, each stating its rules for missing data (NaN):

* `correlation`: SRCC, KRCC, PLCC and Pearson of scores against ratings, and their vectorised
  forms over bootstrap resamples.
* `curves`: the monotonic curves (4- or 5-parameter logistic, linear) fitted before PLCC.
* `bootstrap`: confidence intervals by bootstrap over cases (`Interval`, `bootstrap_ci`), and
  the resampling engine every interval of the package goes through.
* `inference`: one metric's correlations with intervals (`agreement`), and two metrics
  compared on the same cases with a bootstrap p-value (`paired_difference`).
* `raters`: agreement among raters: ICC(2,1), Krippendorff's alpha, the leave-one-rater-out
  human ceiling and its interval.
* `classification`: accuracy, balanced accuracy, macro F1 and one-vs-rest AUCs with intervals,
  McNemar's test, prediction agreement and the correlation of two models' logits.
* `crossval`: choices made by looking at the ratings, made inside cross-validation folds and
  scored on the held-out folds (`cv_select`).
* `_checks`: the input checks shared by the submodules.
"""

from evaluation.stats._checks import MIN_CASES
from evaluation.stats.bootstrap import Interval, bootstrap_ci
from evaluation.stats.classification import (
    classification_metrics,
    logit_correlation,
    mcnemar_test,
    prediction_agreement,
)
from evaluation.stats.correlation import STATISTICS, correlations, krcc, pearson, plcc, srcc
from evaluation.stats.crossval import CVSelection, cv_select
from evaluation.stats.curves import FITS, RESAMPLE_TOLERANCE, fit_logistic, logistic4, logistic5
from evaluation.stats.inference import agreement, paired_difference
from evaluation.stats.raters import (
    KRIPPENDORFF_LEVELS,
    Ceiling,
    ceiling_interval,
    icc_2_1,
    krippendorff_alpha,
    leave_one_rater_out,
)

__all__ = [
    "FITS",
    "KRIPPENDORFF_LEVELS",
    "MIN_CASES",
    "RESAMPLE_TOLERANCE",
    "STATISTICS",
    "CVSelection",
    "Ceiling",
    "Interval",
    "agreement",
    "bootstrap_ci",
    "ceiling_interval",
    "classification_metrics",
    "correlations",
    "cv_select",
    "fit_logistic",
    "icc_2_1",
    "krcc",
    "krippendorff_alpha",
    "leave_one_rater_out",
    "logistic4",
    "logistic5",
    "logit_correlation",
    "mcnemar_test",
    "paired_difference",
    "pearson",
    "plcc",
    "prediction_agreement",
    "srcc",
]
