#!/usr/bin/env bash
# Scale benchmark: the same ~80,000-event corpus (Debezium with schema blocks, SQS event files cut
# at the 6 MB payload limit) into an empty warehouse and into one seeded with 10M order items, 3M
# orders, 500k customers and 50k products, by the processor (`cdc-tools invoke`, release
# build, one invocation per file) and by the Python peer in ../shared/peer/, alternating, in the
# same run against the same ClickHouse. Prints events/s, the ratios processor/peer and
# seeded/empty, CPU seconds per million events, and the raw-insert ceiling of the same rows.
#
#   scripts/bench_scale.sh
#
# Installs what it needs, idempotently: ClickHouse (scripts/clickhouse.sh start; a server already
# answering is used and never stopped) and a venv for the peer under the services directory
# ($CDC_SERVICES_DIR, default .services/) with aws-lambda-powertools and clickhouse-driver.
# Creates databases named bench_scale_<timestamp>_* and drops them at the end.
#
# Environment:
#   BENCH_ITEMS      seeded order items (10000000); BENCH_ORDERS (items x 0.3), BENCH_CUSTOMERS
#                    (items / 20), BENCH_PRODUCTS (items / 200) follow it unless set
#   BENCH_EVENTS     corpus size (80000)
#   BENCH_PCT_STATUS_UPDATES / BENCH_PCT_CUSTOMER_UPDATES / BENCH_PCT_PRODUCT_UPDATES
#                    shares of the corpus, in % of events (10 / 1 / 0.1); the rest: new orders
#                    with 1-5 items each
#   BENCH_ROUNDS     rounds of the four runs (3); the summary gives medians
#   BENCH_PEER=0     the processor alone (e.g. CLICKHOUSE_URL pointing at a current engine the
#                    peer, which speaks the native protocol, cannot reach)
#   BENCH_HISTORY=0  no "history" runs (the processor with HISTORY_TABLES=all, compared with the
#                    plain processor as "history on / off")
#   BENCH_RUN_TIMEOUT  seconds before one run is killed (1800)
#   BENCH_KEEP_LOGS  keep the runs' stdout/stderr and print where
#   PEER_DIR         the peer (../shared/peer)
#   CLICKHOUSE_URL   (http://127.0.0.1:8123); the peer uses the native port 9000 on 127.0.0.1
set -euo pipefail
cd "$(dirname "$0")/.."
services=${CDC_SERVICES_DIR:-$PWD/.services}
peer_dir=${PEER_DIR:-../shared/peer}
if [ ! -f "$peer_dir/handler.py" ]; then
  echo "bench_scale: the Python peer is missing ($peer_dir/handler.py)" >&2
  exit 1
fi

scripts/clickhouse.sh start

venv="$services/peer-venv"
if ! "$venv/bin/python" -c "import aws_lambda_powertools, clickhouse_driver" >/dev/null 2>&1; then
  echo "bench_scale: installing the peer's venv ($venv)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q aws-lambda-powertools clickhouse-driver >&2
fi

# The binaries' paths, from cargo's own build messages (CARGO_TARGET_DIR is honoured).
executable() {
  python3 -c '
import json, sys
kind, name = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    msg = json.loads(line)
    target = msg.get("target") or {}
    if msg.get("reason") == "compiler-artifact" and kind in target.get("kind", []) and target.get("name") == name and msg.get("executable"):
        print(msg["executable"])
' "$1" "$2"
}
echo "bench_scale: building (release)" >&2
processor=$(cargo build --release --bin cdc-tools --message-format=json | executable bin cdc-tools)
scale=$(cargo bench --bench scale --no-run --message-format=json | executable bench scale)
[ -x "$processor" ] && [ -x "$scale" ] || { echo "bench_scale: build failed" >&2; exit 1; }

exec python3 scripts/bench_scale.py --processor "$processor" --scale "$scale" --peer "$peer_dir" \
  --peer-python "$venv/bin/python"
