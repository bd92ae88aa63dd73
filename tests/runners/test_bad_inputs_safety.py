"""Safety: a checkpoint never runs code (verified before loading, loaded with weights_only), names that become paths
are safe slugs or refused up front, and names reach reports escaped. Each refusal asserts the message (the key or
the file) and that nothing was written."""
from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from runners.train.checkpoint import MAGIC, CorruptCheckpoint, load_checkpoint, read_checkpoint, save_checkpoint
from tests.runners.conftest import compose
from tests.runners.tracking.test_reliability import job_and_hash, orphan_run

POP = ["model=pop", "dataset=sample", "dataset.options.n_users=300", "dataset.options.n_items=200",
       "trainer.max_steps=10", "trainer.eval_every=10", "trainer.num_threads=1"]


class Payload:
    """Unpickling it creates `marker` (what a planted file could do instead: run any code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def planted_bytes(marker: Path, header: bool) -> bytes:
    """A checkpoint-shaped torch.save file whose state carries the payload; with a header whose sha256 is right (a
    planter can compute it), else a bare torch.save file (the old format)."""
    buf = io.BytesIO()
    torch.save({"model": {}, "optimizer": {}, "state": {"step": 1, "x": Payload(marker)}, "rng_python": None,
                "rng_numpy": None, "rng_torch": torch.get_rng_state()}, buf)
    payload = buf.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload if header else payload


def test_the_planted_payload_is_live_when_loaded_unsafely(tmp_path):
    """The control: the same bytes do run their code under torch.load(weights_only=False)."""
    marker = tmp_path / "probe_marker"
    torch.load(io.BytesIO(planted_bytes(marker, header=False)), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("header", [False, True], ids=["old-format", "valid-sha256-header"])
def test_resuming_onto_a_planted_checkpoint_never_runs_it_and_starts_over(tmp_path, caplog, header):
    from runners.run import run

    args = [*POP, f"paths.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    _, chash = job_and_hash(tmp_path, POP)
    orphan = orphan_run(f"sqlite:///{tmp_path / 'mlflow.db'}", chash)  # so the run would resume from the file
    checkpoint = tmp_path / "cache" / "checkpoints" / f"{chash}.pt"
    checkpoint.parent.mkdir(parents=True)
    marker = tmp_path / "marker"
    checkpoint.write_bytes(planted_bytes(marker, header))
    with caplog.at_level("WARNING"):
        out = run(compose(args))
    assert not marker.exists()
    assert out["status"] == "FINISHED" and out["run_id"] != orphan  # treated as unreadable: a fresh run
    expected = "holds objects other than tensors and plain types" if header else "old-format checkpoint"
    assert f"corrupt checkpoint {checkpoint} (" in caplog.text and expected in caplog.text
    assert len(list(checkpoint.parent.glob(f"{chash}.pt.corrupt-*"))) == 1  # moved aside, never read again


def saved_model(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(2, 8)).sum().backward()
    opt.step()
    path = tmp_path / "c.pt"
    save_checkpoint(path, model, opt, {"step": 3})
    return path, model, opt


def test_a_checkpoint_whose_bytes_do_not_match_its_sha256_is_not_loaded(tmp_path):
    path, model, opt = saved_model(tmp_path)
    data = bytearray(path.read_bytes())
    header_len = data.index(b"\n") + 1
    payload = bytes(data[header_len:])
    weight = model.weight.detach().numpy().tobytes()
    at = header_len + payload.index(weight)  # a weight's bytes: torch's zip reader would load the change silently
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    assert not torch.equal(torch.load(io.BytesIO(bytes(data[header_len:])), weights_only=True)["model"]["weight"],
                           model.weight)  # the tampered payload itself loads
    fresh = torch.nn.Linear(8, 8)
    before = fresh.weight.detach().clone()
    with pytest.raises(CorruptCheckpoint, match=f"checkpoint {path} is unreadable .*sha256 of the contents is"):
        load_checkpoint(path, fresh, torch.optim.Adam(fresh.parameters()))
    assert torch.equal(fresh.weight, before) and not path.exists()


def test_rng_states_and_numpy_state_round_trip_through_weights_only(tmp_path):
    from runners.train.evaluation import EvalOutcome

    path, model, opt = saved_model(tmp_path)
    outcome = EvalOutcome(np.arange(3), np.arange(3) + 1, np.arange(3) + 2, np.float32([0.1, 0.2, 0.3]),
                          np.float32([0.3, 0.2, 0.1]))
    state = {"step": 5, "best_eval": outcome, "history": [{"step": 5, "auc": np.float64(0.75)}]}
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(path, model, opt, state)
    draws = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    back = load_checkpoint(path, model, opt)
    assert (random.random(), np.random.rand()) == draws[:2] and torch.equal(torch.rand(1), draws[2])
    assert back["history"] == [{"step": 5, "auc": 0.75}] and back["step"] == 5
    assert all(np.array_equal(getattr(back["best_eval"], k), getattr(outcome, k)) and
               getattr(back["best_eval"], k).dtype == getattr(outcome, k).dtype for k in ("user", "score_pos"))
    assert read_checkpoint(path)["optimizer"]["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_a_run_stopped_at_a_checkpoint_and_resumed_matches_an_uninterrupted_one(tmp_path):
    """SASRec (Adam, dropout, sampled negatives): 20 steps, then on to 40 from the checkpoint = 40 in one go."""
    from datasets.batching import eval_rows
    from datasets.load import load_dataset
    from datasets.split import load_split
    from models.registry import get_model
    from runners.train.evaluation import TestSetGuard
    from runners.train.runtime import seed_everything
    from runners.step.settings import TrainSettings
    from runners.train.trainer import train

    table = load_dataset("tiny", "sample", tmp_path, tmp_path / "cache",
                         {"n_users": 300, "n_items": 200, "n_categories": 10, "seed": 0})
    split = load_split(table, tmp_path / "cache", "paper", 1234)

    def trained(max_steps: int, checkpoint: Path):
        seed_everything(0)
        model = get_model("sasrec")(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                                    item_category=table.item_category, dim=16)
        settings = TrainSettings(optimizer="adam", lr=1e-3, batch_size=32, epochs=100, max_steps=max_steps,
                                 eval_every=10, seed=0, checkpoint_path=str(checkpoint), checkpoint_every=10)
        return model, train(model, table, split, settings, TestSetGuard(eval_rows(table, split, "test"), None))

    whole_model, whole = trained(40, tmp_path / "whole.pt")
    trained(20, tmp_path / "parts.pt")
    resumed_model, resumed = trained(40, tmp_path / "parts.pt")
    assert (resumed.steps, resumed.best_step, resumed.best_score) == (whole.steps, whole.best_step, whole.best_score)
    assert [h["test_auc"] for h in resumed.history] == [h["test_auc"] for h in whole.history]
    assert all(torch.equal(a, b) for a, b in zip(whole_model.state_dict().values(),
                                                 resumed_model.state_dict().values()))


BAD_NAMES = ["x/y", "x/../../../elsewhere", "..", "../up", "has space", ".hidden", "a..b", "**bold**",
             "<b>x</b>", "[x](http://e)"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_unsafe_dataset_name_is_refused_before_anything_is_written(tmp_path, name):
    from runners.run import run

    cfg = compose(["model=pop", "dataset=sample", f"dataset.name='{name}'", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    with pytest.raises(ValueError, match="letters, digits") as err:
        run(cfg)
    assert f"dataset.name={name!r}" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no cache entry, no mlflow.db


@pytest.mark.parametrize("key", ["model.name", "protocol.name"])
def test_other_names_that_become_paths_are_checked_too(key):
    from runners.config import check_config

    with pytest.raises(ValueError, match=f"{key}='a/b' cannot be used in file and folder names"):
        check_config(compose(["model=pop", "dataset=sample", f"{key}=a/b"]))


def test_the_command_refuses_a_path_in_dataset_name_before_hydra_makes_a_folder(tmp_path):
    from tests.runners.conftest import isolated_env, run_cli

    work = tmp_path / "work"
    work.mkdir()
    res = run_cli(["model=pop", "dataset=sample", "dataset.name=x/../../../elsewhere"], isolated_env(tmp_path), work)
    assert res.returncode == 1 and "dataset.name='x/../../../elsewhere' cannot be used" in res.stderr, res.stderr
    assert not (work / "outputs").exists() and not (tmp_path / "cache").exists()
    assert not list(tmp_path.parent.glob("elsewhere*"))


def test_the_write_time_check_refuses_a_cache_outside_its_root(tmp_path):
    from datasets.names import under

    assert under(tmp_path, tmp_path / "a" / "b.npz", "table cache") == tmp_path / "a" / "b.npz"
    with pytest.raises(ValueError, match="table cache .* outside"):
        under(tmp_path / "cache", tmp_path / "cache" / "table_x/../../../y.npz", "table cache")


def test_names_and_tags_are_escaped_in_the_report():
    from reports.render import render_report
    from reports.runs import RunFilter, normalize_runs, pick_runs

    hostile = {"dataset": "<img src=x onerror=alert(1)>", "model": "**pwn**|x", "label": "[click](http://e)"}
    runs = normalize_runs(pd.DataFrame([{
        "run_id": "run00", "experiment_id": "1", "status": "FAILED",
        "start_time": pd.Timestamp("2026-01-01", tz="UTC"), "tags.model": hostile["model"],
        "tags.dataset": hostile["dataset"], "tags.protocol": "paper", "tags.protocol_label": hostile["label"],
        "tags.seed": "0", "tags.recipe": "default", "tags.paper_column": "", "tags.error": "<script>x</script>",
        "tags.mlflow.runName": "<i>r</i>", "params.trainer.max_steps": "10", "params.trainer.eval_every": "5"}]),
        {"1": "e`<b>x</b>`"})
    md = render_report(pick_runs(runs), runs=runs, title="t", metric="test_auc", tracking_uri="sqlite:///x.db",
                       flt=RunFilter(), column_stats_by_key={}, figures={}, command="report", n_boot=10)
    for raw in [*hostile.values(), "<script>", "<i>r</i>"]:
        assert raw not in md, raw
    assert "Experiments: `` e`<b>x</b>` ``." in md  # a code span shows HTML as text; its fence outlasts the name's
    assert "&lt;img src=x onerror=alert(1)&gt;" in md and r"\*\*pwn\*\*\|x" in md and r"\[click\](http://e)" in md
    assert "&lt;script&gt;x&lt;/script&gt;" in md
