"""System checks of the host site's infrastructure: one cache shared between its processes
(W001) and a task broker django-q2 can use (E013, W002).

The other checks of ``checks.py`` are tested in ``test_conf.py`` with the settings they read.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from django.core import checks
from django.core.cache.backends.locmem import LocMemCache
from django.core.management import call_command

from capi_destinations import checks as app_checks

# Checks run with databases=[]: these tests need no database, and Django 6.1 runs the model
# checks against every configured database when none is named (5.2 and 6.0 against none).
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
    return [message for message in checks.run_checks(databases=[]) if message.id == W001]


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
    call_command("check", databases=[])
    assert W001 not in capsys.readouterr().err


# --- django-q2's broker (E013, W002) -------------------------------------------------------------

E013 = "capi_destinations.E013"
W002 = "capi_destinations.W002"
SNIPPET = 'Q_CLUSTER = {"name": "capi", "orm": "default", "timeout": 60, "retry": 120}'


def broker_messages(settings: Any, q_cluster: Any) -> list[checks.CheckMessage]:
    if q_cluster is None:
        del settings.Q_CLUSTER
    else:
        settings.Q_CLUSTER = q_cluster
    return [message for message in checks.run_checks(databases=[]) if message.id in (E013, W002)]


@pytest.fixture
def redis_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new site: installing this app does not bring the Redis client."""
    monkeypatch.setitem(sys.modules, "redis", None)  # `import redis` raises ImportError


def test_no_q_cluster_and_no_redis_client_is_an_error_showing_the_snippet(
    settings, redis_not_installed
) -> None:
    (error,) = broker_messages(settings, None)
    assert error.id == E013
    assert error.level == checks.ERROR
    assert "Q_CLUSTER is not set" in error.msg
    assert "'redis'" in error.msg
    assert SNIPPET in error.hint


def test_no_q_cluster_with_the_redis_client_is_a_warning_about_localhost(settings) -> None:
    (warning,) = broker_messages(settings, None)
    assert warning.id == W002
    assert "localhost:6379" in warning.msg
    assert SNIPPET in warning.hint


def test_a_redis_broker_without_the_redis_client_is_an_error(settings, redis_not_installed) -> None:
    (error,) = broker_messages(
        settings, {"name": "capi", "redis": "redis://127.0.0.1:6379/0", "timeout": 60, "retry": 120}
    )
    assert error.id == E013
    assert "Redis" in error.msg
    assert "pip install redis" in error.hint


def test_a_broker_whose_client_library_is_missing_is_an_error(settings) -> None:
    # pymongo is not a dependency of this project: django-q2's MongoDB broker cannot load.
    (error,) = broker_messages(
        settings, {"name": "capi", "mongo": {"host": "127.0.0.1"}, "timeout": 60, "retry": 120}
    )
    assert error.id == E013
    assert "'pymongo'" in error.msg


def test_an_orm_broker_on_an_unknown_database_is_an_error(settings) -> None:
    (error,) = broker_messages(
        settings, {"name": "capi", "orm": "queue", "timeout": 60, "retry": 120}
    )
    assert error.id == E013
    assert "'queue'" in error.msg
    assert "DATABASES" in error.msg


def test_a_custom_broker_class_that_cannot_be_imported_is_an_error(settings) -> None:
    (error,) = broker_messages(
        settings,
        {"name": "capi", "broker_class": "no.such.Broker", "timeout": 60, "retry": 120},
    )
    assert error.id == E013
    assert "no.such.Broker" in error.msg


def test_q_cluster_that_is_not_a_dict_is_an_error(settings) -> None:
    (error,) = broker_messages(settings, "orm")
    assert error.id == E013


@pytest.mark.parametrize(
    ("timing", "expected"),
    [
        ({"timeout": 60, "retry": 60}, "does not exceed"),
        ({"timeout": 120}, "does not exceed"),  # django-q2's default retry is 60
        ({"retry": 120}, "no 'timeout'"),
    ],
)
def test_retry_must_exceed_timeout_or_tasks_run_twice(settings, timing, expected) -> None:
    (warning,) = broker_messages(settings, {"name": "capi", "orm": "default", **timing})
    assert warning.id == W002
    assert expected in warning.msg
    assert "twice" in warning.msg or "twice" in warning.hint


@pytest.mark.parametrize(
    "q_cluster",
    [
        {"name": "capi", "orm": "default", "timeout": 60, "retry": 120},
        {"name": "capi", "redis": "redis://127.0.0.1:6379/0", "timeout": 60, "retry": 120},
        {"name": "capi", "redis": {"host": "127.0.0.1"}, "timeout": 60, "retry": 120},
    ],
)
def test_a_usable_broker_passes(settings, q_cluster) -> None:
    assert broker_messages(settings, q_cluster) == []


def test_the_readme_snippet_passes(settings) -> None:
    namespace: dict[str, Any] = {}
    exec(SNIPPET, namespace)  # noqa: S102  (our own constant)
    assert broker_messages(settings, namespace["Q_CLUSTER"]) == []


def test_ingest_middleware_above_security_middleware_is_warned_about(settings: Any) -> None:
    from django.core import checks

    def warnings() -> list[str]:
        return [
            message.id
            for message in checks.run_checks(databases=[])
            if message.id == "capi_destinations.W004"
        ]

    security = "django.middleware.security.SecurityMiddleware"
    ingest = "capi_destinations.middleware.IngestMiddleware"
    others = [name for name in settings.MIDDLEWARE if name not in (security, ingest)]
    settings.MIDDLEWARE = [security, ingest, *others]
    assert warnings() == []
    settings.MIDDLEWARE = [ingest, security, *others]
    assert warnings() == ["capi_destinations.W004"]
    settings.MIDDLEWARE = [security, *others]
    assert warnings() == []
