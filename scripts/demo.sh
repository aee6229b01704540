#!/usr/bin/env bash
# The main job, end to end on this machine: PostgreSQL (logical decoding) → capture (Debezium
# events) → SQS (the local SQS engine, scripts/sqs.sh) → the processor, polled like Lambda's event
# source mapping (concurrent invocations) → ClickHouse.
# Installs and starts what is missing, runs generated sales traffic at a steady rate while the
# freshness probe commits markers, then prints the freshness figures (commit → queryable), the
# verify result (0 differences expected), the dead-letter queue depth and a small analytics answer.
# Plain text (no terminal escape codes) when the output is not a terminal.
# Stops the services and processes it started.
#
# Tunables (environment):
#   DEMO_RATE (default 100 transactions/s), DEMO_SECONDS (default 30),
#   DEMO_MAX_CONCURRENCY (8): most concurrent invocations (MaximumConcurrency),
#   DEMO_BATCH_SIZE (1000), DEMO_BATCHING_WINDOW_MS (200): the event source mapping's batching,
#   DEMO_PARTS_EVERY (0 = off): seconds between samples of ClickHouse's active parts per table,
#   DEMO_ANALYTICS (1): print the revenue tables (now, and as the order book stood mid-run),
#   DEMO_HISTORY (all): HISTORY_TABLES, DEMO_REDACT (customers.email:hash): REDACT_COLUMNS, its
#   key generated into the local Secrets Manager.
# scripts/bench_freshness.sh runs this at benchmark rates with the parts sampling on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${DEMO_SECONDS:-30}
rate=${DEMO_RATE:-100}
max_concurrency=${DEMO_MAX_CONCURRENCY:-8}
batch_size=${DEMO_BATCH_SIZE:-1000}
window_ms=${DEMO_BATCHING_WINDOW_MS:-200}
parts_every=${DEMO_PARTS_EVERY:-0}
analytics=${DEMO_ANALYTICS:-1}

source scripts/services.sh
stamp=$(date +%s)
export CLICKHOUSE_DATABASE=demo_$stamp
export CDC_PG_DATABASE=demo_$stamp
export CDC_PG_URL="host=127.0.0.1 port=${CDC_PG_PORT:-5432} user=postgres dbname=$CDC_PG_DATABASE"
export CDC_SLOT=$CDC_PG_DATABASE
export RUST_LOG=${RUST_LOG:-warn}
logs=$(mktemp -d "${TMPDIR:-/tmp}/cdc-demo.XXXXXX")

echo "demo: building the processor (release)" >&2
cargo build --release --locked --quiet --bin cdc-tools
bin=${CARGO_TARGET_DIR:-target}/release/cdc-tools

# The source schema, the queues (main + dead-letter with a redrive policy) and the warehouse.
scripts/postgres.sh schema
queues=$(python3 - <<'PY'
import json, os, boto3
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"], region_name=os.environ["AWS_REGION"])
name = os.environ["CDC_PG_DATABASE"]
dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
# maxReceiveCount as a JSON number: AWS accepts a string too, the local engine only a number.
q = sqs.create_queue(QueueName=name, Attributes={
    "VisibilityTimeout": "180",
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})})["QueueUrl"]
print(q, dlq)
PY
)
read -r queue_url dlq_url <<<"$queues"
# History of every sales table, and e-mail addresses hashed under a key kept in Secrets Manager:
# the processor, verify and the history commands all read these.
export HISTORY_TABLES=${DEMO_HISTORY-all}
export REDACT_COLUMNS=${DEMO_REDACT-customers.email:hash}
REDACTION_KEY_SECRET_ARN=$(python3 - <<'PY'
import os, secrets, boto3
sm = boto3.client("secretsmanager", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
print(sm.create_secret(Name=f"{os.environ['CDC_PG_DATABASE']}/redaction-key", SecretString=secrets.token_hex(32))["ARN"])
PY
)
export REDACTION_KEY_SECRET_ARN
$bin migrate

echo "demo: $rate tx/s for ${seconds}s: generator → capture → SQS → poll (up to $max_concurrency concurrent invocations, batches of up to $batch_size within ${window_ms} ms) → ClickHouse" >&2
$bin capture --queue-url "$queue_url" --slot "$CDC_SLOT" >"$logs/capture.log" 2>&1 &
capture_pid=$!
pids+=($capture_pid)
$bin poll --queue-url "$queue_url" --batch-size "$batch_size" --batching-window-ms "$window_ms" \
  --max-concurrency "$max_concurrency" --wait-time-seconds 1 --visibility-timeout 180 >/dev/null 2>"$logs/poll.log" &
poll_pid=$!
pids+=($poll_pid)

ch() { curl -fsS "$CLICKHOUSE_URL/" --data-binary "$1"; }
if [ "$parts_every" -gt 0 ]; then
  # Active parts per table, every $parts_every s: many small inserts must not pile them up.
  (
    while true; do
      ch "SELECT toUnixTimestamp(now()), table, count() FROM system.parts WHERE database = '$CLICKHOUSE_DATABASE' AND active GROUP BY table ORDER BY table FORMAT TSV" || true
      sleep "$parts_every"
    done
  ) >"$logs/parts.tsv" 2>/dev/null &
  pids+=($!)
fi

# Let the capture create its slot before any traffic.
sleep 2
traffic_start_s=$(date +%s)
$bin generate --rate "$rate" --duration "$seconds" --seed 7 --customers 200 --products 100 --orders 300 >"$logs/generate.log" 2>&1 &
generator=$!
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
$bin freshness --duration "$((seconds > 5 ? seconds - 2 : seconds))" --interval-ms 500 --settle 60
wait "$generator"
cat "$logs/generate.log"
echo "load average (1/5/15 min) before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$parts_every" -gt 0 ]; then
  echo "active parts per table (min / max over the run, sampled every ${parts_every}s):"
  awk -F'\t' '{ n[$2]++; if (!($2 in lo) || $3 < lo[$2]) lo[$2] = $3; if ($3 > hi[$2]) hi[$2] = $3; last[$2] = $3 }
    END { for (t in n) printf "  %-12s samples=%d min=%d max=%d last=%d\n", t, n[t], lo[t], hi[t], last[t] }' "$logs/parts.tsv" | sort
fi

echo "demo: traffic done; verifying once the queue has drained" >&2
verified=0
$bin verify --wait 240 || verified=$?
dlq_depth=$(python3 -c "
import os, boto3
sqs = boto3.client('sqs', endpoint_url=os.environ['AWS_ENDPOINT_URL_SQS'], region_name=os.environ['AWS_REGION'])
print(sqs.get_queue_attributes(QueueUrl='$dlq_url', AttributeNames=['ApproximateNumberOfMessages'])['Attributes']['ApproximateNumberOfMessages'])")
echo "dead-letter queue depth: $dlq_depth"
# CPU seconds (user + system) each of the pipeline's own processes used over the whole run.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo "?"; }
sqs_pid=$(cat "${CDC_SERVICES_DIR:-.services}/local-sqs/local-sqs-${LOCAL_SQS_PORT:-9324}.pid" 2>/dev/null || echo 0)
echo "cpu seconds over the run: capture $(cpu "$capture_pid"), poll $(cpu "$poll_pid"), local SQS $(cpu "$sqs_pid") (cumulative since it started)"
# Both stop gracefully on SIGTERM and print their totals.
kill -TERM "$capture_pid" "$poll_pid" 2>/dev/null || true
wait "$capture_pid" "$poll_pid" 2>/dev/null || true
grep -h '^capture:' "$logs/capture.log" || true
grep -h '^poll:' "$logs/poll.log" || true
events=$(grep -ho '^capture: [0-9]*' "$logs/capture.log" | grep -o '[0-9]*$' || echo 0)
echo "SQS messages during the traffic: $events in ${seconds}s = $((events / seconds)) messages/s"

if [ "$analytics" = 1 ]; then
  # Pretty tables carry bold-text escape codes; the NoEscapes form is plain text for files and pipes.
  format=PrettyCompactNoEscapes
  [ -t 1 ] && format=PrettyCompactMonoBlock
  q() { curl -fsS "$CLICKHOUSE_URL/?database=$CLICKHOUSE_DATABASE" --data-binary "$1 FORMAT $format"; }
  echo
  echo "revenue by customer country (sales_fact_current, without the freshness probe's rows):"
  q "SELECT customer_country AS country, count() AS items, sum(revenue) AS revenue FROM sales_fact_current WHERE order_item_id < 9000000000 GROUP BY country ORDER BY revenue DESC"
  echo "revenue by product category:"
  q "SELECT product_category AS category, count() AS items, sum(revenue) AS revenue FROM sales_fact_current WHERE order_item_id < 9000000000 GROUP BY category ORDER BY revenue DESC"
  if [ -n "$HISTORY_TABLES" ]; then
    # sales_fact as the order book stood half-way through the traffic, from the histories.
    mid_us=$(((traffic_start_s + seconds / 2) * 1000000))
    echo "revenue by customer country as of $(date -u -d "@$((mid_us / 1000000))" +%FT%TZ) (cdc-tools as-of --table sales_fact):"
    $bin as-of --table sales_fact --at "$mid_us" | python3 -c '
import sys, collections
rows = [line.rstrip("\n").split("\t") for line in sys.stdin]
head, rows = rows[0], [r for r in rows[1:] if int(r[0]) < 9000000000]
country, revenue = head.index("customer_country"), head.index("revenue")
total = collections.Counter()
for r in rows:
    total[r[country]] += float(r[revenue])
for name, value in total.most_common():
    print(f"  {name:<8} {value:>14.2f}")
print(f"  ({len(rows)} facts then)")'
    customer=$(ch "SELECT id FROM $CLICKHOUSE_DATABASE.customers_history WHERE id < 9000000000 GROUP BY id ORDER BY count() DESC, id LIMIT 1")
    echo "the versions of customer $customer, the most changed (cdc-tools history; id, name, country, city, operation, current, valid from, valid to):"
    $bin history --table customers --key "$customer" | cut -f1,3,4,5,8,11,12,13
  fi
fi
rm -rf "$logs"
if [ "$verified" != 0 ]; then echo "demo: verify found differences (above)" >&2; exit "$verified"; fi
