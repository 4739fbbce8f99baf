#!/usr/bin/env bash
# The README's first command: set up, write MNIST shards, train the conditional
# DCGAN demo on the CPU (a few minutes), then sample one row per digit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [ ! -f shards/mnist/manifest.json ]; then
  .venv/bin/python -m distgan.shards write --source mnist-embedded --out shards/mnist --shard-size 500
fi
.venv/bin/python -m distgan.shards info shards/mnist --no-checksums
.venv/bin/python -m distgan.launch --config configs/mnist_cdcgan.yaml --run-dir runs/mnist_cdcgan "$@"
