#!/usr/bin/env bash
# `make bench` / `make bench-quick`: install what the benchmarks need, then run them.
# Arguments go to `python -m bench` (--quick, --only ROWS, --json FILE, --strict; see --help).
set -euo pipefail
cd "$(dirname "$0")/.."

# The HTTP benchmark's load generator is Debian's wrk (C, keep-alive, Lua-scripted bodies).
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "== installing Debian's wrk for the HTTP benchmark"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "WARNING: wrk is missing and this is not root: the http row will fail."
    echo "WARNING: install it with 'sudo apt-get install wrk'."
  fi
fi

exec .venv/bin/python -m bench "$@"
