"""The system check that a production site shares one cache between its processes (W001).

The other checks of ``checks.py`` are tested in ``test_conf.py`` with the settings they read.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from django.core.cache.backends.locmem import LocMemCache
from django.core.management import call_command

from capi_destinations import checks as app_checks

W001 = "capi_destinations.W001"

LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
DUMMY = "django.core.cache.backends.dummy.DummyCache"


class OurOwnLocMemCache(LocMemCache):
    """A host site's subclass of the memory cache: still one per process."""


def cache_warnings(
    settings: Any, backend: str, *, debug: bool = False
) -> list[checks.CheckMessage]:
    settings.DEBUG = debug
    settings.CACHES = {"default": {"BACKEND": backend, "LOCATION": "/tmp/capi-check-test"}}
    return [message for message in checks.run_checks() if message.id == W001]


@pytest.mark.parametrize("backend", [LOCMEM, f"{__name__}.OurOwnLocMemCache"])
def test_a_memory_cache_in_production_is_a_warning(settings, backend) -> None:
    (warning,) = cache_warnings(settings, backend)
    assert warning.level == checks.WARNING
    assert "rate limits, login throttling and dispatch dedup are per process" in warning.msg
    assert "RedisCache" in warning.hint


def test_a_dummy_cache_in_production_is_a_warning_that_they_are_off(settings) -> None:
    (warning,) = cache_warnings(settings, DUMMY)
    assert "remembers nothing" in warning.msg
    assert "rate limits, login throttling and dispatch dedup do not work" in warning.msg


@pytest.mark.parametrize("backend", [LOCMEM, DUMMY])
def test_any_cache_will_do_while_debug_is_on(settings, backend) -> None:
    assert cache_warnings(settings, backend, debug=True) == []


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.redis.RedisCache",
        "django.core.cache.backends.db.DatabaseCache",
        # One host's processes share the folder.
        "django.core.cache.backends.filebased.FileBasedCache",
    ],
)
def test_a_shared_cache_passes(settings, backend) -> None:
    assert cache_warnings(settings, backend) == []


def test_a_cache_backend_that_cannot_be_imported_is_left_to_django(settings) -> None:
    # Django's own checks and first cache call fail loudly; a second message would be noise.
    settings.DEBUG = False
    settings.CACHES = {"default": {"BACKEND": "no.such.CacheBackend"}}
    assert app_checks.check_shared_cache() == []


def test_a_single_process_site_can_silence_it(settings, capsys) -> None:
    # The test settings do so: a test run is one process.
    assert W001 in settings.SILENCED_SYSTEM_CHECKS
    settings.DEBUG = False
    settings.CACHES = {"default": {"BACKEND": LOCMEM}}
    call_command("check")
    assert W001 not in capsys.readouterr().err
