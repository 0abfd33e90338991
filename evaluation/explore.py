"""Region explorer: a local page comparing two regions (or two images) with every scorer.

    python -m evaluation.explore [--models DIR] [--images DIR] [--index DIR ...]
                                 [--host 127.0.0.1] [--port N]

Point at two regions of one image (or pick two images, whole or a region each) and see
how every exported LPIPS / DISTS scorer judges them: a table of distances (metric x
backbone x origin framework), the crops as the models saw them, the LPIPS distance
map, and a history of the session's comparisons that downloads as a region-pair CSV
(`python -m evaluation.score MODEL --pairs history.csv --out scores.csv` reads it).
"Find similar" shows the nearest lesions of region A (or the whole image A) in an
archive index (`python -m evaluation.index build ... --out index/<name>`): thumbnails
with rank, distance, label and lesion, the numbers of `python -m evaluation.index
query`; a neighbour clicked is loaded as image B.

The page works offline: its HTML, CSS and JavaScript ship in this package, nothing is
fetched from elsewhere. Scoring runs on onnxruntime with `evaluation.score.Scorer`, so
the numbers are those of `python -m evaluation.score` on the same files and boxes.
Regions are in source pixels of the decoded, EXIF-oriented image, which is also what
the page displays. Safety defaults: the server binds to 127.0.0.1, caps uploads in
bytes and pixels, decodes them with the project's one decoder (a non-image is an
error on the page), and serves images only by a name from its own listing (and
thumbnails only of the rows of the indexes it opened).
Standard library HTTP server; numpy, Pillow, matplotlib's colormaps and onnxruntime.

This module is the command line: it loads the scorers and the indexes, picks the
images folder and serves until interrupted. The session's state and operations are in
`evaluation.explore_app`, the request handling in `evaluation.explore_http`.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bridge.core.data import synth
from bridge.core.data.image import DEFAULT_POLICY, MAX_PIXELS, RESIZE_POLICIES
from bridge.core.data.readers import is_synthetic
from evaluation.explore_app import (
    DEFAULT_INDEX_DIR,
    Explorer,
    default_indexes,
    default_models_dir,
    find_indexes,
    find_scorers,
    load_indexes,
    load_scorers,
)
from evaluation.explore_http import make_server
from evaluation.web import serve_until_stopped

log = logging.getLogger(__name__)

DEFAULT_IMAGES = synth.DEFAULT_ROOT / synth.RATED_DIR


def _default_images(images: str | None) -> tuple[Path | None, bool]:
    """The images folder, and whether it is the built-in synthetic set."""
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such images folder")
        return folder, is_synthetic(folder)
    if DEFAULT_IMAGES.is_dir():
        return DEFAULT_IMAGES, True
    log.warning(
        "no %s here (python -m bridge.core.data.synth --out %s writes it) and no "
        "--images: only uploaded images can be compared",
        DEFAULT_IMAGES,
        synth.DEFAULT_ROOT,
    )
    return None, False


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.explore", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--models",
        default=None,
        help="folder of exported scorers (default: models/, or models/demo when only it has some)",
    )
    parser.add_argument(
        "--images",
        default=None,
        help=f"folder of images to list (default: {DEFAULT_IMAGES}, the synthetic rated cases)",
    )
    parser.add_argument(
        "--index",
        action="append",
        default=None,
        metavar="DIR",
        help=f"archive index folder for 'find similar', or a folder of them; repeatable "
        f"(default: the index folders under {DEFAULT_INDEX_DIR}/, if any)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine)"
    )
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=25.0, help="largest upload in MB (default 25)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"largest image, width x height (default {MAX_PIXELS})",
    )
    parser.add_argument(
        "--uploads",
        default=None,
        help="folder to keep uploads in (default: a temporary folder, removed on exit)",
    )
    parser.add_argument(
        "--policy",
        default=DEFAULT_POLICY,
        help=f"how regions are fitted to a scorer's size: {', '.join(RESIZE_POLICIES)}",
    )
    parser.add_argument("--cpu", action="store_true", help="do not try the CUDA provider")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Load the scorers, then serve the page until interrupted."""
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_pixels < 1:
        raise ValueError("--max-upload-mb and --max-pixels must be positive")

    models = Path(args.models) if args.models else default_models_dir()
    index_dirs = find_indexes(args.index) if args.index else default_indexes()
    scorers = load_scorers(find_scorers(models), args.policy, prefer_gpu=not args.cpu)
    indexes, index_problems = load_indexes(index_dirs, prefer_gpu=not args.cpu)
    images, synthetic = _default_images(args.images)
    temporary = args.uploads is None
    uploads = Path(tempfile.mkdtemp(prefix="dermsim-uploads-")) if temporary else args.uploads
    try:
        explorer = Explorer(
            scorers, images, uploads, int(args.max_upload_mb * 1024 * 1024), args.max_pixels,
            synthetic_images=synthetic, indexes=indexes, index_problems=index_problems,
        )  # fmt: skip
        server = make_server(explorer, args.host, args.port)
        log.info(
            "%d scorers from %s; %d images from %s%s",
            len(scorers), models, len(explorer.images), images or "(none)",
            " (synthetic)" if synthetic else "",
        )  # fmt: skip
        log.info(
            "%d indexes for 'find similar'%s", len(indexes),
            f" ({len(index_problems)} left out)" if index_problems else "",
        )  # fmt: skip
        log.info("uploads go to %s%s", uploads, " (removed on exit)" if temporary else "")
        print(f"dermsim region explorer: {server.url}  (Ctrl+C stops it)", flush=True)
        serve_until_stopped(server)  # SIGTERM too, so the uploads are cleaned up
    finally:
        if temporary:
            shutil.rmtree(uploads, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
