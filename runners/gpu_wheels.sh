#!/usr/bin/env bash
# The wheels runners/gpu_check.py needs on the GPU machine, built here into .whl/ (git-ignored). That machine has
# python3 3.12 with torch, numpy, pandas, scipy, scikit-learn, pyyaml, packaging, filelock and tqdm, no network,
# and neither Hydra nor OmegaConf; gpu_check needs no MLflow. antlr4-python3-runtime 4.9.3 exists on PyPI only as
# a source archive, so it is built into a wheel with `pip wheel`. All three wheels are pure Python (py3-none-any).
# There: python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
HYDRA=1.3.8 OMEGACONF=2.3.1 ANTLR=4.9.3  # the versions the tests pass with here (Hydra 1.3 pins antlr 4.9.*)
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "hydra-core==$HYDRA" "omegaconf==$OMEGACONF"
python3 -m pip wheel -q "antlr4-python3-runtime==$ANTLR" -w .whl --no-deps
ls .whl
n=$(ls .whl/*.whl | wc -l)
[ "$n" -eq 3 ] || { echo "gpu_wheels.sh: expected 3 wheels in .whl/, found $n" >&2; exit 1; }
