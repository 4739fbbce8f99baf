#!/usr/bin/env bash
# Start a REAL Slurm cluster on this one machine, for tests and demos:
# munged (own key + socket), slurmctld, and two slurmd "nodes" (MULTIPLE_SLURMD)
# named 127.0.0.1 and 127.0.0.2 so that node names resolve (gloo rendezvous
# uses the first node's name as MASTER_ADDR). Everything lives under one base
# dir; stop.sh stops it. Needs root; installs slurm-wlm + munge with apt-get
# when missing. Idempotent: a running cluster is left as it is.
#
#   bash slurm/local-cluster/start.sh            # base dir: $DISTGAN_SLURM_BASE or /tmp/distgan-slurm
#   DISTGAN_SLURM_BASE=/tmp/gpu-cluster DISTGAN_SLURM_PORT=16917 DISTGAN_SLURMD_PORT=16918 \
#     DISTGAN_SLURM_GPUS=4 bash slurm/local-cluster/start.sh   # a second cluster whose nodes declare
#                                                              # 4 GPUs each (GRES; no device needed)
#   source /tmp/distgan-slurm/env.sh             # SLURM_CONF + the sacct stand-in on PATH
#   sinfo; sbatch --wrap 'hostname'
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=${DISTGAN_SLURM_BASE:-/tmp/distgan-slurm}
CPUS=${DISTGAN_SLURM_CPUS:-2}          # CPUs per node (oversubscribing the host is fine)
MEM=${DISTGAN_SLURM_MEM_MB:-8000}      # RealMemory per node
GPUS=${DISTGAN_SLURM_GPUS:-0}          # GPUs per node declared as GRES (count only: nothing is bound)
NODES=(127.0.0.1 127.0.0.2)

if [ "$(id -u)" != 0 ]; then
  echo "[slurm] start.sh must run as root (slurmd starts job steps as other users)" >&2
  exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  echo "[slurm] installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq slurm-wlm munge >/dev/null
fi

export SLURM_CONF=$BASE/etc/slurm.conf
if [ -f "$BASE/slurmctld.pid" ] && kill -0 "$(cat "$BASE/slurmctld.pid")" 2>/dev/null \
   && scontrol ping >/dev/null 2>&1; then
  echo "[slurm] already running (base $BASE)"
  exit 0
fi

mkdir -p "$BASE"/{etc,state,spool,log,munge,bin}
for n in "${NODES[@]}"; do mkdir -p "$BASE/spool/$n"; done
chmod 700 "$BASE/munge"

# ---- munge: a private key and socket, so nothing system-wide is touched
if [ ! -f "$BASE/munge/munge.key" ]; then
  dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$BASE/munge/munge.key"
fi
SOCK=$BASE/munge/munge.socket
if ! { [ -f "$BASE/munge/munged.pid" ] && kill -0 "$(cat "$BASE/munge/munged.pid")" 2>/dev/null; }; then
  munged --force --key-file="$BASE/munge/munge.key" --socket="$SOCK" \
         --pid-file="$BASE/munge/munged.pid" --log-file="$BASE/log/munged.log" \
         --seed-file="$BASE/munge/munged.seed"
fi

# ---- slurm.conf: settings measured to work on one host (../shared/platform.md)
nodelist=$(IFS=,; echo "${NODES[*]}")
{
  echo "ClusterName=distgan-local"
  echo "SlurmctldHost=localhost(127.0.0.1)"
  echo "SlurmctldPort=${DISTGAN_SLURM_PORT:-16817}"
  echo "SlurmUser=root"
  echo "SlurmdUser=root"
  echo "AuthType=auth/munge"
  echo "CredType=cred/munge"
  echo "AuthInfo=socket=$SOCK,cred_expire=5"
  echo "StateSaveLocation=$BASE/state"
  echo "SlurmdSpoolDir=$BASE/spool/%n"
  echo "SlurmctldPidFile=$BASE/slurmctld.pid"
  echo "SlurmdPidFile=$BASE/slurmd-%n.pid"
  echo "SlurmctldLogFile=$BASE/log/slurmctld.log"
  echo "SlurmdLogFile=$BASE/log/slurmd-%n.log"
  echo "MpiDefault=none"
  echo "ProctrackType=proctrack/linuxproc"
  echo "TaskPlugin=task/none"
  echo "SelectType=select/cons_tres"
  echo "SelectTypeParameters=CR_Core"
  echo "AccountingStorageType=accounting_storage/none"
  echo "JobAcctGatherType=jobacct_gather/none"
  echo "JobCompType=jobcomp/none"
  echo "MailProg=/bin/true"
  echo "ReturnToService=2"
  echo "KillWait=5"
  echo "MinJobAge=3600"
  echo "MaxArraySize=1001"
  echo "SchedulerParameters=sched_interval=1,bf_interval=1"
  echo "SlurmdParameters=config_overrides"
  echo "SlurmctldTimeout=30"
  echo "SlurmdTimeout=60"
  echo "InactiveLimit=0"
  echo "PropagateResourceLimitsExcept=ALL"
  gres=""
  if [ "$GPUS" -gt 0 ]; then
    echo "GresTypes=gpu"
    gres=" Gres=gpu:$GPUS"
  fi
  port=${DISTGAN_SLURMD_PORT:-16818}
  for n in "${NODES[@]}"; do  # one port per slurmd: they share the host's address space
    echo "NodeName=$n NodeHostname=localhost NodeAddr=$n Port=$port CPUs=$CPUS RealMemory=$MEM$gres State=UNKNOWN"
    port=$((port + 1))
  done
  echo "PartitionName=debug Nodes=$nodelist Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
} > "$SLURM_CONF"
echo "# empty: no cgroups here" > "$BASE/etc/cgroup.conf"
if [ "$GPUS" -gt 0 ]; then
  # slurmd counts GPUs by their device files: stand-ins with /dev/null's device number, so the
  # nodes advertise GPUs for scheduling and sinfo while no device exists
  mkdir -p "$BASE/dev"
  for i in $(seq 0 $((GPUS - 1))); do [ -e "$BASE/dev/gpu$i" ] || mknod "$BASE/dev/gpu$i" c 1 3; done
  printf 'AutoDetect=off\nName=gpu File=%s/dev/gpu[0-%d]\n' "$BASE" $((GPUS - 1)) > "$BASE/etc/gres.conf"
fi

# ---- the sacct stand-in (no slurmdbd here; submitit needs sacct to see finished jobs)
ln -sf "$HERE/bin/sacct" "$BASE/bin/sacct"
cat > "$BASE/env.sh" <<ENV
# source this to talk to the local test cluster
export SLURM_CONF=$SLURM_CONF
export PATH=$BASE/bin:\$PATH
ENV

# ---- daemons
slurmctld -i -f "$SLURM_CONF"
for n in "${NODES[@]}"; do slurmd -N "$n" -f "$SLURM_CONF"; done

# ---- wait until both nodes are idle
for _ in $(seq 1 60); do
  idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2=="idle"' | wc -l)
  if [ "$idle" -ge "${#NODES[@]}" ]; then
    echo "[slurm] local cluster up: ${#NODES[@]} nodes x $CPUS CPUs, $GPUS GPU(s) as GRES (base $BASE)"
    echo "[slurm] use it with: source $BASE/env.sh"
    exit 0
  fi
  sleep 0.5
done
echo "[slurm] nodes did not come up; sinfo says:" >&2
sinfo -N >&2 || true
tail -n 20 "$BASE/log/slurmctld.log" >&2 || true
exit 1
