"""runners/bench.py's child side: each entry runs in a child process of its own and returns a JSON-able dict.

- `prepare_data`: generate (or load) the dataset, build its table and its paper split, save both for the model
  children, timing each stage;
- `measure_model`: one model, one variant (optimised | naive), one path (paired or independent rows, one or N
  processes): preprocessing time, the projected epoch time from stratified timed passes over the epoch's real
  batch order, evaluation time, the child's peak RSS, and optionally a torch.profiler breakdown of a step.
A step is runners.train.trainer.StepRunner's, the one train() takes, so the bench times the training code path.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from datasets.batching import BatchMaker, Rows, batch_order, eval_rows
from datasets.split import Split, load_split, make_split
from datasets.table import Table, build_table, read_table, save_table
from models.interface import SeqRecModel
from models.registry import get_model
from runners.step.device import peak_device_mb, resolve_device, synchronize
from runners.step.device_step import batch_maker
from runners.step.optim import train_step
from runners.train.runtime import configure_runtime, peak_rss_mb, seed_everything
from runners.step.settings import TrainSettings
from runners.train.trainer import StepRunner, training_rows

WIDTH_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # stratum k holds batches of width in (edge[k-1], edge[k]]
NAIVE_OPTIMIZER = {"optimizer": "adam", "lr": 1e-3, "sparse_grad": False, "bucket_by_length": False,
                   "pair_rows": False, "device": "cpu"}  # a CPU baseline
WINDOW_WARMUP = 20  # untimed batches before a --window (bench.py's help and bench_tables' note say 20)
Strata = list[tuple[int, list[int]]]  # per stratum: (batches in it, indices of the drawn batches)
Order = list[tuple[int, int]]  # the timed steps in turn: (stratum position, batch index)
Plan = list[tuple[Strata, Order]]  # passes; the first is the warm-up (not reported)


def prepare_data(spec: dict) -> dict:
    """Generate (or load) the dataset, build its table and paper split; save both for the model children."""
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

        table = load_dataset(spec["dataset"], spec["kind"], spec["data_root"], spec["cache_dir"], spec.get("options"))
        out["table_s"] = time.perf_counter() - t0
        t2 = time.perf_counter()
        split = load_split(table, spec["cache_dir"], "paper", 1234)
        out["split_s"] = time.perf_counter() - t2
    lengths = table.lengths
    out.update(stats=table.stats(), median_length=float(np.median(lengths)), max_length=int(lengths.max()),
               n_train_pointwise=2 * split.n_train_positions(table), peak_rss_mb=peak_rss_mb())
    return out


def load_data(spec: dict) -> tuple[Table, Split]:
    """The table and split prepare_data saved (generated data) or cached (a real dataset)."""
    if spec["dataset"] == "electronics_like":
        table = read_table(Path(spec["table_path"]))
        with np.load(spec["split_path"]) as z:
            split = Split("paper", 1234, z["neg"], z["train_end"], None, z["test_pos"])
        return table, split
    from datasets.load import load_dataset

    table = load_dataset(spec["dataset"], spec["kind"], spec["data_root"], spec["cache_dir"], spec.get("options"))
    return table, load_split(table, spec["cache_dir"], "paper", 1234)


def padded_maker(table: Table, max_len: int | None, width: int) -> BatchMaker:
    """BatchMaker whose batches are all padded to `width` (the naive baseline: padding work no bucketing saves)."""

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


def stratum_index(widths: np.ndarray) -> np.ndarray:
    """Each batch's width stratum: width w -> the first edge >= w (powers of two)."""
    return np.searchsorted(np.asarray(WIDTH_EDGES), widths, side="left")


def draw_strata(widths: np.ndarray, batches_per_stratum: int, rng: np.random.Generator) -> Strata:
    """[(number of batches in the stratum, indices of the drawn batches)] by width (powers of two)."""
    which = stratum_index(widths)
    out = []
    for k in np.unique(which):
        members = np.flatnonzero(which == k)
        drawn = rng.choice(members, size=min(batches_per_stratum, len(members)), replace=False)
        out.append((len(members), sorted(int(i) for i in drawn)))
    return out


def shuffled(picks: Strata, rng: np.random.Generator) -> Order:
    """Every drawn batch once, as (stratum position, batch index), in a random order."""
    order = [(k, i) for k, (_, idx) in enumerate(picks) for i in idx]
    return [order[j] for j in rng.permutation(len(order))]


def stratified_plan(strata: Strata, warmup: int, repeats: int, rng: np.random.Generator) -> Plan:
    """A warm-up pass over `warmup` drawn batches per stratum, then `repeats` passes over every drawn batch, each in
    a random order."""
    warm = [(n, idx[:warmup]) for n, idx in strata]
    return [(warm, shuffled(warm, rng))] + [(strata, shuffled(strata, rng)) for _ in range(repeats)]


def consecutive_plan(widths: np.ndarray, window: int, warmup: int, extra: int, rng: np.random.Generator) -> Plan:
    """The epoch as training runs it: its first `warmup` batches untimed, then the next `window` batches in the
    epoch's own order, timed; a stratum the window did not reach gets `extra` batches drawn from it, timed after
    the window. Projected per stratum as the stratified plan is (batches in it x mean time of its timed ones), so
    the rare wide batches weigh by their count, not by how many the window happened to hold."""
    n = len(widths)
    warmup = min(warmup, max(n - 1, 0))
    timed = np.arange(warmup, min(n, warmup + window))
    which = stratum_index(widths)
    strata = np.unique(which)
    position = np.searchsorted(strata, which)  # each batch's place in `picks`
    picks: Strata = []
    drawn: Order = []  # timed after the window
    for k, stratum in enumerate(strata):
        members = np.flatnonzero(which == stratum)
        inside = timed[which[timed] == stratum]
        if not len(inside):
            after = members[members >= warmup]
            inside = np.sort(rng.choice(after if len(after) else members, size=min(extra, len(members)),
                                        replace=False))
            drawn += [(k, int(i)) for i in inside]
        picks.append((len(members), [int(i) for i in inside]))
    order = [(int(position[i]), int(i)) for i in timed] + drawn
    return [([(warmup, list(range(warmup)))], [(0, i) for i in range(warmup)]), (picks, order)]


def measure_model(spec: dict) -> dict:
    """One model, one variant (optimised | naive): preprocessing, training passes, evaluation, peak RSS."""
    naive = spec["variant"] == "naive"
    # as runners/run.py: threads, denormals flushed (naive: not); the allocator comes from the env the parent set
    configure_runtime(spec["num_threads"], flush_denormal=not naive and spec["flush_denormal"])
    table, split = load_data(spec)
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
    rows, per, maker, batches, hist_len = _epoch_batches(model, table, split, s, naive)
    out["prep_s"] = time.perf_counter() - t0
    out.update(rows_per_epoch=len(rows) * per, batches_per_epoch=len(batches),
               pad_width=max(int(hist_len.max()), 1) if naive else None, pair_rows=per == 2,
               processes=spec.get("processes", 1))
    runner = StepRunner(model, rows, per, maker, s)
    if runner.device_steps is not None:  # CUDA graphs: every padded width captured before the warm-up pass
        runner.device_steps.prepare(batches)
    out["sparse_grad"] = any(getattr(m, "sparse", False) for m in model.modules())
    rng = np.random.default_rng(spec["seed"])
    if naive:  # every batch has the same width: a plain random sample
        strata = [(len(batches), sorted(rng.choice(len(batches), min(spec["steps"], len(batches)),
                                                   replace=False).tolist()))]
        plan = stratified_plan(strata, spec["warmup"], spec["repeats"], rng)
    else:
        widths = np.array([max(int(hist_len[b].max()), 1) for b in batches])
        if spec.get("window"):
            plan = consecutive_plan(widths, spec["window"], WINDOW_WARMUP, spec["steps"], rng)
        else:
            plan = stratified_plan(draw_strata(widths, spec["steps"], rng), spec["warmup"], spec["repeats"], rng)
    out.update(time_training(runner, table, split, s, batches, plan, spec))
    if not naive and spec["eval_users"] != 0:
        out.update(time_evaluation(model, maker, eval_rows(table, split, "test"), s.eval_batch_size, spec, rng))
    out["peak_rss_mb"] = peak_rss_mb()
    device = resolve_device(s.device)
    out.update(device=str(device), peak_gpu_mb=peak_device_mb(device))
    if runner.device_steps is not None and runner.device_steps.outcomes() is not None:
        out["cuda_graphs"] = runner.device_steps.outcomes()
    if not naive and spec.get("profile"):  # last: the profiler's own event buffers must not count in peak RSS
        out["profile"] = profile_steps(runner, batches, spec["profile"], rng, out["epoch_s"] / len(batches))
    return out


def _epoch_batches(model: SeqRecModel, table: Table, split: Split, s: TrainSettings,
                   naive: bool) -> tuple[Rows, int, BatchMaker, list[np.ndarray], np.ndarray]:
    """The preprocessing a run does before its first step: training rows (and the training rows each index
    stands for), the batch maker (naive: padded to the widest history), epoch 0's batch order; plus each row's
    history length, which the strata are drawn by."""
    rows, per = training_rows(model, table, split, s.pair_rows)
    hist_len = rows.end - table.indptr[rows.user]
    if s.max_len:
        hist_len = np.minimum(hist_len, s.max_len)
    if naive:
        maker = padded_maker(table, s.max_len, max(int(hist_len.max()), 1))
    else:
        maker = batch_maker(table, s)  # the run's: numpy on the CPU, device-resident on an accelerator
    batches = batch_order(rows, s.batch_size // per, np.random.default_rng([s.seed, 0]),
                          bucket_by_length=s.bucket_by_length, indptr=table.indptr,
                          chunk_batches=s.bucket_chunk)
    return rows, per, maker, batches, hist_len


def time_training(runner: StepRunner, table: Table, split: Split, s: TrainSettings, batches: list[np.ndarray],
                  plan: Plan, spec: dict) -> dict:
    """The passes of `plan` (the first a warm-up); with `processes` > 1 the data-parallel helpers run the same
    global batches (runners/parallel/data_parallel.run_program)."""
    runner.model.train()
    processes = spec.get("processes", 1)
    helpers = contextlib.nullcontext()
    if processes > 1:
        from runners.parallel.data_parallel import Helpers

        program = [batches[i] for _, order in plan for _, i in order]
        helpers = Helpers(runner.model, table, split, s, processes, spec.get("backend", "shm"),
                          spec["num_threads"] or 1, spec["flush_denormal"], program)
    with helpers as sync:
        passes = [_timed_pass(runner, batches, picks, order, sync) for picks, order in plan][1:]
    epoch_wall = [p[0] for p in passes]
    out = dict(steps_timed=passes[0][2], strata=len(plan[-1][0]), epoch_s_all=epoch_wall,
               timing="consecutive" if spec.get("window") else "stratified",
               epoch_s=statistics.median(epoch_wall), epoch_s_min=min(epoch_wall), epoch_s_max=max(epoch_wall),
               epoch_cpu_s=statistics.median(p[1] for p in passes))
    rows_per_epoch = len(runner.rows) * runner.rows_per_index
    out.update(ex_per_s=rows_per_epoch / out["epoch_s"], ex_per_s_min=rows_per_epoch / out["epoch_s_max"],
               ex_per_s_max=rows_per_epoch / out["epoch_s_min"])
    return out


def _timed_pass(runner: StepRunner, batches: list[np.ndarray], picks: Strata, order: list[tuple[int, int]],
                sync) -> tuple[float, float, int]:
    """Projected epoch (wall s, CPU s) from timing every drawn batch once, in `order`: per stratum, the batches in
    it times the mean time of its drawn ones."""
    wall, cpu = np.zeros(len(picks)), np.zeros(len(picks))
    device = runner.device  # the model's device, also when its batches are built on the host
    for k, i in order:
        w0, c0 = time.perf_counter(), time.process_time()
        runner.step(batches[i], sync)
        synchronize(device)  # an accelerator's step is timed to its end (a no-op on the CPU)
        wall[k] += time.perf_counter() - w0
        cpu[k] += time.process_time() - c0
    n_drawn = np.array([max(len(idx), 1) for _, idx in picks])
    n_all = np.array([n for n, _ in picks])
    return float((wall / n_drawn * n_all).sum()), float((cpu / n_drawn * n_all).sum()), len(order)


def time_evaluation(model: SeqRecModel, maker: BatchMaker, test: Rows, batch_size: int, spec: dict,
                    rng: np.random.Generator) -> dict:
    """Evaluation over the test users (or `eval_users` of them, projected linearly), after a warm-up."""
    from runners.train.evaluation import evaluate  # (imports scikit-learn: only where needed)

    n = len(test) if spec["eval_users"] < 0 else min(spec["eval_users"], len(test))
    subset = test if n == len(test) else test.take(np.sort(rng.choice(len(test), n, replace=False)))
    evaluate(model, maker, test.take(np.arange(min(512, len(test)))), batch_size)  # warm-up
    times = []
    for _ in range(spec["eval_repeats"]):
        t0 = time.perf_counter()
        outcome = evaluate(model, maker, subset, batch_size)
        times.append((time.perf_counter() - t0) * len(test) / n)
    return dict(eval_s=statistics.median(times), eval_projected=n < len(test), eval_users=n, eval_auc=outcome.auc)


def profile_steps(runner: StepRunner, batches: list[np.ndarray], n_steps: int, rng: np.random.Generator,
                  step_s: float) -> dict:
    """torch.profiler over `n_steps` batches drawn at random from the epoch (so widths come in epoch proportion):
    where a step's time goes (forward / backward / optimiser, the phases train_step labels), how many aten calls a
    step dispatches (nested calls included), matmul/conv FLOPs per step, and the ops with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    picks = rng.choice(len(batches), min(n_steps, len(batches)), replace=False)
    made = [runner.maker.make(runner.rows.take(batches[i])) for i in picks]  # batch building stays outside
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for b in made:
            train_step(runner.model, runner.optimizer, runner.params, b, runner.clip_norm, label_phases=True)
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
