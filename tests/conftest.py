"""Shared fixtures: weight files made on the spot (never downloaded), CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]

# `tox -e test` runs two xdist workers with `--dist loadscope`: a test file's functions
# stay on one worker, so its module fixtures are made once, while test_full.py keeps one
# class per backbone, so its three long exports run on both workers. The longest files
# go first, so that no worker is left alone with one of them at the end.
FIRST = ("test_full.py", "test_compare.py", "test_export.py", "test_stats_simulation.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (the order within a file is kept)."""
    items.sort(key=lambda i: FIRST.index(i.path.name) if i.path.name in FIRST else len(FIRST))


def run_module(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args...` from the project root and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def save_torch_file(state: dict, path: str | os.PathLike, legacy: bool = False) -> Path:
    """Write a numpy state dict as torch's own `.pth` (zip format, or the legacy one)."""
    import numpy as np
    import torch

    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    torch.save(tensors, path, _use_new_zipfile_serialization=not legacy)
    return Path(path)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user mistake: non-zero exit, one `error:` line naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
