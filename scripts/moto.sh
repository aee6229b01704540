#!/usr/bin/env bash
# Local AWS (SQS with redrive policies, Secrets Manager) via moto's server on 127.0.0.1, idempotently.
#   scripts/moto.sh start    pip-install moto[server] if missing, start if not answering, wait until ready;
#                            prints "started" when this call started it, "running" when it already was
#   scripts/moto.sh stop     stop the server this script started (by its pid file, never by name)
#   scripts/moto.sh status   exit 0 when answering
# Port: $MOTO_PORT (default 5000). State under $CDC_SERVICES_DIR (default .services/ in the repository).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
port=${MOTO_PORT:-5000}
dir=${CDC_SERVICES_DIR:-$here/.services}/moto
pidfile=$dir/moto-$port.pid
log=$dir/moto-$port.log
name=moto
source "$here/scripts/pid-server.sh"

ping() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${port}/moto-api/data.json" 2>/dev/null; }

install() {
  python3 -c "import moto.server, flask, flask_cors" >/dev/null 2>&1 && return 0
  echo "moto: installing moto[server] from PyPI" >&2
  python3 -m pip install -q 'moto[server]' >&2
}

start() {
  if ping; then echo running; return 0; fi
  install
  launch python3 -m moto.server -H 127.0.0.1 -p "$port"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) ping ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
