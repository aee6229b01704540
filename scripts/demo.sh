#!/usr/bin/env bash
# The main job, end to end on this machine: PostgreSQL (logical decoding) → capture (Debezium
# events) → SQS (moto) → the processor, polled like Lambda's event source mapping → ClickHouse.
# Installs and starts what is missing, runs generated sales traffic for a while, then prints the
# freshness figures, the verify result (0 differences expected) and a small analytics answer.
# Stops the services it started. Tunables: DEMO_SECONDS (default 20), DEMO_RATE (default 5 tx/s:
# the local SQS emulator, moto, carries ~100 messages/s on this machine; see BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${DEMO_SECONDS:-20}
rate=${DEMO_RATE:-5}

source scripts/services.sh
export CLICKHOUSE_DATABASE=demo_$(date +%s)
export CDC_PG_DATABASE=demo_$(date +%s)
export CDC_PG_URL="host=127.0.0.1 port=${CDC_PG_PORT:-5432} user=postgres dbname=$CDC_PG_DATABASE"
export CDC_SLOT=$CDC_PG_DATABASE
export RUST_LOG=${RUST_LOG:-warn}

echo "demo: building the processor (release)" >&2
cargo build --release --locked --quiet
bin=target/release/cdc-processor

# The source schema, the queues (main + dead-letter with a redrive policy) and the warehouse.
scripts/postgres.sh schema
queues=$(python3 - <<'PY'
import json, os, boto3
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
name = os.environ["CDC_PG_DATABASE"]
dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
q = sqs.create_queue(QueueName=name, Attributes={
    "VisibilityTimeout": "180",
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})["QueueUrl"]
print(q, dlq)
PY
)
read -r queue_url dlq_url <<<"$queues"
$bin migrate

echo "demo: running generator ($rate tx/s for ${seconds}s) → capture → SQS → processor → ClickHouse" >&2
$bin capture --queue-url "$queue_url" --slot "$CDC_SLOT" >/tmp/cdc-demo-capture.log 2>&1 &
pids+=($!)
# Two pollers, as Lambda runs concurrent invocations (moto answers each call slowly).
for n in 1 2; do
  $bin poll --queue-url "$queue_url" --batch-size 1000 --batching-window-seconds 0 --wait-time-seconds 1 >/dev/null 2>>/tmp/cdc-demo-poll.log &
  pids+=($!)
done
$bin generate --rate "$rate" --duration "$seconds" --seed 7 --customers 40 --products 20 --orders 60 >/tmp/cdc-demo-generate.log 2>&1 &
generator=$!
$bin freshness --duration "$((seconds > 5 ? seconds - 2 : seconds))" --interval-ms 500 --settle 60
wait "$generator"

echo "demo: traffic done; verifying once the queue has drained" >&2
$bin verify --wait 240
dlq_depth=$(python3 -c "
import os, boto3
sqs = boto3.client('sqs', endpoint_url=os.environ['AWS_ENDPOINT_URL'], region_name=os.environ['AWS_REGION'])
print(sqs.get_queue_attributes(QueueUrl='$dlq_url', AttributeNames=['ApproximateNumberOfMessages'])['Attributes']['ApproximateNumberOfMessages'])")
echo "dead-letter queue depth: $dlq_depth"

ch() { curl -fsS "$CLICKHOUSE_URL/?database=$CLICKHOUSE_DATABASE" --data-binary "$1"; }
echo
echo "revenue by customer country (sales_fact_current, without the freshness probe's rows):"
ch "SELECT customer_country AS country, count() AS items, sum(revenue) AS revenue FROM sales_fact_current WHERE order_item_id < 9000000000 GROUP BY country ORDER BY revenue DESC FORMAT PrettyCompactMonoBlock"
echo "revenue by product category:"
ch "SELECT product_category AS category, count() AS items, sum(revenue) AS revenue FROM sales_fact_current WHERE order_item_id < 9000000000 GROUP BY category ORDER BY revenue DESC FORMAT PrettyCompactMonoBlock"
