"""runners/bench.py's output: one table row per model, the Markdown tables (speed, clothing_seq, training paths,
profiles) and the files of a bench run (bench.csv, bench.md, paths.csv, bench.json)."""
from __future__ import annotations

import json
import math
from pathlib import Path

TABLE3 = ("bpr", "bilstm", "bilstm_att", "cnn", "atrank")
# Performance targets (docs/performance.md): a full Electronics epoch on 2 CPU cores within 10 minutes for every
# Table 3 model and within 6 for ATRank; every test user evaluated within 30 s; the paper split within 30 s;
# peak memory under 4 GB.
TARGET_EPOCH_S = {"atrank": 360.0, **{m: 600.0 for m in TABLE3 if m != "atrank"}}
TARGET_EVAL_S, TARGET_SPLIT_S, TARGET_RSS_MB = 30.0, 30.0, 4096.0
COLUMNS = ["model", "format", "batch", "threads", "rows_per_epoch", "ex_per_s", "ex_per_s_min", "ex_per_s_max",
           "epoch_s", "epoch_cpu_s", "eval_s", "prep_s", "peak_rss_mb", "naive_ex_per_s", "naive_epoch_s",
           "naive_peak_rss_mb", "speedup"]


def fmt(x, spec: str = ",.0f", none: str = "-") -> str:
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def minutes(s) -> str:
    return fmt(None if s is None else s / 60, ".1f")


def table_row(model: str, fmt_name: str, opt: dict, naive: dict | None) -> dict:
    """The CSV / table row of one model: the optimised child's figures and, if it ran, the naive one's."""
    r = {"model": model, "format": fmt_name, "batch": opt.get("batch_size"), "threads": opt.get("threads"),
         **{k: opt.get(k) for k in ("rows_per_epoch", "ex_per_s", "ex_per_s_min", "ex_per_s_max", "epoch_s",
                                    "epoch_cpu_s", "eval_s", "prep_s", "peak_rss_mb", "timing", "steps_timed",
                                    "batches_per_epoch")}}
    if naive and "error" not in naive:
        r.update(naive_ex_per_s=naive["ex_per_s"], naive_epoch_s=naive["epoch_s"],
                 naive_peak_rss_mb=naive["peak_rss_mb"], speedup=naive["epoch_s"] / opt["epoch_s"])
    return r


def speed_markdown(rows: list[dict], data: dict, title: str) -> str:
    lines = [f"### {title}", "",
             "| model | batch | ex/s (median) | ex/s spread | epoch (min) | eval (s) | prep (s) | peak RSS (MB) | "
             "naive ex/s | naive epoch (min) | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['model']} | FAILED: {r['error']} |" + " |" * 9)
            continue
        target = TARGET_EPOCH_S.get(r["model"])
        flag = " (!)" if target and r["epoch_s"] > target else ""
        ev = fmt(r.get("eval_s"), ".1f") + ("*" if r.get("eval_projected") else "")
        lines.append(
            f"| {r['model']} | {r['batch']} | {fmt(r['ex_per_s'])} | {fmt(r['ex_per_s_min'])}-"
            f"{fmt(r['ex_per_s_max'])} | {minutes(r['epoch_s'])}{flag} | {ev} | {fmt(r['prep_s'], '.2f')} | "
            f"{fmt(r['peak_rss_mb'])} | {fmt(r.get('naive_ex_per_s'))} | {minutes(r.get('naive_epoch_s'))} | "
            f"{fmt(r.get('speedup'), '.1f')}{'x' if r.get('speedup') else ''} |")
    d = data
    lines += ["", f"Data: {d['dataset']} {', '.join(f'{k} {v:,}' for k, v in d['stats'].items())}; median history "
              f"{d['median_length']:g}, max {d['max_length']}; "
              + (f"generate {d['generate_s']:.1f} s, " if "generate_s" in d else "")
              + f"table {d['table_s']:.1f} s, paper split {d['split_s']:.2f} s (target < {TARGET_SPLIT_S:.0f} s), "
              f"peak RSS {d['peak_rss_mb']:,.0f} MB.",
              "epoch = projected time of one pass over the model's own training rows (pointwise models: "
              f"{d['n_train_pointwise']:,}); (!) = over the target epoch time; * = evaluation timed on a subset "
              "and projected; speed-up = naive epoch / optimised epoch, same run.", timing_note(rows)]
    return "\n".join(lines)


def timing_note(rows: list[dict]) -> str:
    """How the training figures were timed: stratified passes, or consecutive batches of the epoch's order (all
    of them: then the epoch is measured, not projected)."""
    timed = [r for r in rows if not r.get("error") and r.get("timing") == "consecutive"]
    if not timed:
        return "Training timed in stratified passes (batches drawn per width stratum, projected to the epoch)."
    parts = [f"{r['model']} {r['steps_timed']:,} of {r['batches_per_epoch']:,}" for r in timed]
    return ("Training timed over consecutive batches of the epoch's own order after 20 untimed ones (timed / "
            "batches per epoch: " + ", ".join(parts) + "); strata a window missed are timed on drawn batches.")


def clothing_markdown(rows: list[dict], data: dict) -> str:
    ref = next((r for r in rows if r["model"] == "atrank" and not r.get("error")), None)
    lines = ["### clothing_seq (real data): training throughput", "",
             "| model | batch | ex/s (median) | ex/s spread | epoch (s) | peak RSS (MB) | time per example vs ATRank |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['model']} | FAILED: {r['error']} |" + " |" * 5)
            continue
        rel = ref["ex_per_s"] / r["ex_per_s"] if ref else None
        flag = " (> 3x)" if rel and rel > 3 else ""
        lines.append(f"| {r['model']} | {r['batch']} | {fmt(r['ex_per_s'])} | {fmt(r['ex_per_s_min'])}-"
                     f"{fmt(r['ex_per_s_max'])} | {fmt(r['epoch_s'], '.1f')} | {fmt(r['peak_rss_mb'])} | "
                     f"{fmt(rel, '.2f')}{flag} |")
    lines += ["", f"Data: clothing_seq {', '.join(f'{k} {v:,}' for k, v in data['stats'].items())}; median history "
              f"{data['median_length']:g}, max {data['max_length']}.", timing_note(rows)]
    return "\n".join(lines)


def paths_markdown(rows: list[dict], dataset: str, processes: int) -> str:
    lines = [f"### {dataset}: training paths (same run)", "",
             f"| model | today: ex/s | today: epoch (min) | paired: ex/s | paired: epoch (min) | paired + {processes} "
             f"processes: ex/s | paired + {processes} processes: epoch (min) | fastest vs today |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {fmt(r.get('today_ex_per_s'))} | {minutes(r.get('today_epoch_s'))} | "
                     f"{fmt(r['paired_ex_per_s'])} | {minutes(r['paired_epoch_s'])} | {fmt(r.get('dp_ex_per_s'))} | "
                     f"{minutes(r.get('dp_epoch_s'))} | {fmt(r['speedup_vs_today'], '.2f')}x |")
    t = rows[0]
    lines += ["", "today = the earlier path: independent rows, length buckets sorted 64 batches at a time "
              f"(trainer.pair_rows=false trainer.bucket_chunk=64), one process, {t['threads']} thread(s); paired = the "
              "default recipe (B/2 prefixes per batch of B rows), one process, same threads; paired + "
              f"{processes} processes = trainer.processes={processes}, {t.get('dp_threads', '-')} thread(s) each, "
              "gradients summed through shared memory. '-': the path does not apply (pairing is for pointwise models; "
              "AttRec, SASRec and POP train in one process)."]
    return "\n".join(lines)


def profile_markdown(model: str, p: dict) -> str:
    lines = [f"#### {model}: where a training step goes (torch.profiler, {p['steps']} steps drawn from the epoch)", "",
             f"Step {p['step_ms_unprofiled']:.2f} ms unprofiled ({p['step_ms_profiled']:.2f} ms under the profiler); "
             + ", ".join(f"{k} {v:.0%}" for k, v in p["phase_share"].items())
             + f"; {p['aten_calls_per_step']:,.0f} aten calls per step (nested included); matmul/conv work "
             f"{p['gflop_per_step'] * 1e3:,.1f} MFLOP per step = {p['gflop_per_s']:,.2f} GFLOP/s achieved.", "",
             "| op | calls/step | self ms/step | share of step |", "|---|---:|---:|---:|"]
    lines += [f"| {o['op']} | {o['calls_per_step']:.1f} | {o['self_ms_per_step']:.3f} | {o['share']:.1%} |"
              for o in p["top_ops"]]
    return "\n".join(lines)


def write_outputs(out_dir: Path, csv_rows: list[dict], path_rows: list[dict], results: dict, text: str) -> None:
    """bench.csv (one row per dataset and model), bench.md (`text`), paths.csv (--compare-paths), bench.json."""
    import pandas as pd

    cols = ["dataset", *COLUMNS, "eval_projected", "error"]
    pd.DataFrame(csv_rows).reindex(columns=cols).to_csv(out_dir / "bench.csv", index=False)
    (out_dir / "bench.md").write_text(text)
    if path_rows:
        pd.DataFrame(path_rows).to_csv(out_dir / "paths.csv", index=False)
    (out_dir / "bench.json").write_text(json.dumps(results, indent=1, default=str))
