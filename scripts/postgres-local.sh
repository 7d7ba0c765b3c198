#!/usr/bin/env bash
# A dedicated PostgreSQL cluster for the MLflow tracking server (make server) and its tests.
# Usage: scripts/postgres-local.sh start|stop|status|uri [DATABASE]
# start installs Debian's postgresql if missing, creates the cluster in $DQN_PG_DIR (default
# /tmp/dqn-postgres) on first use, runs it as the postgres user on 127.0.0.1:$DQN_PG_PORT
# (default 5432) and creates the role `mlflow` with two databases: `mlflow` for the tracking
# server and `optuna` for search studies (their tables clash in one database). start and uri
# print the URI of DATABASE (default mlflow) as their only line on stdout, so
# `uri=$(scripts/postgres-local.sh start)` works; messages go to stderr.
# Needs root (apt-get, and running as postgres). Stop is pg_ctl's: by the PID in postmaster.pid.
set -euo pipefail

DIR=${DQN_PG_DIR:-/tmp/dqn-postgres}
PORT=${DQN_PG_PORT:-5432}
DATA=$DIR/data
# Each cluster gets its own password, kept beside it; the server listens on 127.0.0.1 only.
PASSWORD_FILE=$DIR/mlflow-password

as_postgres() { runuser -u postgres -- "$@"; }

bin() {  # bin NAME: NAME from the newest installed PostgreSQL (its tools are not on PATH)
  local version
  version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -1)
  echo "/usr/lib/postgresql/$version/bin/$1"
}

install_missing() {
  [[ -x $(bin initdb) ]] && return
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be stale or absent on a fresh machine: update only when install fails.
  apt-get install -y -q postgresql >&2 || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; }
}

running() {  # also takes the port a running cluster listens on, which may differ from $DQN_PG_PORT
  [[ -f $DATA/PG_VERSION ]] && as_postgres "$(bin pg_ctl)" -D "$DATA" status >/dev/null 2>&1 || return 1
  PORT=$(sed -n 4p "$DATA/postmaster.pid")
}

DATABASES=(mlflow optuna)

known_database() {  # known_database [DATABASE]: exits 2 on a name this script does not create
  [[ " ${DATABASES[*]} " == *" ${1:-mlflow} "* ]] || { echo "error: no database $1: one of ${DATABASES[*]}" >&2; exit 2; }
}

uri() {  # uri [DATABASE]
  local password
  password=$(cat "$PASSWORD_FILE")  # fails (set -e) rather than print a URI without it
  echo "postgresql://mlflow:$password@127.0.0.1:$PORT/${1:-mlflow}"
}

psql_admin() {  # over the unix socket in $DIR, as the postgres superuser (peer login)
  as_postgres psql -h "$DIR" -p "$PORT" -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"
}

init_cluster() {
  [[ -f $DATA/PG_VERSION ]] && return
  install -d -o postgres -g postgres -m 700 "$DIR"
  (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$PASSWORD_FILE")
  as_postgres "$(bin initdb)" -D "$DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 >/dev/null
}

start() {
  install_missing
  init_cluster
  if ! running; then
    # -w: pg_ctl waits (bounded by -t) until the server accepts connections.
    as_postgres "$(bin pg_ctl)" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR" start >&2 ||
      { echo "error: PostgreSQL did not start; see $DIR/postgres.log" >&2; tail -5 "$DIR/postgres.log" >&2; exit 1; }
  fi
  if [[ -z $(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'") ]]; then
    psql_admin "CREATE ROLE mlflow LOGIN PASSWORD '$(cat "$PASSWORD_FILE")'"
  fi
  for database in "${DATABASES[@]}"; do
    if [[ -z $(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$database'") ]]; then
      psql_admin "CREATE DATABASE $database OWNER mlflow"
    fi
  done
  echo "postgres: running in $DIR on 127.0.0.1:$PORT" >&2
  uri "$@"
}

stop() {
  if running; then
    as_postgres "$(bin pg_ctl)" -D "$DATA" -m fast -w -t 60 stop >&2
  else
    echo "postgres: not running ($DIR)" >&2
  fi
}

status() {
  if running; then
    echo "postgres: running in $DIR on 127.0.0.1:$PORT, database $(uri)"
  else
    echo "postgres: stopped ($DIR)"
    return 1
  fi
}

case ${1:-} in
  start) known_database "${@:2}" && start "${@:2}" ;;
  stop) stop ;;
  status) status ;;
  uri) known_database "${@:2}" && { running || true; } && uri "${@:2}" ;;
  *) echo "usage: $0 start|stop|status|uri [DATABASE]" >&2; exit 2 ;;
esac
