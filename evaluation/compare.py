r"""The framework-neutral comparison report, on onnxruntime only.

Which backbone, metric and framework agrees best with dermatologists, with honest
uncertainty (the statistics: docs/statistics.md; the rated cases, region pairs and
classification data it reads: docs/data-formats.md)::

    python -m evaluation.compare                       # the demo: models/demo, synthetic data
    python -m evaluation.compare --models models/mine --rated DIR --ratings ratings.xlsx \\
        --name mine

Everything runs on onnxruntime from the exported models and their manifests (torch and
tensorflow are never imported). This module parses the options and runs the steps,
each in its own module:

1. the models (`evaluation.catalog`), the rated items (`evaluation.items`) and the
   classifiers' test split (`evaluation.classification_data`);
2. classification on the held-out test split, per backbone x training framework, and
   torch vs Keras per backbone: agreement, McNemar, logit correlation
   (`evaluation.classification`); retrieval of the test split's lesions from the
   training split by every feature extractor (`evaluation.retrieval`);
3. per case, LPIPS / DISTS of every scorer, cosine distances of every tap of every
   feature extractor, and classical baselines; a case's score is the mean over its
   comparison regions (`--rule`) (`evaluation.item_scores`);
4. agreement with the raters per aspect (SRCC, KRCC, PLCC after a logistic fit, BCa
   bootstrap CIs over cases), per rater, inter-rater ICC(2,1) and Krippendorff's alpha,
   the leave-one-rater-out ceiling, paired bootstrap differences to the best metric, and
   the layer choice made inside cross-validation, reported on held-out folds
   (`evaluation.agreement`); with `--2afc`, each metric's 2AFC agreement with the
   raters' judgements of triplets, beside the raters' own (`evaluation.two_afc`);
   scikit-learn baselines (`evaluation.learned`) and the
   held-out results of metrics fitted to ratings (`evaluation.fitted`);
   steps 2 and 3-4 share nothing and run side by side (two threads);
5. the torch vs Keras table per backbone (`evaluation.frameworks`);
6. `reports/<name>/`: report.html (self-contained), report.md, tables as CSV and JSON,
   and the same tables as one workbook, report.xlsx (`evaluation.report`).

Rules for imperfect input: `INPUT_RULES` (printed by --help and in the report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.agreement import agreement
from evaluation.catalog import DEMO_COMMAND, Entry, discover
from evaluation.classification import classification
from evaluation.classification_data import ImageBatches, PooledTaps, SplitData, split_data
from evaluation.fitted import fitted_metrics
from evaluation.frameworks import frameworks
from evaluation.item_scores import LAYER_FAMILIES, score_items
from evaluation.items import load_rated
from evaluation.learned import classification_baselines, rating_baselines
from evaluation.options import DEFAULT_MODELS, RULES, Options
from evaluation.report import INPUT_RULES, write_report
from evaluation.retrieval import evaluate as retrieval_of
from evaluation.retrieval import summarise
from evaluation.two_afc import load_triplets, two_afc_agreement

__all__ = ["Options", "compare", "main"]


def compare(options: Options) -> Path:
    """Run the whole comparison and write the report folder; return report.html's path.

    Raises:
        FileNotFoundError: If the models folder does not exist.
        ValueError: On an unknown rule, no usable model, no ratings, or malformed input.
    """
    started = time.time()
    if options.rule not in RULES:
        raise ValueError(f"unknown --rule {options.rule!r}; expected one of {', '.join(RULES)}")
    entries, problems = discover(options.models, options.strict)
    if not entries:
        raise ValueError(
            f"{options.models}: no usable models (ONNX + manifest); run `{DEMO_COMMAND}` or "
            "python -m bridge.export first"
        )
    items = load_rated(
        options.rated, options.ratings, options.pairs, options.images, options.raters
    )
    if not items.ratings:
        raise ValueError(f"{items.source}: no ratings to compare with")
    triplets = load_triplets(options.two_afc, options.images) if options.two_afc else None
    data = split_data(entries, options.data, options.splits)
    if data is None and any(e.kind == "classifier" for e in entries):
        problems.append("classification: no data or splits found (no training run, no --splits)")
    # The test images' side (classifiers, classification baselines) and the rated items'
    # side share nothing: they run side by side (onnxruntime and scikit-learn's workers
    # leave the GIL; each side has its own seeds, so the results do not depend on it).
    with ThreadPoolExecutor(max_workers=1) as pool:
        image_side = pool.submit(_image_side, entries, data, options)
        scores = score_items(entries, items, options)
        agree = agreement(scores, items, options)
        rating = rating_baselines(scores, items, agree, options)
        afc = None
        if triplets is not None:
            afc_items, afc_data = triplets
            afc_scores = score_items(entries, afc_items, options)
            afc = two_afc_agreement(afc_scores, afc_items, afc_data, options)
        cls, classification_rows, found = image_side.result()
    learned = {"classification": classification_rows, "rating": rating}
    results = {
        "name": options.name,
        "synthetic": items.synthetic
        or bool(afc and afc["synthetic"])
        or any(e.manifest.get("synthetic") for e in entries),
        "rated": {
            "source": items.source,
            "n_items": len(items.ids),
            "raters": list(items.raters),
            "aspects": list(items.ratings),
            "rule": options.rule,
        },
        "classification": cls,
        "retrieval": found,
        "agreement": agree,
        "two_afc": afc,
        "learned": learned,
        "fitted": fitted_metrics(options.models),
        "frameworks": frameworks(entries, cls, scores, agree),
        "problems": problems,
        "notes": scores.notes + _image_note(items.synthetic, options.with_images),
        "images": items.synthetic or options.with_images,
        "scorers": [
            {"name": name, "label": info["label"], "file": info["file"]}
            for name, info in scores.info.items()
            if info.get("label") and info["family"] not in LAYER_FAMILIES
        ],
        "provenance": _provenance(entries, options, started),
    }
    return write_report(results, scores, items, options)


def _image_side(
    entries: Sequence[Entry], data: SplitData | None, options: Options
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """The classifiers, the classification baselines and retrieval on the split's images."""
    images = ImageBatches()
    cls = classification(entries, data, images, options)
    pools = PooledTaps(images, options.prefer_gpu)  # one extractor pass per part, shared
    baselines, found = [], []
    for entry in [e for e in entries if e.kind == "features"]:
        baselines += classification_baselines([entry], data, pools, options)
        found.append(retrieval_of(entry, data, pools, options, cls))
        pools.release(entry)  # one extractor's pooled features in memory at a time
    return cls, baselines, summarise([f for f in found if f is not None], data)


def _image_note(synthetic: bool, with_images: bool) -> list[str]:
    """What the report says of the rated cases' images (privacy)."""
    if synthetic:
        return []
    if with_images:
        return [
            "Crops of rated cases are embedded (--with-images), with their ids as given: "
            "share this report only where the images may go."
        ]
    return [
        "Crops of rated cases are left out: the rated images are not marked synthetic, and "
        "patient images stay out of the report unless --with-images asks for them. Case ids "
        "are shown as given; pseudonymise them before a comparison whose report is shared."
    ]


def _provenance(entries: Sequence[Entry], options: Options, started: float) -> dict[str, Any]:
    import onnxruntime
    import scipy
    import sklearn

    from bridge.core.runtime import providers

    return {
        "command": _command_line(),
        "options": {k: str(v) for k, v in vars(options).items()},
        "models": [
            {
                "file": e.path.name,
                "kind": e.kind,
                "backbone": e.backbone,
                "framework": e.framework,
                "origin": e.manifest["origin"],
                "sha256": e.manifest.get("onnx_sha256"),
                "source_weights": (e.manifest.get("source_weights") or {}).get("provenance"),
                "heads": e.heads.get("source"),
                "synthetic": e.manifest.get("synthetic"),
                "training_run": e.manifest.get("training_run"),
                "parity": e.manifest.get("parity"),
                "not_used": [p.name for p in e.others],
            }
            for e in entries
        ],
        "versions": {
            "dermsim": _installed_version("dermsim"),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "execution_provider": providers(options.prefer_gpu)[0],
        "seed": options.seed,
        "started": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
    }


def _command_line() -> str:
    """The command as typed: `python -m evaluation.compare ARGS` when run as the module."""
    if sys.argv and Path(sys.argv[0]).resolve() == Path(__file__).resolve():
        return shlex.join(["python", "-m", "evaluation.compare", *sys.argv[1:]])
    return "python -m evaluation.compare (called from " + shlex.join(sys.argv[:1]) + ")"


def _installed_version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed as a package)"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run the comparison, print the report's path."""
    report = compare(_options(_parser().parse_args(argv)))
    print(report)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.compare",
        description=__doc__.split("\n\n")[0],
        epilog="rules for imperfect input: " + " ".join(INPUT_RULES),
    )
    parser.add_argument("--models", default=str(DEFAULT_MODELS), help="ONNX models + manifests")
    parser.add_argument("--name", default=None, help="report name (default: the models folder)")
    parser.add_argument("--out", default=None, help="report folder (default reports/<name>)")
    parser.add_argument("--rated", default=None, help="case folders CASE001/0.jpg, 1.jpg, ...")
    parser.add_argument("--ratings", default=None, help="ratings table (.csv or .xlsx)")
    parser.add_argument("--pairs", default=None, help="region-pair table instead of cases")
    parser.add_argument(
        "--images", default=None, help="folder relative --pairs / --2afc paths refer to"
    )
    parser.add_argument(
        "--2afc",
        dest="two_afc",
        default=None,
        help="2AFC judgement table (python -m evaluation.rate export of a 2afc study): "
        "adds each metric's 2AFC agreement",
    )
    parser.add_argument("--data", default=None, help="TOML config naming the classification data")
    parser.add_argument("--splits", default=None, help="splits file (default: the runs')")
    parser.add_argument("--raters", default="", help="comma-separated raters (default: all)")
    parser.add_argument("--rule", default="mean", help=f"per-case rule: {', '.join(RULES)}")
    parser.add_argument("--fit", default="logistic4", help="PLCC fit: logistic4, logistic5, linear")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--seed", type=int, default=0, help="seed of bootstraps and folds")
    parser.add_argument("--cpu", action="store_true", help="do not try the CUDA provider")
    parser.add_argument("--strict", action="store_true", help="stop at an unusable model")
    parser.add_argument(
        "--with-images",
        action="store_true",
        help="embed crops of rated cases even when the data is not marked synthetic",
    )
    return parser


def _options(args: argparse.Namespace) -> Options:
    """The parsed command line as `Options`, checked."""
    if args.bootstrap < 100:
        raise ValueError(f"--bootstrap must be >= 100, got {args.bootstrap}")
    if args.folds < 2:
        raise ValueError(f"--folds must be >= 2, got {args.folds}")
    if args.rated and args.pairs:
        raise ValueError("give either --rated (case folders) or --pairs (region pairs), not both")
    models = Path(args.models)
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", models.resolve().name)
    return Options(
        models=models, out=Path(args.out) if args.out else Path("reports") / name, name=name,
        rated=Path(args.rated) if args.rated else None,
        ratings=Path(args.ratings) if args.ratings else None,
        pairs=Path(args.pairs) if args.pairs else None,
        images=Path(args.images) if args.images else None,
        data=Path(args.data) if args.data else None,
        splits=Path(args.splits) if args.splits else None,
        raters=tuple(r.strip() for r in args.raters.split(",") if r.strip()),
        rule=args.rule, fit=args.fit, bootstrap=args.bootstrap, folds=args.folds,
        seed=args.seed, prefer_gpu=not args.cpu, strict=args.strict,
        with_images=args.with_images,
        two_afc=Path(args.two_afc) if args.two_afc else None,
    )  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bridge.core.cli import run

    run(main)
