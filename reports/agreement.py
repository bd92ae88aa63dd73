"""Do rankings agree? Our model ranking against the paper's, and the rankings under sampled and full-catalogue
metrics against each other (Kendall's tau-b), with their markdown.

Krichene & Rendle (KDD 2020) show that a metric over a few sampled negatives can order models differently from the
same metric over the full catalogue; the "Rank agreement across metrics" section puts the two side by side.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from reports import stats
from reports.cells import format_value, of_group, seeds_text, wide_cells
from reports.labels import (DASH, PAPER_METRIC, column_title, dataset_order, fmt_num, fmt_p, label, model_order,
                            md_code, md_text, paper_column_of, paper_value)
from reports.runs import EVAL_KNOBS, finished

RANK_METRICS = ("test_auc", "test_sampled_ndcg_10", "test_full_ndcg_10")      # the rankings compared
EXTRA_AGREEMENT_METRICS = ("test_gauc", "test_full_hr_10", "test_full_mrr")    # shown when logged
METRIC_HELP = {
    "test_auc": "the paper's AUC: the test item against 1 frozen negative per user",
    "test_gauc": "AUC of the test item against the user's K sampled negatives (ties count ½)",
    "test_sampled_ndcg_10": "NDCG@10 of the test item among itself and the K sampled negatives",
    "test_full_ndcg_10": "NDCG@10 of the test item in the whole catalogue (the user's history items excluded)",
    "test_full_hr_10": "hit rate @10 in the whole catalogue",
    "test_full_mrr": "mean reciprocal rank in the whole catalogue",
}
AGREEMENT_INTRO = (
    "Krichene & Rendle (KDD 2020, *On Sampled Metrics for Item Recommendation*): a metric computed "
    "against a few sampled negatives can order models differently from the same metric on the full "
    "catalogue. Per protocol table: the model ranking under `test_auc` (1 sampled negative), "
    "`test_sampled_ndcg_10` (K sampled negatives) and `test_full_ndcg_10` (full catalogue), and Kendall's "
    "tau-b between each pair of rankings (+1 = same order, −1 = reversed; with a handful of models the "
    f"p-values are weak). Values: mean ± sd over finished seeds; {DASH} = the metric was not logged "
    "(never filled in).")


def ranking_agreement(cells: pd.DataFrame, metric: str = PAPER_METRIC) -> list[dict]:
    """Per dataset with a paper column: the paper's ranking vs ours over the models both have, with Kendall's tau."""
    out = []
    for d in dataset_order(cells):
        sub = cells[(cells["dataset"] == d) & (cells["n"] > 0)]
        pcol = paper_column_of(d, sub["paper_column"].iloc[0] if len(sub) else None)
        pairs = [(r.model, paper_value(r.model, pcol, metric), r.mean) for r in sub.itertuples()]
        pairs = [p for p in pairs if p[1] is not None]
        if not pairs:
            continue
        tau, p = stats.kendall_tau(np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs]))
        out.append({"dataset": d, "paper_column": pcol, "n": len(pairs), "tau": tau, "p": p,
                    "paper": [m for m, _, _ in sorted(pairs, key=lambda t: -t[1])],
                    "ours": [m for m, _, _ in sorted(pairs, key=lambda t: -t[2])]})
    return out


def paper_ranking_lines(cells: pd.DataFrame, metric: str) -> list[str]:
    """One table's "paper vs ours" ranking lines; none when no model has a paper number."""
    ranks = ranking_agreement(cells, metric)
    if not ranks:
        return []

    def names(ms: list[str]) -> str:
        return " > ".join(label(m) for m in ms)
    out = ["", "Ranking, paper vs ours (models with both numbers; Kendall's tau-b):", ""]
    for r in ranks:
        out.append(f"- {column_title(r['dataset'], r['paper_column'])}: paper {names(r['paper'])}; ours "
                   f"{names(r['ours'])}; tau = {fmt_num(r['tau'], '{:+.2f}')} (p = {fmt_p(r['p'])}, "
                   f"n = {r['n']})")
    return out


def _ranking(values: dict[str, float], order: list[str]) -> list[list[str]]:
    """Models best first, exact ties grouped."""
    ranked: list[list[str]] = []
    for m in sorted(values, key=lambda m: (-values[m], order.index(m))):
        if ranked and values[ranked[-1][0]] == values[m]:
            ranked[-1].append(m)
        else:
            ranked.append([m])
    return ranked


def _pairwise_taus(values: dict[str, dict[str, float]], metrics: tuple[str, ...], order: list[str]) -> list[dict]:
    """Kendall's tau-b between every pair of metrics, over the models that logged both."""
    taus = []
    for i, a in enumerate(metrics):
        for b in metrics[i + 1:]:
            common = [x for x in order if x in values[a] and x in values[b]]
            tau, p = stats.kendall_tau(np.array([values[a][x] for x in common]),
                                       np.array([values[b][x] for x in common]))
            taus.append({"a": a, "b": b, "n": len(common), "tau": tau, "p": p})
    return taus


def metric_agreement(cells: pd.DataFrame, metrics: tuple[str, ...] = RANK_METRICS) -> list[dict]:
    """Per dataset of one group's wide cells (see wide_cells): each metric's model ranking (models that logged it,
    best first, ties grouped; rank = 1 + models strictly better), Kendall's tau-b between every pair of metrics
    over the models that logged both (nan for fewer than 2 models) and, per metric, the models with a finished run
    that did not log it."""
    out = []
    for d in dataset_order(cells):
        sub = cells[cells["dataset"] == d]
        order = model_order(set(sub["model"]))
        values = {m: {r["model"]: float(r[f"{m}:mean"]) for _, r in sub.iterrows() if r[f"{m}:n"] > 0}
                  for m in metrics}
        rankings = {m: _ranking(values[m], order) for m in metrics}
        ranks = {m: {x: 1 + sum(v > values[m][x] for v in values[m].values()) for x in values[m]} for m in metrics}
        done = set(sub[sub["n_finished"] > 0]["model"]) if "n_finished" in sub else set(sub["model"])
        missing = {m: [x for x in order if x in done and x not in values[m]] for m in metrics}
        out.append({"dataset": d, "paper_column": sub["paper_column"].iloc[0], "models": [x for x in order if x in
                    set(sub["model"])], "values": values, "rankings": rankings, "ranks": ranks,
                    "taus": _pairwise_taus(values, metrics, order), "missing": missing})
    return out


def _param_values(runs: pd.DataFrame, param: str) -> str | None:
    col = f"params.{param}"
    if col not in runs:
        return None
    vals = sorted(set(runs[col].dropna().astype(str)) - {"", "None"})
    return "/".join(vals) if vals else None


def _negatives_config(done: pd.DataFrame) -> tuple[str, str | None]:
    """How the runs were evaluated (sampled negatives, full-ranking users), as a phrase; and the users value."""
    k, kind, users = (_param_values(done, p) for p in ("protocol.eval_negatives", "protocol.eval_negatives_kind",
                                                        "protocol.full_ranking_users"))
    config = (f"`protocol.eval_negatives` = {k or '?'}" + (f" ({kind})" if kind and k != "0" else "")
              + f" sampled negatives per test user, `protocol.full_ranking_users` = {users or '?'} (users ranked "
              "against the whole catalogue; -1 = all, 0 = none); " + protocol_settings(done))
    return config, users


def protocol_settings(runs: pd.DataFrame) -> str:
    """Every evaluation knob of `runs` (reports.runs.EVAL_KNOBS) as `key` = value, several values joined by /."""
    return ", ".join(f"`{p}` = {v}" for p in EVAL_KNOBS if (v := _param_values(runs, p)) is not None)


def _metric_table(e: dict, sub: pd.DataFrame, shown: list[str]) -> list[str]:
    """Model rows x metrics, with each ranking metric's rank in brackets."""
    lines = ["| Model | seeds | " + " | ".join(f"`{m}`" + (" (rank)" if m in RANK_METRICS else "")
                                             for m in shown) + " |",
             "|---|---:|" + "---:|" * len(shown)]
    for model in e["models"]:
        r = sub.loc[model]
        vals = []
        for m in shown:
            v = format_value(r, m)
            vals.append(v + (f" ({e['ranks'][m][model]})" if m in RANK_METRICS and v != DASH else ""))
        lines.append(f"| {label(model)} | {seeds_text(r)} | " + " | ".join(vals) + " |")
    return lines


def _rankings_and_taus(e: dict) -> list[str]:
    lines = ["", "Rankings (best first; = ties):", ""]
    for m in RANK_METRICS:
        rk = " > ".join(" = ".join(label(x) for x in tie) for tie in e["rankings"][m])
        lines.append(f"- `{m}` ({METRIC_HELP[m]}): {rk or 'not logged'}")
    lines += ["", "| Rankings compared | models | Kendall's tau-b | p |", "|---|---:|---:|---:|"]
    for t in e["taus"]:
        lines.append(f"| `{t['a']}` vs `{t['b']}` | {t['n']} | {fmt_num(t['tau'], '{:+.2f}')} | {fmt_p(t['p'])} |")
    return lines


def _notes(e: dict, sub: pd.DataFrame, extra: list[str], users: str | None) -> list[str]:
    """Metrics some models did not log, and how few full-catalogue hits the full metrics rest on."""
    notes = [f"`{m}` missing for {', '.join(label(x) for x in xs)} (left out of that ranking)"
             for m, xs in e["missing"].items() if xs]
    n_users = pd.to_numeric(pd.Series([users]), errors="coerce").iloc[0] if users and "/" not in users else None
    if "test_full_hr_10" in extra and n_users and n_users > 0:
        hits = ", ".join(f"{label(x)} {sub.loc[x, 'test_full_hr_10:mean'] * n_users:.0f}"
                         for x in e["models"] if sub.loc[x, "test_full_hr_10:n"] > 0)
        notes.append(f"the full-catalogue metrics rest on few hits: test items in the top 10 out of "
                     f"{n_users:.0f} users: {hits} (mean over seeds), so their ranking is noisy")
    return ["", "Notes: " + "; ".join(notes) + "."] if notes else []


def metric_agreement_markdown(wide: pd.DataFrame, runs: pd.DataFrame, title: str) -> str:
    """One (protocol, recipe) group: per dataset the metric table, the rankings and the pairwise Kendall taus."""
    config, users = _negatives_config(finished(runs))
    lines = [f"### {title}", ""]
    for e in metric_agreement(wide):
        sub = wide[wide["dataset"] == e["dataset"]].set_index("model")
        head = f"{column_title(e['dataset'], paper_column_of(e['dataset'], e['paper_column']))}"
        logged = [m for m in RANK_METRICS if e["values"][m]]
        if len(logged) < 2:
            absent = [m for m in RANK_METRICS if not e["values"][m]]
            lines += [(f"{head}: only {', '.join(f'`{m}`' for m in logged) or 'none of the ranking metrics'} logged; "
                      f"{', '.join(f'`{m}`' for m in absent)} not logged by these runs ({config}), so there "
                      "are no rankings to compare."), ""]
            continue
        extra = [m for m in EXTRA_AGREEMENT_METRICS if f"{m}:n" in sub and (sub[f"{m}:n"] > 0).any()]
        shown = list(RANK_METRICS) + extra
        lines += [f"{head}. Logged with {config}.", "", *_metric_table(e, sub, shown), *_rankings_and_taus(e),
                  *_notes(e, sub, extra, users), ""]
    return "\n".join(lines).rstrip()


def agreement_section(picked: pd.DataFrame, groups: list[tuple[str, str]]) -> list[str]:
    """The "Rank agreement across metrics" section: its explanation, then one block per Table 3."""
    out = ["", "## Rank agreement across metrics", "", AGREEMENT_INTRO]
    for proto, recipe in groups:
        g_runs = of_group(picked, proto, recipe)
        plabel = md_text(g_runs["protocol_label"].iloc[0])
        wide = wide_cells(g_runs, RANK_METRICS + EXTRA_AGREEMENT_METRICS)
        title = f"Protocol {md_code(proto)} ({plabel}), recipe {md_code(recipe)}"
        out += ["", metric_agreement_markdown(wide, g_runs, title)]
    return out
