#!/usr/bin/env bash
# The whole test suite, on a machine that has none of the services yet:
# installs and starts ClickHouse, PostgreSQL (logical decoding), moto (Secrets Manager) and the
# local SQS (scripts/sqs.sh) on 127.0.0.1, installs cargo-lambda and the SAM CLI, runs every
# Rust test against them (nothing is skipped), runs the integration suite again against a current
# engine (chDB behind scripts/chdb_server.py), checks the modern SQL in chDB, lints the SAM
# template and builds the deployable Lambda zip. Stops the services it started.
set -euo pipefail
cd "$(dirname "$0")/.."

python_has() { python3 -c "import $1" >/dev/null 2>&1; }
python_has chdb || { echo "test: installing chdb" >&2; pip install -q chdb; }
# crates/cdc-tools/tests/it/outage.rs makes a private CA and a server certificate with the openssl command.
if ! command -v openssl >/dev/null 2>&1; then
  echo "test: installing openssl" >&2
  source scripts/debian-server.sh
  apt_install openssl
fi

# cargo-lambda first: crates/cdc-lambda/tests/it/lambda_runtime.rs runs the function under `cargo lambda watch`.
scripts/tools.sh
source scripts/services.sh

cargo test --locked --workspace --lib --bins --tests
# The same integration suite and the repair test against a current ClickHouse engine (chDB),
# modern dialect (UInt256 fact versions, foreign keys that move); no test is skipped.
CLICKHOUSE_URL=$CHDB_URL cargo test --locked -p cdc-lambda --test it
CLICKHOUSE_URL=$CHDB_URL cargo test --locked -p cdc-tools --test it repair::
cargo bench --locked --workspace --no-run
scripts/sam-check.sh
echo "test: all passed" >&2
