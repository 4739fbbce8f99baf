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
.venv/bin/python -m distgan.launch --cluster local --config configs/mnist_cdcgan.yaml --run-dir runs/mnist_cdcgan "$@"
# Use what was trained: a grid with one row per digit from the final checkpoint
# (README "Using a trained generator" shows more: weighted labels, sweeps, export, report).
.venv/bin/python -m distgan.sample --run runs/mnist_cdcgan --num 100 --seed 0 --out runs/mnist_cdcgan/digits.png
