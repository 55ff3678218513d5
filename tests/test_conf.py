from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from capi_destinations.conf import DEFAULTS, app_settings

# Checks run with databases=[]: these tests need no database, and Django 6.1 runs the model
# checks against every configured database when none is named (5.2 and 6.0 against none).


def test_defaults_apply(settings) -> None:
    settings.CAPI_DESTINATIONS = {}
    assert app_settings.BATCH_SIZE == 1000
    assert app_settings.GRAPH_API_BASE_URL == "https://graph.facebook.com"


def test_override_settings_is_seen_at_once(settings) -> None:
    settings.CAPI_DESTINATIONS = {"BATCH_SIZE": 10}
    assert app_settings.BATCH_SIZE == 10
    settings.CAPI_DESTINATIONS = {"BATCH_SIZE": 20}
    assert app_settings.BATCH_SIZE == 20


def test_unknown_keys_are_refused(settings) -> None:
    settings.CAPI_DESTINATIONS = {"BATCHSIZE": 10}
    with pytest.raises(ImproperlyConfigured, match=r"Unknown key.*BATCHSIZE"):
        app_settings.BATCH_SIZE  # noqa: B018


def test_every_default_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [key for key in DEFAULTS if f"`{key}`" not in readme]
    assert missing == []


def test_check_missing_django_q(settings) -> None:
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_q"]
    with pytest.raises(SystemCheckError, match=r"capi_destinations\.E001"):
        call_command("check", databases=[])


def test_check_missing_htmx_middleware(settings) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "htmx" not in m]
    with pytest.raises(SystemCheckError, match=r"capi_destinations\.E003"):
        call_command("check", databases=[])


def test_check_missing_fernet_keys_without_debug(settings) -> None:
    settings.DEBUG = False
    del settings.FERNET_KEYS
    with pytest.raises(SystemCheckError, match=r"capi_destinations\.E004"):
        call_command("check", databases=[])


def test_check_bad_batch_size(settings) -> None:
    settings.CAPI_DESTINATIONS = {"BATCH_SIZE": 5000}
    with pytest.raises(SystemCheckError, match=r"capi_destinations\.E006"):
        call_command("check", databases=[])


def test_check_passes_on_a_good_site() -> None:
    call_command("check", databases=[])


def test_demo_settings_refuse_to_start_without_keys_when_debug_is_off() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "FERNET_KEYS")}
    env.update({"DEBUG": "false", "DJANGO_SETTINGS_MODULE": "project.settings"})
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "SECRET_KEY and FERNET_KEYS must be set when DEBUG is off" in result.stderr


# --- settings with a format (E007+) ----------------------------------------------------------


def check_ids(settings, **values) -> list[str]:
    """The capi_destinations check ids raised with ``values`` in CAPI_DESTINATIONS."""
    from django.core import checks

    settings.CAPI_DESTINATIONS = values
    return sorted(
        message.id
        for message in checks.run_checks(databases=[])
        if message.id and message.id.startswith("capi_destinations.") and not message.is_silenced()
    )


RATE_SETTINGS = ["INGEST_RATE_LIMIT", "INGEST_BROWSER_RATE_LIMIT", "INGEST_CLIENT_RATE_LIMIT"]


@pytest.mark.parametrize("key", RATE_SETTINGS)
@pytest.mark.parametrize("rate", ["6000/m", "100/s", "50000/h", "10/5m", None, ""])
def test_a_readable_rate_limit_passes(settings, key, rate) -> None:
    assert check_ids(settings, **{key: rate}) == []


@pytest.mark.parametrize("key", RATE_SETTINGS)
@pytest.mark.parametrize("rate", ["6000", "6000 per minute", "0/m", "-5/s", 100, ["6000/m"]])
def test_an_unreadable_rate_limit_is_reported(settings, key, rate) -> None:
    assert check_ids(settings, **{key: rate}) == ["capi_destinations.E007"]


def test_the_rate_limit_check_names_the_expected_form(settings) -> None:
    from django.core import checks

    settings.CAPI_DESTINATIONS = {"INGEST_RATE_LIMIT": "6000 per minute"}
    (message,) = [m for m in checks.run_checks(databases=[]) if m.id == "capi_destinations.E007"]
    assert "'6000 per minute'" in message.msg
    assert "6000/m" in message.hint


@pytest.mark.parametrize("header", [None, "", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP"])
def test_a_meta_key_as_proxy_header_passes(settings, header) -> None:
    assert check_ids(settings, TRUSTED_PROXY_HEADER=header) == []


@pytest.mark.parametrize(
    ("header", "suggested"),
    [
        ("X-Forwarded-For", "HTTP_X_FORWARDED_FOR"),
        ("x-real-ip", "HTTP_X_REAL_IP"),
        ("X_FORWARDED_FOR", "HTTP_X_FORWARDED_FOR"),
        ("http_x_forwarded_for", "HTTP_X_FORWARDED_FOR"),
    ],
)
def test_a_header_name_as_proxy_header_is_reported_with_its_meta_key(
    settings, header, suggested
) -> None:
    from django.core import checks

    settings.CAPI_DESTINATIONS = {"TRUSTED_PROXY_HEADER": header}
    (message,) = [
        m
        for m in checks.run_checks(databases=[])
        if m.id and m.id.startswith("capi_destinations") and not m.is_silenced()
    ]
    assert message.id == "capi_destinations.E008"
    assert f'"{suggested}"' in message.hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("GRAPH_CONNECT_TIMEOUT", 0),
        ("GRAPH_READ_TIMEOUT", -1.5),
        ("GRAPH_READ_TIMEOUT", "15"),
        ("GRAPH_READ_TIMEOUT", float("nan")),
        ("GRAPH_CONNECT_TIMEOUT", True),
        ("LEASE_SECONDS", 0),
        ("HEALTH_CHECK_INTERVAL", None),
        ("INGEST_MAX_BODY_BYTES", 1.5),
        ("RETENTION_DAYS", 0),
        ("HEALTH_CHECK_CONCURRENCY", 0),
        ("INGEST_KEY_CACHE_SECONDS", -1),
        ("INVITATION_MAX_AGE", 0),
        ("INVITATION_MAX_AGE", "7 days"),
    ],
)
def test_timeouts_and_sizes_must_be_positive_numbers(settings, key, value) -> None:
    assert check_ids(settings, **{key: value}) == ["capi_destinations.E009"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ALERT_DEBOUNCE_CHECKS", 0),
        ("TRAFFIC_DROP_HOURS", 1.5),
        ("TRAFFIC_HISTORY_WEEKS", -1),
        ("ALERT_FAILURE_RATE_MIN_EVENTS", "20"),
    ],
)
def test_alert_counts_must_be_positive_whole_numbers(settings, key, value) -> None:
    assert check_ids(settings, **{key: value}) == ["capi_destinations.E009"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TRAFFIC_DROP_RATIO", 0),
        ("ALERT_FAILURE_RATE", 1.5),
        ("ALERT_MATCH_QUALITY_DROP", 11),
        ("DIGEST_HOUR", 24),
        ("DIGEST_HOUR", 7.5),
        ("SITE_URL", "capi.example.com"),
        ("SITE_URL", None),
    ],
)
def test_alert_thresholds_digest_hour_and_site_url_are_checked(settings, key, value) -> None:
    assert check_ids(settings, **{key: value}) == ["capi_destinations.E021"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TRAFFIC_DROP_RATIO", 1),
        ("ALERT_MATCH_QUALITY_DROP", 0.5),
        ("DIGEST_HOUR", 0),
        ("SITE_URL", "https://capi.example.com"),
        ("SITE_URL", ""),
    ],
)
def test_sensible_alert_and_digest_settings_pass(settings, key, value) -> None:
    assert check_ids(settings, **{key: value}) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("GRAPH_CONNECT_TIMEOUT", 1),
        ("GRAPH_READ_TIMEOUT", 0.5),
        ("INGEST_KEY_CACHE_SECONDS", 0),
        ("DISPATCH_ENQUEUE_DEDUP_SECONDS", 0),
    ],
)
def test_good_numbers_pass(settings, key, value) -> None:
    assert check_ids(settings, **{key: value}) == []


@pytest.mark.parametrize("version", ["v25.0", "v26.0", "v99.0"])
def test_a_graph_api_version_passes(settings, version) -> None:
    # v99.0 is not in Meta's table yet: never warned about.
    assert check_ids(settings, GRAPH_API_VERSION=version) == []


@pytest.mark.parametrize("version", ["v3.2", "v20.0"])
def test_a_graph_api_version_past_its_end_is_warned_about(settings, version, clock) -> None:
    # The clock stands at 24 Nov 2026: v20.0 ended on 24 Sep 2026, v3.2 long before.
    assert check_ids(settings, GRAPH_API_VERSION=version) == ["capi_destinations.W003"]


@pytest.mark.parametrize("version", ["26.0", "v26", "latest", "", None])
def test_a_malformed_graph_api_version_is_reported(settings, version) -> None:
    assert check_ids(settings, GRAPH_API_VERSION=version) == ["capi_destinations.E010"]


@pytest.mark.parametrize("url", ["graph.facebook.com", "ftp://graph.facebook.com", "", None])
def test_a_graph_api_base_url_without_http_is_reported(settings, url) -> None:
    assert check_ids(settings, GRAPH_API_BASE_URL=url) == ["capi_destinations.E011"]


@pytest.mark.parametrize("url", ["https://graph.facebook.com", "http://127.0.0.1:8765/"])
def test_a_graph_api_base_url_passes(settings, url) -> None:
    assert check_ids(settings, GRAPH_API_BASE_URL=url) == []


@pytest.mark.parametrize("country", ["", "us", "DE", "United Kingdom"])
def test_a_known_default_country_passes(settings, country) -> None:
    assert check_ids(settings, DEFAULT_COUNTRY=country) == []


@pytest.mark.parametrize("country", ["Narnia", "zz", 49])
def test_an_unknown_default_country_is_reported(settings, country) -> None:
    assert check_ids(settings, DEFAULT_COUNTRY=country) == ["capi_destinations.E012"]


def test_format_checks_wait_for_a_readable_settings_dict(settings) -> None:
    assert check_ids(settings, INGEST_RATE_LIMITS="6000/m") == ["capi_destinations.E005"]


# ClickIdMiddleware runs on every GET of the host site: a wrong click-ID setting would fail
# each page (or each recorded event), so the checks refuse it at start instead (issue 18).
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CLICK_ID_MISSING_CONSENT", "deny"),
        ("CLICK_ID_MISSING_CONSENT", None),
        ("CLICK_ID_CONSENT", "shop.consent.no_such_module"),
        ("CLICK_ID_CONSENT", "capi_destinations.click_ids.FBC_COOKIE"),  # not a function
        ("CLICK_ID_CONSENT", 42),
        ("CLICK_ID_COOKIE_DOMAIN", 1),
        ("CLICK_ID_COOKIE_DOMAIN", "https://shop.example.com"),
        ("CLICK_ID_FILL_DAYS", -1),
        ("CLICK_ID_FILL_DAYS", "7"),
    ],
)
def test_a_wrong_click_id_setting_is_reported(settings, key, value) -> None:
    assert check_ids(settings, **{key: value}) == ["capi_destinations.E022"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CLICK_ID_MISSING_CONSENT", "denied"),
        ("CLICK_ID_CONSENT", "tests.test_click_ids.consent_from_cookie"),
        ("CLICK_ID_COOKIE_DOMAIN", ".shop.example"),
        ("CLICK_ID_COOKIE_DOMAIN", ""),
        ("CLICK_ID_FILL_DAYS", 0),
        ("CLICK_ID_FILL_DAYS", 1.5),
    ],
)
def test_sensible_click_id_settings_pass(settings, key, value) -> None:
    assert check_ids(settings, **{key: value}) == []
