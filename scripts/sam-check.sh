#!/usr/bin/env bash
# Offline deployment checks:
#   1. `sam validate --lint` on template.yaml (cfn-lint, no AWS call; sam still wants a region);
#   2. `cargo lambda build --release --arm64 --output-format zip`: the zip `sam deploy` would upload
#      (provided.al2023 on Graviton), cross-linked with zig.
# Installs the tools from PyPI when missing (scripts/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$AWS_REGION}
export SAM_CLI_TELEMETRY=0

sam validate --lint -t template.yaml --region "$AWS_REGION"

# The cross target's standard library, once.
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu
fi
cargo lambda build --release --arm64 --output-format zip --bin cdc-processor
zip=${CARGO_TARGET_DIR:-target}/lambda/cdc-processor/bootstrap.zip
[ -s "$zip" ] || { echo "sam-check: $zip was not produced" >&2; exit 1; }
echo "sam-check: template valid, $zip ($(du -h "$zip" | cut -f1)) built" >&2
