#!/usr/bin/env bash
# Fan-out benchmark: peak memory, CPU and wall time of ONE invocation whose single message renames
# a product that N order items reference (1,000 orders of one customer), so that it re-derives N
# facts in pages within the invocation. Prints `peak_rss_kib=... user_s=... sys_s=... wall_s=...`
# and the facts carrying the new name, out of all live facts.
#
#   scripts/bench_fanout.sh [N]        (default 1000000)
#
# Needs a ClickHouse on $CLICKHOUSE_URL (default http://127.0.0.1:8123; `scripts/clickhouse.sh
# start`). Builds the release binary, seeds database fanout_bench_<pid> by INSERT ... SELECT (the
# mirrors and the three foreign-key indexes), runs `cdc-tools invoke` under /usr/bin/time, and
# drops the database.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
# Exported: the processor has no default server.
export CLICKHOUSE_URL=${CLICKHOUSE_URL:-http://127.0.0.1:8123}
ch=$CLICKHOUSE_URL
db=fanout_bench_$$
work=$(mktemp -d)
trap 'curl -fsS "$ch/" --data-binary "DROP DATABASE IF EXISTS $db" >/dev/null || true; rm -rf "$work"' EXIT
q() { curl -fsS "$ch/" --data-binary "$1"; }

cargo build --release --quiet --bin cdc-tools
bin=${CARGO_TARGET_DIR:-target}/release/cdc-tools
CLICKHOUSE_DATABASE=$db "$bin" migrate 2>/dev/null

date0="toDateTime('2024-01-01 00:00:00')"
q "INSERT INTO $db.customers (id, email, name, country, city, created_at, _version, _is_deleted)
   SELECT toInt64(1), 'a@x', 'Ada', 'UK', 'London', $date0, toUInt64(1), toUInt8(0)"
q "INSERT INTO $db.products (id, name, category, price, created_at, _version, _is_deleted)
   SELECT toInt64(2), 'Lamp', 'Home', toDecimal128(1, 6), $date0, toUInt64(1), toUInt8(0)"
q "INSERT INTO $db.orders (id, customer_id, order_date, status, total, _version, _is_deleted)
   SELECT toInt64(number + 1), toInt64(1), $date0, 'paid', toDecimal128(1, 6), toUInt64(1), toUInt8(0) FROM numbers(1000)"
q "INSERT INTO $db.order_items (id, order_id, product_id, quantity, price, _version, _is_deleted)
   SELECT toInt64(number + 1), toInt64(number % 1000 + 1), toInt64(2), toInt32(1), toDecimal128(1, 6), toUInt64(1),
   toUInt8(0) FROM numbers($n)"
q "INSERT INTO $db._items_by_product SELECT toInt64(2), toInt64(number + 1) FROM numbers($n)"
q "INSERT INTO $db._items_by_order SELECT toInt64(number % 1000 + 1), toInt64(number + 1) FROM numbers($n)"
q "INSERT INTO $db._orders_by_customer SELECT toInt64(1), toInt64(number + 1) FROM numbers(1000)"

# The rename, as Debezium sends it (no schema block), in a one-record SQS event.
python3 - "$work/event.json" <<'PY'
import json, sys
body = {"before": None,
        "after": {"id": 2, "name": "Lamp v2", "category": "Home", "price": "ZA==", "created_at": "2024-01-01T00:00:00Z"},
        "source": {"version": "2.5.0.Final", "connector": "postgresql", "name": "oltp", "ts_ms": 1704067200000,
                   "snapshot": "false", "db": "oltp", "schema": "public", "table": "products", "lsn": 5000},
        "op": "u", "ts_ms": 1704067200000}
record = {"messageId": "m1", "receiptHandle": "rh", "body": json.dumps(body),
          "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
          "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:fanout-bench",
          "awsRegion": "us-east-1"}
json.dump({"Records": [record]}, open(sys.argv[1], "w"))
PY

CLICKHOUSE_DATABASE=$db /usr/bin/time -f "peak_rss_kib=%M user_s=%U sys_s=%S wall_s=%e" \
  "$bin" invoke "$work/event.json" 2>&1 >/dev/null | grep peak_rss
echo "renamed facts, live facts: $(q "SELECT countIf(product_name = 'Lamp v2'), count() FROM $db.sales_fact FINAL WHERE _is_deleted = 0")"
