"""The codebase's shape, held by tests: small files and functions, and import arrows that point one way.

Limits: no file in runners/, reports/ or datasets/ (subpackages included) over 400 lines; no function over 80 lines
in the project's packages; no import cycle between the project's modules; reports/ never imports runners/ (the
report stage reads MLflow, never the training code); no calendar date in any line of code or config (years alone,
as in a citation, are not dates).

runners/ rooms: the subpackages in ROOMS, lowest first, each with a docstring saying what lives there. A room
imports only rooms before it (and itself), never a runners/ top-level module except those TOP_ALLOWED names; the
top-level modules (entry points, config) may import anything. tests/runners/ mirrors the rooms.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "datasets", "runners", "reports")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
ROOMS = ("step", "train", "parallel", "tracking", "benchkit")  # runners/ subpackages, lowest first
TOP_ALLOWED = {"benchkit": {"runners.config"}}  # top-level modules a room may import (the bench recipes' config)
_MONTH = "January|February|March|April|May|June|July|August|September|October|November|December"
CALENDAR_DATE = re.compile(  # 2026-12-06 or 2026-12; December 6 or Dec. 6; 6 December; December 2026; 12 6, 2013; 12/6/26
    rf"\b(19|20)\d\d-(0[1-9]|1[0-2])\b|\b({_MONTH}|(Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.?) "
    rf"\d{{1,2}}(st|nd|rd|th)?\b|\b\d{{1,2}} ({_MONTH})\b|\b({_MONTH}) (19|20)\d\d\b|\b\d{{1,2}} \d{{1,2}}, (19|20)\d\d\b"
    rf"|\b\d{{1,2}}/\d{{1,2}}/(19|20)?\d\d\b")


def _modules() -> dict[str, Path]:
    """Every module of the project's packages and their subpackages, by dotted name (no __init__)."""
    found = {}
    for package in PACKAGES:
        for f in sorted((REPO / package).rglob("*.py")):
            parts = f.relative_to(REPO).with_suffix("").parts
            if f.stem != "__init__" and "__pycache__" not in parts:
                found[".".join(parts)] = f
    return found


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
    big = {str(f.relative_to(REPO)): n for f in (REPO / package).rglob("*.py")
           if (n := len(f.read_text().splitlines())) > MAX_FILE_LINES}
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


def _room(module: str) -> str | None:
    """The runners/ room of a dotted module name (None: a top-level module or outside runners/)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "runners" and len(parts) > 2 else None


@pytest.mark.parametrize("room", ROOMS)
def test_rooms_exist_with_a_docstring(room: str) -> None:
    init = REPO / "runners" / room / "__init__.py"
    assert init.is_file(), f"runners/{room}/ needs an __init__.py (ROOMS in {Path(__file__).name})"
    assert ast.get_docstring(_tree(init)), f"{init.relative_to(REPO)}: the docstring says what lives there"
    assert any(m.startswith(f"runners.{room}.") for m in _modules()), f"runners/{room}/ holds no module"


def test_every_runners_subpackage_is_a_room() -> None:
    found = {d.name for d in (REPO / "runners").iterdir() if d.is_dir() and d.name != "__pycache__"}
    assert found == set(ROOMS), f"runners/ subpackages {sorted(found)} != ROOMS {sorted(ROOMS)}"


def test_rooms_import_only_rooms_below() -> None:
    bad = []
    for name, path in _modules().items():
        if (room := _room(name)) is None:
            continue
        for imported in sorted(_imports(path)):
            if not imported.startswith("runners."):
                continue
            other = _room(imported)
            if other is None and imported not in TOP_ALLOWED.get(room, set()):
                bad.append(f"{name} imports the top-level {imported}")
            elif other is not None and ROOMS.index(other) > ROOMS.index(room):
                bad.append(f"{name} imports {imported} (runners/{other}/ is above runners/{room}/)")
    assert not bad, "import arrows against the room order " + " <- ".join(ROOMS) + ":\n" + "\n".join(bad)


def test_every_package_is_installed() -> None:
    """pyproject.toml's explicit package list names every package and subpackage (`pip install .` ships the rooms)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(i.parent.relative_to(REPO).parts) for p in PACKAGES for i in (REPO / p).rglob("__init__.py")
             if "__pycache__" not in i.parts}
    assert found <= listed, f"pyproject.toml [tool.setuptools] packages lacks {sorted(found - listed)}"


@pytest.mark.parametrize("room", ROOMS)
def test_tests_mirror_the_rooms(room: str) -> None:
    folder = REPO / "tests" / "runners" / room
    assert (folder / "__init__.py").is_file(), f"tests/runners/{room}/__init__.py missing (tests mirror runners/)"
    assert list(folder.glob("test_*.py")), f"tests/runners/{room}/ holds no test file"


def test_the_checks_see_the_code() -> None:
    """Guard against a vacuous pass: the walk finds the packages' modules, the rooms' modules and their imports."""
    mods = _modules()
    assert {"runners.run", "runners.train.trainer", "models.atrank", "datasets.split"} <= set(mods)
    assert any(m.startswith("datasets") for m in _imports(mods["runners.run"]))
    assert "runners.step.optim" in _imports(mods["runners.train.trainer"])


def _code_and_config() -> list[Path]:
    """models/, datasets/, runners/ (code and data-file manifests), reports/*.py and conf/."""
    found = [f for d in ("models", "datasets", "runners", "conf") for f in (REPO / d).rglob("*")
             if f.suffix in (".py", ".yaml", ".json") and "__pycache__" not in f.parts]
    return sorted(found + list((REPO / "reports").glob("*.py")))


def test_no_calendar_date_in_code_or_config() -> None:
    dated = [f"{f.relative_to(REPO)}:{i}: {line.strip()[:100]}" for f in _code_and_config()
             for i, line in enumerate(f.read_text().splitlines(), 1) if CALENDAR_DATE.search(line)]
    assert not dated, "calendar dates (keep them in git history, not in code or config):\n" + "\n".join(dated)


@pytest.mark.parametrize("text", ["(64 until 2026-12-06:", "# since Dec. 6", "6 December", "in March 2026",
                                  '"06 2, 2013"', "12/06/2026"])
def test_calendar_dates_are_recognised(text: str) -> None:
    assert CALENDAR_DATE.search(text)


@pytest.mark.parametrize("text", ["Zhou et al., AAAI 2018", "n_boot: int = 2000", "the Amazon 2014 files",
                                  "max_steps = '2000'", "may 3 workers", "1_300_000_000"])
def test_years_and_numbers_are_not_dates(text: str) -> None:
    assert not CALENDAR_DATE.search(text)
