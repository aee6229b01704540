#!/usr/bin/env bash
# Freshness under load: the whole pipeline (scripts/demo.sh) at a steady rate, with the
# `freshness` probe's p50 / p99 / max commit → queryable (mirror and sales_fact), ClickHouse's
# active parts per table sampled every 10 s, `verify` and the dead-letter queue depth.
#   scripts/bench_freshness.sh [RATE [SECONDS]]     default: 200 transactions/s for 300 s
# Other knobs as in scripts/demo.sh (DEMO_MAX_CONCURRENCY, DEMO_BATCH_SIZE, DEMO_BATCHING_WINDOW_MS).
# A measurement, not a test: record the figures, the machine and `uptime` in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "bench_freshness: $(nproc) cores, $(uptime)"
DEMO_RATE=${1:-200} DEMO_SECONDS=${2:-300} DEMO_PARTS_EVERY=${DEMO_PARTS_EVERY:-10} DEMO_ANALYTICS=0 exec scripts/demo.sh
