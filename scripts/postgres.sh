#!/usr/bin/env bash
# Install (from Debian's packages) and start a private PostgreSQL 15 cluster with logical decoding
# (wal_level=logical, the wal2json plugin) on 127.0.0.1, idempotently.
#   scripts/postgres.sh start    install if missing, initdb if new, start if not answering, wait
#   scripts/postgres.sh stop     stop the cluster this script started
#   scripts/postgres.sh status   exit 0 when the cluster answers
#   scripts/postgres.sh schema   create database $CDC_PG_DATABASE and apply crates/cdc-tools/sql/source_schema.sql
#   scripts/postgres.sh url      print the connection string clients use
# State lives under $CDC_SERVICES_DIR/postgres (default: .services/postgres in the repository),
# never in /var/lib. initdb refuses root, so when run as root the server runs as user `postgres`.
# Auth is `trust` on 127.0.0.1 only: a throwaway local cluster for tests and the demo.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${CDC_SERVICES_DIR:-$here/.services}/postgres
port=${CDC_PG_PORT:-5432}
database=${CDC_PG_DATABASE:-sales}
pg_version=15
bin=/usr/lib/postgresql/$pg_version/bin
run_user=postgres
source "$here/scripts/debian-server.sh"

# Runs a command as the server's owner: `postgres` when we are root, ourselves otherwise.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$run_user" -- "$@"; else "$@"; fi
}

install() {
  if [ ! -x "$bin/initdb" ]; then
    echo "postgres: installing Debian's postgresql-$pg_version" >&2
    apt_install "postgresql-$pg_version"
  fi
  if [ ! -f "/usr/lib/postgresql/$pg_version/lib/wal2json.so" ]; then
    echo "postgres: installing the wal2json logical decoding plugin" >&2
    apt_install "postgresql-$pg_version-wal2json"
  fi
}

ready() { "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" >/dev/null 2>&1; }

psql_() { PGOPTIONS="-c client_min_messages=warning" "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }

init_cluster() {
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown "$run_user" "$dir"; fi
  chmod 700 "$dir"
  [ -f "$dir/data/PG_VERSION" ] && return 0
  echo "postgres: initdb in $dir/data" >&2
  as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
    || { tail -n 20 "$dir/initdb.log" >&2; return 1; }
  echo "include_if_exists = 'cdc.conf'" >>"$dir/data/postgresql.conf"
}

# Rewritten on every start, so a changed setting here reaches an existing cluster.
# synchronous_commit stays on: logical decoding reads WAL only up to the flushed position, so an
# asynchronous commit would reach the capture up to 3 x wal_writer_delay late. fsync=off keeps the
# flush cheap (a throwaway cluster: durability across a machine crash is not needed).
write_config() {
  cat >"$dir/cdc.conf.tmp" <<CONF
# cdc-processor: a private cluster for logical decoding (written by scripts/postgres.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 16
max_wal_senders = 16
max_connections = 100
shared_buffers = 128MB
fsync = off
synchronous_commit = on
full_page_writes = off
timezone = 'UTC'
log_timezone = 'UTC'
CONF
  if [ "$(id -u)" = 0 ]; then chown "$run_user" "$dir/cdc.conf.tmp"; fi
  mv "$dir/cdc.conf.tmp" "$dir/data/cdc.conf"
}

start() {
  install
  if ready; then echo "postgres: already answering on 127.0.0.1:$port" >&2; return 0; fi
  init_cluster
  write_config
  echo "postgres: starting on 127.0.0.1:$port (state in $dir)" >&2
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "-p $port" -w -t 60 start >/dev/null \
    || { echo "postgres: did not start; last log lines:" >&2; tail -n 20 "$dir/server.log" >&2 || true; return 1; }
  wait_ready postgres "$dir/server.log" ready
}

stop() {
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null || true
}

schema() {
  ready || { echo "postgres: not running (scripts/postgres.sh start)" >&2; return 1; }
  if [ "$(psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" != 1 ]; then
    psql_ -d postgres -c "CREATE DATABASE \"$database\""
  fi
  psql_ -d "$database" -f "$here/crates/cdc-tools/sql/source_schema.sql" >/dev/null
  echo "postgres: schema applied to database $database" >&2
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) ready ;;
  schema) schema ;;
  url) echo "host=127.0.0.1 port=$port user=postgres dbname=$database" ;;
  *) echo "usage: $0 start|stop|status|schema|url" >&2; exit 2 ;;
esac
