#!/usr/bin/env bash
# The README's second command: set up, then run the whole test suite.
# pytest's exit code 5 (no tests collected) is a failure here, never a pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
set +e
.venv/bin/python -m pytest "${@:-tests}"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
