"""The report's honest sections: the optimism diagnostic, paper vs loo_val, and rank agreement across metrics.
Pure functions on hand-built run tables, plus one pass through the CLI on a tiny MLflow store filled by hand (no
training)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports.agreement import RANK_METRICS, metric_agreement, metric_agreement_markdown
from reports.cells import wide_cells
from reports.labels import DASH
from reports.protocols import optimism_cells, selected_steps, selection_comparison
from reports.render import render_report
from reports.runs import RunFilter, load_curves, normalize_runs, optimism_as_loo_val, pick_runs, query_runs

LABELS = {"paper": "test-set selection (as in the paper)", "loo_val": "validation selection (test read once)",
          "optimism": "diagnostic: test tracked along training (not a headline number)"}
PROTO_PARAMS = {"paper": ("0", "0"), "loo_val": ("100", "1000"), "optimism": ("0", "0")}


def fake_runs(rows: list[tuple]) -> pd.DataFrame:
    """rows: (model, protocol, seed, status, {metric: value}); dataset clothing_seq."""
    recs = []
    for i, (model, protocol, seed, status, metrics) in enumerate(rows):
        negs, users = PROTO_PARAMS[protocol]
        recs.append({
            "run_id": f"run{i:02d}", "experiment_id": "1", "status": status,
            "start_time": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=i),
            "tags.model": model, "tags.dataset": "clothing_seq", "tags.protocol": protocol,
            "tags.protocol_label": LABELS[protocol], "tags.seed": str(seed), "tags.recipe": "default",
            "tags.paper_column": "Clothe.", "tags.mlflow.runName": f"{model}/clothing_seq/seed{seed}",
            "params.trainer.max_steps": "2000", "params.trainer.eval_every": "500",
            "params.protocol.eval_negatives": negs, "params.protocol.eval_negatives_kind": "uniform",
            "params.protocol.full_ranking_users": users,
            "metrics.steps": 2000.0 if status == "FINISHED" else np.nan,
            **{f"metrics.{k}": v for k, v in metrics.items()}})
    return normalize_runs(pd.DataFrame(recs), {"1": "clothing_seq/x"})


def row(md: str, label: str, after: str = "") -> list[str]:
    """The first table row starting with `| label |` after the text `after`."""
    text = md[md.index(after):] if after else md
    line = next(x for x in text.splitlines() if x.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def opt(best: float, sel: float) -> dict:
    return {"test_auc_at_test_best": best, "test_auc": sel, "optimism": best - sel, "best_step": 1000.0}


RUNS = [
    ("bpr", "optimism", 0, "FINISHED", opt(0.70, 0.68)),
    ("bpr", "optimism", 1, "FINISHED", opt(0.72, 0.69)),
    ("atrank", "optimism", 0, "FINISHED", {"test_auc": 0.75, "best_step": 2000.0}),   # optimism not logged
    ("bpr", "paper", 0, "FINISHED", {"test_auc": 0.71}),
    ("bpr", "loo_val", 0, "FINISHED", {"test_auc": 0.68, "test_sampled_ndcg_10": 0.30, "test_full_ndcg_10": 0.010}),
    ("bpr", "loo_val", 1, "FINISHED", {"test_auc": 0.69, "test_sampled_ndcg_10": 0.32, "test_full_ndcg_10": 0.012}),
    ("atrank", "loo_val", 0, "FINISHED", {"test_auc": 0.75, "test_sampled_ndcg_10": 0.35}),  # no full ranking
    ("cnn", "loo_val", 0, "FINISHED", {"test_auc": 0.72, "test_sampled_ndcg_10": 0.33, "test_full_ndcg_10": 0.02}),
]


def render(rows: list[tuple], **kw) -> str:
    runs = fake_runs(rows)
    return render_report(pick_runs(runs), runs=runs, title="t", metric="test_auc",
                                tracking_uri="sqlite:///x.db", flt=RunFilter(), column_stats_by_key={}, figures={},
                                command="report", n_boot=10, **kw)


def test_optimism_cells_match_the_inputs():
    cells = optimism_cells(pick_runs(fake_runs(RUNS))).set_index("model")
    assert cells.loc["bpr", "test_auc_at_test_best:mean"] == pytest.approx(0.71)
    assert cells.loc["bpr", "test_auc:mean"] == pytest.approx(0.685)
    assert cells.loc["bpr", "optimism:mean"] == pytest.approx(0.025)
    assert cells.loc["bpr", "optimism:sd"] == pytest.approx(np.std([0.02, 0.03], ddof=1))
    assert cells.loc["bpr", "optimism:n"] == 2
    assert cells.loc["atrank", "optimism:n"] == 0 and np.isnan(cells.loc["atrank", "optimism:mean"])


def test_optimism_section_is_diagnostic_and_never_a_table3():
    curves = pd.DataFrame({"run_id": ["run00"] * 3, "key": "curve/test_auc", "step": [500, 1000, 1500],
                           "value": [0.66, 0.68, 0.70]})
    md = render(RUNS, curves=curves)
    headings = [x for x in md.splitlines() if x.startswith("## Table 3")]
    assert len(headings) == 2 and not any("optimism" in h for h in headings)     # paper and loo_val only
    sec = md[md.index("## Optimism of test-set selection (diagnostic)"):]
    assert sec.index("**DIAGNOSTIC, not a headline number.**") < sec.index("| BPR |")
    sd = np.std([0.02, 0.03], ddof=1)
    assert row(sec, "BPR") == ["BPR", f"0.7100 ± {np.std([0.70, 0.72], ddof=1):.4f} (n=2)",
                               f"0.6850 ± {np.std([0.68, 0.69], ddof=1):.4f} (n=2)", f"0.0250 ± {sd:.4f} (n=2)",
                               "seed 0: 1000 / 1500; seed 1: 1000 / —"]
    assert row(sec, "ATRank")[1:4] == [DASH, "0.7500 (n=1)", DASH]                # not logged: a dash, not 0
    assert "Cross-check" in sec and "equal to 4 decimals for 3 of 3 pair(s)" in sec   # bpr 0, bpr 1, atrank 0
    # the Table 3 of loo_val holds the loo_val numbers only
    loo = md[md.index("protocol `loo_val`, recipe"):md.index("## paper protocol")]
    assert row(loo, "BPR")[1].replace("*", "").startswith("0.6850")


def test_zero_optimism_at_the_last_step_is_called_unmeasurable():
    rows = [("bpr", "optimism", 0, "FINISHED", {**opt(0.7, 0.7), "best_step": 2000.0})]
    curves = pd.DataFrame({"run_id": ["run00"] * 2, "key": "curve/test_auc", "step": [1000, 2000],
                           "value": [0.6, 0.7]})
    md = render(rows, curves=curves)
    assert "No Table 3: only diagnostic runs" in md and "## Table 3" not in md
    assert "the last one" in md and "this budget cannot measure it" in md


def test_paper_vs_loo_val_side_by_side():
    cmp = selection_comparison(pick_runs(fake_runs(RUNS)))
    assert list(cmp["model"]) == ["bpr"]                     # the only model with both protocols
    assert cmp.loc[0, "diff"] == pytest.approx(0.71 - 0.685)
    md = render(RUNS)
    sec = md[md.index("## paper protocol (test-set selection) vs loo_val (validation selection)"):]
    assert row(sec, "BPR") == ["BPR", "0.7100 (n=1)", f"0.6850 ± {np.std([0.68, 0.69], ddof=1):.4f} (n=2)",
                               "+0.0250"]
    assert "## paper protocol" not in render([r for r in RUNS if r[1] != "paper"])


def test_metric_agreement_table_missing_metric_is_a_dash():
    md = render(RUNS)
    sec = md[md.index("## Rank agreement across metrics"):md.index("## Provenance")]
    loo = sec[sec.index("Protocol `loo_val`"):]
    header = row(loo, "Model")
    assert header[:5] == ["Model", "seeds", "`test_auc` (rank)", "`test_sampled_ndcg_10` (rank)",
                          "`test_full_ndcg_10` (rank)"]
    assert "`test_gauc`" not in header                         # extra metrics only when logged
    assert row(loo, "ATRank") == ["ATRank", "1", "0.7500 (1)", "0.3500 (1)", DASH]
    assert row(loo, "BPR")[4] == f"0.0110 ± {np.std([0.010, 0.012], ddof=1):.4f} (2)"
    assert "`test_full_ndcg_10` missing for ATRank" in loo
    # the paper runs logged no sampled / full metrics: said, not invented
    paper = sec[sec.index("Protocol `paper`"):sec.index("Protocol `loo_val`")]
    assert "not logged by these runs" in paper and "| BPR |" not in paper


def test_metric_agreement_rankings_ranks_and_taus():
    rows = [(m, "loo_val", 0, "FINISHED", {"test_auc": a, "test_sampled_ndcg_10": s, "test_full_ndcg_10": f})
            for m, a, s, f in [("bpr", 0.6, 0.1, 0.04), ("cnn", 0.7, 0.2, 0.02), ("atrank", 0.8, 0.3, 0.02)]]
    picked = pick_runs(fake_runs(rows))
    [e] = metric_agreement(wide_cells(picked, RANK_METRICS))
    assert e["rankings"]["test_auc"] == [["atrank"], ["cnn"], ["bpr"]]
    assert e["rankings"]["test_full_ndcg_10"] == [["bpr"], ["cnn", "atrank"]]        # exact tie grouped
    assert e["ranks"]["test_full_ndcg_10"] == {"bpr": 1, "cnn": 2, "atrank": 2}
    taus = {(t["a"], t["b"]): t for t in e["taus"]}
    assert taus[("test_auc", "test_sampled_ndcg_10")]["tau"] == pytest.approx(1.0)
    assert taus[("test_auc", "test_full_ndcg_10")]["tau"] < 0 and taus[("test_auc", "test_full_ndcg_10")]["n"] == 3
    md = metric_agreement_markdown(wide_cells(picked, RANK_METRICS), picked, "g")
    assert "- `test_full_ndcg_10` (" in md and "BPR > CNN + Max Pooling = ATRank" in md
    assert "| `test_auc` vs `test_sampled_ndcg_10` | 3 | +1.00 |" in md


def test_selected_steps_from_best_step_and_the_test_curve():
    picked = pick_runs(fake_runs(RUNS[:1]))
    curves = pd.DataFrame({"run_id": "run00", "key": ["curve/test_auc"] * 3 + ["curve/valid_auc"],
                           "step": [500, 1000, 1500, 500], "value": [0.6, 0.7, 0.7, 0.9]})
    assert selected_steps(picked, curves) == {"run00": (1000.0, 1000.0)}    # first maximum
    assert selected_steps(picked, None) == {"run00": (1000.0, None)}


def test_optimism_runs_fill_a_loo_val_table3_only_where_loo_val_has_no_run():
    rows = [r for r in RUNS if not (r[0] == "bpr" and r[1] == "loo_val" and r[2] == 1)]   # bpr seed 1: optimism only
    runs = optimism_as_loo_val(fake_runs(rows))
    copies = runs[runs["from_optimism"]]
    assert sorted(zip(copies["model"], copies["seed"])) == [("bpr", "1")]      # atrank and bpr seed 0 have loo_val
    assert copies["protocol"].tolist() == ["loo_val"] and copies["metrics.test_auc"].tolist() == [0.69]
    picked = pick_runs(runs)
    cells = wide_cells(picked[picked["protocol"] == "loo_val"], ("test_auc",)).set_index("model")
    assert cells.loc["bpr", "test_auc:mean"] == pytest.approx((0.68 + 0.69) / 2)
    md = render_report(picked, runs=runs, title="t", metric="test_auc", tracking_uri="sqlite:///x.db",
                       flt=RunFilter(), column_stats_by_key={}, figures={}, command="report", n_boot=10)
    assert "for 2 of 2 pair(s)" in md    # bpr and atrank seed 0; a copy is never checked against itself
    assert optimism_as_loo_val(fake_runs(RUNS[:2]))["from_optimism"].sum() == 2


def test_headline_puts_the_test_selected_figure_beside_the_honest_one():
    md = render(RUNS)
    head = md[md.index("## Headline"):md.index("## Table 3")]
    assert row(head, "BPR")[1:] == [f"0.6850 ± {np.std([0.68, 0.69], ddof=1):.4f} (n=2) / 0.7100"]
    assert row(head, "ATRank")[1:] == ["0.7500 (n=1) / —"]          # test-selected not logged
    assert "| CNN + Max Pooling |" not in head                       # no optimism run
    assert "## Headline" not in render([r for r in RUNS if r[1] != "optimism"])


def test_cli_on_a_tiny_store(tmp_path):
    """runners/report.py --protocol optimism on runs logged by hand: the sections read MLflow's values."""
    import mlflow

    from runners import report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    for proto in ("loo_val", "optimism"):
        exp = client.create_experiment(f"clothing_seq/{proto}", artifact_location=str(tmp_path / "art" / proto))
        for model, auc, full in (("bpr", 0.61, 0.004), ("cnn", 0.63, 0.003)):
            run = client.create_run(exp, run_name=f"{model}/clothing_seq/seed0", tags={
                "model": model, "dataset": "clothing_seq", "protocol": proto, "protocol_label": LABELS[proto],
                "seed": "0", "recipe": "default", "paper_column": "Clothe."})
            rid = run.info.run_id
            client.log_param(rid, "trainer.max_steps", "1000")
            client.log_param(rid, "trainer.eval_every", "500")
            client.log_metric(rid, "test_auc", auc)
            client.log_metric(rid, "best_step", 500)
            client.log_metric(rid, "steps", 1000)
            if proto == "optimism":
                client.log_metric(rid, "test_auc_at_test_best", auc + 0.01)
                client.log_metric(rid, "optimism", 0.01)
                for step, v in ((500, auc), (1000, auc + 0.01)):
                    client.log_metric(rid, "curve/test_auc", v, step=step)
                    client.log_metric(rid, "curve/valid_auc", v + 0.02 * (step == 500), step=step)
            else:
                client.log_metric(rid, "test_sampled_ndcg_10", auc / 4)
                client.log_metric(rid, "test_full_ndcg_10", full)
            client.set_terminated(rid, "FINISHED")
    path = report.main(["--tracking-uri", uri, "--protocol", "loo_val", "--protocol", "optimism", "--out",
                        str(tmp_path / "out"), "--name", "honest", "--n-boot", "50"])
    md = path.read_text()
    assert [x for x in md.splitlines() if x.startswith("## Table 3")] == [
        "## Table 3: validation selection (test read once) (protocol `loo_val`, recipe `default`)"]
    sec = md[md.index("## Optimism of test-set selection (diagnostic)"):]
    assert row(sec, "CNN + Max Pooling")[1:] == ["0.6400 (n=1)", "0.6300 (n=1)", "0.0100 (n=1)",
                                                 "seed 0: 500 / 1000"]
    assert "| `test_auc` vs `test_full_ndcg_10` | 2 | -1.00 |" in md
    assert (tmp_path / "out" / "honest_optimism.png").stat().st_size > 10_000
    assert "![honest_optimism](honest_optimism.png)" in md
    with pytest.raises(SystemExit):
        report.parse_args(["--protocol", "nonsense"])
    runs = query_runs(uri, RunFilter(protocols=("optimism",)))
    once, twice = load_curves(uri, runs), load_curves(uri, pd.concat([runs, runs]))   # a run listed twice
    assert len(once) == 8 and once.equals(twice)
