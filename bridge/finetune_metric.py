r"""Fit LPIPS heads / DISTS alpha, beta to ratings, cross-validated; export the fitted scorer.

    python -m bridge.finetune_metric --run runs/demo/vgg16-torch --metric both --out models/fitted
    python -m bridge.finetune_metric --arch vgg16 --weights W.pth --metric lpips \
        --framework keras --rated cases/ --ratings ratings.xlsx --aspect overall --out models/

The backbone stays frozen; only the heads are fitted, in either framework
(`torch_models.finetune` / `tf_models.finetune`, mirrored). Both metrics are linear in
their heads given per-channel terms, so each rated case's terms are computed once with
that framework's own LPIPS / DISTS module (checked against the module's distance).

The protocol (`bridge.fit_protocol`): choices made inside folds, reported on held-out
folds; folds and validation parts are grouped by the ratings table's group column
(patient or lesion; a case without one is its own group). The numpy side (config,
heads, terms, folds) is `bridge.core.fitting`; the fit record and its files are
`bridge.fit_record`.

Outputs in --out: `<name>-fitted-<metric>.heads.safetensors` (the heads, with the fit
record in its metadata), the ONNX scorer `<name>-fitted-<metric>-<framework>.onnx` and
its manifest (exported by `bridge.export`, same parity gate as every export; the
manifest's `heads` carries the fit record), and `<name>-fitted-<metric>.cv.json` (the
fit record and every case's held-out distances).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.data.image import DEFAULT_POLICY
from bridge.core.fitting import (
    METRIC_NAMES,
    FitConfig,
    RatedData,
    check_enough_cases,
    fitted_name,
    flatten_heads,
    load_rated,
)
from bridge.export import Source, export, source_from_run, source_from_weights
from bridge.fit_protocol import (
    case_terms,
    choose_epoch,
    cross_validate,
    framework_module,
    start_heads,
    summarise,
)
from bridge.fit_record import fit_record, format_table, write_outputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    """What `fit_metric` wrote and found.

    Attributes:
        heads_file: The fitted heads (`.heads.safetensors`).
        onnx: The exported fitted scorer.
        cv_file: The fit record and the per-case held-out distances (`.cv.json`).
        record: The fit record.
    """

    heads_file: Path
    onnx: Path
    cv_file: Path
    record: dict[str, Any]


def fit_metric(
    source: Source,
    metric: str,
    framework: str,
    data: RatedData,
    out_dir: str | os.PathLike,
    config: FitConfig | None = None,
    size: int | None = None,
    start: str | None = None,
    progress: bool = True,
) -> FitResult:
    """Cross-validate, fit and export one metric's heads on a source's frozen backbone.

    Args:
        source: A `bridge.export.Source` (a training run or a weights file).
        metric: `lpips` or `dists`.
        framework: `torch` or `keras`: fits, and is the export's origin.
        data: `load_rated(...)`.
        out_dir: Output folder.
        config: Fitting and validation settings (default: `FitConfig()`).
        size: Image side (default: the source's native size).
        start: Starting heads (`published`, `uniform` or a heads file; default: the
            source's default heads, uniform where the published ones are missing).
        progress: Show progress bars.

    Raises:
        ValueError: Unknown metric or framework, a size the backbone cannot take, too
            few cases for the folds, or an export beyond the parity bound.
    """
    config = config or FitConfig()
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; expected lpips, dists or both")
    fw = framework_module(framework)
    check_enough_cases(len(data.cases), config, data.groups)
    spec = source.spec
    size = int(size if size is not None else source.contract.native_size)
    if size < 1:
        raise ValueError(f"--size must be positive, got {size}")
    if spec.contract.fixed_size and size != source.contract.native_size:
        raise ValueError(
            f"{spec.name} takes {source.contract.native_size} px images only, not --size {size}"
        )
    policy = (source.run or {}).get("resize_policy") or DEFAULT_POLICY
    interpolation = source.contract.interpolation
    heads0 = start_heads(metric, spec, start)
    theta0 = flatten_heads(heads0)

    module = fw.build_metric(metric, spec, source.num_classes, source.state_dict(), heads0)
    log.info("%s: case terms of %d cases at %d px (%s)", metric, len(data.cases), size, framework)
    terms = case_terms(
        fw, module, data.cases, size, policy, interpolation, check=heads0, progress=progress
    )
    cv = cross_validate(
        fw.fit_heads, metric, terms, data.target, theta0, config, progress, data.groups
    )
    results = summarise(cv, data.target, config)
    final = choose_epoch(
        fw.fit_heads, metric, terms, data.target, np.arange(len(data.cases)), theta0, config,
        key=config.folds, groups=data.groups,
    )  # fmt: skip

    image = {"image_size": size, "resize_policy": policy, "interpolation": interpolation}
    record = fit_record(source, metric, framework, data, config, image, heads0, cv, final, results)
    heads_file, cv_file = write_outputs(
        out_dir, fitted_name(source.name, metric), spec, final, cv, data, record
    )
    onnx = export(
        dataclasses.replace(source, name=f"{source.name}-fitted"), metric, framework, out_dir,
        heads=str(heads_file),
    )  # fmt: skip
    return FitResult(heads_file, onnx, cv_file, record)


# ----------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Fit, cross-validate and export LPIPS / DISTS heads of one source."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.finetune_metric", description=__doc__.split("\n\n")[0]
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="training run folder (runs/<name>/<arch>-<framework>)")
    src.add_argument("--arch", help="vgg16, resnet50, vit_b16 or a *_tiny variant (with --weights)")
    parser.add_argument(
        "--weights", help="torch .safetensors/.pth or Keras .weights.h5 (with --arch)"
    )
    parser.add_argument("--metric", default="both", help="lpips, dists or both (default both)")
    parser.add_argument(
        "--framework",
        default=None,
        help="torch or keras (default: the run's framework, else torch)",
    )
    parser.add_argument("--rated", default=None, help="case folders (default: the synthetic set's)")
    parser.add_argument(
        "--ratings", default=None, help="ratings table (default: <rated>/ratings.csv)"
    )
    parser.add_argument("--aspect", default="overall", help="color, texture or overall (default)")
    parser.add_argument(
        "--folds", type=int, default=FitConfig.folds, help="outer folds (default 5)"
    )
    parser.add_argument(
        "--epochs", type=int, default=FitConfig.epochs, help="Adam steps (default 400)"
    )
    parser.add_argument("--lr", type=float, default=FitConfig.lr, help="Adam lr (default 0.01)")
    parser.add_argument(
        "--check-every",
        type=int,
        default=FitConfig.check_every,
        help="validation interval in epochs (default 10)",
    )
    parser.add_argument("--seed", type=int, default=FitConfig.seed, help="seed of folds and splits")
    parser.add_argument(
        "--bootstrap", type=int, default=FitConfig.bootstrap, help="bootstrap resamples"
    )
    parser.add_argument(
        "--size", type=int, default=None, help="image side (default: the source's native size)"
    )
    parser.add_argument(
        "--start", default=None, help="starting heads: published, uniform or a heads file"
    )
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)

    metrics = list(METRIC_NAMES) if args.metric == "both" else [args.metric]
    if any(m not in METRIC_NAMES for m in metrics):
        raise ValueError(f"unknown metric {args.metric!r}; expected lpips, dists or both")
    if args.arch and not args.weights:
        raise ValueError(
            "--arch needs --weights (a weights file); or fit on a training run with --run"
        )
    if args.run and args.weights:
        raise ValueError("--weights goes with --arch; a --run brings its own weights")
    config = FitConfig(
        epochs=args.epochs, lr=args.lr, check_every=args.check_every, folds=args.folds,
        seed=args.seed, bootstrap=args.bootstrap,
    )  # fmt: skip
    source = source_from_run(args.run) if args.run else source_from_weights(args.arch, args.weights)
    framework = args.framework or (source.run or {}).get("framework") or "torch"
    framework_module(framework)  # an unknown name fails before any work
    data = load_rated(args.rated, args.ratings, args.aspect)
    check_enough_cases(len(data.cases), config, data.groups)
    for metric in metrics:
        result = fit_metric(
            source, metric, framework, data, args.out, config, size=args.size, start=args.start
        )
        print(format_table(result.record))
        for path in (
            result.heads_file,
            result.onnx,
            result.onnx.with_suffix(".json"),
            result.cv_file,
        ):
            print(path)
        print()
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run
    from bridge.export import use_python_protobuf

    use_python_protobuf()
    run(main)
