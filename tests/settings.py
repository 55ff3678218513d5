"""Test settings: a minimal host site; SQLite by default, PostgreSQL via DATABASE_URL."""

from __future__ import annotations

import os
from pathlib import Path

import environ

env = environ.Env()

# The demo site's templates (login page) stand in for a host site's.
SITE_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"

DEBUG = False
SECRET_KEY = "tests-secret-key-not-for-production"
FERNET_KEYS = ["tests-fernet-key-one"]
ALLOWED_HOSTS = ["*"]

# Django 6.1 sends mail through MAILERS (it deprecates the EMAIL_* settings and warns when neither
# is set); Django 5.2 and 6.0 ignore it. The test runner swaps in the in-memory outbox either way.
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_q",
    # The demo site's shop, as in project/settings.py: capi_demo runs the shop's version.
    "project.shop.apps.DemoShopConfig",
    "capi_destinations",
    # A host site's own model (an order), for the conversion-rule tests.
    "tests.shop.apps.ShopConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [SITE_TEMPLATES],
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

DATABASES = {"default": env.db("DATABASE_URL", default="sqlite:///:memory:")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {"timeout": 20}
    # A file (not :memory:) so threads and subprocesses of a test see the same database.
    DATABASES["default"]["TEST"] = (
        {"NAME": os.environ.get("CAPI_TEST_SQLITE", "")}
        if os.environ.get("CAPI_TEST_SQLITE")
        else {}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
LOGIN_URL = "/accounts/login/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# django-q2 reads its settings once at import: sync mode runs tasks inline in tests.
Q_CLUSTER = {"name": "capi-tests", "orm": "default", "sync": True, "timeout": 60, "retry": 120}

# No test may reach Meta (these machines have no internet, and a test that tried hung the run):
# the default base URL is a local port that refuses at once; tests that talk to "Meta" point it
# at the sandbox (fixture ``use_sandbox``), and tests of the default read ``conf.DEFAULTS``.
CAPI_DESTINATIONS: dict[str, object] = {"GRAPH_API_BASE_URL": "https://127.0.0.1:9"}

# A test run is one process, so Django's memory cache is shared by all of it (see the check).
SILENCED_SYSTEM_CHECKS = ["capi_destinations.W001"]
