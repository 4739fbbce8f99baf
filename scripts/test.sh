#!/usr/bin/env bash
# The README's second command: set up, then run the whole test suite.
# pytest's exit code 5 (no tests collected) is a failure here, never a pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1

# The Slurm tests (tests/test_slurm.py) run against a REAL Slurm cluster on this
# machine: start it (apt-get installs slurm-wlm + munge when missing; needs root)
# and stop it when the tests end, however they end. DISTGAN_SLURM=0 skips this.
slurm_base=${DISTGAN_SLURM_BASE:-/tmp/distgan-slurm}
if [ "${DISTGAN_SLURM:-1}" != 0 ] && [ "$(id -u)" = 0 ]; then
  if SLURM_CONF=$slurm_base/etc/slurm.conf scontrol ping 2>/dev/null | grep -q UP; then
    echo "[test] local Slurm cluster already running (left running afterwards)"
  else
    bash slurm/local-cluster/start.sh
    trap 'bash slurm/local-cluster/stop.sh || true' EXIT
  fi
fi

# The report test takes a real headless-browser screenshot: install Debian's chromium
# when we can (root, apt) so that test runs instead of skipping.
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing chromium for the report screenshot test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[test] warning: chromium could not be installed; the screenshot test will skip (a failure under CI=true)" >&2
fi

# lint and import order first (the configuration is in pyproject.toml): a style error fails fast
.venv/bin/ruff check distgan tests bench

set +e
.venv/bin/python -m pytest "${@:-tests}"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
