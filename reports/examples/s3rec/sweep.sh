#!/usr/bin/env bash
# The standard-benchmark sweeps behind reports/examples/s3rec/ (protocol=s3rec, experiment=s3rec): POP under both
# tie rules, SASRec (bce, then ce), GRU4Rec, Caser, BERT4Rec, ATRank for contrast. Run from the repository root;
# safe to rerun: finished configs are skipped (skip_finished) and interrupted runs resume from their checkpoint.
#   nohup setsid bash reports/examples/s3rec/sweep.sh a > s3rec_a.log 2>&1 &
#   nohup setsid bash reports/examples/s3rec/sweep.sh b > s3rec_b.log 2>&1 &
# then lanes c and d the same way (the remaining seeds and models), e (BERT4Rec's budget and window checks) and f
# (Caser's training windows).
# Every run uses one torch thread, so a 2-core machine runs the two lanes at once. Store: $S3REC_STORE (default
# <repo>/mlruns/s3rec/mlflow.db). LastFM is evaluated on the authors' exact 99 negatives (LastFM_sample.txt).
set -u
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
STORE=${S3REC_STORE:-sqlite:///$ROOT/mlruns/s3rec/mlflow.db}
mkdir -p "$ROOT/mlruns/s3rec"
COMMON=(experiment=s3rec trainer.num_threads=1 trainer.checkpoint_every=500 mlflow.tracking_uri=$STORE
        +tags.purpose=s3rec_benchmark)
negatives() { [[ $1 == lastfm ]] && echo protocol.eval_negatives_file=s3rec/LastFM_sample.txt; }
one() {  # dataset model seed [extra overrides...]
    local data=$1 model=$2 seed=$3; shift 3
    python "$ROOT/runners/run.py" model="$model" dataset="$data" seed="$seed" "${COMMON[@]}" $(negatives "$data") "$@" \
        || echo "s3rec sweep: $data $model seed $seed $*: exit $?"
}
pops() {  # both tie rules: the suite's pessimistic default and S3Rec's optimistic one
    for data in lastfm toys yelp sports; do
        one "$data" pop 0
        one "$data" pop 0 protocol.ties=optimistic +tags.variant=optimistic_ties
    done
}
LANE=${1:-a}
case $LANE in  # a and b first (the two cores), then c and d
    a)  pops
        one lastfm sasrec 0
        for seed in 0 1 2; do one toys sasrec $seed; done
        one yelp sasrec 0
        one lastfm sasrec 0 model.params.loss=ce +tags.variant=ce
        for m in gru4rec caser bert4rec; do one lastfm $m 0; done
        one toys sasrec 0 model.params.loss=ce +tags.variant=ce
        for m in gru4rec caser atrank bert4rec; do one toys $m 0; done ;;
    b)  for seed in 0 1 2; do one sports sasrec $seed; done
        one sports sasrec 0 model.params.loss=ce +tags.variant=ce
        for m in gru4rec caser bert4rec; do one sports $m 0; done ;;
    c)  for m in gru4rec caser; do one yelp $m 0; done
        one yelp sasrec 0 model.params.loss=ce +tags.variant=ce
        for seed in 1 2; do
            for m in gru4rec caser; do one toys $m $seed; done
            one toys sasrec $seed model.params.loss=ce +tags.variant=ce
        done
        one yelp bert4rec 0
        for seed in 1 2; do one toys bert4rec $seed; done ;;
    d)  for seed in 1 2; do
            for m in gru4rec caser; do one sports $m $seed; done
            one sports sasrec $seed model.params.loss=ce +tags.variant=ce
        done
        for seed in 1 2; do one sports bert4rec $seed; done ;;
    e)  # LastFM's BERT4Rec and Caser gaps: a longer patience, windows from the whole sequence, more steps an epoch
        one lastfm bert4rec 0 trainer.patience=50 +tags.variant=patience50
        windows=(trainer.patience=50 model.params.train_window=random model.max_len=null)
        one lastfm bert4rec 0 "${windows[@]}" +tags.variant=random_windows_patience50
        one lastfm bert4rec 0 "${windows[@]}" model.batch_size=32 +tags.variant=random_windows_patience50_batch32
        one lastfm caser 0 model.batch_size=13 +tags.variant=batch13  # ~512 windows a step, as the authors
        one sports caser 0 model.params.dim=50 model.weight_decay=1e-6 model.batch_size=512 \
            +tags.variant=authors_settings ;;  # the Caser authors' d, L2 and batch (512 users = ~600 windows)
    f)  # Caser's gap on the Amazon sets: a window before every item (RecBole's cutting), with BCE and with CE
        one sports caser 0 model.params.windows=every_item model.params.loss=ce model.params.T=1 \
            +tags.variant=recbole_training
        every=(model.params.windows=every_item +tags.variant=every_item_windows)
        for seed in 0 1 2; do one sports caser $seed "${every[@]}"; done
        for seed in 0 1 2; do one toys caser $seed "${every[@]}"; done
        one yelp caser 0 "${every[@]}" ;;
    *)  echo "sweep.sh: unknown lane '$LANE' (a, b, c, d, e or f)" >&2; exit 2 ;;
esac
