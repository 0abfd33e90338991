"""examples/walkthrough.ipynb: committed without outputs, and it runs top to bottom.

The notebook is executed by nbclient on a kernel of this interpreter, with its outputs
in a temporary folder (`DERMSIM_NOTEBOOK_OUT`): the test leaves nothing in the checkout.
"""

import sys
import time
from pathlib import Path

import nbformat
from conftest import ROOT

NOTEBOOK = ROOT / "examples" / "walkthrough.ipynb"
# The notebook takes about 2 min on 2 busy cores, its longest cell (the comparison) under
# one. The limits stop a hung or much slower notebook, with room for a test file that
# another xdist worker runs beside it.
CELL_SECONDS = 240
TOTAL_SECONDS = 420
# where the notebook writes by default (git-ignored); the test must leave them as they are
DEFAULT_OUTPUTS = ("data/notebook", "runs/notebook", "runs/notebook.toml", "models/notebook",
                   "reports/notebook", "index/notebook")  # fmt: skip
WHERE = "import sys\nprint(sys.executable)\nprint(ROOT)\nprint(installed())"


def _stamps() -> dict[str, int | None]:
    paths = {p: ROOT / p for p in DEFAULT_OUTPUTS}
    return {p: (path.stat().st_mtime_ns if path.exists() else None) for p, path in paths.items()}


def _client(nb, cwd: Path, deadline: float):
    """nbclient on a kernel of this interpreter, each cell limited, all of them by `deadline`."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    # ipykernel's own kernel spec, whose command is this interpreter (sys.executable); no
    # kernel dirs, so that a `python3` spec another environment installed is not used
    specs = KernelSpecManager(kernel_dirs=[])
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)

    def seconds_left(cell) -> int:
        return max(1, min(CELL_SECONDS, int(deadline - time.monotonic())))

    resources = {"metadata": {"path": str(cwd)}}  # the kernel's working folder
    return NotebookClient(nb, km=km, timeout_func=seconds_left, resources=resources)


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_the_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert len(code) > 10
    assert [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None] == []
    assert all("execution" not in cell.metadata for cell in nb.cells)
    assert "widgets" not in nb.metadata
    assert str(ROOT) not in NOTEBOOK.read_text(encoding="utf-8")  # no absolute paths


def test_the_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(WHERE))
    monkeypatch.setenv("DERMSIM_NOTEBOOK_OUT", str(tmp_path))
    before = _stamps()
    started = time.monotonic()
    # Jupyter started in examples/; a failing cell raises CellExecutionError, a slow one
    # CellTimeoutError; the kernel is shut down either way (cleanup_kc: it is our manager)
    _client(nb, NOTEBOOK.parent, started + TOTAL_SECONDS).execute(cleanup_kc=True)
    seconds = time.monotonic() - started
    print(f"the notebook ran in {seconds:.0f} s")
    assert seconds < TOTAL_SECONDS

    executable, root, installed = _text(nb.cells[-1]).splitlines()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(root) == ROOT and installed == "True"
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 5  # the data, a rated case, crops and maps, the report's, neighbours
    printed = "".join(_text(cell) for cell in nb.cells if cell.cell_type == "code")
    assert "ExecutionProvider" in printed  # which provider ran
    assert "LPIPS" in printed and "test balanced accuracy" in printed

    assert len(list((tmp_path / "models" / "notebook").glob("*.onnx"))) == 6
    assert (tmp_path / "reports" / "notebook" / "results.json").is_file()
    assert (tmp_path / "index" / "notebook" / "manifest.json").is_file()
    assert _stamps() == before  # nothing written to the checkout's own folders


def test_the_setup_finds_the_repository_from_its_root(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    setup = next(i for i, cell in enumerate(nb.cells) if "PREFER_GPU =" in cell.source)
    nb.cells = [*nb.cells[: setup + 1], nbformat.v4.new_code_cell(WHERE)]
    monkeypatch.setenv("DERMSIM_NOTEBOOK_OUT", str(tmp_path))
    _client(nb, ROOT, time.monotonic() + CELL_SECONDS).execute(cleanup_kc=True)
    _, root, installed = _text(nb.cells[-1]).splitlines()
    assert Path(root) == ROOT
    assert installed == "True"  # the first cell found dermsim installed and ran no pip
