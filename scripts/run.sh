#!/usr/bin/env bash
# `make run`: the whole demo on the embedded default — SQLite, django-q2's ORM broker, the local
# Graph API sandbox — started together and stopped together with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export DEBUG="${DEBUG:-true}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:project.settings}"
SANDBOX_PORT="${CAPI_SANDBOX_PORT:-8765}"
WEB_PORT="${PORT:-8000}"
export CAPI_GRAPH_API_BASE_URL="${CAPI_GRAPH_API_BASE_URL:-http://127.0.0.1:${SANDBOX_PORT}}"

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo
  echo "Stopping the web server, the worker and the sandbox…"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

$BIN/python manage.py migrate --noinput

if [[ "$CAPI_GRAPH_API_BASE_URL" == "http://127.0.0.1:${SANDBOX_PORT}" ]]; then
  $BIN/python manage.py capi_sandbox --host 127.0.0.1 --port "$SANDBOX_PORT" &
  pids+=($!)
  # Wait until the sandbox answers before the demo seeds it.
  for _ in $(seq 1 50); do
    if $BIN/python -c "import socket,sys; socket.create_connection(('127.0.0.1', $SANDBOX_PORT), 0.2).close()" 2>/dev/null; then break; fi
    $BIN/python -c "import time; time.sleep(0.2)"
  done
fi

$BIN/python manage.py capi_demo

$BIN/python manage.py qcluster &
pids+=($!)

echo
echo "Demo site:   http://127.0.0.1:${WEB_PORT}/   (logins printed above)"
echo "Graph API:   ${CAPI_GRAPH_API_BASE_URL}"
echo "Ctrl-C stops the web server, the worker and the sandbox together."
$BIN/python manage.py runserver "127.0.0.1:${WEB_PORT}" &
pids+=($!)
wait -n "${pids[@]}"
