"""The codebase's shape, held by tests: small files and functions, and import arrows that point one way.

Limits: no file in runners/, reports/ or datasets/ over 400 lines; no function over 80 lines in the
project's packages; no import cycle between the project's modules; reports/ never imports runners/ (the report
stage reads MLflow, never the training code).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "datasets", "runners", "reports")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    return {f"{p}.{f.stem}": f for p in PACKAGES for f in sorted((REPO / p).glob("*.py")) if f.stem != "__init__"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(path: Path) -> set[str]:
    """Project modules imported anywhere in the file (module level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES and m in _modules()}


@pytest.mark.parametrize("package", ["runners", "reports", "datasets"])
def test_files_are_small(package: str) -> None:
    big = {f.name: n for f in (REPO / package).glob("*.py") if (n := len(f.read_text().splitlines())) > MAX_FILE_LINES}
    assert not big, f"{package}/ files over {MAX_FILE_LINES} lines: {big}"


def test_functions_are_short() -> None:
    long = []
    for name, path in _modules().items():
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} ({length} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_import_cycle() -> None:
    graph = {name: _imports(path) - {name} for name, path in _modules().items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_reports_never_import_runners() -> None:
    bad = {name: sorted(m for m in _imports(path) if m.startswith("runners"))
           for name, path in _modules().items() if name.startswith("reports.")}
    assert not any(bad.values()), f"reports/ importing runners/: { {k: v for k, v in bad.items() if v} }"


def test_the_checks_see_the_code() -> None:
    """Guard against a vacuous pass: the walk finds the packages' modules and their imports."""
    mods = _modules()
    assert {"runners.run", "models.atrank", "datasets.split"} <= set(mods)
    assert any(m.startswith("datasets") for m in _imports(mods["runners.run"]))
