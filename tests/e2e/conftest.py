"""Browser tests: pytest-playwright driving Debian's Chromium, never a downloaded browser.

Reuse: request pytest-playwright's ``page`` (or ``browser``) fixture together with
pytest-django's ``live_server``, and mark the module ``pytestmark = pytest.mark.e2e``. The
launch settings below apply to every test in this directory.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

# Playwright's sync API runs an event loop in the test's thread, and Django refuses database
# calls from a thread with a running loop unless told it is safe; in these tests it is.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Launch the system Chromium headless (pytest-playwright's hook for launch options)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt).")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "headless": True,
        "args": CHROMIUM_ARGS,
    }


@pytest.fixture(scope="session")
def base_url(pytestconfig: pytest.Config) -> str | None:
    """``--base-url``, as pytest-playwright's own fallback gives it.

    Redefined here because the plugin's version is a method on a plugin object, which pytest 9
    deprecates with a warning (and warnings are errors in this suite).
    """
    return pytestconfig.getoption("--base-url", None) or None
