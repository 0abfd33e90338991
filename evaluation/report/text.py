"""The comparison report's fixed prose: input rules, the synthetic-data note, methods.

`INPUT_RULES` is also the epilog of `python -m evaluation.compare --help`.
"""

INPUT_RULES = (
    "A model whose manifest does not match its ONNX file (or is missing) is left out and "
    "listed under 'Problems found'; --strict stops instead.",
    "A missing rating (empty cell) is left out: an item's mean rating averages the raters "
    "who scored it; items nobody rated for an aspect are left out of that aspect.",
    "--raters picks raters by name; an unknown name stops with the list of known ones.",
    "Malformed tables (a non-numeric score, an unknown column, a case folder without its "
    "images) stop with the file and the line, from the readers.",
    "Scores are oriented as distances (PSNR is negated): larger means more different.",
)

SYNTHETIC_NOTE = (
    "SYNTHETIC DATA: built-in simulated images and raters; the numbers exercise the "
    "pipeline and say nothing about real dermatologists."
)

METHODS = {
    "SRCC / KRCC": "Spearman / Kendall (tau-b) rank correlation of the raw scores with the "
    "mean rating of the raters who scored an item.",
    "PLCC / RMSE": "cross-fitted: a bounded monotonic logistic (4-parameter; VQEG 5-parameter "
    "with --fit logistic5) is fitted on the other folds and predicts each held-out fold; PLCC "
    "is the Pearson correlation of those predictions with the rating (signed like the SRCC), "
    "RMSE their error in rating units. 'In-sample' fits and scores on the same items and "
    "flatters the metric.",
    "CIs": "bootstrap over groups of items (patients or lesions; an item without one is its "
    "own), 95%: BCa for SRCC, KRCC, PLCC and RMSE; percentile, with the p-value read off the "
    "same resamples, for differences.",
    "vs best": "the best metric is the one with the highest SRCC on these very items, an "
    "optimistic pick; the CV choice says what picking the best is worth on held-out items. "
    "Each difference best − metric has a raw p and a familywise-adjusted p (single-step "
    "max-T over all pairs of metrics, which holds although the best was picked on the data).",
    "Human ceiling": "each rater's SRCC with the mean of the other raters, averaged over "
    "raters. 'Like a rater' scores a metric the same way (against the mean of all raters but "
    "one, on the same items, averaged over the left-out rater), so the two compare like for "
    "like: a metric that reaches the ceiling agrees with the raters as well as one more "
    "rater would. The upper bound is each rater against the mean of all raters, itself "
    "included.",
    "Noise band": "the 2.5% to 97.5% range of SRCC over 200 seeded uniform-noise scores (of "
    "the cross-fitted PLCC over the first 50) on the same items and folds: where a metric "
    "with no skill lands.",
    "ICC(2,1), alpha": "inter-rater agreement: two-way random, absolute, single rater; "
    "Krippendorff's alpha (interval and ordinal).",
    "Layer choice": "which tap and cosine mode to use is chosen on the training folds of a "
    "k-fold cross-validation and scored on the held-out fold; the per-layer curves are "
    "descriptive (all items).",
    "Classification baselines": "logistic regression, linear SVM, random forest and "
    "k-nearest neighbours on pooled deep features, each tuned by inner cross-validation "
    "grouped by lesion: do classical models on deep features match the fine-tuned networks?",
    "Retrieval": "each test image queries the training split for its k nearest images "
    "(cosine distance of one pooled, L2-normalised tap of a feature extractor), never an "
    "image of its own lesion or patient. precision@k: the share of the k with the query's "
    "diagnosis; mAP@k: average precision over the first k ranks, divided by min(k, the "
    "number of gallery images with that diagnosis); k-NN: the majority diagnosis of the k "
    "(a tie goes to the label met first). The tap and pooling are chosen on the training "
    "split alone (each training image against the rest, its own lesion left out; best "
    "mAP@k), never on the test queries. CIs: BCa bootstrap over the queries' "
    "lesions (or patients). Chance: the share of the gallery with the query's diagnosis.",
    "Rating prediction": "ridge and support-vector regression from all distances to the mean "
    "rating, and an ordinal (proportional-odds logit) model from one distance to the rating "
    "category, in nested cross-validation: the inner folds choose, the outer folds score. "
    "Accuracy, MAE and quadratic weighted kappa against the category, beside the raters' own "
    "agreement on the same scale.",
    "Metric fine-tuning": "LPIPS linear heads and DISTS alpha/beta fitted to the mean "
    "rating (loss: minus the Pearson correlation) with the backbone frozen, clamped at zero "
    "after every step as in the originals, on the training folds of a k-fold split; the "
    "epoch is chosen on a validation part of the training folds, and results are reported "
    "on the held-out folds only (python -m bridge.finetune_metric).",
    "Orientation": "every score reads as a distance (PSNR is negated), so a positive "
    "correlation means agreement with the severity ratings.",
}

FIGURE_TITLES = {
    "srcc_overall": "Each metric like one more rater, against the human ceiling (overall)",
    "srcc_color": "Each metric like one more rater, against the human ceiling (color)",
    "srcc_texture": "Each metric like one more rater, against the human ceiling (texture)",
    "scatter": "Score vs mean rating",
    "severity": "Distance by severity category",
    "layers": "Per-layer correlation curves",
    "confusion": "Confusion matrices (test split)",
    "examples": "Example cases",
    "retrieval": "Retrieval examples: test queries and their nearest training images",
}
