#!/usr/bin/env bash
# One pass of the suite with the `python` first on PATH (a nox session's, see noxfile.py): on
# SQLite, then on PostgreSQL when one answers. Arguments go to pytest.
# CAPI_REQUIRE_POSTGRES=1 (set by .ci/run) turns a missing PostgreSQL into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
PG_DEFAULT_URL="postgres://postgres@127.0.0.1:5432/test"
versions="$($PYTHON -c 'import sys, django; print(f"Django {django.__version__}, Python {sys.version.split()[0]}")')"

ran=()

echo "== pytest on SQLite ($versions)"
env -u DATABASE_URL $PYTHON -m pytest "$@"
ran+=("SQLite")

pg_url="${DATABASE_URL:-}"
if [ -z "$pg_url" ] && $PYTHON - <<'PY'
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
  echo "== pytest on PostgreSQL ($(echo "$pg_url" | sed -E 's#//[^@]*@#//#'), $versions)"
  DATABASE_URL="$pg_url" $PYTHON -m pytest "$@"
  ran+=("PostgreSQL")
elif [ "${CAPI_REQUIRE_POSTGRES:-0}" = "1" ]; then
  echo "FAIL: PostgreSQL is required (CAPI_REQUIRE_POSTGRES=1) but none answers on 127.0.0.1:5432 and DATABASE_URL is not a postgres URL." >&2
  exit 1
else
  echo "NOTE: no PostgreSQL found (set DATABASE_URL or run one on 127.0.0.1:5432): the suite ran on SQLite only."
fi

echo "== passed on ${ran[*]} ($versions)"
