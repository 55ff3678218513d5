"""``manage.py capi_healthcheck`` against the Graph sandbox over a real socket."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from capi_destinations.models import Destination, Health, HealthCheck, Tenant
from capi_destinations.sandbox import Sandbox

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    out = StringIO()
    call_command("capi_healthcheck", *args, stdout=out, no_color=True)
    return out.getvalue()


@pytest.fixture
def two_healthy(
    graph_settings: Sandbox, make_destination: Callable[..., Destination]
) -> list[Destination]:
    shoes = make_destination(name="Sneakers")
    hats = make_destination(name="Hats")
    graph_settings.register_pixel(shoes.pixel_id, "Sneakers pixel", [shoes.access_token])
    graph_settings.register_pixel(hats.pixel_id, "Hats pixel", [hats.access_token])
    return [shoes, hats]


def test_prints_a_table_and_exits_zero_when_nothing_is_unhealthy(
    two_healthy: list[Destination],
) -> None:
    output = run()

    lines = output.splitlines()
    assert lines[0].split() == ["Tenant", "Destination", "Pixel", "Status", "Reason"]
    hats, shoes = lines[1], lines[2]
    assert hats.split()[:6] == ["Acme", "Shoes", "Hats", two_healthy[1].pixel_id, "(Hats", "pixel)"]
    assert hats.split()[-1] == "healthy"
    assert "Sneakers pixel" in shoes
    assert "2 checked: 2 healthy, 0 unhealthy, 0 unknown." in output
    assert HealthCheck.objects.count() == 2


def test_exits_non_zero_and_shows_the_reason_when_one_is_unhealthy(
    graph_settings: Sandbox, two_healthy: list[Destination]
) -> None:
    shoes = two_healthy[0]
    graph_settings.revoke(shoes.access_token)
    out = StringIO()

    with pytest.raises(CommandError) as failed:
        call_command("capi_healthcheck", stdout=out, no_color=True)

    assert failed.value.returncode == 1
    assert "1 of 2 checked destinations are unhealthy" in str(failed.value)
    shoes_line = next(line for line in out.getvalue().splitlines() if "Sneakers" in line)
    assert "unhealthy" in shoes_line
    assert "Meta refused the token: it is invalid or was revoked" in shoes_line
    assert shoes.access_token not in out.getvalue()


def test_one_destination_by_id(two_healthy: list[Destination]) -> None:
    shoes = two_healthy[0]

    output = run("--destination", str(shoes.pk))

    assert "Sneakers pixel" in output
    assert "Hats" not in output
    assert list(HealthCheck.objects.values_list("destination_id", flat=True)) == [shoes.pk]


def test_one_tenant_by_slug(
    graph_settings: Sandbox,
    two_healthy: list[Destination],
    make_destination: Callable[..., Destination],
    other_tenant: Tenant,
) -> None:
    theirs = make_destination(name="Coffee", tenant=other_tenant)
    graph_settings.register_pixel(theirs.pixel_id, "Coffee pixel", [theirs.access_token])

    output = run("--tenant", "globex")

    assert "Coffee pixel" in output
    assert "Sneakers" not in output
    assert Destination.objects.get(pk=theirs.pk).health == Health.HEALTHY


def test_unknown_destination_or_tenant_is_an_error(two_healthy: list[Destination]) -> None:
    with pytest.raises(CommandError, match="No destination with id 987654"):
        run("--destination", "987654")
    with pytest.raises(CommandError, match="No tenant with slug 'nobody'"):
        run("--tenant", "nobody")
    assert HealthCheck.objects.count() == 0


def test_nothing_to_check(db: None) -> None:
    assert run() == "No destinations to check.\n"


def test_the_exit_status_reaches_the_shell(tmp_path: Path, sandbox: Sandbox) -> None:
    # A real process, as cron runs it, on the demo site's settings and a file database.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "false",
        "SECRET_KEY": "exit-status-test-secret",
        "FERNET_KEYS": "exit-status-test-fernet-key",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'health.sqlite3'}",
        "CAPI_GRAPH_API_BASE_URL": sandbox.url,
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--verbosity", "0"], env=env, cwd=ROOT, check=True)
    create = (
        "from capi_destinations.models import Tenant, Destination;"
        "from tests.conftest import make_token;"
        "tenant = Tenant.objects.create(name='Acme', slug='acme');"
        "Destination.objects.create(tenant=tenant, name='Off', pixel_id='1234567890123456',"
        " access_token=make_token('cli'), enabled=False)"
    )
    subprocess.run([*manage, "shell", "-c", create], env=env, cwd=ROOT, check=True)

    finished = subprocess.run(
        [*manage, "capi_healthcheck", "--no-color"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert finished.returncode == 1, finished.stderr
    assert "Sending is turned off" in finished.stdout
    assert "Sandbox pixel 1234567890123456" in finished.stdout
    assert "1 of 1 checked destinations are unhealthy" in finished.stderr
