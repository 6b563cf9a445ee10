"""The package's shape, enforced: layers import only downward (the import-linter contract in
pyproject.toml), no import cycle, no lazy forwarding outside package fronts, modules stay
readable, notebooks use the public API, and production's `labkit.deploy` loads without pandas.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "labkit"
MAX_LINES = 800
PUBLIC = {
    "labkit",
    "labkit.testing",
    "labkit.widgets",
    "labkit.structured",
    "labkit.evaluation",
    "labkit.experiments",
    "labkit.deploy",
    "labkit.monitoring",
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_layers_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [str(lint), str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    # Imports inside functions count: a lazy import is still a dependency.
    graph = grimp.build_graph("labkit", exclude_type_checking_imports=True, cache_dir=None)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b"]]


def test_no_lazy_forwarding_outside_package_fronts() -> None:
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            is_getattr = isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
            if is_getattr and path.name != "__init__.py":
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_no_module_over_the_line_budget() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


_IMPORT = re.compile(r"^\s*(?:from\s+(labkit[\w.]*)\s+import|import\s+(labkit[\w.]*))", re.M)


def test_notebooks_import_only_the_public_api() -> None:
    seen, private = set(), []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            if cell["cell_type"] != "code":
                continue
            for m in _IMPORT.finditer("".join(cell["source"])):
                name = m.group(1) or m.group(2)
                seen.add(name)
                if name not in PUBLIC:
                    private.append(f"{nb.name}: {name}")
    assert "labkit" in seen  # the scan reads the notebooks' code
    assert private == []


@pytest.mark.parametrize(
    "code",
    [
        "import labkit.deploy",
        "from labkit import Deployed, GateVerdict, gate, load_config, rollback",
        "from labkit.deploy import DeployedConfig, read_config, save_config, versions",
    ],
)
def test_deploy_imports_without_pandas(code: str) -> None:
    probe = (
        "import sys\n"
        "sys.modules['pandas'] = None  # any `import pandas` now raises ImportError\n"
        f"{code}\n"
        "heavy = sorted(m for m in ('pandas', 'plotly', 'ipywidgets', 'scipy') "
        "if sys.modules.get(m) is not None)\n"
        "print('heavy:', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout
