#!/usr/bin/env bash
# A one-node SLURM cluster on this host, for the submitit launcher's tests and for trying sweeps.
# Usage: scripts/slurm-local.sh start|stop|status
# start installs slurm-wlm, slurmdbd, munge and mariadb-server from Debian if missing, writes
# /etc/slurm/slurm.conf and slurmdbd.conf, starts munged, mariadbd, slurmdbd, slurmctld and slurmd
# (each only if not already running) and waits until the node is idle. Needs root (the daemons and
# apt-get). Logs: /var/log/slurm/. Stop is by PID, from the PID files, in reverse order.
#
# Why accounting (slurmdbd on MariaDB): submitit learns a job's state from `sacct` alone. Without
# accounting every poll fails ("Bypassing sacct error") and a job that dies without writing its
# result (scancel, OOM, node failure) stays UNKNOWN, so the sweep waits for it forever. SLURM 22.05
# has no database-free accounting storage (filetxt is gone; jobcomp/filetxt answers only `sacct -c`,
# which submitit does not call).
set -euo pipefail

HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
MARK="# written by dqn scripts/slurm-local.sh"
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
DBD_PID=/run/slurmdbd.pid
MARIADB_PID=/run/mysqld/mysqld.pid
LOGS=/var/log/slurm
READY_TIMEOUT_S=${SLURM_READY_TIMEOUT_S:-60}

alive() {  # alive PID: a zombie counts as gone (this machine's init reaps daemons a second or two late)
  local state
  state=$(ps -o stat= -p "$1") && [[ $state != Z* ]]
}

running() {  # running PIDFILE: true if the PID in the file is alive
  [[ -s $1 ]] && alive "$(cat "$1")"
}

install_missing() {
  local cmd missing=0 packages=(slurm-wlm slurmdbd munge mariadb-server)
  for cmd in slurmctld slurmd slurmdbd munged mariadbd; do
    command -v $cmd >/dev/null || missing=1
  done
  ((missing)) || return 0
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be stale or absent on a fresh machine: update only when install fails.
  apt-get install -y -q "${packages[@]}" || { apt-get update -q && apt-get install -y -q "${packages[@]}"; }
}

write_conf() {
  if [[ -f $CONF ]] && ! grep -qxF "$MARK" "$CONF"; then
    echo "error: $CONF exists and was not written by this script; not overwriting it" >&2
    exit 1
  fi
  # The node's real CPUs and memory; RealMemory a little under the real one, else the node drains.
  local cpus mem
  cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd "$LOGS"
  cat > "$CONF.new" <<CONF
$MARK
ClusterName=dqn-local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# No cgroups here: track processes by parent PID and bind tasks to nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# No MPI library either (the default, pmix, fills slurmd's log with load errors).
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that was down comes back by itself once slurmd registers again.
ReturnToService=2
# Batch jobs are requeueable: submitit runs scontrol requeue on a timeout or preemption signal.
JobRequeue=1
# Accounting through slurmdbd on this host, so that sacct answers (see the top of this script).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
JobAcctGatherType=jobacct_gather/linux
NodeName=$HOST CPUs=$cpus RealMemory=$((mem * 9 / 10)) State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
  mv "$CONF.new" "$CONF"
  # slurmdbd refuses a config readable by others (it may hold a password; ours uses MariaDB's
  # unix-socket login of root instead).
  install -m 600 /dev/stdin /etc/slurm/slurmdbd.conf <<CONF
$MARK
DbdHost=$HOST
SlurmUser=root
AuthType=auth/munge
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
PidFile=$DBD_PID
LogFile=$LOGS/slurmdbd.log
CONF
}

start_munge() {
  running "$MUNGE_PID" && return
  # The key must belong to munge and be readable by it alone, or munged refuses to start.
  [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge /etc/munge/munge.key
  chmod 700 /etc/munge
  chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- munged
}

wait_for() {  # wait_for WHAT COMMAND...: bounded poll until COMMAND succeeds
  local what=$1
  shift
  for ((i = 0; i < READY_TIMEOUT_S * 2; i++)); do
    "$@" >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "error: $what not ready after ${READY_TIMEOUT_S}s; see $LOGS/" >&2
  exit 1
}

start_mariadb() {
  running "$MARIADB_PID" && return
  install -d -o mysql -g mysql /run/mysqld
  # No TCP port: slurmdbd talks to it over the unix socket, and nothing else can clash with it.
  setsid mariadbd --user=mysql --skip-networking --log-error="$LOGS/mariadb.log" </dev/null >/dev/null 2>&1 &
  wait_for mariadb mariadb-admin ping
}

start_slurmdbd() {
  running "$DBD_PID" || slurmdbd
  wait_for slurmdbd sacctmgr -n list cluster
  # slurmctld reports to a cluster slurmdbd knows; add ours once.
  [[ -n $(sacctmgr -n list cluster dqn-local format=cluster) ]] || sacctmgr -i add cluster dqn-local >/dev/null
}

wait_idle() {  # bounded poll: the node registers with slurmctld a few seconds after slurmd starts
  local state=""
  for ((i = 0; i < READY_TIMEOUT_S * 2; i++)); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
    case $state in
      idle | mixed | allocated) echo "slurm: node $HOST $state, partition cpu"; return ;;
      drained* | down*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  echo "error: node $HOST not idle after ${READY_TIMEOUT_S}s (state: ${state:-no answer}); see $LOGS/" >&2
  exit 1
}

start() {
  install_missing
  if ! running "$DBD_PID" && ! running "$CTLD_PID" && ! running "$SLURMD_PID"; then
    write_conf  # only while nothing runs: the daemons must read the same file
  fi
  start_munge
  start_mariadb
  start_slurmdbd
  running "$CTLD_PID" || slurmctld
  running "$SLURMD_PID" || slurmd
  wait_idle
}

stop_pid() {  # stop_pid NAME PIDFILE: TERM, then wait (bounded) for the process to go
  running "$2" || { echo "$1: not running"; return; }
  local pid
  pid=$(cat "$2")
  kill "$pid"
  for ((i = 0; i < 300; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then echo "error: $1 (pid $pid) still running after 30 s" >&2; exit 1; fi
  echo "$1: stopped (pid $pid)"
}

stop() {
  stop_pid slurmd "$SLURMD_PID"
  stop_pid slurmctld "$CTLD_PID"
  stop_pid slurmdbd "$DBD_PID"
  stop_pid mariadbd "$MARIADB_PID"
  stop_pid munged "$MUNGE_PID"
}

status() {
  local name file down=0
  for name in munged:$MUNGE_PID mariadbd:$MARIADB_PID slurmdbd:$DBD_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
    file=${name#*:}
    if running "$file"; then echo "${name%%:*}: running (pid $(cat "$file"))"; else echo "${name%%:*}: stopped"; down=1; fi
  done
  ((down)) || sinfo
  return $down
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
