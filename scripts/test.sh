#!/usr/bin/env bash
# The whole test suite, on a machine that has none of the services yet:
# installs and starts ClickHouse, PostgreSQL (logical decoding) and moto on 127.0.0.1, runs every
# Rust test against them (nothing is skipped), checks the modern SQL in chDB, lints the SAM
# template and builds the deployable Lambda zip. Stops the services it started.
set -euo pipefail
cd "$(dirname "$0")/.."

python_has() { python3 -c "import $1" >/dev/null 2>&1; }
python_has chdb || { echo "test: installing chdb" >&2; pip install -q chdb; }

started=()
cleanup() {
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do "scripts/${started[i]}.sh" stop || true; done
}
trap cleanup EXIT
# Only what this run starts is stopped at its end: a service that already answers stays up.
for service in clickhouse moto postgres; do
  if ! "scripts/$service.sh" status >/dev/null 2>&1; then
    "scripts/$service.sh" start
    started+=("$service")
  fi
done

export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:${MOTO_PORT:-5000}}
export AWS_REGION=${AWS_REGION:-us-east-1} AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}

cargo test --locked --lib --bins --tests -- --include-ignored
cargo bench --locked --no-run
scripts/sam-check.sh
echo "test: all passed" >&2
