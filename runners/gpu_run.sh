#!/usr/bin/env bash
# The prepared GPU run (runners/gpu_check.py), in two halves:
#   bash runners/gpu_run.sh prepare          # here: .whl/ (runners/gpu_wheels.sh) and .gpu_data/amazon_clothing_seq,
#                                            # both git-ignored; carry both to the GPU machine
#   bash runners/gpu_run.sh [ARGS...]        # there: install .whl/ into /tmp/site, run gpu_check with python3;
#                                            # ARGS go to gpu_check (default --device cuda); output in $OUT
# The same layout runs on the CPU: bash runners/gpu_run.sh --device cpu [--smoke].
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = prepare ]; then
  bash runners/gpu_wheels.sh
  src="${SEQREC_DATA:-../shared/data}/amazon_clothing_seq"
  [ -d "$src" ] || { echo "gpu_run.sh: $src not found (set SEQREC_DATA to the folder holding it)" >&2; exit 1; }
  rm -rf .gpu_data && mkdir -p .gpu_data && cp -r "$src" .gpu_data/
  du -sh .whl .gpu_data
  exit 0
fi
[ -d .gpu_data/amazon_clothing_seq ] || { echo "gpu_run.sh: .gpu_data/amazon_clothing_seq missing: run" \
  "'bash runners/gpu_run.sh prepare' here and carry .gpu_data" >&2; exit 1; }
if ! python3 -c "import hydra, omegaconf" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_run.sh: no hydra here and no .whl/: run" \
    "'bash runners/gpu_run.sh prepare' here and carry .whl" >&2; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
OUT="${OUT:-outputs/gpu_check}"
mkdir -p "$OUT"
[ $# -gt 0 ] || set -- --device cuda
python3 -c "import torch, hydra; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'hydra', hydra.__version__)"
PYTHONUNBUFFERED=1 python3 runners/gpu_check.py --data-root .gpu_data --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
