"""Regenerate the README's screenshots (docs/screenshots/*.png) from the real pages of the demo.

Starts the Graph API sandbox, migrates a throwaway SQLite database, runs ``capi_demo`` and the
development server, logs in as the demo's agency user in Debian's headless Chromium and saves:

- ``overview.png``: the overview with every client's destination cards;
- ``destination.png``: the top of the "Acme web shop" destination page;
- ``event-diagnostics.png``: an event opened on that page, with its diagnostics and fixes;
- ``add-destination.png``: the add form after pasting a token the sandbox accepts.

Usage: ``.venv/bin/python scripts/screenshots.py`` (about ten seconds). Everything it starts is
stopped before it exits.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import django
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "screenshots"
PYTHON = sys.executable
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
VIEWPORT = {"width": 1280, "height": 900}
STARTUP_SECONDS = 30.0

sys.path.insert(0, str(ROOT))
# Only to read the demo's logins and the spare pixel it registers; the demo itself runs in
# subprocesses with the demo site's settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()
from capi_destinations.management.commands.capi_demo import (  # noqa: E402
    ACME_WEB_SHOP,
    AGENCY_LOGIN,
    TRY_PIXEL_ID,
    TRY_TOKEN,
)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    """Return once something accepts connections on ``port``; fail if ``process`` died."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{' '.join(map(str, process.args))} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            # Polling a server that is starting: there is no event to wait on instead.
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {STARTUP_SECONDS:.0f} s")


@contextmanager
def serving(args: list[str], port: int, env: dict[str, str]) -> Iterator[None]:
    """Run ``manage.py <args>`` until the block ends."""
    # Our own fixed commands, never user input.
    process = subprocess.Popen([PYTHON, "manage.py", *args], cwd=ROOT, env=env)  # noqa: S603
    try:
        wait_for_port(port, process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def manage(args: list[str], env: dict[str, str]) -> None:
    """Run ``manage.py <args>`` to completion."""
    subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True)  # noqa: S603


def log_in(page: Page, base_url: str) -> None:
    """Log in through the login form as the demo's agency user."""
    username, password = AGENCY_LOGIN
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("[data-testid=login-submit]")
    expect(page.get_by_test_id("card-grid")).to_be_visible()


def capture(page: Page, base_url: str) -> None:
    """Visit the pages and save the screenshots."""
    log_in(page, base_url)
    page.screenshot(path=OUTPUT / "overview.png", full_page=True)

    page.get_by_role("link", name=ACME_WEB_SHOP.name).click()
    expect(page.get_by_test_id("health-card")).to_be_visible()
    page.screenshot(path=OUTPUT / "destination.png")

    # The failed Lead, found with the log's own status filter (a day of events is many pages).
    page.select_option("select[name=status]", "failed")
    failed = page.locator("[data-testid=event-row][data-status=failed]").first
    failed.get_by_test_id("event-open").click()
    detail = page.get_by_test_id("event-detail")
    expect(detail.get_by_test_id("diagnostic").first).to_be_visible()
    detail.screenshot(path=OUTPUT / "event-diagnostics.png")

    page.goto(f"{base_url}/capi/t/acme-shoes/new/")
    page.fill("input[name=name]", "Initech web shop")
    page.fill("input[name=pixel_id]", TRY_PIXEL_ID)
    page.fill("[name=access_token]", TRY_TOKEN)
    expect(page.get_by_test_id("token-check")).to_have_attribute("data-state", "ok")
    page.screenshot(path=OUTPUT / "add-destination.png", full_page=True)


def main() -> None:
    """Start the demo, take the screenshots, stop everything."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    sandbox_port, web_port = free_port(), free_port()
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="capi-screenshots-"))
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DEBUG": "true",
            "PYTHONWARNINGS": "ignore::UserWarning:project.settings",
            "DATABASE_URL": f"sqlite:///{workdir}/demo.sqlite3",
            "CAPI_GRAPH_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        }
        stack.enter_context(
            serving(["capi_sandbox", "--port", str(sandbox_port)], sandbox_port, env)
        )
        manage(["migrate", "--verbosity", "0"], env)
        manage(["capi_demo"], env)
        stack.enter_context(
            serving(["runserver", "--noreload", f"127.0.0.1:{web_port}"], web_port, env)
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            capture(page, f"http://127.0.0.1:{web_port}")
            browser.close()
    print(f"Screenshots saved in {OUTPUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
