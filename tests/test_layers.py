"""The floors of the code base, checked on every import statement of every module.

Floors (docs/architecture.md):

* `bridge.core` (the ground floor) imports no framework and nothing above it;
* `torch_models` and `tf_models` stand on the ground floor and never import each
  other (nor the other one's framework);
* `evaluation` stands on the ground floor and never imports a framework;
* the tools at `bridge`'s top level (export, port, parity, demo, metric fitting)
  may import everything.

Imports inside functions and under `TYPE_CHECKING` count like any other. No import
cycles anywhere. A new file is covered by the folder it is in.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bridge", "torch_models", "tf_models", "evaluation")

TORCH_SIDE = (
    "torch", "torchvision", "timm", "onnxscript", "lpips", "DISTS_pytorch", "safetensors.torch",
)  # fmt: skip
KERAS_SIDE = ("tensorflow", "keras", "tf2onnx", "tf_keras", "safetensors.tensorflow")
FRAMEWORKS = TORCH_SIDE + KERAS_SIDE


@dataclass(frozen=True)
class Floor:
    """What the modules of one floor may import.

    Attributes:
        name: The floor.
        prefixes: The modules on it (a package and what is under it).
        may_import: The floors it may import from (its own included).
        forbidden: Third-party top-level packages it must not import.
    """

    name: str
    prefixes: tuple[str, ...]
    may_import: tuple[str, ...]
    forbidden: tuple[str, ...]


FLOORS = (
    # `bridge/__init__` runs before every `bridge.core` module: it keeps the ground's rules
    Floor("ground", ("bridge.core", "bridge.__init__"), ("ground",), FRAMEWORKS),
    Floor("torch", ("torch_models",), ("ground", "torch"), KERAS_SIDE),
    Floor("keras", ("tf_models",), ("ground", "keras"), TORCH_SIDE),
    Floor("evaluation", ("evaluation",), ("ground", "evaluation"), FRAMEWORKS),
    Floor("tools", ("bridge",), ("ground", "torch", "keras", "evaluation", "tools"), ()),
)


def floor_of(module: str) -> Floor | None:
    """The floor of a project module (the most specific prefix wins), None outside."""
    if module == "bridge":
        module = "bridge.__init__"
    matches = [
        (len(prefix), floor)
        for floor in FLOORS
        for prefix in floor.prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def project_modules(root: Path) -> dict[str, Path]:
    """Every module of the project's packages under `root`, by dotted name."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported name) of every import in a module, relative ones resolved.

    `from a import b` gives `a.b` where that is a module of the project, else `a`.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in known else target))
    return found


def violations(root: Path) -> list[str]:
    """Every import that breaks a floor's rule, and every import cycle, as messages."""
    modules = project_modules(root)
    known = set(modules)
    problems, graph = [], {m: set() for m in modules}
    for module, path in modules.items():
        floor = floor_of(module)
        where = path.relative_to(root)
        for line, target in imports_of(module, path, known):
            top = target.split(".")[0]
            if any(target == f or target.startswith(f + ".") for f in floor.forbidden):
                problems.append(f"{where}:{line}: {floor.name} floor imports {target}")
                continue
            if top not in PACKAGES:
                continue  # the standard library or an allowed third-party package
            loaded = [m for m in _parents(target) if m in known]  # the module and its packages
            if not loaded:
                problems.append(f"{where}:{line}: imports {target}, not a module of the project")
                continue
            owner = loaded[0]
            graph[module].update(m for m in loaded if m != module and not _contains(m, module))
            to = floor_of(owner)
            if to.name not in floor.may_import:
                problems.append(
                    f"{where}:{line}: {floor.name} floor imports {owner} ({to.name} floor)"
                )
    problems += [f"import cycle: {' -> '.join(c)}" for c in _cycles(graph)]
    return problems


def _contains(package: str, module: str) -> bool:
    """Whether `module` lies inside `package` (a module is loaded after its packages)."""
    return module.startswith(package + ".")


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(c)) for c in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    path, seen = [start], {start}
    while True:
        nxt = min(w for w in graph[path[-1]] if w in component)
        if nxt in seen:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)
        seen.add(nxt)


# ------------------------------------------------------------------ tests


def test_the_project_keeps_its_floors_and_has_no_cycles():
    assert violations(ROOT) == []


def test_every_package_module_has_a_floor():
    modules = project_modules(ROOT)
    assert len(modules) > 40
    assert all(floor_of(m) is not None for m in modules)
    assert floor_of("bridge.core.data.image").name == "ground"
    assert floor_of("bridge.export").name == "tools"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    (tmp_path / "bridge" / "core").mkdir(exist_ok=True)
    (tmp_path / "bridge" / "core" / "__init__.py").touch()
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


# A generated tree per case: the files in it, and every violation the check must report.
BAD_TREES = {
    "an upward import inside a function": (
        {
            "bridge/core/new.py": """
                def helper():
                    from evaluation import stats
                    return stats
            """,
            "evaluation/stats.py": "",
        },
        ["bridge/core/new.py:3: ground floor imports evaluation.stats (evaluation floor)"],
    ),
    "a framework under TYPE_CHECKING, a twin import, a relative import upward": (
        {
            "evaluation/typed.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    import torch
            """,
            "tf_models/twin.py": "from torch_models import backbones\n",
            "torch_models/backbones.py": "",
            "bridge/core/rel.py": "from .. import export\n",
            "bridge/export.py": "",
        },
        [
            "bridge/core/rel.py:1: ground floor imports bridge.export (tools floor)",
            "evaluation/typed.py:4: evaluation floor imports torch",
            "tf_models/twin.py:1: keras floor imports torch_models.backbones (torch floor)",
        ],
    ),
    "a cycle through a function-level import": (
        {
            "evaluation/a.py": "from evaluation import b\n",
            "evaluation/b.py": "def f():\n    import evaluation.c\n",
            "evaluation/c.py": "from evaluation.a import x\n",
        },
        ["import cycle: evaluation.a -> evaluation.b -> evaluation.c -> evaluation.a"],
    ),
    "a cycle through a package's __init__": (
        {
            "evaluation/rep/__init__.py": "from evaluation import cmp\n",
            "evaluation/rep/tables.py": "",
            "evaluation/cmp.py": "from evaluation.rep.tables import x\n",
        },
        ["import cycle: evaluation.cmp -> evaluation.rep -> evaluation.cmp"],
    ),
    "bridge/__init__ keeps the ground's rules; a framework submodule": (
        {
            "bridge/__init__.py": "import torch\nfrom bridge import export\n",
            "bridge/export.py": "",
            "evaluation/uses_safetensors.py": "import safetensors.torch\n",
        },
        [
            "bridge/__init__.py:1: ground floor imports torch",
            "bridge/__init__.py:2: ground floor imports bridge.export (tools floor)",
            "evaluation/uses_safetensors.py:1: evaluation floor imports safetensors.torch",
        ],
    ),
}


@pytest.mark.parametrize("case", BAD_TREES)
def test_a_bad_tree_is_caught(tmp_path, case):
    files, expected = BAD_TREES[case]
    assert sorted(violations(_tree(tmp_path, files))) == sorted(expected)
