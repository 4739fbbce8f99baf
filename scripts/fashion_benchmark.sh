#!/usr/bin/env bash
# The Fashion-MNIST FID benchmark of docs/quality.md, from a fresh clone:
# set up, install the data set (Debian's dataset-fashion-mnist), write native
# 28x28 shards of the train and test splits, train one preset, score it under
# the protocol of Lucic et al. (10,000 test images vs 10,000 samples), export
# its generator as safetensors.
#
#   bash scripts/fashion_benchmark.sh dcgan  [key=value ...]   # unconditional NS DCGAN
#   bash scripts/fashion_benchmark.sh cdcgan [key=value ...]   # projection D + class-conditional BN
#   SEED=1 bash scripts/fashion_benchmark.sh cdcgan            # another training seed (own run dir)
#   bash scripts/fashion_benchmark.sh NAME                      # any preset configs/fashion_fid_NAME.yaml
#
# Re-running resumes training from the run's latest checkpoint; the test
# images' Inception features are cached after the first evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: fashion_benchmark.sh MODEL [key=value ...]  (configs/fashion_fid_MODEL.yaml)}
shift
preset=configs/fashion_fid_$model.yaml
if [ ! -f "$preset" ]; then
  echo "fashion_benchmark.sh: no preset $preset; the presets are:" \
       "$(ls configs/fashion_fid_*.yaml | sed 's|configs/fashion_fid_||; s|\.yaml||' | tr '\n' ' ')" >&2
  exit 2
fi
seed=${SEED:-0}
run=runs/fashion_fid_${model}$([ "$seed" = 0 ] || echo "_seed$seed")
bash scripts/setup.sh
bash scripts/fashion_data.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
py=.venv/bin/python
# a class-conditional preset is also scored per class (intra-class FID)
cond=$($py -c "from distgan.config import load_config; print(load_config('$preset').model.cond)")
metrics=fid,precision_recall
[ "$cond" = none ] || metrics=fid,intra_fid,precision_recall
$py -m distgan.launch --cluster local --config "$preset" --run-dir "$run" train.seed="$seed" "$@"
$py -m distgan.metrics $metrics "$run" shards/fashion28_test --num 10000 --out "$run/benchmark.jsonl"
$py -m distgan.export --run "$run" --format safetensors --out "$run/generator.safetensors"
$py -m distgan.sample --run "$run" --num 100 --seed 0 --out "$run/grid.png"
