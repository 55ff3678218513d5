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
