#!/usr/bin/env bash
# Stop the local test cluster started by start.sh (slurmd x2, slurmctld, munged)
# and, with --purge, delete its state (job ids then restart from 1).
set -uo pipefail
BASE=${DISTGAN_SLURM_BASE:-/tmp/distgan-slurm}
stop_pid() {  # stop one daemon by its pid file, waiting up to 10 s
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$f"
}
if [ -f "$BASE/etc/slurm.conf" ]; then
  export SLURM_CONF=$BASE/etc/slurm.conf
  # cancel what is still queued so no job step outlives the cluster
  scancel --full --quiet "--user=$(id -un)" 2>/dev/null || true
fi
for f in "$BASE"/slurmd-*.pid; do [ -e "$f" ] && stop_pid "$f"; done
stop_pid "$BASE/slurmctld.pid"
stop_pid "$BASE/munge/munged.pid"
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$BASE"
fi
echo "[slurm] local cluster stopped (base $BASE)"
