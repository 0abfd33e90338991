"""Shared fixtures: weight files made on the spot (never downloaded), CLI runner."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]

# `tox -e test` runs two xdist workers with `--dist loadscope`: a test file's functions
# (a class's methods) stay on one worker, so its module fixtures are made once, while
# test_full.py keeps one class per backbone, so its three long exports can run on both
# workers. xdist hands the scopes out in collection order here (its own reordering, by
# the number of tests in a scope, is turned off below) and gives a worker its next scope
# when two of its tests are left: the longest scopes go first (CI seconds in comments),
# so that the short ones fill in at the end and no worker is left alone with a long one.
# A long scope's long test comes first in it, so that its next scope is not taken early.
FIRST = (
    "test_compare.py",  # the demo (training, export, fit, comparison), one more comparison
    "test_full.py::TestVgg16",  # full-size exports, each class ~5 min
    "test_full.py::TestResnet50",
    "test_full.py::TestVitB16",
    "test_export.py",  # the shared tiny exports (24 of them)
    "test_stats_simulation.py",  # replicated studies, in worker processes
    "test_rate.py",
    "test_training.py",
    "test_notebook.py",  # the walkthrough, top to bottom (~2 min)
    "test_masks.py",
    "test_ray_engine.py",
    "test_finetune.py",
    "test_metrics.py",
    "test_port.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """Keep the collection order for xdist's `loadscope` (see FIRST)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _rank(item: pytest.Item) -> int:
    scope = "::".join(item.nodeid.split("::")[:2]).rsplit("/", 1)[-1]
    for name in (scope, item.path.name):
        if name in FIRST:
            return FIRST.index(name)
    return len(FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest scopes first (the order within a scope is kept)."""
    items.sort(key=_rank)


def run_module(
    module: str, *args: str, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `python -m module args...` from the project root and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    """Run `python -m module args...` in this process, as its `__main__` block would.

    The command's `main` goes through `bridge.core.cli.run`, the wrapper that turns a user
    mistake into one `error:` line and exit code 2, with stdout and stderr captured. For
    commands whose errors come before any work is done: the same error path as
    `run_module`, without a new process importing torch and TensorFlow again (seconds
    each). Every command's `__main__` block itself runs in `run_module` tests elsewhere.
    """
    import importlib

    from bridge.core.cli import run

    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run(main, list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        else:
            code = 0
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder every xdist worker of this run shares (`<basetemp>/name` without xdist)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above popen-gw0, popen-gw1
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(path: Path):
    """Hold an exclusive lock on `path` (created if missing) across processes."""
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# The weights every shared tiny export is made from (`tiny_state`, `tiny_exports`).
TINY_CLASSES, TINY_SEED = 4, 2


def tiny_state(arch: str) -> dict:
    """The seeded random weights of a tiny arch that `tiny_exports` exports."""
    from bridge.core.weights import random_state_dict

    return random_state_dict(arch, TINY_CLASSES, seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory):
    """`get(arch, origin, kind)`: the ONNX export of `tiny_state(arch)`, made once per run.

    An export of a tiny model takes 5-30 s (torch.export and tf2onnx trace the graph
    whatever the weights' size), and several test files need the same ones. Each file is
    made by whichever xdist worker asks first, under a lock, into a folder both workers
    share; the others wait for it. Tests must not change these files: copy them first.
    """
    root = shared_dir(tmp_path_factory, "tiny-exports")

    def get(arch: str, origin: str, kind: str) -> Path:
        from bridge.core.runtime import manifest_path, model_filename
        from bridge.core.weights import write_state_dict
        from bridge.export import export, source_from_weights

        weights = root / f"{arch}.safetensors"
        with locked(root / f"{arch}.lock"):
            if not weights.is_file():
                write_state_dict(tiny_state(arch), weights)
        path = root / "models" / model_filename(arch, kind, origin)
        with locked(root / f"{path.stem}.lock"):
            if not manifest_path(path).is_file():  # written last, after the ONNX file
                export(source_from_weights(arch, weights), kind, origin, root / "models")
        return path

    return get


def copy_export(path: Path, folder: Path) -> Path:
    """A copy of a shared export and its manifest in `folder` (tests may change it there)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(path.with_suffix(".json"), folder / path.with_suffix(".json").name)
    return Path(shutil.copy(path, folder / path.name))


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
