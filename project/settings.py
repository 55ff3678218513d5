"""Settings of the demo and development site, read from the environment (django-environ).

Production needs ``DEBUG=false``, ``SECRET_KEY``, ``FERNET_KEYS``, ``ALLOWED_HOSTS`` and a
``DATABASE_URL``; see README → "Running in production".
"""

from __future__ import annotations

import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

_DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"
_DEV_FERNET_KEY = "dev-only-insecure-fernet-key-do-not-use-in-production"

SECRET_KEY = env.str("SECRET_KEY", default="")
FERNET_KEYS = env.list("FERNET_KEYS", default=[])
if not DEBUG:
    missing = [
        name
        for name, value in (("SECRET_KEY", SECRET_KEY), ("FERNET_KEYS", FERNET_KEYS))
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"{' and '.join(missing)} must be set when DEBUG is off. "
            "FERNET_KEYS is a comma-separated list of secret keys: the first encrypts "
            "access tokens, all of them decrypt. "
            "For local development set DEBUG=true (make run does)."
        )
else:
    if not SECRET_KEY or not FERNET_KEYS:
        warnings.warn(
            "DEBUG is on and SECRET_KEY/FERNET_KEYS are not set: using insecure development keys. "
            "Never run like this in production.",
            stacklevel=1,
        )
    SECRET_KEY = SECRET_KEY or _DEV_SECRET_KEY
    FERNET_KEYS = FERNET_KEYS or [_DEV_FERNET_KEY]

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_q",
    # The demo shop (orders and their conversion rule); before the app, so that its capi_demo
    # (with the shop's payment webhooks) is the one manage.py runs.
    "project.shop.apps.DemoShopConfig",
    "capi_destinations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # The ingest endpoint is answered here, without the session, CSRF, auth and messages
    # middleware below (it needs none of them); every page goes on down the whole list.
    "capi_destinations.middleware.IngestMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # The demo shop's visitors keep _fbc/_fbp as first-party cookies (README, "Keeping click IDs
    # first-party"); the demo asks no consent, so the default (granted) applies.
    "capi_destinations.middleware.ClickIdMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
# A SELECT 1 round trip before each request reuses a connection, so a connection the database
# or a proxy dropped is replaced instead of failing a request. Off (CONN_HEALTH_CHECKS=false)
# saves that round trip where connections are never dropped behind our back (README →
# "Running in production").
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django opens psycopg connections with nothing prepared; with a threshold, the app's
    # statements that ask for it (the ingest key lookup, the event INSERT, the counters) are
    # prepared once per connection and PostgreSQL stops planning them on every request.
    # PREPARE_THRESHOLD=none turns it off behind a proxy that pools connections by transaction
    # without prepared statements (README → "Running in production").
    _prepare = env.str("PREPARE_THRESHOLD", default="5").strip().lower()
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        None if _prepare in ("", "none") else int(_prepare)
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and the demo write at once: wait for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# Email (member invitations, health alerts) from EMAIL_URL, e.g. smtp+tls://user:password@host:587.
# Without it the demo prints every email, invitation links included, in the web server's console.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="webmaster@localhost")

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/capi/"
LOGOUT_REDIRECT_URL = "login"

# django-q2: the ORM broker by default (nothing else to run); Redis when REDIS_URL is set.
# retry must exceed timeout, else a slow task is started twice.
Q_CLUSTER: dict[str, object] = {
    "name": "capi",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": 120,
    "retry": 300,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "label": "Task queue",
}
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# Login throttling, the ingest rate limit and the dispatch enqueue dedup count in the cache, so
# with several processes it must be one they all share: with REDIS_URL, the same Redis as
# django-q2, kept apart by a key prefix (a second database number is not offered by every hosted
# Redis). Without it, Django's per-process memory cache: fine for one process, and system check
# capi_destinations.W001 says so when DEBUG is off.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "capi-cache",
        }
    }

CAPI_DESTINATIONS: dict[str, object] = {}
if env.str("CAPI_GRAPH_API_BASE_URL", default=""):
    CAPI_DESTINATIONS["GRAPH_API_BASE_URL"] = env.str("CAPI_GRAPH_API_BASE_URL")
# Behind a reverse proxy every request comes from the proxy: name the header it sets with the
# client's address (as a request.META key, e.g. HTTP_X_REAL_IP) so rate limits and login
# throttling count visitors apart.
if env.str("CAPI_TRUSTED_PROXY_HEADER", default=""):
    CAPI_DESTINATIONS["TRUSTED_PROXY_HEADER"] = env.str("CAPI_TRUSTED_PROXY_HEADER")
# Alerts link to the destination's page at this address (the demo's own with DEBUG on).
CAPI_DESTINATIONS["SITE_URL"] = env.str(
    "CAPI_SITE_URL", default="http://127.0.0.1:8000" if DEBUG else ""
)
# Alert channels may point at http:// and loopback/private addresses (scripts/alert_receiver.py
# on 127.0.0.1): on by default with DEBUG only.
if env.bool("CAPI_ALERT_ALLOW_LOCAL", default=DEBUG):
    CAPI_DESTINATIONS["ALERT_ALLOW_HTTP"] = True
    CAPI_DESTINATIONS["ALERT_ALLOW_PRIVATE_ADDRESSES"] = True

if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    SECURE_CONTENT_TYPE_NOSNIFF = True

# Error reports (the DEBUG page, mails to ADMINS) hide what views and functions mark sensitive
# even with DEBUG on, for the whole demo site and not only the app's views.
DEFAULT_EXCEPTION_REPORTER_FILTER = "capi_destinations.security.AlwaysSafeExceptionReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "capi_destinations": {
            "handlers": ["console"],
            "level": env.str("CAPI_LOG_LEVEL", default="INFO"),
        }
    },
}
