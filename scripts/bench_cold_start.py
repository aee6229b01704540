#!/usr/bin/env python3
"""Cold start of the Lambda binary: process start → first request to the runtime API.

Starts `cdc-processor` N times with AWS_LAMBDA_RUNTIME_API pointing at a local stand-in of the
Lambda runtime API, and times from spawn to its first `GET /2018-06-01/runtime/invocation/next`:
the moment it is ready for the first event. No network: ClickHouse points at a closed local port
(the warm-up fails fast and is logged), no secret is configured, AWS credentials are static.

Usage: scripts/bench_cold_start.py [BINARY] [RUNS]   (default target/release/cdc-processor, 30)
"""
import os
import socket
import statistics
import subprocess
import sys
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/cdc-processor"
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(8)
port = server.getsockname()[1]
env = dict(os.environ,
           AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{port}", AWS_LAMBDA_FUNCTION_NAME="cold-start",
           AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", AWS_LAMBDA_FUNCTION_VERSION="1",
           AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
           CLICKHOUSE_URL="http://127.0.0.1:1", RUST_LOG="error")
times = []
for _ in range(runs):
    start = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server.settimeout(10)
    conn, _ = server.accept()
    conn.settimeout(10)
    request = conn.recv(4096)
    elapsed = time.perf_counter() - start
    conn.close()
    proc.kill()
    proc.wait()
    if b"/runtime/invocation/next" not in request:
        sys.exit(f"unexpected first request: {request[:80]!r}")
    times.append(elapsed * 1000)
times.sort()
print(f"cold start over {runs} runs: median {statistics.median(times):.1f} ms, "
      f"p90 {times[int(0.9 * (runs - 1))]:.1f} ms, min {times[0]:.1f} ms, max {times[-1]:.1f} ms")
