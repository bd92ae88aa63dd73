"""Packaging: pyproject.toml declares compatible ranges (an installed torch 2.x is kept), constraints.txt pins one
known-good version of each, test tools live in the `test` extra, and the licence and citation files exist."""
from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, str]:
    pins = {}
    for n, line in enumerate((REPO / "constraints.txt").read_text().splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt, line {n}: expected 'name==version', got {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_runtime_dependencies_are_ranges_and_torch_2_x_is_kept() -> None:
    reqs = {canonicalize_name(r.name): r for r in map(Requirement, _project()["dependencies"])}
    for name, r in reqs.items():
        assert not any(s.operator in ("==", "===") for s in r.specifier), f"{name} is pinned in pyproject: {r}"
        assert any(s.operator == ">=" for s in r.specifier), f"{name} has no lower bound: {r}"
    assert {"2.3.0", "2.5.0", "2.13.0"} <= set(reqs["torch"].specifier.filter(["2.2.2", "2.3.0", "2.5.0", "2.13.0",
                                                                                   "3.0.0"]))
    assert not set(reqs["torch"].specifier.filter(["2.2.2", "3.0.0"]))
    assert "pytest" not in reqs


def test_the_test_extra_holds_pytest() -> None:
    assert "pytest" in {canonicalize_name(Requirement(r).name) for r in _project()["optional-dependencies"]["test"]}


def test_constraints_pin_every_declared_dependency_inside_its_range() -> None:
    pins = _pins()
    project = _project()
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        r = Requirement(text)
        name = canonicalize_name(r.name)
        assert name in pins, f"constraints.txt has no pin for {name}"
        assert r.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {r.specifier}"


def test_licence_and_citation() -> None:
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert _project()["license"] == "MIT"
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    assert any("ATRank" in ref["title"] for ref in cff["references"])
