"""The app's settings: one ``CAPI_DESTINATIONS`` dict in the host's settings, defaults here.

Values are read through ``app_settings`` (``app_settings.BATCH_SIZE``) and reloaded when
Django's ``setting_changed`` signal fires, so ``override_settings`` works in tests. Unknown keys
are refused, so a typo in a host site's settings is an error instead of a silent default.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SETTING_NAME = "CAPI_DESTINATIONS"

DEFAULTS: dict[str, Any] = {
    # --- Graph API ---------------------------------------------------------------------------
    # Base URL of the Graph API. Point it at the local sandbox (``manage.py capi_sandbox``) to
    # develop and test without Meta.
    "GRAPH_API_BASE_URL": "https://graph.facebook.com",
    # Graph API version used when a destination does not set its own.
    "GRAPH_API_VERSION": "v26.0",
    # Seconds to open a connection / to wait for Meta's answer. Meta suggests 1.5 s per call;
    # a 1000-event request needs more.
    "GRAPH_CONNECT_TIMEOUT": 3.05,
    "GRAPH_READ_TIMEOUT": 15.0,
    # Sign appsecret_proof over "token|unix time" and send appsecret_time (Meta's current Login
    # Security page) instead of over the token alone (what the official SDK sends). Off by
    # default: whether the events endpoint accepts the time-stamped form is unconfirmed.
    "GRAPH_APPSECRET_TIME": False,
    # The partner_agent sent with every event request, naming the platform that sends them.
    # Meta's rule: less than 23 characters, at least two letters. "" sends the app's own,
    # "django-capi-<version>"; a platform built on this app sets its own name here.
    "PARTNER_AGENT": "",
    # --- Tokens ------------------------------------------------------------------------------
    # Prefixes a pasted access token must start with; an empty tuple accepts any.
    "TOKEN_PREFIXES": ("EAA",),
    # Shorter tokens are refused as truncated (a CAPI token is about 190 characters).
    "TOKEN_MIN_LENGTH": 100,
    # --- Delivery ----------------------------------------------------------------------------
    # Events per Graph request (Meta's maximum is 1000) and the largest request body in bytes.
    "BATCH_SIZE": 1000,
    "BATCH_MAX_BYTES": 4_000_000,
    # Seconds a worker owns the events it claimed; after that another worker may take them back.
    "LEASE_SECONDS": 300,
    # Seconds during which recording more events for a destination does not queue another
    # dispatch task while one is already waiting (the task clears the mark when it starts).
    # Seconds a dispatch queued by newly recorded events waits before claiming, so events that
    # arrive one by one leave together (fewer, fuller requests to Meta). 0 sends at once.
    "DISPATCH_LINGER_SECONDS": 1.0,
    "DISPATCH_ENQUEUE_DEDUP_SECONDS": 30,
    # --- Health checks -----------------------------------------------------------------------
    # Seconds between scheduled health checks of every destination.
    "HEALTH_CHECK_INTERVAL": 300,
    # Graph calls running at once when many destinations are checked together.
    "HEALTH_CHECK_CONCURRENCY": 16,
    # Checks in a row that cannot reach Meta (outage, timeout, rate limit) before a destination
    # is marked unhealthy; fewer keep its previous status.
    "HEALTH_TRANSIENT_FAILURE_THRESHOLD": 3,
    # Share (0-1) of the last HEALTH_FAILURE_RATE_ATTEMPTS requests to Meta (last 24 hours)
    # that may fail before the destination is unhealthy.
    "HEALTH_MAX_FAILURE_RATE": 0.5,
    "HEALTH_FAILURE_RATE_ATTEMPTS": 20,
    # Seconds a due event may wait unsent before the queue counts as stuck.
    "HEALTH_MAX_QUEUE_DELAY": 900,
    # Average estimated match quality (0-10) of recent events below which a note is shown.
    "HEALTH_LOW_MATCH_QUALITY": 5.0,
    # Email the tenant's admins when a destination turns unhealthy or recovers.
    "HEALTH_EMAIL_ADMINS": False,
    # --- Alerts (notification channels: capi_destinations.alert_delivery) ----------------------
    # The site's address as people reach it ("https://capi.example.com"), so alerts and the
    # daily digest can link to its pages; "" leaves the links relative (the page's path alone).
    "SITE_URL": "",
    # Channel URLs (Slack, webhooks) must use https; True also allows plain http.
    "ALERT_ALLOW_HTTP": False,
    # Channel URLs whose host resolves to a private, loopback, link-local, multicast or reserved
    # address are refused (at save time and again before each send); True allows them.
    "ALERT_ALLOW_PRIVATE_ADDRESSES": False,
    # Seconds to open a connection to / to wait for the answer of a Slack or webhook receiver.
    "ALERT_CONNECT_TIMEOUT": 3.05,
    "ALERT_READ_TIMEOUT": 10.0,
    # Retries of an alert a channel did not take: the first after ALERT_RETRY_BASE_SECONDS,
    # each next one twice as late, at most ALERT_RETRY_MAX_SECONDS apart.
    "ALERT_RETRY_BASE_SECONDS": 60,
    "ALERT_RETRY_MAX_SECONDS": 3600,
    # Seconds an alert keeps being retried; past them it is failed and its channel marked failing.
    "ALERT_RETRY_FOR_SECONDS": 86400,
    # Seconds a change into or out of Unhealthy must last before its alert is sent; a change
    # undone sooner sends nothing (no alerts from a flapping status). 0 sends at once.
    "ALERT_HEALTH_SETTLE_SECONDS": 600,
    # --- Alerts (signals.destination_alert; see README → "Alerts and the daily digest") ------
    # Evaluations in a row (health checks, every HEALTH_CHECK_INTERVAL) a condition must hold
    # before its alert is raised, and be gone before it is cleared: no alert on one odd reading.
    "ALERT_DEBOUNCE_CHECKS": 2,
    # Traffic dropped: over the last TRAFFIC_DROP_HOURS complete hours the destination recorded
    # fewer than TRAFFIC_DROP_RATIO of what it usually records in those hours of the week (the
    # average of the same hours over the last TRAFFIC_HISTORY_WEEKS weeks it existed). Never
    # judged with less history than a week, or when it usually records fewer than
    # TRAFFIC_MIN_USUAL events in those hours (too quiet to tell a drop from chance).
    "TRAFFIC_DROP_HOURS": 3,
    "TRAFFIC_DROP_RATIO": 0.2,
    "TRAFFIC_MIN_USUAL": 10,
    "TRAFFIC_HISTORY_WEEKS": 4,
    # Failure rate: share (0-1) of events refused (failed at Meta + rejected by our checks) among
    # those that got an outcome in the last ALERT_FAILURE_RATE_HOURS hours, counted only over at
    # least ALERT_FAILURE_RATE_MIN_EVENTS events.
    "ALERT_FAILURE_RATE": 0.2,
    "ALERT_FAILURE_RATE_HOURS": 6,
    "ALERT_FAILURE_RATE_MIN_EVENTS": 20,
    # Match quality fell: the estimate of the last 24 hours is this many points (of 10) below
    # the 7 days before them, each over at least ALERT_MATCH_QUALITY_MIN_EVENTS events.
    "ALERT_MATCH_QUALITY_DROP": 1.0,
    "ALERT_MATCH_QUALITY_MIN_EVENTS": 20,
    # --- Daily digest ------------------------------------------------------------------------
    # Links in the digest (its pages, its unsubscribe link) start with SITE_URL (see Alerts).
    # UTC hour the daily digest is sent (the django-q2 schedule's first run).
    "DIGEST_HOUR": 7,
    # --- Ingestion ---------------------------------------------------------------------------
    # ISO 3166-1 alpha-2 country used to read phone numbers without a country code when neither
    # the event nor the destination says which country they belong to ("" = none).
    "DEFAULT_COUNTRY": "",
    # WSGI ``META`` key of a header set by *your* reverse proxy holding the client's IP
    # (for example "HTTP_X_FORWARDED_FOR"); None trusts only REMOTE_ADDR.
    "TRUSTED_PROXY_HEADER": None,
    # Largest body in bytes the ingest endpoint reads; bigger requests get 413. Django's own
    # DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB by default) still applies on top of it.
    "INGEST_MAX_BODY_BYTES": 1_000_000,
    # Rates the ingest endpoint accepts per second/minute/hour ("6000/m", "100/s", "50000/h");
    # more get 429. Counted in Django's cache, so share one cache (Redis, Memcached) between
    # processes for a limit to hold across them. None turns a limit off. Three budgets, so that
    # nobody holding only the public key (any visitor, with any Origin) can spend the server's:
    # server calls (with the ingest secret) per ingest key;
    "INGEST_RATE_LIMIT": "6000/m",
    # browser calls that bring events, per ingest key, counted apart from the server's;
    "INGEST_BROWSER_RATE_LIMIT": "6000/m",
    # every call without the right secret (browser calls, empty or refused ones, wrong secrets),
    # per client address (REMOTE_ADDR or TRUSTED_PROXY_HEADER), so one address that floods the
    # endpoint runs out of its own budget.
    "INGEST_CLIENT_RATE_LIMIT": "600/m",
    # Seconds a process remembers a destination found by its ingest key, sparing the database a
    # query per request; a changed key or origin list takes at most this long to apply.
    "INGEST_KEY_CACHE_SECONDS": 5,
    # PostgreSQL: whether each ingest's hourly counts wait for the disk as events do. Off, a
    # database crash may lose the last moment's counts (never an event), and concurrent requests
    # of one destination stop queueing behind each other's flush of the same counter row.
    "HOURLY_COUNTS_WAIT_FOR_DISK": True,
    # --- First-party click IDs (capi_destinations.middleware.ClickIdMiddleware) ----------------
    # Domain the _fbc/_fbp cookies are set on (".example.com" shares them with the Pixel and
    # every subdomain); None sets them for the request's host only.
    "CLICK_ID_COOKIE_DOMAIN": None,
    # Dotted path of a function (request) -> the visitor's consent state, shaped like an event's
    # ``consent`` ({"ad_storage": "granted", ...}), or None when unknown; None: never known.
    "CLICK_ID_CONSENT": None,
    # What an unknown consent state (or one silent on ad_storage) counts as: "granted" or
    # "denied". Where visitors must opt in first, set "denied" and CLICK_ID_CONSENT.
    "CLICK_ID_MISSING_CONSENT": "granted",
    # Days before an event that a person's fbc/fbp seen on an earlier event may fill it, when it
    # arrives without them (a webhook, a CRM update): Meta's default click attribution window.
    "CLICK_ID_FILL_DAYS": 7,
    # --- Members -----------------------------------------------------------------------------
    # Seconds an invitation link stays valid after it was (last) sent.
    "INVITATION_MAX_AGE": 7 * 24 * 3600,
    # --- CSV imports (store and CRM conversions) -----------------------------------------------
    # The largest CSV file the page accepts, in bytes (the command and import_csv() take any).
    "IMPORT_MAX_BYTES": 50 * 1024 * 1024,
    # Where uploaded files wait for the background import (deleted when it ends); a directory
    # the web and the qcluster processes share. Empty: a folder in the system's temp directory.
    "IMPORT_DIRECTORY": "",
    # Seconds one background task imports before it queues the rest as a new task: keep it well
    # under Q_CLUSTER's ``timeout``, which kills a task that runs longer.
    "IMPORT_TASK_SECONDS": 30,
    # How many rejected rows an import keeps for its report (all are counted).
    "IMPORT_REJECTED_ROWS_KEPT": 1000,
    # --- Retention ---------------------------------------------------------------------------
    # Days delivered/expired events, attempts and health checks are kept before ``capi_purge``.
    "RETENTION_DAYS": 30,
}


class AppSettings:
    """Attribute access to ``CAPI_DESTINATIONS`` merged over ``DEFAULTS``."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        user_settings = getattr(settings, SETTING_NAME, None) or {}
        if not isinstance(user_settings, dict):
            raise ImproperlyConfigured(f"{SETTING_NAME} must be a dict.")
        unknown = sorted(set(user_settings) - set(DEFAULTS))
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown key(s) in {SETTING_NAME}: {', '.join(unknown)}. "
                f"Known keys: {', '.join(sorted(DEFAULTS))}."
            )
        return {**DEFAULTS, **user_settings}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"No such {SETTING_NAME} setting: {name!r}")
        if self._cache is None:
            self._cache = self._load()
        return self._cache[name]

    def reload(self) -> None:
        """Forget cached values; the next attribute access reads settings again."""
        self._cache = None


app_settings = AppSettings()


def reload_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver (``receivers`` connects it): ``override_settings`` works."""
    if setting == SETTING_NAME:
        app_settings.reload()
