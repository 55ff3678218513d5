#!/usr/bin/env bash
# `make test`: lint (ruff, mypy, import-linter), then the whole suite on SQLite, then on
# PostgreSQL when one answers.
# CAPI_REQUIRE_POSTGRES=1 (set by .ci/run) turns a missing PostgreSQL into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PG_DEFAULT_URL="postgres://postgres@127.0.0.1:5432/test"

echo "== ruff check"
$BIN/ruff check .
echo "== ruff format --check"
$BIN/ruff format --check .
echo "== mypy"
$BIN/mypy
echo "== import-linter"
$BIN/lint-imports

ran=()

# Browser tests drive Debian's Chromium (a browser download is impossible on these machines).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "== installing Debian's chromium for the browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "WARNING: /usr/bin/chromium is missing and this is not root: the browser tests (-m e2e) will be"
    echo "WARNING: SKIPPED. Install it with 'sudo apt-get install chromium' to run them."
  fi
fi

echo "== pytest on SQLite"
env -u DATABASE_URL $BIN/python -m pytest "$@"
ran+=("SQLite")

pg_url="${DATABASE_URL:-}"
if [ -z "$pg_url" ] && $BIN/python - <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
except OSError:
    sys.exit(1)
PY
then
  pg_url="$PG_DEFAULT_URL"
fi

if [ -n "$pg_url" ] && [[ "$pg_url" == postgres* ]]; then
  echo "== pytest on PostgreSQL ($(echo "$pg_url" | sed -E 's#//[^@]*@#//#'))"
  DATABASE_URL="$pg_url" $BIN/python -m pytest "$@"
  ran+=("PostgreSQL")
elif [ "${CAPI_REQUIRE_POSTGRES:-0}" = "1" ]; then
  echo "FAIL: PostgreSQL is required (CAPI_REQUIRE_POSTGRES=1) but none answers on 127.0.0.1:5432 and DATABASE_URL is not a postgres URL." >&2
  exit 1
else
  echo "NOTE: no PostgreSQL found (set DATABASE_URL or run one on 127.0.0.1:5432): the suite ran on SQLite only."
fi

echo "== make test passed on: ${ran[*]}"
