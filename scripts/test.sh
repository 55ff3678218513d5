#!/usr/bin/env bash
# `make test`: lint (ruff, mypy, import-linter), then the whole suite on SQLite and PostgreSQL
# under the oldest and the newest supported (Django, Python) pair. `make test-matrix` (this
# script with --matrix) runs every pair. The pairs and how each is run: noxfile.py and
# scripts/suite.sh. Other arguments go to pytest.
# CAPI_REQUIRE_POSTGRES=1 (set by .ci/run) turns a missing PostgreSQL into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

selection=(--tags edges)
if [ "${1:-}" = "--matrix" ]; then
  selection=(--tags matrix)
  shift
fi

echo "== ruff check"
$BIN/ruff check .
echo "== ruff format --check"
$BIN/ruff format --check .
echo "== mypy"
$BIN/mypy
echo "== import-linter"
$BIN/lint-imports

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

# Each pair gets a virtualenv of its own under .nox/, made anew each time (pip's cache keeps
# that quick), so a changed pyproject.toml or Django release is always what is tested.
$BIN/nox "${selection[@]}" -- "$@"
