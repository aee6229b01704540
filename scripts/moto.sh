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
name=moto
source "$here/scripts/pid-server.sh"
state_files moto

ping() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${port}/moto-api/data.json" 2>/dev/null; }
prepare() { pip_install_missing "moto.server, flask, flask_cors" 'moto[server]'; }

server_main "${1:-}" python3 -m moto.server -H 127.0.0.1 -p "$port"
