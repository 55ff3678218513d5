"""Settings of the benchmark processes: the demo site's production settings, plus three changes.

``bench.harness.bench_environment`` sets the environment the demo site reads (``DEBUG`` off,
``DATABASE_URL`` of the benchmark's own database, benchmark-only keys). On top of that:

- the ingest rate limit is raised: the HTTP benchmark sends tens of thousands of requests a
  second with one key, and the limit exists to stop abuse, not to be measured;
- the app's logging is quiet, so the console is not what is measured;
- ``BENCH_GRAPH_API_BASE_URL`` points the app at the benchmark's sandbox.
"""

from __future__ import annotations

import os

from project.settings import *  # noqa: F403 - the demo site is what is measured
from project.settings import CAPI_DESTINATIONS, LOGGING

CAPI_DESTINATIONS = {
    **CAPI_DESTINATIONS,
    "INGEST_RATE_LIMIT": "100000000/m",
}
if os.environ.get("BENCH_GRAPH_API_BASE_URL"):
    CAPI_DESTINATIONS["GRAPH_API_BASE_URL"] = os.environ["BENCH_GRAPH_API_BASE_URL"]

LOGGING = {
    **LOGGING,
    "loggers": {"capi_destinations": {"handlers": ["console"], "level": "ERROR"}},
}

# Experiment switch (not a default): BENCH_CONN_HEALTH_CHECKS=0 measures the site without
# Django's per-request connection health check.
if os.environ.get("BENCH_CONN_HEALTH_CHECKS") == "0":
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False  # noqa: F405
# Experiment switch (not a default): BENCH_PG_SERVER_SIDE_BINDING=1 measures psycopg's
# server-side binding, with which PostgreSQL can reuse prepared statements.
if os.environ.get("BENCH_PG_SERVER_SIDE_BINDING") == "1":
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True  # noqa: F405
