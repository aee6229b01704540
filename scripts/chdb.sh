#!/usr/bin/env bash
# Test-only: a current ClickHouse engine (chDB, embedded) behind the ClickHouse HTTP interface
# (scripts/chdb_server.py) on 127.0.0.1, idempotently.
#   scripts/chdb.sh start    pip-install chdb if missing, start if not answering, wait until ready;
#                            prints "started" when this call started it, "running" when it already was
#   scripts/chdb.sh stop     stop the server this script started (by its pid file, never by name)
#   scripts/chdb.sh status   exit 0 when answering
# Port: $CHDB_HTTP_PORT (default 8124). State under $CDC_SERVICES_DIR (default .services/ in the
# repository): the engine's data lives as long as that directory, the server keeps it open.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
port=${CHDB_HTTP_PORT:-8124}
name=chdb
source "$here/scripts/pid-server.sh"
state_files chdb

ping() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${port}/ping" 2>/dev/null; }
prepare() { pip_install_missing chdb chdb; }

server_main "${1:-}" python3 "$here/scripts/chdb_server.py" --port "$port" --data "$dir/data-$port"
