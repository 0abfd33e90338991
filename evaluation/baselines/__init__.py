"""Learned baselines on features and distances: classifiers, rating regressors, an ordinal model.

The baselines:

* Classification baselines (`classification_baselines`): logistic regression, a linear SVM,
  a random forest and k-nearest neighbours are trained with scikit-learn on pooled deep
  features (`pooled_features`: the global average of every tap of an exported feature
  extractor). Each model's hyper-parameters are chosen by an inner grid search that maximises
  balanced accuracy over stratified folds that never split a lesion; the chosen model is refit
  on the whole training split and predicts the same test split as the fine-tuned networks.
* Rating prediction (`rating_baselines`): ridge regression and an RBF support-vector
  regression map per-layer distances (and classical features) to the mean rating of a case.
  They run in nested cross-validation grouped by patient, lesion or case: the outer folds give
  every case a prediction from a model that never saw it (nor its group), and the
  hyper-parameters are chosen by an inner grid search (mean absolute error) on the outer
  training part only. The naive `median_predictor` (the training part's median rating) runs
  on the same folds, the yardstick of the others' MAE.
* Ordinal severity (`ordinal_baseline`): a proportional-odds (ordered logit) model maps one
  distance to the 1-7 category, replacing the thesis's KMeans bucketing of distances: its
  thresholds are learned from the ratings and keep the categories' order. On each outer
  training part every candidate distance gets its own model and the one with the best
  training-part quadratic weighted kappa is kept, then it predicts the held-out cases.
  Accuracy, mean absolute error and quadratic weighted kappa are given against the reference
  (the rounded mean rating) and against each rater, next to the raters' own agreement on the
  same scale (`rater_agreement`) and the naive median category of each training part.

Conventions: the reference category of a case is the mean of the available ratings rounded
half up and clipped to the categories. Inputs with NaN follow the rules in each function's
docstring; cross-fitted outputs keep the input's order, with NaN for the cases left out.
scikit-learn and statsmodels do the fitting; nothing here imports torch or tensorflow.

    X = pooled_features(extractor, images)                    # (N, D) pooled tap features
    fitted = classification_baselines(X[train], y[train], X[test], groups_train=lesions[train])
    rated = rating_baselines(distance_table, mean_ratings, groups=patients)
    ordinal = ordinal_baseline({"layer3/gap": d3, "layer4/gap": d4}, ratings, raters,
                               groups=patients)
"""

from evaluation.baselines.classifiers import (
    CLASSIFIERS,
    FittedClassifier,
    classification_baselines,
    pooled_features,
)
from evaluation.baselines.ordinal import OrdinalResult, ordinal_baseline, rater_agreement
from evaluation.baselines.regression import (
    NAIVE,
    REGRESSORS,
    RatingPrediction,
    rating_baselines,
)

__all__ = [
    "CLASSIFIERS",
    "NAIVE",
    "REGRESSORS",
    "FittedClassifier",
    "OrdinalResult",
    "RatingPrediction",
    "classification_baselines",
    "ordinal_baseline",
    "pooled_features",
    "rater_agreement",
    "rating_baselines",
]
