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

# Each server runs in a process group of its own (job control on while it starts), so stopping
# it stops its children too — runserver's autoreloader runs the real server in a child process,
# qcluster its workers — and Ctrl-C reaches this script alone, which then stops them in order.
start() {
  set -m
  # Not from the terminal: a process group of its own reading it would be stopped by the shell.
  "$@" </dev/null &
  pids+=($!)
  set +m
}

stop_all() {
  trap - INT TERM EXIT
  [ ${#pids[@]} -eq 0 ] && return
  echo
  echo "Stopping the web server, the worker and the sandbox…"
  for pid in "${pids[@]}"; do kill -INT -- "-$pid" 2>/dev/null || true; done
  # Give them ten seconds to finish what they are doing, then stop what is left.
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

port_is_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

local_sandbox=false
if [[ "$CAPI_GRAPH_API_BASE_URL" == "http://127.0.0.1:${SANDBOX_PORT}" ]]; then
  local_sandbox=true
fi

ports=("$WEB_PORT")
if $local_sandbox; then ports+=("$SANDBOX_PORT"); fi
for port in "${ports[@]}"; do
  if port_is_open "$port"; then
    echo "Port $port is already in use (another 'make run'?). Stop that first, or choose other" >&2
    echo "ports: PORT=8001 CAPI_SANDBOX_PORT=8766 make run" >&2
    exit 1
  fi
done

$BIN/python manage.py migrate --noinput

if $local_sandbox; then
  start $BIN/python manage.py capi_sandbox --host 127.0.0.1 --port "$SANDBOX_PORT"
  # The demo seeds the sandbox, so wait until it answers (or give up if it died).
  for _ in $(seq 1 100); do
    port_is_open "$SANDBOX_PORT" && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "The sandbox did not start." >&2; exit 1; }
    sleep 0.1
  done
fi

$BIN/python manage.py capi_demo

start $BIN/python manage.py qcluster

echo
echo "Demo site:   http://127.0.0.1:${WEB_PORT}/   (logins printed above)"
echo "Graph API:   ${CAPI_GRAPH_API_BASE_URL}"
echo "Ctrl-C stops the web server, the worker and the sandbox together."
start $BIN/python manage.py runserver "127.0.0.1:${WEB_PORT}"
# Until Ctrl-C, or until one of them stops on its own (then the others are stopped too).
# (A loop rather than `wait -n`, which macOS's bash 3.2 lacks; `wait` returns at once on Ctrl-C.)
while :; do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "A process of the demo stopped: stopping the rest." >&2; exit 1; }
  done
  sleep 1 &
  wait $! || true
done
