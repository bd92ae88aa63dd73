"""runners/bench.py --full-ranking: the time to rank every test user of a dataset against its whole catalogue.

The model is built untrained at its recipe (conf/model/<name>.yaml, as runners/run.py builds it): the cost of a
full ranking does not depend on the weights. The dataset, its split and the ranking settings (tie policy, the
user's history excluded or zeroed) come from the composed config, so `protocol=...` overrides apply as in a run.
"""
from __future__ import annotations

import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def full_ranking_setup(model: str, dataset: str, overrides: list[str]):
    """(model, BatchMaker, test rows, job) of `model` on `dataset` under protocol loo_val (or the overrides')."""
    from hydra import compose, initialize_config_dir

    from datasets.batching import BatchMaker, eval_rows
    from datasets.load import load_dataset
    from datasets.split import data_options, load_split
    from models.registry import get_model
    from runners.config import check_config, job_settings
    from runners.train.runtime import seed_everything

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config",
                      overrides=[f"model={model}", f"dataset={dataset}", "protocol=loo_val", *overrides])
    check_config(cfg)
    job = job_settings(cfg)
    d = job.data
    table = load_dataset(d.dataset, d.kind, d.data_root, d.cache_dir, data_options(d.options, d.split, d.short_users))
    split = load_split(table, d.cache_dir, d.split, d.split_seed, d.eval_negatives, d.eval_negatives_kind,
                       d.short_users)
    seed_everything(job.seed)  # the untrained weights, as runners/run.py's build_model draws them
    net = get_model(job.model)(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                               item_category=table.item_category, **job.params)
    return net, BatchMaker(table, max_len=job.settings.max_len), eval_rows(table, split, "test"), job


def run_full_ranking(model: str, dataset: str, overrides: list[str], repeats: int, threads: int | None,
                     cpu: str) -> tuple[int, str]:
    """Rank every test user `repeats` times on `threads` torch threads (None: the run's trainer.num_threads);
    the text names users, items, each time, the median, users/s and the CPU."""
    import statistics

    import torch

    from runners.train.evaluation import full_ranks

    net, maker, rows, job = full_ranking_setup(model, dataset, overrides)
    threads = threads or job.threads
    torch.set_num_threads(threads)
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        ranks = full_ranks(net, maker, rows, job.settings.eval_batch_size, ties=job.ties,
                           history=job.full_ranking_history, seed=job.seed)
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
    median = statistics.median(seconds)
    text = (f"full ranking: {model} on {dataset}, {len(rows):,} users x {net.n_items:,} items, ties {job.ties}, "
            f"history {job.full_ranking_history}, {threads} torch thread(s)\n"
            f"seconds {', '.join(f'{s:.2f}' for s in seconds)}; median {median:.2f} s, "
            f"{len(rows) / median:,.0f} users/s; process CPU seconds (all threads) "
            f"{', '.join(f'{s:.2f}' for s in cpu_seconds)}; mean rank {float(ranks.mean()):.1f}\nCPU: {cpu}")
    return 0, text
