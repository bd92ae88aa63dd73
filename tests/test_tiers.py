"""The tier rule of tests/conftest.py: a test that reaches an entry point (directly, through a helper of its
module, or by a function-level import) is e2e; any other is unit."""
from __future__ import annotations

import pytest

from tests.conftest import entry_points, reaches_entry_point
from tests.runners.conftest import compose


def _helper() -> object:
    return compose(["model=bpr"])


def _through_helper() -> object:
    return _helper()


def _local_import() -> None:
    from runners.run import run  # noqa: F401


def _plain() -> int:
    return len([1, 2])


@pytest.mark.unit  # by the rule it would be e2e (its helpers name compose), but it calls none of them
def test_entry_points_reached_directly_through_a_helper_or_a_local_import_are_e2e() -> None:
    targets = entry_points()
    for func in (_helper, _through_helper, _local_import):
        assert reaches_entry_point(func, targets, set()), func.__name__
    assert not reaches_entry_point(_plain, targets, set())


def test_a_test_that_reaches_no_entry_point_is_unit(request) -> None:
    assert request.node.get_closest_marker("unit") and not request.node.get_closest_marker("e2e")
