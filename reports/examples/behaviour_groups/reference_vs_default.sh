#!/usr/bin/env bash
# AttRec and DIN: experiment=reference (the authors' code) vs the default recipe (the paper), issue #21.
# Both on the paper protocol (test AUC every 1,000 steps, as the reference), one seed; one epoch, then the full
# budget (AttRec 20 epochs; DIN until 5 evaluations without a better test AUC, at most its 10 epochs).
set -u
run() { python runners/run.py -m "$@" trainer.num_threads=1 +tags.purpose=reference_vs_default || echo "exit $? for: $*"; }
for d in clothing_seq amazon_hin; do
    run model=attrec,din dataset=$d experiment=reference trainer.epochs=1 +tags.budget=one_epoch
    run model=attrec,din dataset=$d protocol=paper trainer.eval_every=1000 trainer.epochs=1 +tags.budget=one_epoch
done
for d in clothing_seq amazon_hin; do
    run model=attrec dataset=$d experiment=reference +tags.budget=full
    run model=attrec dataset=$d protocol=paper trainer.eval_every=1000 +tags.budget=full
    run model=din dataset=$d experiment=reference trainer.patience=5 +tags.budget=full
    run model=din dataset=$d protocol=paper trainer.eval_every=1000 trainer.patience=5 +tags.budget=full
done
