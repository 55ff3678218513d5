from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def production_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    env.update(
        {
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "FERNET_KEYS": secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "capi.example.com",
            "DJANGO_SETTINGS_MODULE": "project.settings",
        }
    )
    return env


def test_check_deploy_warns_only_about_what_the_readme_explains() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    ids = set(re.findall(r"\((\w+\.[EW]\d+)\)", output))
    readme = (ROOT / "README.md").read_text()
    unexplained = sorted(check_id for check_id in ids if check_id not in readme)
    assert unexplained == [], output


def test_production_settings_turn_on_secure_cookies_and_hsts() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0, "
        "s.SECURE_SSL_REDIRECT, s.SECURE_CONTENT_TYPE_NOSNIFF)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["True"] * 5


def demo_settings(code: str, **env: str) -> str:
    """Run ``code`` after ``django.setup()`` with the production demo settings (+ ``env``)."""
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**production_env(), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_with_redis_url_the_demo_site_shares_its_cache_in_redis() -> None:
    # Login throttling, the ingest rate limit and the dispatch dedup must count across processes.
    code = (
        "from django.conf import settings as s; from django.core.cache import caches; "
        "c = s.CACHES['default']; "
        "print(c['BACKEND'], c['LOCATION'], c['KEY_PREFIX'], type(caches['default']).__name__, "
        "s.Q_CLUSTER['redis'])"
    )
    url = "redis://redis.internal:6379/0"
    assert demo_settings(code, REDIS_URL=url).split() == [
        "django.core.cache.backends.redis.RedisCache",
        url,
        "capi-cache",
        "RedisCache",
        url,  # the same Redis as django-q2, apart by the key prefix
    ]


def test_without_redis_url_check_deploy_warns_about_the_memory_cache() -> None:
    def deploy_check(**env: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy"],
            cwd=ROOT,
            env={**production_env(), **env},
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout + result.stderr

    assert "capi_destinations.W001" in deploy_check()
    assert "capi_destinations.W001" not in deploy_check(REDIS_URL="redis://127.0.0.1:6379/0")
    code = "from django.conf import settings as s; print(s.CACHES['default']['BACKEND'])"
    assert demo_settings(code).strip() == "django.core.cache.backends.locmem.LocMemCache"
