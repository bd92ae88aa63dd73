"""Training and evaluation speed of every model on Electronics-shaped data, against a naive baseline, in one run.

    python runners/bench.py                       # full size (192,403 users, 1,689,188 interactions), ~30 min
    python runners/bench.py --quick               # 2% of the size, a couple of minutes
    python runners/bench.py --models atrank,bpr --repeats 5 model.batch_size=256 model.lr=8.0   # Hydra overrides

What one run measures, each model in its own child process (so peak RSS is per model and a crash ends only that
model's row):
- data: generating the Electronics-shaped set (datasets/synthetic.electronics_like), building its table
  (datasets/table.build_table) and its `paper` split (datasets/split.make_split), in a child of their own;
- per model, at its own recipe (conf/model/<name>.yaml composed with conf/trainer/default.yaml, exactly as
  runners/run.py builds TrainSettings): preprocessing (training rows + one epoch's batch order), training
  speed (examples/s and the projected epoch time), evaluation time over the test users (runners.evaluation
  .evaluate on (positive, frozen negative) pairs) and the child's peak RSS;
- per model, the NAIVE baseline in its own child: every batch padded to the longest training history of the
  dataset (cap: the model's max_len), plain random batches (no length bucketing), Adam lr 1e-3 over dense
  gradients, glibc's default allocator settings; the same thread count as the optimised child (so the ratio
  does not hinge on how busy the machine is; threads are compared by running the bench twice, e.g. with
  trainer.num_threads=2); its speed-up = naive epoch time / optimised epoch time, both measured in this run
  (ratios are the figure to trust on a shared machine);
- optionally (--clothing, on by default at full size) training speed and peak RSS on the real `clothing_seq`.

How training is timed. A step is runners.trainer.train_step on a batch from datasets.batches.BatchMaker, with the
optimiser from runners.trainer.prepare_optimizer: the code path of runners/trainer.py. Batch costs vary with the
batch's history width (1 to ~400 items) and the widest batches are rare and dear, so a few hundred consecutive
steps would project an epoch badly. Instead the epoch's real batch order (batch_order, seed 0, epoch 0) is split
into strata by width (powers of two); `--steps` batches are drawn from each stratum; after a warm-up pass, each
of `--repeats` passes times every drawn batch (wall clock and process CPU time) and projects the epoch as
sum over strata of (batches in stratum x mean time per batch). The table shows the median over passes and the
spread (min-max). Evaluation runs once over all test users (or over --eval-users of them, then projected
linearly and marked). Results go to <out>/bench.csv, <out>/bench.md and, with --mlflow, to MLflow.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO_ROOT):
    sys.path.insert(0, str(REPO_ROOT))  # our `datasets` package, never Hugging Face's

TABLE3 = ("bpr", "bilstm", "bilstm_att", "cnn", "atrank")
TARGET_EPOCH_S = {"atrank": 360.0, **{m: 600.0 for m in TABLE3 if m != "atrank"}}  # issue #7
TARGET_EVAL_S, TARGET_SPLIT_S, TARGET_RSS_MB = 30.0, 30.0, 4096.0
WIDTH_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # stratum k holds batches of width in (edge[k-1], edge[k]]
NAIVE_OPTIMIZER = {"optimizer": "adam", "lr": 1e-3, "sparse_grad": False, "bucket_by_length": False,
                   "pair_rows": False}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


# ----------------------------------------------------------------------------------------------- child side

def _child_prepare(spec: dict) -> dict:
    """Generate (or load) the dataset, build its table and paper split; save both for the model children."""
    import numpy as np

    from datasets.split import load_split, make_split
    from datasets.table import Table, build_table, save_table

    out: dict = {}
    t0 = time.perf_counter()
    if spec["dataset"] == "electronics_like":
        from datasets import synthetic

        raw = synthetic.electronics_like(seed=spec["seed"], scale=spec["scale"])
        out["generate_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        table = build_table(raw, "electronics_like")
        out["table_s"] = time.perf_counter() - t1
        del raw
        table = Table(**{**table.__dict__, "content_hash": f"bench-{spec['scale']:g}-{spec['seed']}"})
        t2 = time.perf_counter()
        split = make_split(table, "paper", 1234)
        out["split_s"] = time.perf_counter() - t2
        save_table(table, Path(spec["table_path"]))
        np.savez(spec["split_path"], neg=split.neg, train_end=split.train_end, test_pos=split.test_pos)
    else:  # a real dataset through the normal loader and split cache (clothing_seq)
        from datasets.load import load_dataset

        table = load_dataset(spec["dataset"], spec["kind"], spec["data_root"], spec["cache_dir"])
        out["table_s"] = time.perf_counter() - t0
        t2 = time.perf_counter()
        split = load_split(table, spec["cache_dir"], "paper", 1234)
        out["split_s"] = time.perf_counter() - t2
    lengths = table.lengths
    out.update(stats=table.stats(), median_length=float(np.median(lengths)), max_length=int(lengths.max()),
               n_train_pointwise=2 * split.n_train_positions(table), peak_rss_mb=peak_rss_mb())
    return out


def _load_data(spec: dict):
    import numpy as np

    from datasets.split import Split, load_split
    from datasets.table import read_table

    if spec["dataset"] == "electronics_like":
        table = read_table(Path(spec["table_path"]))
        with np.load(spec["split_path"]) as z:
            split = Split("paper", 1234, z["neg"], z["train_end"], None, z["test_pos"])
        return table, split
    from datasets.load import load_dataset

    table = load_dataset(spec["dataset"], spec["kind"], spec["data_root"], spec["cache_dir"])
    return table, load_split(table, spec["cache_dir"], "paper", 1234)


def _padded_maker(table, max_len: int | None, width: int):
    """BatchMaker whose batches are all padded to `width` (the naive baseline: padding work no bucketing saves)."""
    import torch

    from datasets.batches import BatchMaker

    class PaddedMaker(BatchMaker):
        def make(self, rows):
            b = super().make(rows)
            pad = width - b.hist.shape[1]
            if pad <= 0:
                return b

            def widen(t):
                return torch.cat([t, t.new_zeros(t.shape[0], pad)], dim=1)

            return replace(b, hist=widen(b.hist), hist_time=widen(b.hist_time), hist_rating=widen(b.hist_rating),
                           mask=widen(b.mask))

    return PaddedMaker(table, max_len=max_len)


def _strata(widths, batches_per_stratum: int, rng) -> list[tuple[int, list[int]]]:
    """[(number of batches in the stratum, indices of the drawn batches)] by width (powers of two)."""
    import numpy as np

    edges = np.asarray(WIDTH_EDGES)
    which = np.searchsorted(edges, widths, side="left")  # width w -> first edge >= w
    out = []
    for k in np.unique(which):
        members = np.flatnonzero(which == k)
        drawn = rng.choice(members, size=min(batches_per_stratum, len(members)), replace=False)
        out.append((len(members), sorted(int(i) for i in drawn)))
    return out


def _child_model(spec: dict) -> dict:
    """One model, one variant (optimised | naive): preprocessing, training passes, evaluation, peak RSS."""
    import numpy as np
    import torch

    from datasets.batches import BatchMaker, batch_order, eval_rows, train_rows
    from models.registry import get_model
    from runners.trainer import (TrainSettings, configure_runtime, prepare_optimizer, seed_everything, train_step,
                                 worker_batch)

    naive = spec["variant"] == "naive"
    # as runners/run.py: threads, denormals flushed (naive: not); the allocator comes from the env the parent set
    processes = spec.get("processes", 1)
    configure_runtime(spec["num_threads"], flush_denormal=not naive and spec["flush_denormal"])
    table, split = _load_data(spec)
    rss_data = peak_rss_mb()
    s = TrainSettings(**spec["settings"])
    if naive:
        s = replace(s, **NAIVE_OPTIMIZER)
    seed_everything(s.seed)
    model = get_model(spec["model"])(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                                     item_category=table.item_category, **spec["params"])
    out = {"threads": torch.get_num_threads(), "n_params": sum(p.numel() for p in model.parameters()),
           "rss_data_mb": rss_data, "batch_size": s.batch_size, "optimizer": s.optimizer}

    t0 = time.perf_counter()
    paired = s.pair_rows and model.train_format == "pointwise"
    per = 2 if paired else 1  # training rows per index of `rows`
    rows = train_rows(table, split, model.train_format, paired=paired)
    hist_len = rows.end - table.indptr[rows.user]
    if s.max_len:
        hist_len = np.minimum(hist_len, s.max_len)
    width = max(int(hist_len.max()), 1)
    maker = _padded_maker(table, s.max_len, width) if naive else BatchMaker(table, max_len=s.max_len)
    batches = batch_order(rows, s.batch_size // per, np.random.default_rng([s.seed, 0]),
                          bucket_by_length=s.bucket_by_length, indptr=table.indptr)
    out["prep_s"] = time.perf_counter() - t0
    out.update(rows_per_epoch=len(rows) * per, batches_per_epoch=len(batches), pad_width=width if naive else None,
               pair_rows=paired, processes=processes)
    optimizer, params = prepare_optimizer(model, s)
    out["sparse_grad"] = any(getattr(m, "sparse", False) for m in model.modules())

    rng = np.random.default_rng(spec["seed"])
    if naive:  # every batch has the same width: a plain random sample
        strata = [(len(batches), sorted(rng.choice(len(batches), min(spec["steps"], len(batches)),
                                                   replace=False).tolist()))]
    else:
        widths = np.array([max(int(hist_len[b].max()), 1) for b in batches])
        strata = _strata(widths, spec["steps"], rng)

    def shuffled(picks: list[tuple[int, list[int]]]) -> list[tuple[int, int]]:
        order = [(k, i) for k, (_, idx) in enumerate(picks) for i in idx]
        return [order[j] for j in rng.permutation(len(order))]

    def one_pass(picks: list[tuple[int, list[int]]], order: list[tuple[int, int]], sync) -> tuple[float, float, int]:
        """Projected epoch (wall s, CPU s) from timing every drawn batch once, in random order."""
        wall, cpu = np.zeros(len(picks)), np.zeros(len(picks))
        for k, i in order:
            w0, c0 = time.perf_counter(), time.process_time()
            train_step(model, optimizer, params, worker_batch(maker, rows, batches[i], per, sync), s.clip_norm,
                       sync=sync)
            wall[k] += time.perf_counter() - w0
            cpu[k] += time.process_time() - c0
        n_drawn = np.array([len(idx) for _, idx in picks])
        n_all = np.array([n for n, _ in picks])
        return float((wall / n_drawn * n_all).sum()), float((cpu / n_drawn * n_all).sum()), len(order)

    model.train()
    warm = [(n, idx[: spec["warmup"]]) for n, idx in strata]
    plan = [(warm, shuffled(warm))] + [(strata, shuffled(strata)) for _ in range(spec["repeats"])]
    helpers = contextlib.nullcontext()
    if processes > 1:  # the helpers run the same global batches (runners/data_parallel.run_program)
        from runners.data_parallel import Helpers

        program = [batches[i] for _, order in plan for _, i in order]
        helpers = Helpers(model, table, split, s, processes, spec.get("backend", "shm"), spec["num_threads"] or 1,
                          spec["flush_denormal"], program)
    with helpers as sync:
        passes = [one_pass(picks, order, sync) for picks, order in plan][1:]
    epoch_wall = [p[0] for p in passes]
    out.update(steps_timed=passes[0][2], strata=len(strata), epoch_s_all=epoch_wall,
               epoch_s=statistics.median(epoch_wall), epoch_s_min=min(epoch_wall), epoch_s_max=max(epoch_wall),
               epoch_cpu_s=statistics.median(p[1] for p in passes))
    out["ex_per_s"] = out["rows_per_epoch"] / out["epoch_s"]
    out["ex_per_s_min"] = out["rows_per_epoch"] / out["epoch_s_max"]
    out["ex_per_s_max"] = out["rows_per_epoch"] / out["epoch_s_min"]

    if not naive and spec["eval_users"] != 0:
        from runners.evaluation import evaluate  # (imports scikit-learn: only where needed)

        test = eval_rows(table, split, "test")
        n = len(test) if spec["eval_users"] < 0 else min(spec["eval_users"], len(test))
        subset = test if n == len(test) else test.take(np.sort(rng.choice(len(test), n, replace=False)))
        evaluate(model, maker, test.take(np.arange(min(512, len(test)))), s.eval_batch_size)  # warm-up
        times = []
        for _ in range(spec["eval_repeats"]):
            t0 = time.perf_counter()
            outcome = evaluate(model, maker, subset, s.eval_batch_size)
            times.append((time.perf_counter() - t0) * len(test) / n)
        out.update(eval_s=statistics.median(times), eval_projected=n < len(test), eval_users=n,
                   eval_auc=outcome.auc)
    out["peak_rss_mb"] = peak_rss_mb()
    if not naive and spec.get("profile"):  # last: the profiler's own event buffers must not count in peak RSS
        out["profile"] = _profile(model, optimizer, params, maker, rows, batches, s.clip_norm, spec["profile"], rng,
                                  out["epoch_s"] / len(batches))
    return out


def _profile(model, optimizer, params, maker, rows, batches, clip_norm, n_steps: int, rng, step_s: float) -> dict:
    """torch.profiler over `n_steps` batches drawn at random from the epoch (so widths come in epoch proportion):
    where a step's time goes (forward / backward / optimiser, the phases train_step labels), how many aten calls a
    step dispatches (nested calls included), matmul/conv FLOPs per step, and the ops with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    from runners.trainer import train_step

    picks = rng.choice(len(batches), min(n_steps, len(batches)), replace=False)
    made = [maker.make(rows.take(batches[i])) for i in picks]  # batch building stays outside the profile
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for b in made:
            train_step(model, optimizer, params, b, clip_norm, label_phases=True)
    events = prof.key_averages()
    n = len(made)
    phases = {e.key.split("/")[1]: e.cpu_time_total for e in events if e.key.startswith("step/")}
    total_us = sum(phases.values())
    aten = [e for e in events if e.key.startswith("aten::")]
    top = sorted(aten, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    flops = sum(e.flops for e in events if e.flops) / n
    return {"steps": n, "phase_share": {k: v / total_us for k, v in phases.items()},
            "aten_calls_per_step": sum(e.count for e in aten) / n,
            "step_ms_unprofiled": step_s * 1e3, "step_ms_profiled": total_us / n / 1e3,
            "gflop_per_step": flops / 1e9, "gflop_per_s": flops / 1e9 / step_s,
            "top_ops": [{"op": e.key, "calls_per_step": e.count / n, "self_ms_per_step": e.self_cpu_time_total / n / 1e3,
                         "share": e.self_cpu_time_total / total_us} for e in top]}


def _profile_markdown(model: str, p: dict) -> str:
    lines = [f"#### {model}: where a training step goes (torch.profiler, {p['steps']} steps drawn from the epoch)", "",
             f"Step {p['step_ms_unprofiled']:.2f} ms unprofiled ({p['step_ms_profiled']:.2f} ms under the profiler); "
             + ", ".join(f"{k} {v:.0%}" for k, v in p["phase_share"].items())
             + f"; {p['aten_calls_per_step']:,.0f} aten calls per step (nested included); matmul/conv work "
             f"{p['gflop_per_step'] * 1e3:,.1f} MFLOP per step = {p['gflop_per_s']:,.2f} GFLOP/s achieved.", "",
             "| op | calls/step | self ms/step | share of step |", "|---|---:|---:|---:|"]
    lines += [f"| {o['op']} | {o['calls_per_step']:.1f} | {o['self_ms_per_step']:.3f} | {o['share']:.1%} |"
              for o in p["top_ops"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- parent side

def _child(mode: str, spec: dict, env_extra: dict[str, str] | None, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # the child's allocator: ours to set
    env.update(PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]), **(env_extra or {}))
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, str(Path(__file__).resolve()), f"--{mode}", json.dumps(spec)],
                             env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1][:300],
                "stderr": res.stderr[-4000:]}
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "child_s": time.perf_counter() - t0}


def _compose(model: str, overrides: list[str]) -> tuple[dict, dict, int | None, bool]:
    """TrainSettings (as a dict), model params, thread count and denormal flushing as runners/run.py derives them."""
    from hydra import compose, initialize_config_dir

    from runners.run import model_params, train_settings

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}", *overrides])
    settings = asdict(train_settings(cfg, None))
    settings.update(progress=False, checkpoint_path=None)
    threads = cfg.trainer.num_threads
    return settings, model_params(cfg), int(threads) if threads else None, bool(cfg.trainer.flush_denormal)


def _compare_paths(spec: dict, default: dict, processes: int, env: dict, timeout: float, model: str) -> dict:
    """Epoch time and examples/s of the earlier path (independent rows) and of the data-parallel one, beside the
    default (paired rows, one process); "-" where a path does not apply to the model."""
    from models.registry import get_model

    cls = get_model(model)
    out = {"paired_ex_per_s": default["ex_per_s"], "paired_epoch_s": default["epoch_s"],
           "threads": default["threads"]}
    fast = {**spec, "eval_users": 0, "profile": 0}
    if cls.train_format == "pointwise":
        today = _child("model-child", {**fast, "settings": {**spec["settings"], "pair_rows": False}}, env, timeout)
        if "error" not in today:
            out.update(today_ex_per_s=today["ex_per_s"], today_epoch_s=today["epoch_s"])
    if cls.data_parallel and processes > 1:
        threads = max(1, (spec["num_threads"] or os.cpu_count() or 1) // processes)
        dp = _child("model-child", {**fast, "processes": processes, "num_threads": threads}, env, timeout)
        if "error" in dp:
            out["dp_error"] = dp["error"]
            print(f"  {model}: {processes} processes FAILED {dp['error']}\n{dp.get('stderr', '')[-1500:]}")
        else:
            out.update(dp_ex_per_s=dp["ex_per_s"], dp_epoch_s=dp["epoch_s"], dp_threads=dp["threads"])
    base = out.get("today_epoch_s", out["paired_epoch_s"])
    best = min(out["paired_epoch_s"], out.get("dp_epoch_s", math.inf))
    out["speedup_vs_today"] = base / best
    print(f"  {model} paths: today {_minutes(out.get('today_epoch_s'))} min, paired {_minutes(out['paired_epoch_s'])}"
          f" min, paired + {processes} processes {_minutes(out.get('dp_epoch_s'))} min", flush=True)
    return out


def _paths_markdown(rows: list[dict], dataset: str, processes: int) -> str:
    lines = [f"### {dataset}: training paths (same run)", "",
             f"| model | today: ex/s | today: epoch (min) | paired: ex/s | paired: epoch (min) | paired + {processes} "
             f"processes: ex/s | paired + {processes} processes: epoch (min) | fastest vs today |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {_fmt(r.get('today_ex_per_s'))} | {_minutes(r.get('today_epoch_s'))} | "
                     f"{_fmt(r['paired_ex_per_s'])} | {_minutes(r['paired_epoch_s'])} | {_fmt(r.get('dp_ex_per_s'))} | "
                     f"{_minutes(r.get('dp_epoch_s'))} | {_fmt(r['speedup_vs_today'], '.2f')}x |")
    t = rows[0]
    lines += ["", f"today = independent rows (trainer.pair_rows=false), one process, {t['threads']} thread(s); paired = "
              f"the default (B/2 prefixes per batch of B rows), one process, same threads; paired + {processes} "
              f"processes = trainer.processes={processes}, {t.get('dp_threads', '-')} thread(s) each, gradients summed "
              "through shared memory. '-': the path does not apply (pairing is for pointwise models; AttRec, SASRec "
              "and POP train in one process)."]
    return "\n".join(lines)


def _fmt(x, spec: str = ",.0f", none: str = "-") -> str:
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _minutes(s) -> str:
    return _fmt(None if s is None else s / 60, ".1f")


COLUMNS = ["model", "format", "batch", "threads", "rows_per_epoch", "ex_per_s", "ex_per_s_min", "ex_per_s_max",
           "epoch_s", "epoch_cpu_s", "eval_s", "prep_s", "peak_rss_mb", "naive_ex_per_s", "naive_epoch_s",
           "naive_peak_rss_mb", "speedup"]


def _row(model: str, fmt: str, opt: dict, naive: dict | None) -> dict:
    r = {"model": model, "format": fmt, "batch": opt.get("batch_size"), "threads": opt.get("threads"),
         **{k: opt.get(k) for k in ("rows_per_epoch", "ex_per_s", "ex_per_s_min", "ex_per_s_max", "epoch_s",
                                    "epoch_cpu_s", "eval_s", "prep_s", "peak_rss_mb")}}
    if naive and "error" not in naive:
        r.update(naive_ex_per_s=naive["ex_per_s"], naive_epoch_s=naive["epoch_s"],
                 naive_peak_rss_mb=naive["peak_rss_mb"], speedup=naive["epoch_s"] / opt["epoch_s"])
    return r


def _markdown(rows: list[dict], data: dict, title: str) -> str:
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
        ev = _fmt(r.get("eval_s"), ".1f") + ("*" if r.get("eval_projected") else "")
        lines.append(
            f"| {r['model']} | {r['batch']} | {_fmt(r['ex_per_s'])} | {_fmt(r['ex_per_s_min'])}-"
            f"{_fmt(r['ex_per_s_max'])} | {_minutes(r['epoch_s'])}{flag} | {ev} | {_fmt(r['prep_s'], '.2f')} | "
            f"{_fmt(r['peak_rss_mb'])} | {_fmt(r.get('naive_ex_per_s'))} | {_minutes(r.get('naive_epoch_s'))} | "
            f"{_fmt(r.get('speedup'), '.1f')}{'x' if r.get('speedup') else ''} |")
    d = data
    lines += ["", f"Data: {d['dataset']} {', '.join(f'{k} {v:,}' for k, v in d['stats'].items())}; median history "
              f"{d['median_length']:g}, max {d['max_length']}; "
              + (f"generate {d['generate_s']:.1f} s, " if "generate_s" in d else "")
              + f"table {d['table_s']:.1f} s, paper split {d['split_s']:.2f} s (target < {TARGET_SPLIT_S:.0f} s), "
              f"peak RSS {d['peak_rss_mb']:,.0f} MB.",
              "epoch = projected time of one pass over the model's own training rows (pointwise models: "
              f"{d['n_train_pointwise']:,}); (!) = over the issue's target; * = evaluation timed on a subset and "
              "projected; speed-up = naive epoch / optimised epoch, same run."]
    return "\n".join(lines)


def _clothing_markdown(rows: list[dict], data: dict) -> str:
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
        lines.append(f"| {r['model']} | {r['batch']} | {_fmt(r['ex_per_s'])} | {_fmt(r['ex_per_s_min'])}-"
                     f"{_fmt(r['ex_per_s_max'])} | {_fmt(r['epoch_s'], '.1f')} | {_fmt(r['peak_rss_mb'])} | "
                     f"{_fmt(rel, '.2f')}{flag} |")
    lines += ["", f"Data: clothing_seq {', '.join(f'{k} {v:,}' for k, v in data['stats'].items())}; median history "
              f"{data['median_length']:g}, max {data['max_length']}."]
    return "\n".join(lines)


def _machine() -> str:
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, torch {torch.__version__}, "
            f"load average {load} at the start")


def _log_mlflow(rows: list[dict], dataset: str, args, machine: str) -> None:
    import mlflow

    from runners.tracking import ensure_store, get_or_create_experiment, tracking_uri

    uri = tracking_uri(None)
    ensure_store(uri)
    mlflow.set_tracking_uri(uri)
    exp = get_or_create_experiment(mlflow.MlflowClient(uri), f"bench/{dataset}")
    for r in rows:
        if r.get("error"):
            continue
        with mlflow.start_run(experiment_id=exp, run_name=f"bench/{r['model']}/{dataset}"):
            mlflow.set_tags({"model": r["model"], "dataset": dataset, "kind": "bench", "machine": machine})
            mlflow.log_params({"scale": args.scale, "batch_size": r["batch"], "threads": r["threads"],
                               "steps_per_stratum": args.steps, "repeats": args.repeats,
                               "overrides": " ".join(args.overrides)})
            mlflow.log_metrics({k: float(v) for k, v in r.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "batch"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every model, e.g. model.batch_size=256")
    parser.add_argument("--quick", action="store_true", help="2%% of the size, fewer steps (a couple of minutes)")
    parser.add_argument("--scale", type=float, default=None, help="generated size (1.0 = Electronics; quick: 0.02)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=None, help="comma-separated (default: every registered model)")
    parser.add_argument("--steps", type=int, default=None, help="batches drawn per width stratum (20; quick: 3)")
    parser.add_argument("--warmup", type=int, default=None, help="batches per stratum in the warm-up pass (2; quick: 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes (3; quick: 2)")
    parser.add_argument("--naive-steps", type=int, default=None, help="batches timed per naive pass (8; quick: 2)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--compare-paths", action="store_true",
                        help="also time each model's earlier path (independent rows: trainer.pair_rows=false) and "
                             "paired rows on --processes data-parallel workers, side by side with the default")
    parser.add_argument("--processes", type=int, default=2, help="workers of the data-parallel path (2)")
    parser.add_argument("--eval-users", type=int, default=-1, help="test users evaluated (-1 all, 0 none)")
    parser.add_argument("--eval-repeats", type=int, default=1)
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="then profile STEPS training steps per model (torch.profiler): phases, top ops, "
                             "FLOPs (after the timed passes and the peak-RSS reading)")
    parser.add_argument("--no-malloc-tuning", action="store_true", help="optimised children: default allocator")
    parser.add_argument("--clothing", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure clothing_seq (default: on at full size when the data is there)")
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("SEQREC_DATA", REPO_ROOT.parent / "shared" / "data")))
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("SEQREC_CACHE", REPO_ROOT / ".cache")))
    parser.add_argument("--out", type=Path, default=None, help="output folder (default outputs/bench/<time>)")
    parser.add_argument("--mlflow", action="store_true", help="log one MLflow run per model (experiment bench/...)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--model-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prepare:
        print(json.dumps(_child_prepare(json.loads(args.prepare))))
        return 0
    if args.model_child:
        print(json.dumps(_child_model(json.loads(args.model_child))))
        return 0

    from runners.trainer import MALLOC_TUNING

    q = args.quick
    args.scale = args.scale if args.scale is not None else (0.02 if q else 1.0)
    args.steps = args.steps or (3 if q else 20)
    args.repeats = args.repeats or (2 if q else 3)
    args.naive_steps = args.naive_steps or (2 if q else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 2)
    from models.registry import available_models

    registered = available_models()
    models = [m.strip() for m in (args.models or ",".join(registered)).split(",") if m.strip()]
    unknown = sorted(set(models) - set(registered))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {','.join(registered)}")
    clothing = args.clothing if args.clothing is not None else (args.scale == 1.0 and not q)
    out_dir = args.out or REPO_ROOT / "outputs" / "bench" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = _machine()
    print(f"bench: {machine}\nmodels {','.join(models)}; scale {args.scale:g}; {args.steps} batches per stratum, "
          f"{args.repeats} timed passes; naive {'off' if args.no_naive else f'{args.naive_steps} batches x {args.repeats}'}"
          f"; overrides {args.overrides or 'none'}; output {out_dir}", flush=True)
    t_start = time.perf_counter()
    malloc_env = {} if args.no_malloc_tuning else {k: str(v) for k, v in MALLOC_TUNING.items()}
    results: dict = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "datasets": {}}
    csv_rows, md, all_path_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="seqrec_bench_") as tmp:
        datasets = [("electronics_like", {"dataset": "electronics_like", "scale": args.scale, "seed": args.seed,
                                          "table_path": f"{tmp}/table.npz", "split_path": f"{tmp}/split.npz"})]
        if clothing:
            if (args.data_root / "amazon_clothing_seq").is_dir():
                datasets.append(("clothing_seq", {"dataset": "clothing_seq", "kind": "clothing_seq",
                                                  "data_root": str(args.data_root), "cache_dir": str(args.cache_dir)}))
            else:
                print(f"clothing_seq: skipped, {args.data_root / 'amazon_clothing_seq'} not found")
        for name, data_spec in datasets:
            data = _child("prepare", data_spec, malloc_env, args.timeout)
            if "error" in data:
                print(f"{name}: data preparation FAILED: {data['error']}\n{data.get('stderr', '')}")
                return 1
            data["dataset"] = name
            results["datasets"][name] = {"data": data, "models": {}}
            print(f"{name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in data.items() if k.endswith("_s"))
                  + f", stats {data['stats']}, peak RSS {data['peak_rss_mb']:,.0f} MB", flush=True)
            rows, path_rows = [], []
            real = name != "electronics_like"
            for model in models:
                settings, params, threads, ftz = _compose(model, args.overrides)
                spec = {**data_spec, "model": model, "settings": settings, "params": params, "num_threads": threads,
                        "flush_denormal": ftz,
                        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "seed": args.seed,
                        "eval_users": 0 if real else args.eval_users, "eval_repeats": args.eval_repeats,
                        "profile": args.profile,
                        "variant": "optimised"}
                opt = _child("model-child", spec, malloc_env, args.timeout)
                naive = None
                if not args.no_naive and not real and "error" not in opt:
                    naive = _child("model-child", {**spec, "variant": "naive", "steps": args.naive_steps,
                                                   "warmup": 1}, {}, args.timeout)
                results["datasets"][name]["models"][model] = {"optimised": opt, "naive": naive}
                if args.compare_paths and "error" not in opt:
                    paths = _compare_paths(spec, opt, args.processes, malloc_env, args.timeout, model)
                    results["datasets"][name]["models"][model]["paths"] = paths
                    path_rows.append({"dataset": name, "model": model, **paths})
                from models.registry import get_model

                fmt = get_model(model).train_format
                if "error" in opt:
                    row = {"model": model, "format": fmt, "error": opt["error"]}
                    print(f"  {model}: FAILED {opt['error']}\n{opt.get('stderr', '')[-1500:]}", flush=True)
                else:
                    row = _row(model, fmt, opt, naive)
                    row["eval_projected"] = opt.get("eval_projected", False)
                    if naive and "error" in naive:
                        print(f"  {model}: naive baseline FAILED {naive['error']}", flush=True)
                    print(f"  {model}: {_fmt(opt['ex_per_s'])} ex/s, epoch {_minutes(opt['epoch_s'])} min "
                          f"(CPU {_minutes(opt['epoch_cpu_s'])}), eval {_fmt(opt.get('eval_s'), '.1f')} s, "
                          f"peak RSS {_fmt(opt['peak_rss_mb'])} MB"
                          + (f", naive epoch {_minutes(naive['epoch_s'])} min, speed-up {row['speedup']:.1f}x"
                             if row.get("speedup") else ""), flush=True)
                rows.append(row)
                csv_rows.append({"dataset": name, **row})
            md.append(_clothing_markdown(rows, data) if real else _markdown(rows, data, f"{name} x{args.scale:g}"))
            if path_rows:
                md.append(_paths_markdown(path_rows, name, args.processes))
                all_path_rows.extend(path_rows)
            md += [_profile_markdown(f"{m} ({name})", r["profile"])
                   for m, r in ((m, v["optimised"]) for m, v in results["datasets"][name]["models"].items())
                   if r.get("profile")]
            if args.mlflow:
                _log_mlflow(rows, f"{name}" + ("" if real else f"_x{args.scale:g}"), args, machine)

    import pandas as pd

    cols = ["dataset", *COLUMNS, "eval_projected", "error"]
    pd.DataFrame(csv_rows).reindex(columns=cols).to_csv(out_dir / "bench.csv", index=False)
    command = "python runners/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"## Benchmark ({time.strftime('%Y-%m-%d %H:%M')})\n\nMachine: {machine}.\nCommand: `{command.strip()}`"
            f"\n\n" + "\n\n".join(md) + "\n")
    (out_dir / "bench.md").write_text(text)
    if all_path_rows:
        pd.DataFrame(all_path_rows).to_csv(out_dir / "paths.csv", index=False)
    (out_dir / "bench.json").write_text(json.dumps(results, indent=1, default=str))
    print("\n" + text)
    print(f"bench: {time.perf_counter() - t_start:.0f} s; wrote {out_dir / 'bench.csv'}, {out_dir / 'bench.md'}")
    return 0 if all("error" not in r for r in csv_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
