"""System checks that tell a host site what it misconfigured (ids ``capi_destinations.E00x``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from capi_destinations.conf import app_settings


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
