"""The rating studio's study: items, designs, rating orders, tokens and answers in SQLite.

A study is one SQLite database, `studies/<name>/study.sqlite`, in WAL mode with full
synchronous commits: an answer the page was told is saved is on disk, and survives a
`kill -9` of the server (and a power cut). `Study.create` writes it (atomically: a
study exists whole or not at all) from rated case folders, a region-pair table or a
2AFC triplet table; the server (`evaluation.studio_http`) and the command line
(`evaluation.rate`) open it with `Study`.

Designs:

* `hospital`: one screen per item: the lesion or scar region beside the item's
  comparison regions (case folders: `0.jpg` beside `1.jpg`, `2.jpg`...; region pairs:
  region A beside region B). The rater gives one colour and one texture score on a 1-4
  scale; the comparison reads overall = colour + texture - 1 itself.
* `2afc`: a reference and two candidates; the rater picks the candidate more similar
  to the reference (the BAPPS protocol). Which candidate is shown on the left is drawn
  per rater and item, and the answer is stored as a or b of the triplet table.

Every rater gets an order of their own (seeded: the same study seed and rater list give
the same orders), optionally with a fraction of the items shown a second time later in
the order (test-retest). The export keeps each rater's first answer; the repeats go to
a separate test-retest table.

Access: one random token per rater and one for the study owner (`secrets`), stored as
SHA-256 hashes only and compared in constant time. A token is exchanged for a session
(also random, stored hashed), which the page keeps in an HttpOnly cookie. A rater's
session reaches that rater's items and answers only.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.data import ratings as rating_data
from bridge.core.data.image import Box, box_text, crop, decode_image, jpeg_bytes, parse_box
from bridge.core.data.readers import is_synthetic
from bridge.core.data.tables import read_table

log = logging.getLogger(__name__)

DEFAULT_STUDIES = Path("studies")
DATABASE = "study.sqlite"
DESIGNS = ("hospital", "2afc")
SCALE = (1, 4)  # the hospital design's colour and texture scores
OWNER = "@owner"  # the owner's row in the raters table (rater names cannot start with @)
RESERVED = ("owner",)  # `links --reissue owner` means the owner
MAX_POSITION = 1 << 31
SCHEMA_VERSION = 1
DISPLAY_SIDE = 1024  # longest side of an image as the page shows it (display only)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, grp TEXT NOT NULL, spec TEXT NOT NULL
);
CREATE TABLE raters (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE);
CREATE TABLE slots (
    rater TEXT NOT NULL REFERENCES raters(name), position INTEGER NOT NULL,
    item INTEGER NOT NULL REFERENCES items(id), repeat INTEGER NOT NULL, swap INTEGER NOT NULL,
    PRIMARY KEY (rater, position)
);
CREATE TABLE answers (
    rater TEXT NOT NULL, position INTEGER NOT NULL, color INTEGER, texture INTEGER,
    choice TEXT, saved TEXT NOT NULL, changes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rater, position), FOREIGN KEY (rater, position) REFERENCES slots
);
CREATE TABLE sessions (
    hash TEXT PRIMARY KEY, rater TEXT NOT NULL REFERENCES raters(name), created TEXT NOT NULL
);
"""


class Denied(PermissionError):
    """An unknown token or session, or a rater asking for what is not theirs."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def check_name(kind: str, name: str) -> str:
    """A study or rater name: letters, digits, `_`, `.`, `-` (1-64, not starting with those).

    Raises:
        ValueError: Naming the kind and the name.
    """
    if not _NAME.fullmatch(name or ""):
        raise ValueError(
            f"{kind} name {name!r}: expected 1-64 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit"
        )
    return name


def study_path(name: str, root: str | os.PathLike[str] = DEFAULT_STUDIES) -> Path:
    """The database of study `name` under `root`."""
    return Path(root) / check_name("study", name) / DATABASE


# ================================================================ items


@dataclass(frozen=True)
class Region:
    """An image file and a region of it (None: the whole image)."""

    path: Path
    box: Box | None = None

    def record(self) -> list:
        return [str(self.path), box_text(self.box) if self.box else ""]

    @classmethod
    def of(cls, record: Sequence) -> Region:
        return cls(Path(record[0]), parse_box(record[1]) if record[1] else None)


@dataclass(frozen=True)
class Item:
    """One thing a rater answers: its key (case, pair or triplet id), group and regions.

    Attributes:
        key: Case id, pair id or triplet id.
        group: Patient or lesion (the key itself when the data gives none).
        regions: Hospital: the reference, then each comparison region. 2AFC: the
            reference, candidate a, candidate b.
    """

    key: str
    group: str
    regions: tuple[Region, ...]


@dataclass(frozen=True)
class Source:
    """What a study's items were read from.

    Attributes:
        kind: `cases` (case folders), `pairs` (region-pair table) or `triplets`.
        path: The folder or table.
        items: The items in the source's order.
        synthetic: The source carries the synthetic marker.
        grouped: The source names groups (patients or lesions) of its own.
    """

    kind: str
    path: Path
    items: tuple[Item, ...]
    synthetic: bool
    grouped: bool


def read_source(
    path: str | os.PathLike[str], design: str, groups: str | os.PathLike[str] | None = None
) -> Source:
    """The items of a study: case folders, a region-pair table, or a 2AFC triplet table.

    Args:
        path: Case folders (`CASE001/0.jpg, 1.jpg...`) or a region-pair table for the
            hospital design; a triplet table (`ref,box_ref,a,box_a,b,box_b[,group]`)
            for 2afc.
        design: `hospital` or `2afc`.
        groups: Optional table `case,group` giving case folders their patient or lesion
            (a region-pair or triplet table has its own group column).

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: On malformed input, or a source that does not suit the design.
    """
    path = Path(path)
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; expected one of {', '.join(DESIGNS)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder or table")
    if design == "2afc":
        if path.is_dir():
            raise ValueError(
                f"{path}: the 2afc design reads a triplet table (ref,box_ref,a,box_a,b,box_b"
                "[,group]), not a folder"
            )
        table = rating_data.read_triplets(path)
        items = tuple(
            Item(t.id, t.group, (Region(t.ref, t.box_ref), Region(t.a, t.box_a),
                                 Region(t.b, t.box_b)))
            for t in table.triplets
        )  # fmt: skip
        grouped = any(t.group != t.id for t in table.triplets)
        return Source("triplets", path, items, table.synthetic, grouped)
    if path.is_dir():
        cases = rating_data.read_case_folders(path)
        given = _case_groups(groups, {c.id for c in cases}) if groups else {}
        items = tuple(
            Item(c.id, given.get(c.id, c.id),
                 (Region(c.reference), *(Region(p) for p in c.comparisons)))
            for c in cases
        )  # fmt: skip
        return Source("cases", path, items, is_synthetic(path), bool(given))
    if groups:
        raise ValueError("--groups applies to case folders; a region-pair table has a group column")
    try:
        pairs = rating_data.read_region_pairs(path)
    except ValueError:
        columns = {c.lower() for c in read_table(path).columns}
        if {"ref", "a", "b"} <= columns:
            raise ValueError(
                f"{path}: a triplet table (ref, a, b); rate it with --design 2afc"
            ) from None
        raise
    outlined = next((p for p in pairs.pairs if p.has_outline), None)
    if outlined is not None:
        raise ValueError(
            f"{path}: pair {outlined.id} has a polygon or mask; the studio shows boxes only "
            "(expected box_a / box_b regions)"
        )
    items = tuple(
        Item(p.id, p.group, (Region(p.image_a, p.box_a), Region(p.image_b, p.box_b)))
        for p in pairs.pairs
    )
    grouped = any(p.group != p.id for p in pairs.pairs)
    return Source("pairs", path, items, pairs.synthetic, grouped)


def _case_groups(path: str | os.PathLike[str], cases: set[str]) -> dict[str, str]:
    """A `case,group` table as case -> group; every case must have a folder."""
    table = read_table(path)
    columns = table.require("case", rating_data.GROUP_COLUMN)
    out: dict[str, str] = {}
    seen: dict = {}
    for row in table.rows:
        case = table.unique_id(row, columns["case"], seen)
        if case not in cases:
            raise table.error(f"case {case!r} has no case folder", row)
        group = row.get(columns[rating_data.GROUP_COLUMN])
        if group:
            out[case] = group
    return out


# ================================================================ orders


def rating_order(
    n_items: int, repeat: float, seed: int, rater_index: int
) -> list[tuple[int, bool]]:
    """One rater's order: (item index, shown before) per screen.

    Every item once in a seeded random order, then `round(repeat * n_items)` of them
    (at least one when `repeat` > 0) again. Repeated items are drawn among those shown
    early enough, and each is inserted at a random place more than a quarter of the
    study after its first showing, so that a rater is unlikely to remember the answer.
    """
    rng = np.random.default_rng([seed, rater_index])
    order: list[tuple[int, bool]] = [(int(i), False) for i in rng.permutation(n_items)]
    if repeat <= 0 or n_items < 2:
        return order
    gap = max(1, n_items // 4)
    early = [item for item, _ in order[: n_items - gap]]
    count = min(len(early), max(1, round(repeat * n_items)))
    for item in rng.choice(early, size=count, replace=False):
        first = order.index((int(item), False))
        order.insert(int(rng.integers(first + gap + 1, len(order) + 1)), (int(item), True))
    return order


# ================================================================ the study


def _write_study(
    path: Path,
    meta: dict[str, Any],
    source: Source,
    raters: Sequence[str],
    tokens: dict[str, str],
    owner: str,
    design: str,
    repeat: float,
    seed: int,
) -> None:
    """Write a whole study database at `path`, switched to WAL mode and closed."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(_SCHEMA)
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
        )
        db.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [
                (i, it.key, it.group,
                 json.dumps([Region(r.path.resolve(), r.box).record() for r in it.regions]))
                for i, it in enumerate(source.items)
            ],
        )  # fmt: skip
        db.executemany(
            "INSERT INTO raters VALUES (?, ?)",
            [(OWNER, _hash(owner)), *((r, _hash(t)) for r, t in tokens.items())],
        )
        rng = np.random.default_rng([seed, 1 << 20])
        for index, rater in enumerate(raters):
            order = rating_order(len(source.items), repeat, seed, index)
            swaps = rng.integers(0, 2, size=len(order)) if design == "2afc" else [0] * len(order)
            db.executemany(
                "INSERT INTO slots VALUES (?, ?, ?, ?, ?)",
                [(rater, p, item, int(again), int(swaps[p]))
                 for p, (item, again) in enumerate(order)],
            )  # fmt: skip
        db.execute("COMMIT")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise ValueError(f"{path.parent}: SQLite cannot use WAL mode here (got {mode})")
    finally:
        db.close()


@dataclass(frozen=True)
class Created:
    """A new study: where it is and the tokens to hand out (shown once, stored hashed)."""

    path: Path
    tokens: dict[str, str]  # rater -> token
    owner_token: str


class Study:
    """An open study database; safe to use from many threads (a connection per call).

    Args:
        path: The study's `study.sqlite`.

    Raises:
        FileNotFoundError: If there is no such study.
        ValueError: If the file is not a dermsim study of this version.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such study (python -m evaluation.rate new)")
        try:
            meta = dict(self._read("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.path}: not a dermsim study ({err})") from None
        self.meta = {k: json.loads(v) for k, v in meta.items()}
        if self.meta.get("schema") != SCHEMA_VERSION:
            raise ValueError(
                f"{self.path}: study schema {self.meta.get('schema')!r}; this dermsim reads "
                f"schema {SCHEMA_VERSION}"
            )
        self.name: str = self.meta["name"]
        self.design: str = self.meta["design"]
        self._items = {
            row[0]: Item(row[1], row[2], tuple(Region.of(r) for r in json.loads(row[3])))
            for row in self._read("SELECT id, key, grp, spec FROM items ORDER BY id")
        }
        self.raters: tuple[str, ...] = tuple(
            r[0]
            for r in self._read("SELECT name FROM raters WHERE name != ? ORDER BY rowid", OWNER)
        )
        self._images: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    # -- creation

    @classmethod
    def create(
        cls,
        name: str,
        source: Source,
        raters: Sequence[str],
        design: str = "hospital",
        repeat: float = 0.0,
        seed: int = 0,
        root: str | os.PathLike[str] = DEFAULT_STUDIES,
    ) -> Created:
        """Write a new study: items, orders and one token per rater and for the owner.

        Raises:
            ValueError: On a bad name, an existing study, no or repeated raters, a
                repeat fraction outside [0, 1], or a source that does not suit the design.
        """
        path = study_path(name, root)
        if path.exists():
            raise ValueError(f"study {name!r} exists ({path}); pick another name")
        if design not in DESIGNS:
            raise ValueError(f"unknown design {design!r}; expected one of {', '.join(DESIGNS)}")
        if not raters:
            raise ValueError("expected at least one rater (--raters R1,R2,...)")
        for rater in raters:
            check_name("rater", rater)
            if rater.casefold() in RESERVED:
                raise ValueError(f"rater name {rater!r} is reserved; pick another")
        if len({r.casefold() for r in raters}) != len(raters):
            raise ValueError(
                f"raters repeat a name (letter case aside: their columns would clash): "
                f"{', '.join(raters)}"
            )
        if not 0.0 <= repeat <= 1.0:
            raise ValueError(f"--repeat must be a fraction in [0, 1], got {repeat}")
        if (design == "2afc") != (source.kind == "triplets"):
            raise ValueError(
                f"{source.path}: a {source.kind} source does not suit the {design} design"
            )
        tokens = {r: secrets.token_urlsafe(24) for r in raters}
        owner = secrets.token_urlsafe(24)
        meta = {
            "schema": SCHEMA_VERSION, "name": name, "design": design, "seed": seed,
            "repeat": repeat, "source": {"kind": source.kind, "path": str(source.path.resolve())},
            "synthetic": source.synthetic, "grouped": source.grouped, "scale": list(SCALE),
            "created": _now(),
        }  # fmt: skip
        made_folder = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            _write_study(tmp, meta, source, raters, tokens, owner, design, repeat, seed)
            try:  # a link, not a rename: never replaces a study made meanwhile
                os.link(tmp, path)
            except FileExistsError:
                raise ValueError(f"study {name!r} exists ({path}); pick another name") from None
            except OSError:  # a file system without hard links
                if path.exists():
                    raise ValueError(f"study {name!r} exists ({path}); pick another name") from None
                os.replace(tmp, path)
        except BaseException:
            if made_folder and path.parent.exists() and not path.exists():
                shutil.rmtree(path.parent, ignore_errors=True)
            raise
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
        log.info(
            "study %s: %d items, %d raters, design %s", name, len(source.items), len(raters), design
        )
        return Created(path, tokens, owner)

    # -- database

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    def _read(self, sql: str, *args: Any) -> list[tuple]:
        try:
            with self._connect() as db:
                return db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.path}: the study database cannot be read ({err})") from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (`BEGIN IMMEDIATE`): writers queue, none overwrite."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- access

    def login(self, token: str) -> tuple[str, str]:
        """Exchange a rater's (or the owner's) token for a new session.

        Returns:
            The rater (`OWNER` for the owner) and the session secret.

        Raises:
            Denied: On an unknown token.
        """
        given = _hash(token or "")
        found = None
        for name, stored in self._read("SELECT name, token_hash FROM raters"):
            if hmac.compare_digest(given, stored):  # every row compared: no early exit
                found = name
        if found is None:
            raise Denied("unknown token")
        session = secrets.token_urlsafe(32)
        with self._write() as db:
            db.execute("INSERT INTO sessions VALUES (?, ?, ?)", (_hash(session), found, _now()))
        return found, session

    def rater_of(self, session: str | None) -> str:
        """The rater (or `OWNER`) of a session.

        Raises:
            Denied: On no or an unknown session.
        """
        if not session:
            raise Denied("no session: open your personal link")
        rows = self._read("SELECT rater, hash FROM sessions WHERE hash = ?", _hash(session))
        if not rows or not hmac.compare_digest(rows[0][1], _hash(session)):
            raise Denied("unknown session: open your personal link again")
        return rows[0][0]

    def reissue(self, rater: str) -> str:
        """A new token for `rater` (or `OWNER`); the old token and its sessions stop working."""
        if rater != OWNER and rater not in self.raters:
            raise ValueError(f"unknown rater {rater!r}; the study has {', '.join(self.raters)}")
        token = secrets.token_urlsafe(24)
        with self._write() as db:
            db.execute("UPDATE raters SET token_hash = ? WHERE name = ?", (_hash(token), rater))
            db.execute("DELETE FROM sessions WHERE rater = ?", (rater,))
        return token

    # -- a rater's screens

    def _slots(self, rater: str) -> list[tuple[int, int, int, int]]:
        return self._read(
            "SELECT position, item, repeat, swap FROM slots WHERE rater = ? ORDER BY position",
            rater,
        )

    def _slot(self, rater: str, position: Any) -> tuple[int, int, int]:
        """(item, repeat, swap) of a rater's screen; Denied when it is not theirs."""
        if rater == OWNER or rater not in self.raters:
            raise Denied("only raters have screens to rate")
        if isinstance(position, bool) or not isinstance(position, int):
            raise ValueError(f"position: expected a whole number, got {position!r}")
        if not 0 <= position < MAX_POSITION:
            raise ValueError(f"position {position}: out of range")
        rows = self._read(
            "SELECT item, repeat, swap FROM slots WHERE rater = ? AND position = ?", rater, position
        )
        if not rows:
            raise ValueError(
                f"position {position}: this rater's screens are 0..{len(self._slots(rater)) - 1}"
            )
        return rows[0]

    def progress(self, rater: str) -> dict[str, Any]:
        """A rater's design, screen count, answered count and the first unanswered screen."""
        slots = self._slots(rater)
        answered = {p for (p,) in self._read("SELECT position FROM answers WHERE rater = ?", rater)}
        todo = [p for p, *_ in slots if p not in answered]
        return {
            "rater": rater, "study": self.name, "design": self.design, "total": len(slots),
            "answered": len(answered), "next": todo[0] if todo else None,
            "scale": list(SCALE), "aspects": list(rating_data.SCORED_ASPECTS),
        }  # fmt: skip

    def screen(self, rater: str, position: int) -> dict[str, Any]:
        """What the page shows at a position: image slots and the rater's answer so far.

        Nothing about other raters, models or whether the screen repeats an earlier one.
        """
        item, _, swap = self._slot(rater, position)
        regions = self._items[item].regions
        names = ["ref", "left", "right"] if self.design == "2afc" else [
            "ref", *(f"c{i}" for i in range(1, len(regions)))
        ]  # fmt: skip
        answer = self._answer(rater, position)
        if answer is not None and self.design == "2afc":
            answer = {"side": "left" if (answer["choice"] == "a") != bool(swap) else "right"}
        return {"position": position, "images": names, "answer": answer, **self.progress(rater)}

    def _answer(self, rater: str, position: int) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT color, texture, choice FROM answers WHERE rater = ? AND position = ?",
            rater, position,
        )  # fmt: skip
        if not rows:
            return None
        color, texture, choice = rows[0]
        return {"choice": choice} if self.design == "2afc" else {"color": color, "texture": texture}

    def image(self, rater: str, position: int, name: str) -> bytes:
        """A screen's image as JPEG: the region decoded by the one decoder, cropped, shrunk."""
        item, _, swap = self._slot(rater, position)
        regions = self._items[item].regions
        if self.design == "2afc":
            index = {"ref": 0, "left": 1 + swap, "right": 2 - swap}.get(name)
        else:
            index = (
                0 if name == "ref" else int(name[1:]) if re.fullmatch(r"c[1-9]\d*", name) else None
            )
        if index is None or index >= len(regions):
            raise ValueError(f"no image {name!r} on this screen")
        region = regions[index]
        key = (str(region.path), region.box)
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        try:
            data = jpeg_bytes(crop(decode_image(region.path), region.box), DISPLAY_SIDE, 92)
        except (OSError, ValueError) as err:  # the path stays in the log, not on the page
            log.error(
                "study %s: image %s of item %s: %s", self.name, name, self._items[item].key, err
            )
            raise ValueError(
                "image unavailable (the study owner can see why in the server log)"
            ) from None
        with self._lock:
            self._images[key] = data
            while len(self._images) > 64:
                self._images.popitem(last=False)
        return data

    def answer(self, rater: str, request: Any) -> dict[str, Any]:
        """Validate and commit one answer (a new one, or a change); returns the progress.

        Hospital: `{"position": p, "color": 1-4, "texture": 1-4}`. 2AFC: `{"position": p,
        "side": "left" | "right"}` (as shown; stored as a or b of the triplet).

        Raises:
            Denied: For the owner.
            ValueError: On a malformed request, a position that is not the rater's, or a
                score out of range.
        """
        if not isinstance(request, dict):
            raise ValueError("expected a JSON object with position and the answer")
        position = request.get("position")
        _, _, swap = self._slot(rater, position)
        if self.design == "2afc":
            side = request.get("side")
            if side not in ("left", "right"):
                raise ValueError(f"side: expected 'left' or 'right', got {side!r}")
            values = (None, None, "a" if (side == "left") != bool(swap) else "b")
        else:
            low, high = SCALE
            scores = []
            for aspect in rating_data.SCORED_ASPECTS:
                value = request.get(aspect)
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int)
                    or not low <= value <= high
                ):
                    raise ValueError(
                        f"{aspect}: expected a whole score {low}-{high}, got {value!r}"
                    )
                scores.append(value)
            values = (*scores, None)
        with self._write() as db:
            db.execute(
                "INSERT INTO answers (rater, position, color, texture, choice, saved) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rater, position) DO UPDATE SET "
                "color = excluded.color, texture = excluded.texture, choice = excluded.choice, "
                "saved = excluded.saved, changes = changes + 1",
                (rater, position, *values, _now()),
            )
        return self.progress(rater)

    # -- results

    def answers(self) -> list[dict[str, Any]]:
        """Every answer: rater, position, item key, group, whether a repeat, and the values."""
        rows = self._read(
            "SELECT s.rater, s.position, s.item, s.repeat, a.color, a.texture, a.choice, a.saved "
            "FROM answers a JOIN slots s USING (rater, position) ORDER BY s.rater, s.position"
        )
        order = {r: i for i, r in enumerate(self.raters)}
        out = [
            {"rater": r, "position": p, "item": self._items[i].key, "group": self._items[i].group,
             "repeat": bool(rep), "color": c, "texture": t, "choice": ch, "saved": saved}
            for r, p, i, rep, c, t, ch, saved in rows
        ]  # fmt: skip
        return sorted(out, key=lambda a: (order.get(a["rater"], len(order)), a["position"]))

    def first_answers(self) -> list[dict[str, Any]]:
        """Each rater's first answer per item (what the export keeps), in item order."""
        keys = {it.key: i for i, it in enumerate(self._items.values())}
        order = {r: i for i, r in enumerate(self.raters)}
        first = [a for a in self.answers() if not a["repeat"]]
        return sorted(first, key=lambda a: (keys[a["item"]], order[a["rater"]]))

    def retest_pairs(self) -> list[dict[str, Any]]:
        """Per repeated item and rater with both answers: the first and the repeated answer."""
        firsts = {(a["rater"], a["item"]): a for a in self.answers() if not a["repeat"]}
        out = []
        for again in (a for a in self.answers() if a["repeat"]):
            first = firsts.get((again["rater"], again["item"]))
            if first is not None:
                out.append({"rater": again["rater"], "item": again["item"], "first": first,
                            "repeat": again})  # fmt: skip
        return out

    def items(self) -> list[Item]:
        """The study's items, in source order."""
        return list(self._items.values())


def hospital_tables(study: Study) -> dict[str, np.ndarray]:
    """Per scored aspect, an items x raters table of first answers (NaN: not answered)."""
    keys = {it.key: i for i, it in enumerate(study.items())}
    col = {r: j for j, r in enumerate(study.raters)}
    tables = {a: np.full((len(keys), len(col)), np.nan) for a in rating_data.SCORED_ASPECTS}
    for a in study.first_answers():
        for aspect in rating_data.SCORED_ASPECTS:
            tables[aspect][keys[a["item"]], col[a["rater"]]] = a[aspect]
    return tables


def to_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A CSV document (the one writer of the studio's tables)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
