"""The two gates of a run (runners/checks.py). Before training: a setting that would train no step, build an empty
layer, give no history, evaluate no user or count below zero, and a key its config group does not declare, stop
the run before the store, the data and any cache, with the key and what was expected. Before FINISHED: a run with
no step, no trainable parameter or a non-finite headline metric is FAILED."""
from __future__ import annotations

import inspect
import math
from pathlib import Path

import mlflow
import pytest
from hydra.errors import ConfigCompositionException

from models.registry import available_models, get_model
from runners.checks import (DATA_ARGS, OPTIONAL_LAYERS, ROUNDS_PARAMS, SAMPLE_PARAMS, SIZE_LISTS, SIZE_PARAMS,
                            check_outcome, check_parameters)
from runners.config import check_config
from tests.runners.conftest import REPO_ROOT, compose

BAD = [  # (overrides, what the message says: the key and what was expected)
    (["model=sasrec", "model.params.dim=0"], "model.params.dim must be an integer >= 1"),
    (["model=sasrec", "model.params.n_heads=0"], "model.params.n_heads must be an integer >= 1"),
    (["model=sasrec", "model.params.n_blocks=0"], "model.params.n_blocks must be an integer >= 1"),
    (["model=sasrec", "model.params.max_len=0"], "model.params.max_len must be an integer >= 1"),
    (["model=sasrec", "model.params.neg_rounds=-1"], "model.params.neg_rounds must be an integer >= 0"),
    (["model=atrank", "model.params.hidden=0"], "model.params.hidden must be an integer >= 1"),
    (["model=atrank", "model.params.n_heads=-8"],
     "model.params.n_heads must be an integer >= 1 (a layer size), got -8"),
    (["model=atrank", "model.params.time_slots=0"], "model.params.time_slots must be an integer >= 1"),
    (["model=atrank", "experiment=reference", "model.reference_params.time_slots=0"],
     "model.params.time_slots must be an integer >= 1"),
    (["model=bpr", "model.params.item_dim=0"], "model.params.item_dim must be an integer >= 1"),
    (["model=bpr", "model.params.cat_dim=-1"], "model.params.cat_dim must be an integer >= 1 (a layer size), got -1"),
    (["model=bilstm", "model.params.hidden=0"], "model.params.hidden must be an integer >= 1"),
    (["model=bilstm_att", "model.params.item_dim=0"], "model.params.item_dim must be an integer >= 1"),
    (["model=cnn", "model.params.n_filters=0"], "model.params.n_filters must be an integer >= 1"),
    (["model=cnn", "model.params.max_width=0"], "model.params.max_width must be an integer >= 1"),
    (["model=din", "model.params.att_hidden=[]"], "model.params.att_hidden must be one or more layer sizes"),
    (["model=din", "model.params.mlp_hidden=[200,0]"], "model.params.mlp_hidden must be a list of layer sizes"),
    (["model=gru4rec", "model.params.n_layers=0"], "model.params.n_layers must be an integer >= 1"),
    (["model=gru4rec", "model.params.dropout=1.0"], "model.params.dropout must be a rate in [0, 1)"),
    (["model=attrec", "model.params.dim=0"], "model.params.dim must be an integer >= 1"),
    (["model=attrec", "model.params.L=0"], "model.params.L must be an integer >= 1"),
    (["model=attrec", "model.params.T=-3"], "model.params.T must be an integer >= 1"),
    (["model=bert4rec", "model.params.max_predictions=0"], "model.params.max_predictions must be an integer >= 1"),
    (["model=bert4rec", "model.params.attn_dropout=1.0"], "model.params.attn_dropout must be a rate in [0, 1)"),
    (["model=caser", "model.params.n_neg=0"], "model.params.n_neg must be an integer >= 1"),
    (["model=caser", "model.params.n_v=-1"],
     "model.params.n_v must be an integer >= 0 (0 = no vertical convolution), got -1"),
    (["trainer.patience=0"], "trainer.patience must be an integer >= 1 or null (null = never stop early), got 0"),
    (["trainer.patience=-3"], "trainer.patience must be an integer >= 1 or null"),
    (["model.max_len=-1"], "model.max_len must be an integer >= 1 or null (null = the whole history), got -1"),
    (["model.max_len=0"], "model.max_len must be an integer >= 1 or null (null = the whole history), got 0"),
    (["seed=-1"], "seed must be an integer >= 0, got -1"),
    (["trainer.eval_every=-1"], "trainer.eval_every must be >= 0, got -1"),
    (["trainer.eval_batch_size=0"], "trainer.eval_batch_size must be an integer >= 1, got 0"),
    (["trainer.eval_batch_size=-1024"], "trainer.eval_batch_size must be an integer >= 1"),
    (["trainer.checkpoint_every=-1"], "trainer.checkpoint_every must be an integer >= 0"),
    (["trainer.num_threads=0"], "trainer.num_threads must be an integer >= 1 or null"),
    (["trainer.processes=0"], "trainer.processes must be an integer >= 1"),
    (["trainer.debug_nan_at_step=0"], "trainer.debug_nan_at_step must be an integer >= 1 or null"),
    (["trainer.max_steps=-5"], "trainer.max_steps must be >= 1 or null"),
    (["trainer.epochs=-1"], "must be >= 1, got -1"),
    (["model.lr_decay_step=0"], "model.lr_decay_step must be an integer >= 1 or null"),
    (["protocol=loo_val", "protocol.eval_negatives=-1"], "protocol.eval_negatives must be an integer >= 0"),
    (["protocol.ties=first"], "protocol.ties must be one of pessimistic, random, optimistic, got 'first'"),
    (["protocol=loo_val", "protocol.full_ranking_history=drop"],
     "protocol.full_ranking_history must be one of exclude, zero, got 'drop'"),
    (["protocol=loo_val", "protocol.full_ranking_users=-2"],
     "protocol.full_ranking_users must be an integer >= -1 (-1 = all users, 0 = none), got -2"),
    (["protocol=loo_val", "protocol.test_access_limit=0"], "protocol.test_access_limit must be an integer >= 1"),
    (["protocol.split_seed=-1"], "protocol.split_seed must be an integer >= 0"),
    (["protocol.select_on=train"], "protocol.select_on must be one of test, valid, got 'train'"),
    (["protocol.select_metric=mrr"], "protocol.select_metric must be one of auc, sampled_mrr, sampled_hr_5"),
    (["protocol=optimism", "protocol.select_metric=sampled_mrr"],
     "protocol.select_metric=sampled_mrr scores against sampled negatives, but protocol.eval_negatives=0"),
    (["protocol=paper", "protocol.select_metric=full_ndcg_20"],
     "protocol.select_metric=full_ndcg_20 ranks the whole catalogue for the selection users, but "
     "protocol.full_ranking_users=0"),
    (["+protocol.eval_negative=50"], "unknown protocol setting(s) ['eval_negative'] (protocol.eval_negative: "
                                     "did you mean protocol.eval_negatives?)"),
    (["+trainer.max_step=200"], "did you mean trainer.max_steps?"),
    (["++trainer.patiense=3"], "did you mean trainer.patience?"),
    (["model=din", "+model.params.att_hiden=[8]"], "did you mean model.params.att_hidden?"),
    (["model=atrank", "+model.reference_params.time_slot=12"], "did you mean model.reference_params.time_slots?"),
    (["+model.epoch=3"], "did you mean model.epochs?"),
    (["+dataset.options.n_user=300"], "did you mean dataset.options.n_users?"),
    (["+dataset.nam=x"], "did you mean dataset.name?"),
    (["+paths.cache=x"], "did you mean paths.cache_dir?"),
    (["+mlflow.experimnt=x"], "did you mean mlflow.experiment?"),
    (["+sed=1"], "unknown top-level setting(s) ['sed'] (sed: did you mean seed?)"),
    (["dataset.kind=nope"], "dataset.kind must be one of"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_setting_stops_before_the_store_data_and_caches(overrides, message, tmp_path):
    from runners.run import run

    cache = tmp_path / "cache"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose([*overrides, f"paths.cache_dir={cache}", f"mlflow.tracking_uri={uri}"])
    with pytest.raises(ValueError) as err:
        run(cfg)
    assert message in str(err.value)
    assert not (tmp_path / "mlflow.db").exists()  # no store, so no run (FINISHED or other)
    assert not cache.exists()  # no table, split or checkpoint cache


@pytest.mark.parametrize("override,key", [
    ("protocol.eval_negative=50", "eval_negative"), ("trainer.max_step=200", "max_step"),
    ("model.params.hiden=3", "hiden"), ("dataset.options.n_user=300", "n_user"), ("paths.cache=x", "cache"),
    ("sed=1", "sed")])
def test_unknown_key_without_plus_is_refused_by_hydra_naming_it(override, key):
    with pytest.raises(ConfigCompositionException) as err:
        compose(["model=sasrec", override])
    assert f"'{override.split('=')[0]}'" in str(err.value) and key in str(err.value)


@pytest.mark.slow  # a new interpreter (~30 s on a loaded 2-core machine); test_settings_checks keeps a default one
def test_bad_setting_exits_1_from_the_command_line_and_logs_nothing(tmp_path):
    from tests.runners.conftest import isolated_env, run_cli

    env = isolated_env(tmp_path)
    res = run_cli(["model=bpr", "dataset=sample", "+protocol.eval_negative=50"], env, tmp_path)
    assert res.returncode == 1 and "did you mean protocol.eval_negatives?" in res.stderr, res.stderr[-2000:]
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])  # the sweep callbacks create the store, no run
    assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert not (tmp_path / "cache").exists()


TARGET = {"custom": ["model.target=examples.my_model:MeanOfHistory"]}  # model=custom needs its class
CONFIGS = [[f"model={p.stem}", *TARGET.get(p.stem, [])]
           for p in sorted((REPO_ROOT / "conf" / "model").glob("*.yaml"))] + [
    [f"model={p.stem}", "experiment=reference", *TARGET.get(p.stem, [])]
    for p in sorted((REPO_ROOT / "conf" / "model").glob("*.yaml"))] + [
    [f"experiment={p.stem}"] for p in sorted((REPO_ROOT / "conf" / "experiment").glob("*.yaml"))] + [
    [f"protocol={p.stem}"] for p in sorted((REPO_ROOT / "conf" / "protocol").glob("*.yaml"))] + [
    [f"dataset={p.stem}"] + (["dataset.options.path=mine.csv"] if p.stem == "interactions" else [])
    for p in sorted((REPO_ROOT / "conf" / "dataset").glob("*.yaml"))]


def test_every_shipped_config_composes_and_passes_the_gate():
    for overrides in CONFIGS:
        check_config(compose(overrides))


def test_every_integer_argument_of_every_model_is_a_checked_size():
    """A model added with a new layer size must have it checked (runners/checks.py SIZE_PARAMS / SIZE_LISTS)."""
    unchecked = {}
    for name in available_models():
        for arg, p in inspect.signature(get_model(name)).parameters.items():
            checked = arg in DATA_ARGS | SIZE_PARAMS | SIZE_LISTS | ROUNDS_PARAMS | SAMPLE_PARAMS | set(OPTIONAL_LAYERS)
            if "int" in str(p.annotation) and not checked:
                unchecked.setdefault(name, []).append(arg)
    assert not unchecked


def test_the_outcome_gate_in_plain_values():
    check_outcome(10, 1000, False, {"test_auc": 0.7})
    check_outcome(3, 1, True, {"test_auc": 0.6})  # POP: counts, its anchor parameter is no model
    for args, said in [((0, 1000, False, {"test_auc": 0.7}), "trained 0 optimiser steps"),
                       ((10, 0, False, {"test_auc": 0.7}), "0 trainable parameters"),
                       ((10, 1000, False, {"test_auc": math.nan}), "test_auc = nan is not a finite number")]:
        with pytest.raises(RuntimeError, match="the run is FAILED"):
            check_outcome(*args)
        with pytest.raises(RuntimeError) as err:
            check_outcome(*args)
        assert said in str(err.value)


def test_a_zero_sized_layer_is_refused_before_training_unless_gradient_free():
    import torch

    model = torch.nn.Sequential(torch.nn.Embedding(5, 0), torch.nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match=r"zero-sized: 0.weight \(5, 0\)"):
        check_parameters(model, gradient_free=False)
    assert check_parameters(torch.nn.Linear(3, 2), gradient_free=False) == 8
    assert check_parameters(torch.nn.Linear(3, 2).requires_grad_(False), gradient_free=True) == 0


RUN = ["model=bpr", "dataset=sample", "dataset.options.n_users=600", "dataset.options.n_items=300",
       "trainer.max_steps=20", "trainer.eval_every=10", "trainer.num_threads=1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str]:
    """One data cache and one MLflow store for the module's runs (each test logs to its own experiment)."""
    root = tmp_path_factory.mktemp("gates")
    return root / "cache", f"sqlite:///{root / 'mlflow.db'}"


def failed_run(store: tuple[Path, str], experiment: str) -> tuple[str, mlflow.entities.Run]:
    """run() of RUN raises; returns its message and the experiment's one MLflow run, which is FAILED with it."""
    from runners.run import run

    cache, uri = store
    with pytest.raises(RuntimeError) as err:
        run(compose([*RUN, f"paths.cache_dir={cache}", f"mlflow.tracking_uri={uri}",
                     f"mlflow.experiment={experiment}"]))
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "the run is FAILED" in runs[0].data.tags["error"] and "test_auc" not in runs[0].data.metrics
    assert not list((cache / "checkpoints").glob("*.pt"))  # nothing to resume a meaningless run from
    return str(err.value), runs[0]


def test_a_run_that_takes_no_step_is_failed_not_finished(store, monkeypatch):
    from runners.train.trainer import TrainingLoop

    monkeypatch.setattr(TrainingLoop, "patience_ran_out", lambda self: True)  # the patience=0 path
    message, _ = failed_run(store, "no_step")
    assert "it trained 0 optimiser steps" in message


def test_a_non_finite_headline_metric_is_failed_not_finished(store, monkeypatch):
    import runners.run

    real = runners.run.final_metrics

    def nan_auc(*args, **kwargs):
        final, test = real(*args, **kwargs)
        return {**final, "test_auc": math.nan}, test

    monkeypatch.setattr(runners.run, "final_metrics", nan_auc)
    message, _ = failed_run(store, "nan_auc")
    assert "test_auc = nan is not a finite number" in message


def test_a_model_without_trainable_parameters_is_failed_before_training(store, monkeypatch):
    import runners.run

    real = runners.run.build_model
    frozen = lambda job, table: real(job, table).requires_grad_(False)  # noqa: E731
    monkeypatch.setattr(runners.run, "build_model", frozen)
    message, failed = failed_run(store, "frozen")
    assert "the model has 0 trainable parameters" in message
    assert not [k for k in failed.data.metrics if k.startswith("curve/")]  # stopped before the first step
