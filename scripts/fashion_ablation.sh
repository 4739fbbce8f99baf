#!/usr/bin/env bash
# Viel's DCGAN tables re-run on Fashion-MNIST (docs/ablation.md), from a fresh clone: set up,
# write the shards, run the study's sweeps; each ends in SWEEP_DIR/results.md with the tables.
#
#   bash scripts/fashion_ablation.sh                          # every sweep, here, 2 runs at a time
#   bash scripts/fashion_ablation.sh fashion_methods          # one sweep (configs/sweeps/NAME.yaml)
#   CLUSTER=slurm PARALLEL=8 bash scripts/fashion_ablation.sh # as job arrays on a Slurm cluster
#
# Re-running skips finished runs and resumes the others from their checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fashion_data.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cluster=${CLUSTER:-local}
for name in ${@:-fashion_methods fashion_latent_width fashion_lr_batch}; do
  .venv/bin/python -m distgan.sweep "configs/sweeps/$name.yaml" --cluster "$cluster" --max-parallel "${PARALLEL:-2}" \
      $([ "$cluster" = slurm ] && echo --wait)
done
