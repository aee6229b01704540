#!/usr/bin/env bash
# The packaging tools, from PyPI, installed only when missing (idempotent):
#   cargo-lambda (cargo lambda build/watch/invoke), ziglang (its cross-linker), aws-sam-cli (sam validate/build).
set -euo pipefail
need=()
command -v cargo-lambda >/dev/null 2>&1 || need+=(cargo-lambda)
python3 -c "import ziglang" >/dev/null 2>&1 || need+=(ziglang)
command -v sam >/dev/null 2>&1 || need+=(aws-sam-cli)
if [ ${#need[@]} -gt 0 ]; then
  echo "tools: installing ${need[*]} from PyPI" >&2
  python3 -m pip install -q "${need[@]}" >&2
  # pyenv installs console scripts behind shims that need a rehash.
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
cargo lambda --version >/dev/null
sam --version >/dev/null
