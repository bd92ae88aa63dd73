"""Shared fixtures and the test tiers. The repo root goes first on sys.path so `datasets` is ours, never Hugging
Face's.

Tiers (markers registered in pyproject.toml; each test is in exactly one):
- slow: marked by hand (long trainings, long CLI runs); only with `python -m pytest -m slow`;
- e2e: the rest of the tests that go through an entry point: the CLI (tests.runners.conftest.run_cli, or any
  subprocess), Hydra (compose) or the main job (runners.run.run), in the test function, a fixture it uses or a
  function of the test's module that it calls (found by `reaches_entry_point`);
- unit: everything else (fast, in-process, no CLI).
`python -m pytest` runs unit and e2e (`-m "not slow"`); `-m unit` / `-m e2e` run one tier.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO_ROOT):
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = Path(os.environ.get("SEQREC_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (set SEQREC_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def restore_mlflow_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri (called by tests and by runners.run.run in-process) changes a process-wide setting
    and exports $MLFLOW_TRACKING_URI, which every later subprocess inherits: each test gets both back as they were."""
    from mlflow.tracking._tracking_service import utils  # where mlflow keeps the URI set in this process

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)
    if "MLFLOW_TRACKING_URI" in os.environ:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", os.environ["MLFLOW_TRACKING_URI"])
    else:  # recorded as unset (setenv, then delenv), so teardown removes a value the test leaves behind
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
        monkeypatch.delenv("MLFLOW_TRACKING_URI")


# The same entry points imported inside a function: {module: names imported from it (empty: the module itself)}
LOCAL_ENTRY_POINTS = {"runners.run": {"run"}, "tests.runners.conftest": {"compose", "run_cli", "isolated_env"},
                      "hydra": {"compose", "initialize_config_dir"}, "subprocess": set()}


def entry_points() -> tuple[object, ...]:
    """The objects whose use makes a test e2e (imported here, after sys.path is set)."""
    import hydra

    from runners.run import run
    from tests.runners.conftest import compose, isolated_env, run_cli

    return run, compose, isolated_env, run_cli, subprocess, hydra.compose, hydra.initialize_config_dir


def imports_entry_point(names: set[str]) -> bool:
    """Whether a code object's names show a function-level import of an entry point (LOCAL_ENTRY_POINTS)."""
    return any(module in names and (not wanted or names & wanted) for module, wanted in LOCAL_ENTRY_POINTS.items())


def reaches_entry_point(func: object, targets: tuple[object, ...], seen: set[int]) -> bool:
    """Whether `func`'s code (its nested functions included) names one of `targets`, directly or through a
    function defined in its own module."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None or id(code) in seen:
        return False
    seen.add(id(code))
    names, codes = set(), [code]
    while codes:
        c = codes.pop()
        names |= set(c.co_names)
        codes += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    if imports_entry_point(names):
        return True
    module_globals = getattr(func, "__globals__", {})
    for name in names:
        obj = module_globals.get(name)
        if any(obj is t for t in targets):
            return True
        if (isinstance(obj, types.FunctionType) and obj.__module__ == func.__module__
                and reaches_entry_point(obj, targets, seen)):
            return True
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test not marked slow is marked e2e or unit (module docstring)."""
    targets = entry_points()
    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("e2e") or item.get_closest_marker("unit"):
            continue
        funcs = [getattr(item, "function", None)]
        info = getattr(item, "_fixtureinfo", None)
        if info is not None:
            funcs += [defs[-1].func for defs in info.name2fixturedefs.values() if defs]
        seen: set[int] = set()
        e2e = any(f is not None and reaches_entry_point(f, targets, seen) for f in funcs)
        item.add_marker(pytest.mark.e2e if e2e else pytest.mark.unit)
