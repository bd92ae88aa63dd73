"""Config translation (runners/config.py): the optimiser settings a recipe asks for reach the optimiser."""
from __future__ import annotations

import torch

from models.registry import get_model
from runners.config import model_params, train_settings
from runners.step.optim import prepare_optimizer
from tests.models.helpers import shape_kwargs
from tests.runners.conftest import compose


def test_attrec_reference_starts_adagrad_at_the_authors_accumulator():
    for overrides, expected in ((["model=attrec"], 0.0), (["model=attrec", "experiment=reference"], 0.05)):
        cfg = compose(overrides)
        s = train_settings(cfg, None)
        assert s.initial_accumulator == expected
        model = get_model("attrec")(**shape_kwargs(), **model_params(cfg))
        opt, _ = prepare_optimizer(model, s.optimizer, s.lr, s.weight_decay, s.sparse_grad, s.initial_accumulator)
        state = opt.state[model.W.weight]["sum"]
        assert torch.all(state == expected), overrides


def test_frozen_parameters_are_not_optimised_or_clipped():
    cfg = compose(["model=bilstm", "experiment=reference"])
    model = get_model("bilstm")(**shape_kwargs(), **model_params(cfg))
    s = train_settings(cfg, None)
    opt, params = prepare_optimizer(model, s.optimizer, s.lr, s.weight_decay, s.sparse_grad)
    frozen = {id(model.lstm.bias_hh_l0), id(model.lstm.bias_hh_l0_reverse)}
    assert not frozen & {id(p) for p in params}
    assert not frozen & {id(p) for g in opt.param_groups for p in g["params"]}
    assert len(params) == sum(1 for p in model.parameters()) - 2
