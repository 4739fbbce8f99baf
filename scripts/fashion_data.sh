#!/usr/bin/env bash
# Fashion-MNIST as native 28x28 shards of the train and test splits (shards/fashion28,
# shards/fashion28_test), for the benchmark and ablation scripts. Installs Debian's
# dataset-fashion-mnist when run as root and the files are missing; FASHION_MNIST_DIR
# points at another folder with the idx files. Expects .venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ] && [ ! -f "$data/t10k-images-idx3-ubyte" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null
  else
    echo "fashion_data.sh: Fashion-MNIST not found in $data: run 'sudo apt-get install dataset-fashion-mnist'" \
         "or set FASHION_MNIST_DIR to a folder with the idx files" >&2
    exit 2
  fi
fi
for split in train test; do
  out=shards/fashion28$([ $split = test ] && echo _test)
  if [ ! -f "$out/manifest.json" ]; then
    .venv/bin/python -m distgan.shards write --source fashion-mnist-idx "$data" --split $split --out "$out" \
        --shard-size 5000
  fi
done
