#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for grit's Slurm tests and benchmark.
#
#   tests/slurm-cluster.sh start   install slurm-wlm and munge if missing (apt-get, as root),
#                                  start munged, slurmctld and slurmd; idempotent: a cluster
#                                  already up is left alone. Prints `export SLURM_CONF=...`.
#   tests/slurm-cluster.sh stop    cancel the cluster's jobs and stop its daemons (by their pids).
#   tests/slurm-cluster.sh env     print `export SLURM_CONF=...` for a running cluster.
#
# Everything lives in one directory ($GRIT_SLURM_DIR, default /tmp/grit-slurm): nothing touches
# /etc/slurm, /etc/munge or /run/munge. The configuration follows /work/shared/notes/slurm.md:
# linuxproc tracking, no task plugin, cons_tres over cores (memory is not consumable, so jobs
# without --mem share the node), fast scheduling, finished jobs visible to scontrol for 5 minutes.
set -euo pipefail

dir=${GRIT_SLURM_DIR:-/tmp/grit-slurm}
conf=$dir/slurm.conf
host=$(hostname -s)

log() { echo "slurm-cluster: $*" >&2; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ready() { SLURM_CONF=$conf sinfo -h -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

install() {
  if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null; then
    return
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "slurm-wlm and munge are not installed, and cannot be (needs root and apt-get)"
    exit 1
  fi
  log "installing slurm-wlm and munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
}

free_port() {
  python3 - <<'EOF' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
EOF
}

start() {
  if alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid" && ready; then
    echo "export SLURM_CONF=$conf"
    return
  fi
  install
  stop_daemons
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  chmod 700 "$dir/munge"
  if [ ! -s "$dir/munge/key" ]; then
    head -c 1024 /dev/urandom >"$dir/munge/key"
    chmod 400 "$dir/munge/key"
  fi
  munged -F --force --key-file "$dir/munge/key" --socket "$dir/munge/socket" \
    --pid-file "$dir/munge/pid" --seed-file "$dir/munge/seed" --log-file "$dir/munge/log" \
    >/dev/null 2>&1 &
  echo $! >"$dir/munged.pid"
  for _ in $(seq 50); do [ -S "$dir/munge/socket" ] && break; sleep 0.1; done
  local cpus ctld_port d_port
  cpus=$(nproc)
  ctld_port=$(free_port)
  d_port=$(free_port)
  cat >"$conf" <<EOF
ClusterName=grit
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
AuthType=auth/munge
AuthInfo=socket=$dir/munge/socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.daemon.pid
SlurmdPidFile=$dir/slurmd.daemon.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
ReturnToService=2
KillWait=5
MinJobAge=300
MaxArraySize=100001
MaxJobCount=200000
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$conf
  slurmctld -D -f "$conf" >"$dir/slurmctld.out" 2>&1 &
  echo $! >"$dir/slurmctld.pid"
  slurmd -D -f "$conf" >"$dir/slurmd.out" 2>&1 &
  echo $! >"$dir/slurmd.pid"
  for _ in $(seq 100); do
    if ready; then
      log "cluster up (node $host, $cpus CPUs)"
      echo "export SLURM_CONF=$conf"
      return
    fi
    sleep 0.2
  done
  log "the cluster did not come up; see $dir/slurmctld.log and $dir/slurmd.log"
  exit 1
}

stop_daemons() {
  for name in slurmd slurmctld munged; do
    if alive "$dir/$name.pid"; then
      kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
      for _ in $(seq 50); do alive "$dir/$name.pid" || break; sleep 0.1; done
    fi
    rm -f "$dir/$name.pid"
  done
}

case "${1:-start}" in
  start) start ;;
  env) [ -f "$conf" ] && echo "export SLURM_CONF=$conf" ;;
  stop)
    if [ -f "$conf" ] && alive "$dir/slurmctld.pid"; then
      SLURM_CONF=$conf scancel --user="$(id -un)" 2>/dev/null || true
    fi
    stop_daemons
    ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
