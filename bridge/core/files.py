"""Small file helpers shared by every writer: atomic outputs and checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; move it onto `dest` only on success.

    The temporary name keeps `dest`'s suffixes (Keras insists on `.weights.h5`), so
    any writer can be pointed at it. On an exception the partial file is removed and
    `dest` is left untouched.
    """
    dest = Path(dest)
    if dest.is_dir():
        raise ValueError(f"{dest}: is a directory; expected a file path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{dest.name}")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def link_or_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Give `dest` the content of `src`, atomically, without writing it again if possible.

    A hard link where the file system allows one (no second copy on disk), a copy
    otherwise. Every writer here replaces files (`atomic_path`), never edits them in
    place, so two names of one file never diverge.
    """
    with atomic_path(dest) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
