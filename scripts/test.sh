#!/usr/bin/env bash
# The whole test suite, on a machine that has none of the services yet:
# installs and starts ClickHouse, PostgreSQL (logical decoding), moto (Secrets Manager) and the
# local SQS (scripts/sqs.sh) on 127.0.0.1, installs cargo-lambda and the SAM CLI, runs every
# Rust test against them (nothing is skipped), runs the integration suite again against a current
# engine (chDB behind scripts/chdb_server.py), runs the cluster tests on a replicated cluster
# (scripts/cluster.sh: ZooKeeper and two ClickHouse replicas), checks the modern SQL in chDB, lints
# the SAM template and builds the deployable Lambda zip. Stops the services it started.
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
# The replicated cluster, started only now (a JVM and two more servers need not sit through the
# rest): the schema ON CLUSTER and the convergence schedules with invocations on different
# replicas (crates/cdc-lambda/tests/it/cluster.rs). services_cleanup stops it if this run started it.
if ! scripts/cluster.sh status >/dev/null 2>&1; then
  scripts/cluster.sh start
  started+=(cluster)
fi
cluster_http=${CDC_CLUSTER_HTTP_PORT_BASE:-8130}
CLICKHOUSE_CLUSTER_URLS=http://127.0.0.1:$((cluster_http + 1)),http://127.0.0.1:$((cluster_http + 2)) \
  CLICKHOUSE_CLUSTER_NAME=${CDC_CLUSTER_NAME:-cdc} cargo test --locked -p cdc-lambda --test it cluster::
cargo bench --locked --workspace --no-run
scripts/sam-check.sh
echo "test: all passed" >&2
