#!/usr/bin/env bash
# A local SQS endpoint that keeps up with the pipeline: tools/local-sqs (rustack's SQS engine,
# pinned exact versions, its own Cargo.lock), built with cargo and started on 127.0.0.1, idempotently.
#   scripts/sqs.sh start    build if missing or stale, start if not answering, wait until ready;
#                           prints "started" when this call started it, "running" when it already was
#   scripts/sqs.sh stop     stop the server this script started (by its pid file, never by name)
#   scripts/sqs.sh status   exit 0 when an SQS endpoint answers on the port
#   scripts/sqs.sh url      print the endpoint URL
# Port: $LOCAL_SQS_PORT (default 9324). State under $CDC_SERVICES_DIR (default .services/ in the
# repository); build output under $CARGO_TARGET_DIR/local-sqs when set, else the state directory.
# Moto stays the Secrets Manager endpoint; AWS_ENDPOINT_URL_SQS points SQS clients here.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
port=${LOCAL_SQS_PORT:-9324}
name=sqs
source "$here/scripts/pid-server.sh"
state_files local-sqs
target=${LOCAL_SQS_TARGET_DIR:-${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/local-sqs}}
target=${target:-$dir/target}
bin=$target/release/local-sqs

ping() {
  curl -fsS -o /dev/null --max-time 2 -X POST "http://127.0.0.1:${port}/" \
    -H 'X-Amz-Target: AmazonSQS.ListQueues' -H 'Content-Type: application/x-amz-json-1.0' \
    -d '{"MaxResults":1}' 2>/dev/null
}

# Builds the server; start_server runs this before it launches one.
prepare() {
  mkdir -p "$dir"
  # cargo decides whether anything changed; a no-op build takes well under a second.
  echo "sqs: building tools/local-sqs (release)" >&2
  CARGO_TARGET_DIR=$target cargo build --release --locked --quiet --manifest-path "$here/tools/local-sqs/Cargo.toml" >&2
}

case "${1:-}" in
  url) echo "http://127.0.0.1:${port}" ;;
  start | stop | status) server_main "$1" "$bin" --host 127.0.0.1 --port "$port" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
