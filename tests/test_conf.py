from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from capi_destinations.conf import DEFAULTS, app_settings


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
        call_command("check")


def test_check_missing_htmx_middleware(settings) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "htmx" not in m]
    with pytest.raises(SystemCheckError, match=r"capi_destinations\.E003"):
        call_command("check")


def test_check_missing_fernet_keys_without_debug(settings) -> None:
    settings.DEBUG = False
    del settings.FERNET_KEYS
    with pytest.raises(SystemCheckError, match=r"capi_destinations\.E004"):
        call_command("check")


def test_check_bad_batch_size(settings) -> None:
    settings.CAPI_DESTINATIONS = {"BATCH_SIZE": 5000}
    with pytest.raises(SystemCheckError, match=r"capi_destinations\.E006"):
        call_command("check")


def test_check_passes_on_a_good_site() -> None:
    call_command("check")


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
