"""ATRank, SASRec, BERT4Rec and Caser learn past item popularity on a small slice of real data, in the default tier.

The slice (`dense_clothing_slice`): the clothing_seq file (../shared/data/amazon_clothing_seq) cut to its 500 most
frequent items, each user's sequence kept in order over those items, and the first 4,000 users with at least 3 of
them (3,822 users, 14,028 interactions). Dense on purpose: in a plain prefix of the file most test items are never
seen in training, and POP (which scores them all 0) is then no baseline at all. The dataset is the clothing_seq
config with `path` pointing at the slice (it warns that the slice differs from the full file's statistics).

Budget, in-process through runners.run.run on the paper protocol (test AUC read each epoch, one torch thread):
POP one epoch (exact counts); SASRec its own recipe, 300 steps; ATRank 400 steps of Adam (lr 1e-3, batch 128, no
clipping or schedule: the short_budget recipe's optimiser; its SGD recipe needs far more steps); BERT4Rec 200 and
Caser 300 steps of their own recipes at batch 128 users (their batches of 256 and 512 users would be a few epochs
of the slice). Measured test AUCs: POP 0.6020, SASRec 0.6635 (+0.061), ATRank 0.6332 (+0.031), BERT4Rec 0.6863
(+0.084), Caser 0.6476 (+0.046). The required lead is about half the measured one.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from runners.run import run
from tests.runners.conftest import compose

N_ITEMS, MIN_ITEMS, N_USERS = 500, 3, 4000
ADAM = ["model.optimizer=adam", "model.lr=1e-3", "model.batch_size=128", "model.clip_norm=null",
        "model.lr_decay_step=null"]
BUDGET = {"pop": [], "sasrec": ["trainer.max_steps=300"], "atrank": ["trainer.max_steps=400", *ADAM],
          "bert4rec": ["trainer.max_steps=200", "model.batch_size=128"],
          "caser": ["trainer.max_steps=300", "model.batch_size=128"]}
# measured leads: 0.061, 0.031, 0.084, 0.046
LEAD_OVER_POP = {"sasrec": 0.03, "atrank": 0.015, "bert4rec": 0.04, "caser": 0.02}


def dense_clothing_slice(src: Path, dst: Path) -> Path:
    """`src` (`user item1 item2 ...` per line) cut to its N_ITEMS most frequent items; the first N_USERS users
    with at least MIN_ITEMS of them, their items in the original order. Ties in frequency: first seen first."""
    rows = [line.split() for line in src.read_text().splitlines()]
    kept_items = {item for item, _ in Counter(i for r in rows for i in r[1:]).most_common(N_ITEMS)}
    out = []
    for user, *items in rows:
        kept = [i for i in items if i in kept_items]
        if len(kept) >= MIN_ITEMS:
            out.append(" ".join([user, *kept]) + "\n")
        if len(out) == N_USERS:
            break
    dst.write_text("".join(out))
    return dst


@pytest.fixture(scope="module")
def slice_auc(tmp_path_factory, shared_data) -> dict[str, float]:
    """{model: test AUC} of POP, SASRec and ATRank on the slice."""
    tmp = tmp_path_factory.mktemp("learns_past_pop")
    path = dense_clothing_slice(shared_data / "amazon_clothing_seq" / "user_sequence.txt", tmp / "slice.txt")
    base = ["dataset=clothing_seq", "dataset.name=clothing_slice", f"+dataset.options.path={path}",
            "trainer.eval_every=0", "trainer.num_threads=1", f"paths.cache_dir={tmp / 'cache'}",
            f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}", "mlflow.log_outcomes=false"]
    results = {m: run(compose([f"model={m}", *base, *extra])) for m, extra in BUDGET.items()}
    assert {r["n_test_users"] for r in results.values()} == {3822}
    auc = {m: r["test_auc"] for m, r in results.items()}
    print("test AUC on the dense clothing slice: " + ", ".join(f"{m} {a:.4f}" for m, a in auc.items()))
    return auc


@pytest.mark.parametrize("model", sorted(LEAD_OVER_POP))
def test_model_learns_past_pop(slice_auc, model):
    assert slice_auc[model] >= slice_auc["pop"] + LEAD_OVER_POP[model], slice_auc
