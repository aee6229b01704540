# Sourced by test.sh and demo.sh: brings up ClickHouse, chDB behind its test-only HTTP front (a
# current engine), moto (Secrets Manager), the local SQS (scripts/sqs.sh) and PostgreSQL on
# 127.0.0.1 and, at exit, stops the ones this run started (a service that already answered stays
# up). Also exports the local endpoints and test credentials every command uses.
# Callers may append pids of background jobs to `pids` to have them stopped first.

started=()
pids=()
services_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do "scripts/${started[i]}.sh" stop || true; done
}
trap services_cleanup EXIT
for service in clickhouse chdb moto sqs postgres; do
  if ! "scripts/$service.sh" status >/dev/null 2>&1; then
    "scripts/$service.sh" start
    started+=("$service")
  fi
done

export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
export CHDB_URL=http://127.0.0.1:${CHDB_HTTP_PORT:-8124}
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:${MOTO_PORT:-5000}}
# SQS goes to the local SQS engine (moto's SQS carries ~100 messages/s; see BENCHMARKS.md).
export AWS_ENDPOINT_URL_SQS=${AWS_ENDPOINT_URL_SQS:-http://127.0.0.1:${LOCAL_SQS_PORT:-9324}}
export AWS_REGION=${AWS_REGION:-us-east-1} AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
