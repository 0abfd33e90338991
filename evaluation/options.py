"""What a comparison run is asked to do: the options of `python -m evaluation.compare`.

`Options` is read by every step of the comparison (`evaluation.compare` parses it
from the command line and runs the steps), so it lives below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RULES = ("mean", "median", "max", "min")
DEFAULT_MODELS = Path("models/demo")


@dataclass(frozen=True)
class Options:
    """What `python -m evaluation.compare` was asked to do.

    Attributes:
        models: Folder of ONNX models with manifests.
        out: Report folder (`reports/<name>`).
        name: Report name.
        rated: Case folders (`CASE001/0.jpg`, ...), or None.
        ratings: Ratings table of the cases.
        pairs: A region-pair table (instead of rated cases), or None.
        images: Folder relative paths in `pairs` refer to.
        data: Classification data config: a TOML config file, or None to use the
            config recorded in the classifiers' training runs.
        splits: Splits file (default: the training runs' own).
        raters: Raters to use (default: all).
        rule: How a case's comparison regions combine into one score.
        fit: Logistic fit for PLCC (`logistic4`, `logistic5` or `linear`).
        bootstrap: Bootstrap resamples.
        folds: Cross-validation folds for choices made on the ratings.
        seed: Seed of bootstraps, folds and the noise baseline.
        prefer_gpu: Try the CUDA provider.
        strict: Stop at a model that cannot be used instead of leaving it out.
        two_afc: A 2AFC judgement table (triplets and the raters' choices), or None.
        with_images: Embed crops of rated cases in the report even when the data is
            not marked synthetic (patient images stay out by default).
    """

    models: Path = DEFAULT_MODELS
    out: Path = Path("reports/demo")
    name: str = "demo"
    rated: Path | None = None
    ratings: Path | None = None
    pairs: Path | None = None
    images: Path | None = None
    data: Path | None = None
    splits: Path | None = None
    raters: tuple[str, ...] = ()
    rule: str = "mean"
    fit: str = "logistic4"
    bootstrap: int = 2000
    folds: int = 5
    seed: int = 0
    prefer_gpu: bool = True
    strict: bool = False
    with_images: bool = False
    two_afc: Path | None = None
