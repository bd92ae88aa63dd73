#!/usr/bin/env bash
# ATRank's behaviour groups measured (issue #21): all groups vs items only vs the rating split vs Table 3's one
# group, 3 seeds, loo_val, Adam lr 1e-3 (the SGD lr 1.0 recipe does not fit the small generated data in 10 epochs:
# see docs/results.md "Heterogeneous behaviours"). Run from the repository root; finished configs are skipped.
set -u
COMMON="model=atrank protocol=loo_val seed=0,1,2 model.optimizer=adam model.lr=0.001 model.clip_norm=null
        trainer.num_threads=1 +tags.purpose=behaviour_groups"
run() { python runners/run.py -m $COMMON "$@" || echo "exit $? for: $*"; }
# generated multi/-shaped data: 3 epochs
H="dataset=hetero_sample trainer.epochs=3 trainer.eval_every=1000"
run $H model.params.behavior_groups=typed +tags.variant=typed_all_groups
run $H model.params.behavior_groups=typed dataset.options.behaviours=[] +tags.variant=typed_items_only
run $H model.params.behavior_groups=rating dataset.options.behaviours=null +tags.variant=rating_split
run $H model.params.behavior_groups=one dataset.options.behaviours=null
python runners/run.py -m model=pop dataset=hetero_sample dataset.options.behaviours=null protocol=loo_val \
    +tags.purpose=behaviour_groups
# amazon_hin (real): brand and category behaviour groups, the rating as the items' action; a fixed short budget
A="dataset=amazon_hin trainer.max_steps=3000 trainer.eval_every=1000"
run $A model.params.behavior_groups=typed dataset.options.behaviours=[brand,category] +tags.variant=typed_all_groups
run $A model.params.behavior_groups=typed dataset.options.behaviours=[] +tags.variant=typed_items_only
run $A model.params.behavior_groups=rating +tags.variant=rating_split
run $A model.params.behavior_groups=one
python runners/run.py -m model=pop dataset=amazon_hin protocol=loo_val +tags.purpose=behaviour_groups
