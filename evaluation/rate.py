"""Rating studio: collect dermatologists' ratings in the browser, blind and crash-safe.

    python -m evaluation.rate new --cases CASES_DIR|PAIRS.csv|TRIPLETS.csv --study NAME
        [--raters R1,R2] [--design hospital|2afc] [--repeat 0.1] [--seed 0] [--groups G.csv]
    python -m evaluation.rate serve --study NAME [--host 127.0.0.1] [--port 8766]
        [--cert C --key K | --behind-tls-proxy https://ADDRESS]
    python -m evaluation.rate status --study NAME [--json]
    python -m evaluation.rate export --study NAME --out ratings.csv
    python -m evaluation.rate links --study NAME --reissue RATER|owner

`new` writes the study (`studies/<name>/study.sqlite`) and prints one personal link per
rater and one for the owner: the tokens are shown this once and stored hashed
(`links --reissue` replaces a lost one). `serve` serves the rating page: a rater opens
their link, rates one screen at a time (mouse or keyboard), can go back and change an
answer, and can stop and go on later in any browser; every answer is committed before
the page moves on. `status` shows each rater's progress, the agreement among raters so
far and test-retest agreement on repeated items (the owner's link shows the same page).
`export` writes the answers in the format `python -m evaluation.compare` reads
(`--ratings` for case folders, `--pairs` for region pairs, `--2afc` for triplets).
docs/rating-studio.md has the whole walk-through.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from evaluation.studio import DEFAULT_STUDIES, DESIGNS, OWNER, Study, read_source, study_path
from evaluation.studio_results import export, status, status_text

log = logging.getLogger(__name__)

DEFAULT_PORT = 8766
DEFAULT_RATERS = "R1,R2"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.rate", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def study_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--study", required=True, help="study name (a folder under --root)")
        sub.add_argument(
            "--root", default=str(DEFAULT_STUDIES), help="folder of studies (default studies/)"
        )

    new = commands.add_parser("new", help="create a study and print the raters' links")
    study_arguments(new)
    new.add_argument(
        "--cases",
        required=True,
        help="rated-case folders (CASE001/0.jpg, 1.jpg...), a region-pair table, or, for "
        "--design 2afc, a triplet table ref,box_ref,a,box_a,b,box_b[,group]",
    )
    new.add_argument(
        "--raters", default=DEFAULT_RATERS, help=f"comma-separated names (default {DEFAULT_RATERS})"
    )
    new.add_argument("--design", default="hospital", help=f"one of {', '.join(DESIGNS)}")
    new.add_argument(
        "--repeat",
        type=float,
        default=0.0,
        help="fraction of items shown each rater a second time, for test-retest (default 0)",
    )
    new.add_argument("--seed", type=int, default=0, help="seed of the orders (default 0)")
    new.add_argument("--groups", default=None, help="table case,group for case folders")
    new.add_argument(
        "--url",
        default=f"http://127.0.0.1:{DEFAULT_PORT}/",
        help="the address raters will reach the server at, for the printed links",
    )

    serve = commands.add_parser("serve", help="serve the rating page")
    study_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    serve.add_argument("--cert", default=None, help="TLS certificate (PEM) for HTTPS")
    serve.add_argument("--key", default=None, help="its private key (PEM)")
    serve.add_argument(
        "--behind-tls-proxy",
        default=None,
        metavar="URL",
        help="a TLS proxy in front serves the study at this https:// address (its Host and "
        "Origin are accepted; session cookies are Secure)",
    )

    stat = commands.add_parser("status", help="progress, agreement and test-retest so far")
    study_arguments(stat)
    stat.add_argument("--json", action="store_true", help="print JSON")

    out = commands.add_parser("export", help="write the ratings for evaluation.compare")
    study_arguments(out)
    out.add_argument("--out", required=True, help="CSV to write")

    links = commands.add_parser("links", help="replace a rater's (or the owner's) token")
    study_arguments(links)
    links.add_argument("--reissue", required=True, help="rater name, or 'owner'")
    links.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}/", help="base address")
    return parser


def _link(url: str, token: str) -> str:
    return f"{url.rstrip('/')}/start/{token}"


def _new(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise ValueError(f"--seed must be a whole number >= 0, got {args.seed}")
    source = read_source(args.cases, args.design, args.groups)
    raters = [r.strip() for r in args.raters.split(",") if r.strip()]
    created = Study.create(
        args.study, source, raters, args.design, args.repeat, args.seed, args.root
    )
    study = Study(created.path)
    counts = {r: study.progress(r)["total"] for r in raters}
    print(
        f"study {args.study}: {len(source.items)} items ({source.kind} {source.path}), "
        f"design {args.design}, written to {created.path}"
        + (" [synthetic data]" if source.synthetic else "")
    )
    print("personal links (shown once; tokens are stored hashed; keep them private):")
    for rater, token in created.tokens.items():
        print(f"  {rater:<12} {_link(args.url, token)}   ({counts[rater]} screens)")
    print(f"  {'owner':<12} {_link(args.url, created.owner_token)}   (progress page)")
    root = "" if Path(args.root) == DEFAULT_STUDIES else f" --root {args.root}"
    print(f"serve it: python -m evaluation.rate serve --study {args.study}{root}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from evaluation.studio_http import make_server
    from evaluation.web import serve_until_stopped

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    study = Study(study_path(args.study, args.root))
    server = make_server(study, args.host, args.port, args.cert, args.key, args.behind_tls_proxy)
    done = sum(study.progress(r)["answered"] for r in study.raters)
    log.info("study %s: %d raters, %d answers so far", study.name, len(study.raters), done)
    print(f"dermsim rating studio: {server.url}  (study {study.name}; Ctrl+C stops it)", flush=True)
    serve_until_stopped(server)
    return 0


def _status(args: argparse.Namespace) -> int:
    report = status(Study(study_path(args.study, args.root)))
    print(json.dumps(report, indent=2) if args.json else status_text(report))
    return 0


def _export(args: argparse.Namespace) -> int:
    study = Study(study_path(args.study, args.root))
    for path in export(study, Path(args.out)):
        print(path)
    return 0


def _links(args: argparse.Namespace) -> int:
    study = Study(study_path(args.study, args.root))
    rater = OWNER if args.reissue == "owner" else args.reissue
    token = study.reissue(rater)
    print(f"{args.reissue}: {_link(args.url, token)}  (the old link no longer works)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one of the studio's commands."""
    args = _parser().parse_args(argv)
    command = {
        "new": _new, "serve": _serve, "status": _status, "export": _export, "links": _links,
    }[args.command]  # fmt: skip
    return command(args)


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
