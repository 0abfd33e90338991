"""Find the most similar lesions in an image archive: embed it once, then query it.

    python -m evaluation.index build --model FEATURES.onnx --data data/synthetic --out index/demo
    python -m evaluation.index query index/demo lesion.jpg -k 16 [--region x,y,w,h] [--json]

**Build.** Every image of the archive (`evaluation.archive.read_archive`: ISIC /
HAM10000 tables, class folders, plain folders, image lists with boxes) is embedded
by an `evaluation.embedding.Embedder` (one tap, pooled, L2-normalised) and written in
shards of `--shard-size` rows (`shards/NNNNNN.npz`: vectors, ids, source file,
sha256 of the file, box, label, lesion_id, patient_id). A shard is written whole or
not at all, so a build killed half way (`kill -9`) loses at most the rows not yet in
a shard: a rerun embeds exactly the images no shard holds. A rerun on a changed
archive embeds added and changed files (by sha256; unchanged files are recognised by
size and modification time without re-reading them) and drops the rows of removed
or changed ones. Images that cannot be decoded are listed in `skipped.csv` with the
reason, and the build goes on. `manifest.json` is written last (it says `complete`):
an unfinished build is refused by queries.

**Search.** Distances are cosine distances, `1 - v_a . v_b` in [0, 2]. Up to
`APPROXIMATE_ABOVE` vectors the search is exact (one matrix product; BLAS). Above it,
and where faiss is installed (`pip install dermsim[scale]`), the build also writes an
inverted-file index (faiss `IndexIVFFlat`, inner product) whose probe count is raised
until its recall@16 against exact search, measured on `RECALL_QUERIES` of the
archive's own vectors, reaches `RECALL_TARGET`; that recall is stored in the manifest.
Distances equal to 6 decimals are ties, broken by id, so the answers do not depend on
the order rows were written (nor on the last bits of float32 products).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bridge.core.data.image import DEFAULT_POLICY, parse_box
from bridge.core.data.masks import region_cell
from bridge.core.files import atomic_path, sha256_file
from evaluation.archive import Archive, ArchiveItem, read_archive
from evaluation.embedding import DEFAULT_POOLING, POOLINGS, Embedder, EmbedJob
from evaluation.engines import EngineOptions, add_engine_arguments, engine_options, map_batches
from evaluation.inputs import Region, command_region, region_text

log = logging.getLogger(__name__)

FORMAT = "dermsim-index/1"
MANIFEST = "manifest.json"
SETTINGS = "settings.json"
SHARDS = "shards"
SHARD_GLOB = "[0-9]*.npz"  # finished shards (one being written is a hidden .tmp- file)
SKIPPED = "skipped.csv"
ANN_FILE = "ann.faiss"
SHARD_SIZE = 512
APPROXIMATE_ABOVE = 100_000
"""Archives of more vectors get an approximate index (where faiss is installed)."""
RECALL_K = 16
RECALL_QUERIES = 256
RECALL_TARGET = 0.95
SEARCHES = ("auto", "exact", "approximate")
META = ("id", "path", "box", "label", "lesion_id", "patient_id", "sha256")
"""Text columns of a shard, beside `vectors` (N, D) and the file stat `file_size`, `mtime_ns`."""
_CHUNK = 65_536  # rows per matrix product in exact search
TIE_DECIMALS = 6
"""Distances equal to this many decimals count as ties (broken by id)."""


# ------------------------------------------------------------------------------------ build


@dataclass(frozen=True)
class BuildOptions:
    """How `build` embeds and what search it prepares.

    Attributes:
        tap: Grid tap (None: the extractor's deepest).
        pooling: `gap`, `max` or `cls`.
        size: Fitted side (None: the model's native size).
        policy: Resize policy.
        shard_size: Rows per shard (what a kill can cost at most).
        search: `auto` (approximate above `approximate_above`), `exact` or `approximate`.
        approximate_above: Size from which `auto` builds the approximate index.
        rebuild: Start over when the folder holds an index of other settings.
        masks: Pool each image under its lesion mask where the archive has one
            (`ArchiveItem.mask`: ISIC / HAM10000 segmentations, `*.mask.png`, a list's
            `mask` column); the others as before. A row's region (its `box` column:
            "mask <file>") tells which, so switching re-embeds just those rows.
        prefer_gpu: Try the CUDA provider.
        engine: Where the embedding runs (`evaluation.engines`).
    """

    tap: str | None = None
    pooling: str = DEFAULT_POOLING
    size: int | None = None
    policy: str = DEFAULT_POLICY
    shard_size: int = SHARD_SIZE
    search: str = "auto"
    approximate_above: int = APPROXIMATE_ABOVE
    rebuild: bool = False
    masks: bool = False
    prefer_gpu: bool = True
    engine: EngineOptions = field(default_factory=EngineOptions)

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard size must be >= 1, got {self.shard_size}")
        if self.search not in SEARCHES:
            raise ValueError(
                f"unknown search {self.search!r}; expected one of {', '.join(SEARCHES)}"
            )
        if self.approximate_above < 1:
            raise ValueError(f"approximate_above must be >= 1, got {self.approximate_above}")


def build(
    model: str | os.PathLike,
    data: str | os.PathLike | Archive,
    out: str | os.PathLike,
    options: BuildOptions = BuildOptions(),
    images: str | os.PathLike | None = None,
) -> dict:
    """Embed an archive into the index folder `out`, continuing or updating what is there.

    Args:
        model: A `features` .onnx export.
        data: The archive (`evaluation.archive.read_archive`'s formats), or one read.
        out: The index folder (created).
        options: Embedding and search settings.
        images: Folder of the images a table names, where it is not the table's own.

    Returns:
        The manifest written (also `out/manifest.json`), with this build's counts under
        `last_build` (embedded, kept, removed, skipped).

    Raises:
        ValueError: On a model that is not a feature extractor, a folder holding an
            index of other settings (without `rebuild`), or an archive it cannot read.
    """
    from tqdm import tqdm

    out = Path(out)
    archive = data if isinstance(data, Archive) else read_archive(data, images)
    ids = [item.id for item in archive.items]
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(
            f"{archive.source}: image id {twice!r} is listed twice; ids must be unique"
        )
    if options.search == "approximate":
        try:
            faiss_module()
        except ImportError:
            raise ValueError(
                "--search approximate needs faiss: pip install 'dermsim[scale]'"
            ) from None
    embedder = Embedder(
        model, options.tap, options.pooling, options.size, options.policy, options.prefer_gpu
    )
    settings = _settings(embedder)
    _claim(out, settings, options.rebuild)

    shards = _read_shards(out, with_vectors=False)
    known = {
        (row["path"], int(row["file_size"]), int(row["mtime_ns"])): row["sha256"]
        for _, meta in shards
        for row in _rows(meta)
    }
    want: dict[str, tuple[str, str, os.stat_result, ArchiveItem]] = {}  # id -> sha, box, ...
    for item in tqdm(archive.items, desc="checking files", unit="file", leave=False):
        st = os.stat(item.path)
        key = (str(item.path), st.st_size, st.st_mtime_ns)
        sha = known.get(key) or sha256_file(item.path)
        want[item.id] = (sha, region_cell(item.region(options.masks)), st, item)
    held = {
        row["id"]
        for _, meta in shards
        for row in _rows(meta)
        if want.get(row["id"], ("", "", None, None))[:2] == (row["sha256"], row["box"])
    }
    todo = [item for item in archive.items if item.id not in held]
    removed = {row["id"] for _, meta in shards for row in _rows(meta)} - set(want)
    log.info(
        "%s: %d images; %d already embedded, %d to embed, %d removed",
        out, len(archive.items), len(held), len(todo), len(removed),
    )  # fmt: skip

    skipped = _embed(embedder, todo, want, out, options)
    _write_skipped(out, skipped)
    _prune(out, want)
    last_build = {
        "embedded": len(todo) - len(skipped),
        "kept": len(held),
        "removed": len(removed),
        "skipped": len(skipped),
    }
    manifest = _finish(out, archive, embedder, settings, options, last_build)
    log.info(
        "%s: %d vectors (%d embedded now, %d kept, %d removed, %d skipped%s); %s search",
        out, manifest["count"], len(todo) - len(skipped), len(held), len(removed), len(skipped),
        f": see {out / SKIPPED}" if skipped else "", manifest["search"]["method"],
    )  # fmt: skip
    return manifest


def _settings(embedder: Embedder) -> dict:
    """What an index's vectors depend on: the model file and the embedding settings."""
    manifest = embedder.model.manifest
    return {
        "format": FORMAT,
        "model": str(embedder.model.path.resolve()),
        "model_sha256": manifest["onnx_sha256"],
        "backbone": manifest["backbone"],
        "origin": manifest["origin"],
        "dim": embedder.dim,
        **embedder.settings(),
    }


_SAME = ("model_sha256", "tap", "pooling", "size", "policy")


def _claim(out: Path, settings: dict, rebuild: bool) -> None:
    """Take the folder for these settings; refuse one holding another model's vectors."""
    path = out / SETTINGS
    if path.is_file():
        old = json.loads(path.read_text())
        differ = [k for k in _SAME if old.get(k) != settings[k]]
        if differ and not rebuild:
            raise ValueError(
                f"{out}: holds an index of other settings ({', '.join(differ)} differ: "
                f"{', '.join(f'{old.get(k)} vs {settings[k]}' for k in differ)}); give another "
                "--out, or --rebuild to start over"
            )
        _mark_unfinished(out)  # before anything is removed: a kill leaves no false index
        if differ:
            for file in (out / SHARDS).glob(SHARD_GLOB):
                file.unlink()
            (out / ANN_FILE).unlink(missing_ok=True)
    elif out.exists() and any(out.iterdir()):
        raise ValueError(
            f"{out}: exists and is not an index folder; expected a new or index folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / SHARDS).mkdir(exist_ok=True)
    for partial in [*out.glob(".tmp-*"), *(out / SHARDS).glob(".tmp-*")]:  # a killed build's
        partial.unlink()
    _write_json(path, settings)


def _mark_unfinished(out: Path) -> None:
    """Until this build ends, the folder is not a finished index (queries refuse it)."""
    manifest = out / MANIFEST
    if manifest.is_file():
        _write_json(manifest, {**json.loads(manifest.read_text()), "complete": False})


def _embed(
    embedder: Embedder,
    todo: Sequence[ArchiveItem],
    want: dict,
    out: Path,
    options: BuildOptions,
) -> list[tuple[ArchiveItem, str]]:
    """Embed `todo` into new shards; returns the items that failed, with the reason."""
    from tqdm import tqdm

    if not todo:
        return []
    job = EmbedJob(
        str(embedder.model.path),
        embedder.tap,
        embedder.pooling,
        embedder.size,
        embedder.policy,
        options.prefer_gpu,
    )
    columns = {"path": [str(i.path) for i in todo], "box": [want[i.id][1] for i in todo]}
    existing = sorted((out / SHARDS).glob(SHARD_GLOB))
    number = int(existing[-1].stem) + 1 if existing else 0
    rows: list[tuple[ArchiveItem, np.ndarray]] = []
    skipped: list[tuple[ArchiveItem, str]] = []
    with tqdm(total=len(todo), desc="embedding", unit="img") as bar:
        for start, result in map_batches(job, columns, options.engine):
            for offset, (vector, error) in enumerate(
                zip(result["vector"], result["error"], strict=True)
            ):
                item = todo[start + offset]
                if error:
                    skipped.append((item, str(error)))
                else:
                    rows.append((item, vector))
            bar.update(len(result["error"]))
            while len(rows) >= options.shard_size:
                _write_shard(out, number, rows[: options.shard_size], want)
                rows, number = rows[options.shard_size :], number + 1
    if rows:
        _write_shard(out, number, rows, want)
    return skipped


def _write_skipped(out: Path, skipped: Sequence[tuple[ArchiveItem, str]]) -> None:
    """`skipped.csv`: this build's images that could not be embedded, with the reason."""
    with atomic_path(out / SKIPPED) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "path", "reason"])
        writer.writerows((item.id, item.path, reason) for item, reason in skipped)


def _write_shard(
    out: Path, number: int, rows: Sequence[tuple[ArchiveItem, np.ndarray]], want: dict
) -> None:
    """One shard file, written whole (atomically)."""
    columns = {k: [] for k in (*META, "file_size", "mtime_ns")}
    for item, _ in rows:
        for k, v in _metadata(item, want).items():
            columns[k].append(v)
    columns["vectors"] = np.stack([v for _, v in rows]).astype(np.float32)
    _save_shard(out / SHARDS / f"{number:06d}.npz", columns)


def _metadata(item: ArchiveItem, want: dict) -> dict:
    """A row's metadata as the archive and the file are now."""
    sha, box, st, _ = want[item.id]
    return {
        "id": item.id, "path": str(item.path), "box": box, "label": item.label,
        "lesion_id": item.lesion_id, "patient_id": item.patient_id, "sha256": sha,
        "file_size": st.st_size, "mtime_ns": st.st_mtime_ns,
    }  # fmt: skip


def _save_shard(path: Path, columns: dict) -> None:
    """Write a shard's columns (numbers as they are, text as unicode arrays) atomically."""
    numeric = {"vectors": np.float32, "file_size": np.int64, "mtime_ns": np.int64}
    arrays = {
        k: np.asarray(v, numeric[k]) if k in numeric else np.array(v, dtype=str)
        for k, v in columns.items()
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _read_shards(out: Path, with_vectors: bool) -> list[tuple[Path, dict]]:
    """Every shard of the folder, in order, as {column: array}."""
    return list(_iter_shards(out, with_vectors))


def _iter_shards(out: Path, with_vectors: bool) -> Iterator[tuple[Path, dict]]:
    """The shards one at a time (a build holds one shard's vectors at once)."""
    for path in sorted((out / SHARDS).glob(SHARD_GLOB)):
        with np.load(path, allow_pickle=False) as data:
            yield path, {k: data[k] for k in data.files if with_vectors or k != "vectors"}


def _rows(meta: dict) -> Iterable[dict]:
    """A shard's rows as dicts (vectors left out)."""
    names = [k for k in meta if k != "vectors"]
    for i in range(len(meta["id"])):
        yield {k: meta[k][i] for k in names}


def _prune(out: Path, want: dict) -> None:
    """Bring the shards up to date with the archive.

    Rows of removed or changed files (and any second copy of a row) are dropped; kept
    rows whose metadata changed (a label or lesion id added to the table, a file moved
    or touched) get the archive's current metadata, so that exclusions and the stat
    cache stay right.
    """
    seen: set[str] = set()
    for path, data in _iter_shards(out, with_vectors=True):
        keep, rows, stale = [], [], False
        for i, row in enumerate(_rows(data)):
            current = want.get(row["id"])
            if current and current[:2] == (row["sha256"], row["box"]) and row["id"] not in seen:
                keep.append(i)
                seen.add(row["id"])
                now = _metadata(current[3], want)
                stale |= any(str(row[k]) != str(v) for k, v in now.items())
                rows.append(now)
        if len(keep) == len(data["id"]) and not stale:
            continue
        if keep:
            columns = {k: [r[k] for r in rows] for k in rows[0]}
            columns["vectors"] = data["vectors"][keep]
            _save_shard(path, columns)
        else:
            path.unlink()


def _finish(
    out: Path,
    archive: Archive,
    embedder: Embedder,
    settings: dict,
    options: BuildOptions,
    last_build: dict,
) -> dict:
    """Build the approximate index where wanted, and write the manifest."""
    shards = _read_shards(out, with_vectors=False)
    count = sum(len(d["id"]) for _, d in shards)
    approximate = options.search == "approximate" or (
        options.search == "auto" and count >= options.approximate_above
    )
    search: dict = {"method": "exact", "approximate_above": options.approximate_above}
    (out / ANN_FILE).unlink(missing_ok=True)
    if approximate and count:
        try:
            faiss_module()
        except ImportError:
            if options.search == "approximate":
                raise ValueError(
                    "approximate search needs faiss: pip install 'dermsim[scale]'"
                ) from None
            log.warning("%d vectors but faiss is not installed: exact search only", count)
        else:
            vectors = np.concatenate([d["vectors"] for _, d in _iter_shards(out, True)])
            search.update(_build_ann(vectors, out / ANN_FILE))
    manifest = {
        "format": FORMAT,
        "complete": True,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": {
            "data": str(archive.source),
            "format": archive.format,
            "synthetic": archive.synthetic,
        },
        "model": {
            "file": settings["model"],
            "sha256": settings["model_sha256"],
            "backbone": settings["backbone"],
            "origin": settings["origin"],
            "label": embedder.model.manifest.get("model_name") or embedder.model.path.stem,
        },
        "embedding": {
            **{k: settings[k] for k in ("tap", "pooling", "size", "policy", "dim")},
            "under_masks": sum(
                int(str(b).startswith("mask ")) for _, d in shards for b in d["box"]
            ),
        },
        "distance": "cosine (1 - dot of L2-normalised vectors)",
        "count": count,
        "shards": [
            {"file": f"{SHARDS}/{p.name}", "rows": len(d["id"]), "sha256": sha256_file(p)}
            for p, d in shards
        ],
        "search": search,
        "last_build": last_build,
        "versions": _versions(),
    }
    _write_json(out / MANIFEST, manifest)
    return manifest


def faiss_module():
    """faiss, imported quietly (its loader logs each CPU variant it tries at INFO).

    Raises:
        ImportError: When faiss-cpu is not installed (the `scale` extra).
    """
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def _build_ann(vectors: np.ndarray, path: Path) -> dict:
    """An IVF index on `vectors`, its probes raised until recall@16 reaches the target."""
    faiss = faiss_module()

    n, dim = vectors.shape
    nlist = int(max(1, min(4 * np.sqrt(n), n // 39)))
    quantizer = faiss.IndexFlatIP(dim)
    ann = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    train = (
        vectors[rng.choice(n, min(n, 256 * nlist), replace=False)] if n > 256 * nlist else vectors
    )
    ann.train(np.ascontiguousarray(train))
    ann.add(np.ascontiguousarray(vectors))
    picked = rng.choice(n, min(n, RECALL_QUERIES), replace=False)
    queries = np.ascontiguousarray(vectors[picked])
    k = max(1, min(RECALL_K, n - 1))
    # a query is a row of the index: it is left out on both sides, so the recall is that
    # of the k neighbours an image from outside the archive would get
    exact = _without(_exact_top(vectors, queries, min(k + 1, n)), picked, k)
    nprobe = 1
    while True:
        ann.nprobe = nprobe
        recall = recall_at_k(_without(ann.search(queries, min(k + 1, n))[1], picked, k), exact)
        if recall >= RECALL_TARGET or nprobe >= nlist:
            break
        nprobe = min(2 * nprobe, nlist)
    with atomic_path(path) as tmp:
        faiss.write_index(ann, str(tmp))
    log.info("approximate index: IVF %d lists, %d probed, recall@%d %.3f", nlist, nprobe, k, recall)
    return {
        "method": "approximate",
        "library": f"faiss {faiss.__version__}",
        "structure": "IndexIVFFlat (inner product)",
        "file": ANN_FILE,
        "nlist": nlist,
        "nprobe": nprobe,
        f"recall_at_{RECALL_K}": round(float(recall), 4),
        "recall_k": k,
        "recall_queries": len(queries),
        "recall_target": RECALL_TARGET,
    }


def _without(top: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row's top list without the query's own row, cut to k (padded with -1)."""
    out = np.full((len(top), k), -1, dtype=np.int64)
    for i, (row, self_row) in enumerate(zip(top, own, strict=True)):
        kept = row[(row != self_row) & (row >= 0)][:k]
        out[i, : len(kept)] = kept
    return out


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k that `found` (same shape) also returned."""
    hits = [len(set(f[f >= 0]) & set(e[e >= 0])) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits) / exact.shape[1])


def _exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of each query's k most similar vectors (exact), best first."""
    scores = queries @ vectors.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def _versions() -> dict:
    import onnxruntime

    versions = {"numpy": np.__version__, "onnxruntime": onnxruntime.__version__}
    with contextlib.suppress(ImportError):
        versions["faiss"] = faiss_module().__version__
    return versions


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


# ----------------------------------------------------------------------------------- search


@dataclass(frozen=True)
class Hit:
    """One neighbour of a query.

    Attributes:
        rank: 1 for the nearest.
        id: The archive's id of the image.
        distance: Cosine distance to the query, in [0, 2].
        label: Diagnosis ("" when unknown).
        lesion_id: Lesion ("" when unknown).
        patient_id: Patient ("" when unknown).
        path: The image file.
        box: The region embedded ("" for the whole image).
    """

    rank: int
    id: str
    distance: float
    label: str
    lesion_id: str
    patient_id: str
    path: str
    box: str


class Index:
    """A built index, opened for queries.

    Args:
        path: The index folder.
        search: `auto` (the manifest's method), `exact` or `approximate`.
        prefer_gpu: Try the CUDA provider when embedding queries.

    Raises:
        FileNotFoundError: If the folder holds no index.
        ValueError: If its build did not finish, or a shard was changed since.
    """

    def __init__(self, path: str | os.PathLike, search: str = "auto", prefer_gpu: bool = True):
        self.path = Path(path)
        file = self.path / MANIFEST
        if not file.is_file():
            raise FileNotFoundError(
                f"{self.path}: no index here (no {MANIFEST}); build one with "
                "python -m evaluation.index build --model FEATURES.onnx --data DATA --out "
                f"{self.path}"
            )
        self.manifest = json.loads(file.read_text())
        if not self.manifest.get("complete"):
            raise ValueError(
                f"{self.path}: the index build did not finish; rerun the same "
                "python -m evaluation.index build command to complete it"
            )
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r}; expected one of {', '.join(SEARCHES)}")
        self.method = self.manifest["search"]["method"] if search == "auto" else search
        if self.method == "approximate" and self.manifest["search"]["method"] != "approximate":
            raise ValueError(
                f"{self.path}: was built without an approximate index; rebuild it with "
                "--search approximate"
            )
        self.prefer_gpu = prefer_gpu
        vectors, meta = [], {k: [] for k in META}
        for shard in self.manifest["shards"]:
            with np.load(self.path / shard["file"], allow_pickle=False) as data:
                if len(data["id"]) != shard["rows"]:
                    raise ValueError(
                        f"{self.path / shard['file']}: {len(data['id'])} rows, the manifest says "
                        f"{shard['rows']}; rebuild the index"
                    )
                vectors.append(data["vectors"])
                for k in META:
                    meta[k].append(data[k])
        dim = self.manifest["embedding"]["dim"]
        self.vectors = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        self.meta = {k: (np.concatenate(v) if v else np.array([], str)) for k, v in meta.items()}
        self._ann = None
        if self.method == "approximate":
            faiss = faiss_module()
            self._ann = faiss.read_index(str(self.path / self.manifest["search"]["file"]))
            self._ann.nprobe = self.manifest["search"]["nprobe"]
        self._embedder: Embedder | None = None

    def __len__(self) -> int:
        return len(self.vectors)

    def embedder(self, model: str | os.PathLike | None = None) -> Embedder:
        """The embedder of the index's model and settings (opened once).

        Args:
            model: Another copy of the model file (default: the one the index names).

        Raises:
            ValueError: If `model` is not the model the index was built with.
        """
        if self._embedder is None or model is not None:
            file = Path(model) if model is not None else Path(self.manifest["model"]["file"])
            if model is None and not file.is_file():
                raise FileNotFoundError(
                    f"{file}: the model {self.path} was built with is not there any more; "
                    "give its new place with --model (Index.embedder(model))"
                )
            emb = self.manifest["embedding"]
            embedder = Embedder(
                file, emb["tap"], emb["pooling"], emb["size"], emb["policy"], self.prefer_gpu
            )
            if embedder.model.manifest["onnx_sha256"] != self.manifest["model"]["sha256"]:
                raise ValueError(
                    f"{file}: is not the model {self.path} was built with "
                    f"({self.manifest['model']['label']}, sha256 "
                    f"{self.manifest['model']['sha256'][:12]}...); query with that model"
                )
            self._embedder = embedder
        return self._embedder

    def group_of(self, image: str | os.PathLike) -> set[str]:
        """The ids, lesions and patients of the index's copies of an image file (by sha256)."""
        sha = sha256_file(image)
        rows = np.flatnonzero(self.meta["sha256"] == sha)
        return {str(self.meta[k][i]) for i in rows for k in ("id", "lesion_id", "patient_id")} - {
            ""
        }

    def query(
        self,
        image: str | os.PathLike | np.ndarray,
        box: Region = None,
        k: int = 16,
        exclude: Iterable[str] = (),
    ) -> list[Hit]:
        """The k nearest images of an image file (or HWC array), or of a region of it.

        Args:
            image: The query image.
            box: Its region (`x,y,w,h` in source pixels), or a mask / outline to pool
                under (`evaluation.inputs.Region`).
            k: How many neighbours.
            exclude: Lesion, patient or image ids whose images are left out (e.g. the
                query's own lesion: `group_of(image)`).
        """
        if isinstance(box, str):
            box = parse_box(box) if box else None
        return self.search(self.embedder().embed(image, box)[None], k, [set(exclude)])[0]

    def search(
        self, vectors: np.ndarray, k: int = 16, exclude: Sequence[set[str]] | None = None
    ) -> list[list[Hit]]:
        """The k nearest rows of each query vector (Q, D), nearest first.

        Args:
            vectors: Unit-norm query vectors from the index's embedder.
            k: How many neighbours (fewer when the index, after exclusions, has fewer).
            exclude: Per query, ids / lesion ids / patient ids to leave out.

        Raises:
            ValueError: On vectors of another length than the index's.
        """
        q = np.atleast_2d(np.asarray(vectors, np.float32))
        if q.shape[1] != self.vectors.shape[1]:
            raise ValueError(
                f"query vectors of length {q.shape[1]}; {self.path} holds {self.vectors.shape[1]}"
            )
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        exclude = list(exclude) if exclude is not None else [set()] * len(q)
        masks = [self._excluded(e) for e in exclude]
        out = []
        for i, row in enumerate(q):
            rows, scores = None, None
            if self._ann is not None:
                rows, scores = self._approximate(row, k, masks[i])
            if rows is None:
                rows, scores = self._exact(row, k, masks[i])
            out.append(self._hits(rows, scores, k))
        return out

    def _excluded(self, values: set[str]) -> np.ndarray | None:
        """Rows whose id, lesion id or patient id is one of `values` ("" matches nothing)."""
        values = {v for v in values if v}
        if not values:
            return None
        values_array = np.array(sorted(values), dtype=str)
        return (
            np.isin(self.meta["id"], values_array)
            | np.isin(self.meta["lesion_id"], values_array)
            | np.isin(self.meta["patient_id"], values_array)
        )

    def _exact(self, q: np.ndarray, k: int, mask: np.ndarray | None):
        """Candidate rows and scores: per chunk, every row scoring at least its k-th best.

        Rows tied at the cut stay in, so that `_hits` breaks the tie by id.
        """
        rows_all, scores_all = [], []
        for start in range(0, len(self.vectors), _CHUNK):
            scores = self.vectors[start : start + _CHUNK] @ q
            if mask is not None:
                scores = np.where(mask[start : start + _CHUNK], -np.inf, scores)
            if k < len(scores):
                cut = np.partition(scores, len(scores) - k)[len(scores) - k]
                top = np.flatnonzero(scores >= cut)
            else:
                top = np.arange(len(scores))
            rows_all.append(top + start)
            scores_all.append(scores[top])
        rows = np.concatenate(rows_all) if rows_all else np.array([], int)
        scores = np.concatenate(scores_all) if scores_all else np.array([])
        keep = np.isfinite(scores)
        return rows[keep], scores[keep]

    def _approximate(self, q: np.ndarray, k: int, mask: np.ndarray | None):
        """Candidates from the approximate index (None, None: too few left after exclusion)."""
        extra = int(mask.sum()) if mask is not None else 0
        want = min(k + extra, len(self.vectors))
        scores, rows = self._ann.search(q[None], want)
        rows, scores = rows[0], scores[0]
        keep = rows >= 0
        if mask is not None:
            keep &= ~mask[np.maximum(rows, 0)]
        if keep.sum() < min(k, len(self.vectors) - extra):
            return None, None  # too few after exclusion: fall back to exact
        return rows[keep], scores[keep]

    def _hits(self, rows: np.ndarray, scores: np.ndarray, k: int) -> list[Hit]:
        """The k nearest candidates, nearest first; distances in [0, 2].

        Distances equal to `TIE_DECIMALS` decimals are ties, broken by id: float32
        products of identical vectors differ in the last bits with their place in the
        matrix (and a resumed build's batches), and the order must not.
        """
        distance = np.clip(1.0 - scores.astype(np.float64), 0.0, 2.0)
        ids = self.meta["id"][rows]
        order = np.lexsort((ids, np.round(distance, TIE_DECIMALS)))[:k]
        return [
            Hit(
                rank + 1,
                str(ids[j]),
                float(distance[j]),
                str(self.meta["label"][rows[j]]),
                str(self.meta["lesion_id"][rows[j]]),
                str(self.meta["patient_id"][rows[j]]),
                str(self.meta["path"][rows[j]]),
                str(self.meta["box"][rows[j]]),
            )
            for rank, j in enumerate(order)
        ]


# -------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """`build` an index from an archive, or `query` one with an image."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.index", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="embed an archive into an index folder (resumable)")
    b.add_argument("--model", required=True, help="a features .onnx export (manifest beside it)")
    b.add_argument(
        "--data",
        required=True,
        help="ISIC 2019 / ISIC 2020 / HAM10000 table or folder, class folders, a plain image "
        "folder, or an image list CSV (image[,box|mask,label,lesion_id,patient_id])",
    )
    b.add_argument("--out", required=True, help="index folder (e.g. index/<name>)")
    b.add_argument("--images", default=None, help="folder of the images a table names")
    b.add_argument("--tap", default=None, help="grid tap to pool (default: the deepest)")
    b.add_argument(
        "--pooling", default=DEFAULT_POOLING, choices=POOLINGS, help="gap (default), max or cls"
    )
    b.add_argument("--size", type=int, default=None, help="fitted side (default: model's)")
    b.add_argument("--policy", default=DEFAULT_POLICY, help="stretch, shorter_center_crop or pad")
    b.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="rows per shard")
    b.add_argument(
        "--search",
        default="auto",
        choices=SEARCHES,
        help="auto (approximate from --approximate-above vectors), exact or approximate",
    )
    b.add_argument("--approximate-above", type=int, default=APPROXIMATE_ABOVE)
    b.add_argument("--rebuild", action="store_true", help="start over on other settings")
    b.add_argument(
        "--masks",
        action="store_true",
        help="pool each image under its lesion mask where the archive has one "
        "(ISIC / HAM10000 segmentations, *.mask.png, a list's mask column)",
    )
    add_engine_arguments(b)
    b.add_argument("--cpu", action="store_true", help="do not try the CUDA provider")

    q = commands.add_parser("query", help="the nearest images of a query image")
    q.add_argument("index", help="index folder")
    q.add_argument("image", help="query image")
    q.add_argument("--region", default=None, help="x,y,w,h region of the query image")
    q.add_argument("--mask", default=None, help="mask image of the query (pooled under it)")
    q.add_argument("--polygon", default=None, help='"x1,y1 x2,y2 ..." outline of the query')
    q.add_argument("-k", type=int, default=16, help="neighbours (default 16)")
    q.add_argument(
        "--exclude-group",
        nargs="?",
        const="",
        default=None,
        metavar="GROUP",
        help="leave out a lesion / patient id; alone: the query's own (the index's copies "
        "of the query file and their lesion and patient)",
    )
    q.add_argument("--model", default=None, help="the model file, if moved since the build")
    q.add_argument("--search", default="auto", choices=SEARCHES)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--cpu", action="store_true", help="do not try the CUDA provider")
    args = parser.parse_args(argv)

    if args.command == "build":
        options = BuildOptions(
            tap=args.tap,
            pooling=args.pooling,
            size=args.size,
            policy=args.policy,
            shard_size=args.shard_size,
            search=args.search,
            approximate_above=args.approximate_above,
            rebuild=args.rebuild,
            masks=args.masks,
            prefer_gpu=not args.cpu,
            engine=engine_options(args),
        )
        manifest = build(args.model, args.data, args.out, options, args.images)
        print(Path(args.out) / MANIFEST if manifest else "")
        return 0

    index = Index(args.index, args.search, prefer_gpu=not args.cpu)
    if args.model is not None:
        index.embedder(args.model)
    exclude: set[str] = set()
    if args.exclude_group == "":
        exclude = index.group_of(args.image)
        if not exclude:
            raise ValueError(
                f"{args.image}: is not in {args.index} (no file with its sha256); "
                "give the group to leave out: --exclude-group LESION_ID"
            )
    elif args.exclude_group:
        exclude = {args.exclude_group}
    region = command_region(args.image, args.region, args.mask, args.polygon)
    hits = index.query(args.image, region, args.k, exclude)
    if args.json:
        print(json.dumps({
            "index": str(index.path), "query": args.image, "region": region_text(region),
            "k": args.k, "search": index.method, "excluded": sorted(exclude),
            "neighbours": [asdict(h) for h in hits],
        }, indent=2))  # fmt: skip
        return 0
    print(f"{'rank':>4}  {'distance':>8}  {'label':<8} {'lesion':<14} id")
    for h in hits:
        print(
            f"{h.rank:>4}  {h.distance:8.5f}  {h.label:<8} {h.lesion_id or h.patient_id:<14} {h.id}"
        )
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
