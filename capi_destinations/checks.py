"""System checks: what a host site misconfigured (ids ``capi_destinations.E0xx`` and ``W0xx``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from capi_destinations import clock, graph_versions, normalize, ratelimit
from capi_destinations.conf import DEFAULTS, app_settings


@checks.register()
def check_installed_apps(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The app needs django-q2 (delivery workers) and django-htmx (pages)."""
    errors: list[checks.CheckMessage] = []
    installed = set(settings.INSTALLED_APPS)
    if "django_q" not in installed:
        errors.append(
            checks.Error(
                "'django_q' is not in INSTALLED_APPS.",
                hint="Add 'django_q' to INSTALLED_APPS: events are delivered by django-q2 workers.",
                id="capi_destinations.E001",
            )
        )
    if "django_htmx" not in installed:
        errors.append(
            checks.Error(
                "'django_htmx' is not in INSTALLED_APPS.",
                hint="Add 'django_htmx' to INSTALLED_APPS: the destination pages use htmx.",
                id="capi_destinations.E002",
            )
        )
    if "django_htmx.middleware.HtmxMiddleware" not in settings.MIDDLEWARE:
        errors.append(
            checks.Error(
                "'django_htmx.middleware.HtmxMiddleware' is not in MIDDLEWARE.",
                hint="Add 'django_htmx.middleware.HtmxMiddleware' to MIDDLEWARE.",
                id="capi_destinations.E003",
            )
        )
    return errors


_INGEST_MIDDLEWARE = "capi_destinations.middleware.IngestMiddleware"
_SECURITY_MIDDLEWARE = "django.middleware.security.SecurityMiddleware"


@checks.register(checks.Tags.security)
def check_ingest_middleware_order(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W004: ``IngestMiddleware`` above ``SecurityMiddleware`` takes the ingest URL out of it.

    The ingest URL is answered by ``IngestMiddleware`` without the middleware listed after it:
    listed first, the HTTPS redirect and HSTS header would not apply to the events a browser
    or server sends.
    """
    middleware = list(settings.MIDDLEWARE)
    if _INGEST_MIDDLEWARE not in middleware or _SECURITY_MIDDLEWARE not in middleware:
        return []
    if middleware.index(_INGEST_MIDDLEWARE) > middleware.index(_SECURITY_MIDDLEWARE):
        return []
    return [
        checks.Warning(
            f"'{_INGEST_MIDDLEWARE}' is listed before '{_SECURITY_MIDDLEWARE}' in MIDDLEWARE.",
            hint="Move it right after SecurityMiddleware: the ingest URL is answered without "
            "the middleware listed after IngestMiddleware, so from above it the HTTPS redirect "
            "and HSTS do not apply to the events sent to it.",
            id="capi_destinations.W004",
        )
    ]


@checks.register(checks.Tags.security, deploy=False)
def check_fernet_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Tokens are encrypted with FERNET_KEYS; falling back to SECRET_KEY is for development only."""
    if settings.DEBUG or getattr(settings, "FERNET_KEYS", None):
        return []
    return [
        checks.Error(
            "FERNET_KEYS is not set while DEBUG is off.",
            hint="Set FERNET_KEYS to a list of secret keys (the first encrypts, all decrypt) so "
            "access tokens are not encrypted with SECRET_KEY.",
            id="capi_destinations.E004",
        )
    ]


@checks.register()
def check_app_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``CAPI_DESTINATIONS`` must be a dict of known keys."""
    try:
        app_settings.reload()
        app_settings.BATCH_SIZE  # noqa: B018  (forces the load and its validation)
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="capi_destinations.E005")]
    batch_size = app_settings.BATCH_SIZE
    if not isinstance(batch_size, int) or not 1 <= batch_size <= 1000:
        return [
            checks.Error(
                f"CAPI_DESTINATIONS['BATCH_SIZE'] is {batch_size!r}.",
                hint="Meta accepts 1 to 1000 events per request.",
                id="capi_destinations.E006",
            )
        ]
    return []


@checks.register(checks.Tags.caches)
def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W001: in production the default cache must be one that every process shares.

    The ingest rate limit, the dispatch enqueue dedup (and a host's login throttling) count in
    Django's default cache; in a per-process memory cache each web process and worker counts
    alone, so a limit of 6000/m across 4 processes lets 24000 through.
    """
    if settings.DEBUG:
        return []
    backend_path = getattr(settings, "CACHES", {}).get("default", {}).get("BACKEND", "")
    try:
        backend = import_string(backend_path)
    except ImportError:
        return []  # Django reports a cache it cannot load itself.
    if not isinstance(backend, type):
        return []
    if issubclass(backend, DummyCache):
        problem = (
            "The default cache is Django's dummy cache, which remembers nothing: rate limits, "
            "login throttling and dispatch dedup do not work."
        )
    elif issubclass(backend, LocMemCache):
        problem = (
            "The default cache is Django's local-memory cache: rate limits, login throttling and "
            "dispatch dedup are per process."
        )
    else:
        return []
    return [
        checks.Warning(
            problem,
            hint="Use a cache all web and worker processes share: Redis "
            "('django.core.cache.backends.redis.RedisCache'), Memcached or the database cache. "
            "A site that really runs as one process can add 'capi_destinations.W001' to "
            "SILENCED_SYSTEM_CHECKS.",
            id="capi_destinations.W001",
        )
    ]


# --- django-q2's broker ---------------------------------------------------------------------------

# What the README's install snippet sets: the site's own database as broker, nothing to install.
Q_CLUSTER_SNIPPET = 'Q_CLUSTER = {"name": "capi", "orm": "default", "timeout": 60, "retry": 120}'
_DJANGO_Q_DEFAULT_RETRY = 60


@dataclass(frozen=True)
class _Broker:
    """The broker django-q2 picks for a ``Q_CLUSTER``, and the modules it imports to use it."""

    name: str
    modules: tuple[str, ...]
    install: str


def _broker_of(q_cluster: dict[str, Any]) -> _Broker:
    # The order of django_q.brokers.get_broker: the first key present decides.
    if q_cluster.get("broker_class"):
        path = str(q_cluster["broker_class"])
        return _Broker(f"custom broker {path}", (), f"make {path} importable")
    if q_cluster.get("iron_mq"):
        return _Broker("IronMQ", ("iron_mq",), "pip install iron-mq")
    if isinstance(q_cluster.get("sqs"), dict):
        return _Broker("Amazon SQS", ("boto3",), "pip install boto3")
    if q_cluster.get("orm"):
        return _Broker("database (ORM)", (), "")
    if q_cluster.get("mongo"):
        return _Broker("MongoDB", ("pymongo",), "pip install pymongo")
    modules = ("redis", "django_redis") if q_cluster.get("django_redis") else ("redis",)
    return _Broker("Redis", modules, "pip install redis")


def _importable(module: str) -> bool:
    try:
        import_module(module)
    except ImportError:
        return False
    return True


@checks.register()
def check_task_broker(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E013/W002: django-q2 must be able to queue the app's tasks.

    Without ``Q_CLUSTER`` django-q2 falls back to a Redis server on localhost, whose client a
    new site does not even have installed; queueing then fails at every recorded event. The
    app logs that and carries on (the schedule sends the events), so only this check tells
    the site. Settings are read here, not from django-q2's ``Conf``, which froze at import.
    """
    q_cluster = getattr(settings, "Q_CLUSTER", None)
    if q_cluster is None:
        return _check_missing_q_cluster()
    if not isinstance(q_cluster, dict):
        return [
            checks.Error(
                f"Q_CLUSTER is {q_cluster!r}, not a dict.",
                hint=f"Use the database as django-q2's broker: {Q_CLUSTER_SNIPPET}",
                id="capi_destinations.E013",
            )
        ]
    return [*_check_broker_usable(q_cluster), *_check_retry_exceeds_timeout(q_cluster)]


def _check_missing_q_cluster() -> list[checks.CheckMessage]:
    hint = f"Use the database as django-q2's broker (nothing to install): {Q_CLUSTER_SNIPPET}"
    if not _importable("redis"):
        return [
            checks.Error(
                "Q_CLUSTER is not set, so django-q2 uses Redis as its broker, and the Redis "
                "client library 'redis' is not installed: every task the app queues fails "
                "(events wait for a scheduled dispatch that no worker can run).",
                hint=hint,
                id="capi_destinations.E013",
            )
        ]
    return [
        checks.Warning(
            "Q_CLUSTER is not set, so django-q2 uses a Redis server at localhost:6379 as its "
            "broker, with its default timeouts.",
            hint=f"Say which broker to use. {hint}; or Redis: "
            '"redis": "redis://host:6379/0" instead of "orm".',
            id="capi_destinations.W002",
        )
    ]


def _check_broker_usable(q_cluster: dict[str, Any]) -> list[checks.CheckMessage]:
    broker = _broker_of(q_cluster)
    problem = ""
    if q_cluster.get("broker_class"):
        try:
            import_string(str(q_cluster["broker_class"]))
        except ImportError:
            problem = f"Q_CLUSTER['broker_class'] {q_cluster['broker_class']!r} cannot be imported"
    elif missing := [module for module in broker.modules if not _importable(module)]:
        problem = (
            f"Q_CLUSTER uses django-q2's {broker.name} broker, whose client library "
            f"{missing[0]!r} is not installed"
        )
    elif q_cluster.get("orm") and q_cluster["orm"] not in settings.DATABASES:
        problem = f"Q_CLUSTER['orm'] is {q_cluster['orm']!r}, which is not a database in DATABASES"
    if not problem:
        return []
    fix = f"{broker.install}, or use" if broker.install else "Use"
    return [
        checks.Error(
            f"{problem}: every task the app queues fails.",
            hint=f"{fix} the database as django-q2's broker: {Q_CLUSTER_SNIPPET}",
            id="capi_destinations.E013",
        )
    ]


def _check_retry_exceeds_timeout(q_cluster: dict[str, Any]) -> list[checks.CheckMessage]:
    # Any: whatever the site wrote; _is_number checks it before it is compared.
    timeout: Any = q_cluster.get("timeout")
    retry: Any = q_cluster.get("retry", _DJANGO_Q_DEFAULT_RETRY)
    hint = (
        "Give Q_CLUSTER a 'timeout' (seconds a task may run) and a larger 'retry' (seconds "
        "before an unfinished task is handed out again), e.g. "
        f"{Q_CLUSTER_SNIPPET}"
    )
    if not _is_number(timeout, whole=False) or timeout <= 0:
        problem = "Q_CLUSTER has no 'timeout', so a task that hangs is never stopped"
    elif not _is_number(retry, whole=False) or retry <= timeout:
        problem = f"Q_CLUSTER's retry ({retry!r}) does not exceed its timeout ({timeout!r})"
    else:
        return []
    return [
        checks.Warning(
            f"{problem}; a task still running when 'retry' passes is started a second time, "
            "so it runs twice.",
            hint=hint,
            id="capi_destinations.W002",
        )
    ]


# --- settings with a format -------------------------------------------------------------------

# Seconds, bytes and counts that only make sense above zero, and the whole numbers among them.
_POSITIVE_NUMBERS = (
    "GRAPH_CONNECT_TIMEOUT",
    "GRAPH_READ_TIMEOUT",
    "LEASE_SECONDS",
    "HEALTH_CHECK_INTERVAL",
    "HEALTH_MAX_QUEUE_DELAY",
    "BATCH_MAX_BYTES",
    "INGEST_MAX_BODY_BYTES",
    "RETENTION_DAYS",
    "HEALTH_CHECK_CONCURRENCY",
    "HEALTH_TRANSIENT_FAILURE_THRESHOLD",
    "HEALTH_FAILURE_RATE_ATTEMPTS",
    "ALERT_CONNECT_TIMEOUT",
    "ALERT_READ_TIMEOUT",
    "ALERT_RETRY_BASE_SECONDS",
    "ALERT_RETRY_MAX_SECONDS",
    "ALERT_RETRY_FOR_SECONDS",
    "ALERT_DEBOUNCE_CHECKS",
    "TRAFFIC_DROP_HOURS",
    "TRAFFIC_MIN_USUAL",
    "TRAFFIC_HISTORY_WEEKS",
    "ALERT_FAILURE_RATE_HOURS",
    "ALERT_FAILURE_RATE_MIN_EVENTS",
    "ALERT_MATCH_QUALITY_MIN_EVENTS",
    "INVITATION_MAX_AGE",
)
# 0 turns these off.
_NON_NEGATIVE_NUMBERS = (
    "DISPATCH_ENQUEUE_DEDUP_SECONDS",
    "INGEST_KEY_CACHE_SECONDS",
    "ALERT_HEALTH_SETTLE_SECONDS",
)
_WHOLE_NUMBERS = frozenset(
    {
        "BATCH_MAX_BYTES",
        "INGEST_MAX_BODY_BYTES",
        "RETENTION_DAYS",
        "HEALTH_CHECK_CONCURRENCY",
        "HEALTH_TRANSIENT_FAILURE_THRESHOLD",
        "HEALTH_FAILURE_RATE_ATTEMPTS",
        "ALERT_DEBOUNCE_CHECKS",
        "TRAFFIC_DROP_HOURS",
        "TRAFFIC_MIN_USUAL",
        "TRAFFIC_HISTORY_WEEKS",
        "ALERT_FAILURE_RATE_HOURS",
        "ALERT_FAILURE_RATE_MIN_EVENTS",
        "ALERT_MATCH_QUALITY_MIN_EVENTS",
    }
)
# Alert thresholds: (lowest allowed, excluded; highest allowed), and what they are.
_ALERT_RANGES = {
    "TRAFFIC_DROP_RATIO": (0, 1, "a share above 0 and at most 1"),
    "ALERT_FAILURE_RATE": (0, 1, "a share above 0 and at most 1"),
    "ALERT_MATCH_QUALITY_DROP": (0, 10, "points of 10, above 0 and at most 10"),
}
# How Django names a request header in request.META: HTTP_ + upper case, "-" as "_".
_META_HEADER_KEY = re.compile(r"HTTP_[A-Z0-9_]+")
_GRAPH_API_VERSION = re.compile(r"v\d+\.\d+")


@checks.register()
def check_setting_formats(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Settings with a format: the ingest rate, the proxy header, numbers, version, URL, country.

    Each of these would otherwise fail only later and quietly: a request at a time (the rate),
    with every visitor's IP read as the proxy's, or as Meta unreachable (a URL without http).
    Skipped while ``CAPI_DESTINATIONS`` itself cannot be read (``E005`` says why).
    """
    try:
        app_settings.reload()
        app_settings.BATCH_SIZE  # noqa: B018  (forces the load and its validation)
    except ImproperlyConfigured:
        return []
    return [
        *_check_rate_limit(),
        *_check_proxy_header(),
        *_check_numbers(),
        *_check_graph_api(),
        *_check_default_country(),
        *_check_partner_agent(),
        *_check_alerts_and_digest(),
        *_check_click_ids(),
    ]


def _setting(key: str) -> str:
    return f"CAPI_DESTINATIONS['{key}']"


_RATE_SETTINGS = ("INGEST_RATE_LIMIT", "INGEST_BROWSER_RATE_LIMIT", "INGEST_CLIENT_RATE_LIMIT")


def _check_rate_limit() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for key in _RATE_SETTINGS:
        rate = getattr(app_settings, key)
        if rate is None or rate == "":
            continue
        try:
            if not isinstance(rate, str):
                raise ImproperlyConfigured("a rate is text")
            ratelimit.parse_rate(rate)
        except ImproperlyConfigured:
            errors.append(
                checks.Error(
                    f"{_setting(key)} is {rate!r}, which is not a rate.",
                    hint="Write requests per period as a text such as '6000/m', '100/s', "
                    "'50000/h' or '10/5m' (s, m, h or d); None turns this limit off.",
                    id="capi_destinations.E007",
                )
            )
    return errors


def _check_proxy_header() -> list[checks.CheckMessage]:
    header = app_settings.TRUSTED_PROXY_HEADER
    if header is None or header == "":
        return []
    if isinstance(header, str) and _META_HEADER_KEY.fullmatch(header):
        return []
    hint = (
        "Give the key under which Django's request.META holds the header your reverse proxy "
        "sets: HTTP_ followed by its name in capitals, dashes as underscores"
    )
    if isinstance(header, str) and header.strip():
        name = header.strip().upper().replace("-", "_")
        if not name.startswith("HTTP_"):
            name = f"HTTP_{name}"
        hint += f' (for "{header}": "{name}")'
    return [
        checks.Error(
            f"{_setting('TRUSTED_PROXY_HEADER')} is {header!r}, which is not a request.META key.",
            hint=hint + ". None trusts only REMOTE_ADDR.",
            id="capi_destinations.E008",
        )
    ]


def _check_numbers() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for key in (*_POSITIVE_NUMBERS, *_NON_NEGATIVE_NUMBERS):
        value = getattr(app_settings, key)
        whole = key in _WHOLE_NUMBERS
        allows_zero = key in _NON_NEGATIVE_NUMBERS
        if _is_number(value, whole=whole) and (value > 0 or (allows_zero and value == 0)):
            continue
        wanted = "a whole number" if whole else "a number of seconds"
        wanted += " of 0 or more" if allows_zero else " above 0"
        errors.append(
            checks.Error(
                f"{_setting(key)} is {value!r}.",
                hint=f"Set it to {wanted}, or leave it out for the default ({DEFAULTS[key]!r}).",
                id="capi_destinations.E009",
            )
        )
    return errors


def _check_alerts_and_digest() -> list[checks.CheckMessage]:
    """E021: alert thresholds out of range, a digest hour that is no hour, a SITE_URL that is
    not an http(s) address (links in emails would lead nowhere)."""
    problems: list[tuple[str, str]] = []
    for key, (low, high, wanted) in _ALERT_RANGES.items():
        value = getattr(app_settings, key)
        if not (_is_number(value, whole=False) and low < value <= high):
            problems.append((key, f"Set it to {wanted}"))
    hour = app_settings.DIGEST_HOUR
    if not (_is_number(hour, whole=True) and 0 <= hour <= 23):
        problems.append(("DIGEST_HOUR", "Set it to a whole hour from 0 to 23 (UTC)"))
    site_url = app_settings.SITE_URL
    parts = urlsplit(site_url) if isinstance(site_url, str) else None
    if site_url != "" and (
        parts is None or parts.scheme not in ("http", "https") or not parts.netloc
    ):
        problems.append(("SITE_URL", "Give the site's address, such as 'https://capi.example.com'"))
    return [
        checks.Error(
            f"{_setting(key)} is {getattr(app_settings, key)!r}.",
            hint=f"{hint}, or leave it out for the default ({DEFAULTS[key]!r}).",
            id="capi_destinations.E021",
        )
        for key, hint in problems
    ]


def _check_click_ids() -> list[checks.CheckMessage]:
    """E022: the click-ID settings. ``ClickIdMiddleware`` reads them on every GET of the host
    site and ingestion on every event, so a wrong one would fail each page, not the start."""
    problems: list[tuple[str, str]] = []
    if app_settings.CLICK_ID_MISSING_CONSENT not in ("granted", "denied"):
        problems.append(("CLICK_ID_MISSING_CONSENT", "Set it to 'granted' or 'denied'"))
    consent_path = app_settings.CLICK_ID_CONSENT
    if consent_path is not None and not _is_function_path(consent_path):
        problems.append(
            (
                "CLICK_ID_CONSENT",
                "Give the dotted path of a function (request) -> consent state or None, "
                "such as 'shop.consent.state_of'",
            )
        )
    domain = app_settings.CLICK_ID_COOKIE_DOMAIN
    if domain is not None and not (isinstance(domain, str) and _COOKIE_DOMAIN.fullmatch(domain)):
        problems.append(
            ("CLICK_ID_COOKIE_DOMAIN", "Give a domain such as '.example.com' (no scheme or path)")
        )
    days = app_settings.CLICK_ID_FILL_DAYS
    if not (_is_number(days, whole=False) and days >= 0):
        problems.append(("CLICK_ID_FILL_DAYS", "Set it to a number of days of 0 or more"))
    return [
        checks.Error(
            f"{_setting(key)} is {getattr(app_settings, key)!r}.",
            hint=f"{hint}, or leave it out for the default ({DEFAULTS[key]!r}).",
            id="capi_destinations.E022",
        )
        for key, hint in problems
    ]


# Empty (the request's host), or labels of letters, digits and dashes, with an optional dot first.
_COOKIE_DOMAIN = re.compile(r"(?:\.?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)?")


def _is_function_path(path: Any) -> bool:
    if not isinstance(path, str):
        return False
    try:
        return callable(import_string(path))
    except ImportError:
        return False


def _is_number(value: Any, *, whole: bool) -> bool:
    if isinstance(value, bool):
        return False
    if whole:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def _check_graph_api() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    version = app_settings.GRAPH_API_VERSION
    if not isinstance(version, str) or not _GRAPH_API_VERSION.fullmatch(version):
        errors.append(
            checks.Error(
                f"{_setting('GRAPH_API_VERSION')} is {version!r}.",
                hint="Write a Graph API version as Meta does, for example 'v26.0'.",
                id="capi_destinations.E010",
            )
        )
    else:
        errors += _check_graph_api_version_lifetime(version)
    base_url = app_settings.GRAPH_API_BASE_URL
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        errors.append(
            checks.Error(
                f"{_setting('GRAPH_API_BASE_URL')} is {base_url!r}, not an http(s) address.",
                hint="Leave it out for Meta ('https://graph.facebook.com'), or give the full "
                "address of a sandbox such as 'http://127.0.0.1:8765'.",
                id="capi_destinations.E011",
            )
        )
    return errors


def _check_graph_api_version_lifetime(version: str) -> list[checks.CheckMessage]:
    """W003: the default version ends within 90 days, or has ended (Meta's changelog dates)."""
    status = graph_versions.version_status(version, clock.now().date())
    if not (status.is_warning or status.is_error):
        return []
    return [
        checks.Warning(
            f"{_setting('GRAPH_API_VERSION')}: {status.message}",
            hint=f"Set it to {graph_versions.newest_version()} (or leave it out for the "
            f"default). Destinations with their own Graph API version are checked by the health "
            f"check. Meta's dates: {graph_versions.CHANGELOG_URL}",
            id="capi_destinations.W003",
        )
    ]


def _check_default_country() -> list[checks.CheckMessage]:
    country = app_settings.DEFAULT_COUNTRY
    if country == "" or country is None or normalize.normalize_country(country) is not None:
        return []
    return [
        checks.Error(
            f"{_setting('DEFAULT_COUNTRY')} is {country!r}, which is not a known country.",
            hint="Give a two-letter ISO 3166-1 code such as 'us' or 'de' (or leave it empty): "
            "it is the country of phone numbers sent without a country code.",
            id="capi_destinations.E012",
        )
    ]


#: Meta's rule for partner_agent: "less than 23 characters and includes at least two
#: alphabetical characters" (end-to-end implementation guide, "Attribute events to your
#: platform").
PARTNER_AGENT_MAX_LENGTH = 22


def partner_agent_problem(value: Any) -> str | None:
    """Why ``value`` breaks Meta's partner_agent rule, or None when it follows it."""
    if not isinstance(value, str):
        return "is not text"
    if len(value) > PARTNER_AGENT_MAX_LENGTH:
        return f"is {len(value)} characters long; Meta asks for less than 23"
    if sum(1 for char in value if char.isascii() and char.isalpha()) < 2:
        return "has fewer than two letters; Meta asks for at least two"
    return None


def _check_partner_agent() -> list[checks.CheckMessage]:
    value = app_settings.PARTNER_AGENT
    if value == "":
        return []
    problem = partner_agent_problem(value)
    if problem is None:
        return []
    return [
        checks.Error(
            f"{_setting('PARTNER_AGENT')} {problem}.",
            hint="Name your platform in less than 23 characters with at least two letters, "
            "e.g. 'acme-shops-2.1', or leave it empty to send the app's own.",
            id="capi_destinations.E020",
        )
    ]
