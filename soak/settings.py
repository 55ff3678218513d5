"""Settings of the soak: the demo site as production runs it, with shorter timers.

Everything comes from ``project.settings`` (``DEBUG`` off, PostgreSQL from ``DATABASE_URL``,
django-q2 on Redis from ``REDIS_URL``). Changed here, because a soak must finish in minutes:
a 30-second lease (so a killed worker's events come back within the run), health checks every
minute, and a per-key ingest limit high enough for the steady load. The cache is Redis, shared
by every process, as the README asks of sites with several web processes.
"""

from __future__ import annotations

import os

from project.settings import *  # noqa: F403
from project.settings import CAPI_DESTINATIONS, REDIS_URL

# Loopback only: no TLS in front of gunicorn, so no HTTPS redirect.
SECURE_SSL_REDIRECT = False

CAPI_DESTINATIONS = {
    **CAPI_DESTINATIONS,
    "LEASE_SECONDS": int(os.environ.get("SOAK_LEASE_SECONDS", "30")),
    "HEALTH_CHECK_INTERVAL": 60,
    "INGEST_RATE_LIMIT": "1000000/m",
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "capi-soak",
    }
}
