"""One home per default: a model constructor's keyword defaults equal its conf/model/<name>.yaml params (the yaml
is what runs; a constructor default that drifted would silently change tests and direct users of the class)."""
from __future__ import annotations

import inspect

import pytest
import yaml

from models.registry import available_models, get_model
from tests.models.helpers import CONF


@pytest.mark.parametrize("name", available_models())
def test_constructor_defaults_equal_the_yaml(name):
    params = yaml.safe_load((CONF / f"{name}.yaml").read_text()).get("params") or {}
    signature = inspect.signature(get_model(name).__init__)
    unknown = sorted(set(params) - set(signature.parameters))
    assert not unknown, f"{name}.yaml sets {unknown}, which {name}'s constructor does not take"
    drift = {k: (p.default, params[k]) for k, p in signature.parameters.items()
             if k in params and p.default is not inspect.Parameter.empty
             and (list(p.default) if isinstance(p.default, tuple) else p.default) != params[k]}
    assert not drift, f"{name}: constructor default vs yaml: {drift}"
