"""The app's settings: one ``CAPI_DESTINATIONS`` dict in the host's settings, defaults here.

Values are read through ``app_settings`` (``app_settings.BATCH_SIZE``) and reloaded when
Django's ``setting_changed`` signal fires, so ``override_settings`` works in tests. Unknown keys
are refused, so a typo in a host site's settings is an error instead of a silent default.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

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
    # --- Health checks -----------------------------------------------------------------------
    # Seconds between scheduled health checks of every destination.
    "HEALTH_CHECK_INTERVAL": 300,
    # --- Ingestion ---------------------------------------------------------------------------
    # ISO 3166-1 alpha-2 country used to read phone numbers without a country code when neither
    # the event nor the destination says which country they belong to ("" = none).
    "DEFAULT_COUNTRY": "",
    # WSGI ``META`` key of a header set by *your* reverse proxy holding the client's IP
    # (for example "HTTP_X_FORWARDED_FOR"); None trusts only REMOTE_ADDR.
    "TRUSTED_PROXY_HEADER": None,
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


def _reload_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        app_settings.reload()


setting_changed.connect(_reload_on_change)
