"""Where S3Rec's POP figures come from: POP's sampled HR@10 / NDCG@10 on the protocol=s3rec split (the suite's
frozen 99 negatives; LastFM: the authors' file) with item counts from the training part (the suite's POP) or from
every interaction, the held-out validation and test items included, under both tie rules.

    python examples/s3rec_pop_counts.py lastfm toys sports yelp
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from datasets.batching import eval_rows  # noqa: E402
from runners.config import job_settings  # noqa: E402
from runners.run import load_data  # noqa: E402


def main(names: list[str]) -> None:
    print("| dataset | counts from | ties | HR@10 | NDCG@10 |\n|---|---|---|---:|---:|")
    for name in names:
        extra = ["protocol.eval_negatives_file=s3rec/LastFM_sample.txt"] if name == "lastfm" else []
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=["model=pop", f"dataset={name}", "experiment=s3rec", *extra])
        table, split = load_data(job_settings(cfg).data)
        rows = eval_rows(table, split, "test")
        user_of = np.repeat(np.arange(len(table.indptr) - 1), np.diff(table.indptr))
        training = np.arange(len(table.items)) < split.train_end[user_of]
        for source, kept in (("training part", training), ("every interaction", np.ones_like(training))):
            counts = np.bincount(table.items[kept], minlength=table.n_items)
            pos, negs = counts[rows.target][:, None], counts[split.eval_negs[rows.user]]
            for ties in ("pessimistic", "optimistic"):
                rank = (negs > pos).sum(1) + ((negs == pos).sum(1) if ties == "pessimistic" else 0)
                ndcg = np.where(rank < 10, 1 / np.log2(rank + 2), 0.0).mean()
                print(f"| {name} | {source} | {ties} | {np.mean(rank < 10):.4f} | {ndcg:.4f} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["lastfm", "toys", "sports", "yelp"])
