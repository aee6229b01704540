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

ping() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${port}/moto-api/data.json" 2>/dev/null; }

install() {
  python3 -c "import moto.server, flask, flask_cors" >/dev/null 2>&1 && return 0
  echo "moto: installing moto[server] from PyPI" >&2
  python3 -m pip install -q 'moto[server]' >&2
}

start() {
  if ping; then echo running; return 0; fi
  install
  mkdir -p "$dir"
  # setsid: the server outlives this script but not its own process group's stop below.
  setsid python3 -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 < /dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do # at most ~30 s
    if ping; then echo started; return 0; fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "moto: server exited; log follows" >&2; tail -n 30 "$log" >&2; rm -f "$pidfile"; return 1
    fi
    sleep 0.3
  done
  echo "moto: not answering on 127.0.0.1:${port} after 30 s" >&2
  stop; return 1
}

stop() {
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done # at most 10 s
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) ping ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
