#!/usr/bin/env bash
# `make run`: migrate, create the demo login, and serve the demo site on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export DEBUG="${DEBUG:-true}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:project.settings}"

$BIN/python manage.py migrate --noinput
$BIN/python manage.py capi_demo
echo
echo "Open http://127.0.0.1:8000/ and log in (see above). Ctrl-C stops everything."
exec $BIN/python manage.py runserver 127.0.0.1:8000
