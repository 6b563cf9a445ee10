"""Every notebook runs top to bottom on a real kernel, offline, on the embedded model.

The kernel is `python3` from this venv and its working directory is `notebooks/`, exactly as
`make lab` runs them, so the notebooks' own cache (`notebooks/.labkit/`) makes reruns fast. Any
cell error fails the test with the cell and its traceback (nbclient's CellExecutionError).
Hosted-model keys are removed from the kernel's environment, so notebook 03 always takes its
offline path here.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
HOSTED_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY")


def _read(path: Path):  # type: ignore[no-untyped-def]
    import nbformat

    return nbformat.read(path, as_version=4)


def test_there_are_notebooks() -> None:
    assert [p.name for p in NOTEBOOKS][:1] == ["01_quickstart.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    """Outputs are stripped: diffs stay readable and no stale result poses as current."""
    nb = _read(path)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell has outputs; strip them"
            assert cell.execution_count is None, f"{path.name}: execution counts left in"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_uses_the_notebooks_cache(path: Path) -> None:
    """Each notebook keeps its cache and traces under notebooks/.labkit (git-ignored)."""
    source = "\n".join(c.source for c in _read(path).cells if c.cell_type == "code")
    assert 'cache_dir=".labkit/cache"' in source and 'traces=".labkit/traces.db"' in source


@pytest.mark.notebook
@pytest.mark.local_model
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    for key in HOSTED_KEYS:  # the kernel inherits this environment: never a real remote API
        monkeypatch.delenv(key, raising=False)

    nb = _read(path)
    started = time.perf_counter()
    NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
        allow_errors=False,
    ).execute()
    took = time.perf_counter() - started
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("output_type") == "error"
    ]
    assert not errors
    print(f"{path.name}: executed in {took:.1f} s")
