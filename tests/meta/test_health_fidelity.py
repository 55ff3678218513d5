"""Health, tokens and Graph API versions as Meta documents them (issue 15, items 2, 3 and 13).

Every test talks to the Graph sandbox over a socket and names its source in its docstring;
docs/META.md, section "Health, tokens and Graph API versions", lists the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core import checks as django_checks
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from capi_destinations import clock as app_clock
from capi_destinations import destinations, dispatch, graph_versions, health, problems
from capi_destinations.conf import DEFAULTS
from capi_destinations.models import Destination, Event, EventStatus, Health, HealthCheck, Role
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
TODAY = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

# What pages and docs must never say about test events again.
UNTRUE_ABOUT_TEST_EVENTS = re.compile(
    r"never counts? as live|never as live traffic|not as live traffic|do not count for your ads"
    r"|to go live|not live data",
    re.IGNORECASE,
)


def entry(check: HealthCheck, name: str) -> dict[str, Any]:
    return next(item for item in check.checks if item["name"] == name)


def posts(meta: Sandbox) -> list[dict[str, Any]]:
    return [request for request in meta.requests() if request["method"] == "POST"]


@pytest.fixture
def meta(graph_settings: Sandbox, clock: Any) -> Sandbox:
    return graph_settings


@pytest.fixture
def send_only(meta: Sandbox, destination: Destination) -> Destination:
    """``destination`` whose token Meta lets send events but not read the pixel."""
    meta.register_pixel(
        destination.pixel_id, "Acme Shoes Pixel", send_only_tokens=[destination.access_token]
    )
    return destination


# --- item 2: test events are live data; nothing sends an event nobody tracked ---------------


def test_a_health_check_sends_no_event(
    meta: Sandbox, make_destination: Callable[..., Destination], make_event: Any
) -> None:
    """Meta: "Events sent with test_event_code are not dropped. They flow into Events Manager and
    are used for targeting and ads measurement purposes."
    (developers.facebook.com/documentation/ads-commerce/conversions-api/using-the-api)
    So no check may send one: not for a healthy destination, one in test mode, a blocked one
    (whose token Meta lets read the pixel), nor when all are checked together."""
    healthy = make_destination()
    testing = make_destination(test_event_code="TEST12345")
    blocked = make_destination()
    make_event(destination=blocked, event_id="held")
    Destination.objects.filter(pk=blocked.pk).update(
        blocked_reason="Meta refused the access token.", blocked_at=app_clock.now()
    )

    for one in (healthy, testing, Destination.objects.get(pk=blocked.pk)):
        health.check_destination(one)
    health.check_all_destinations()

    assert posts(meta) == []
    assert meta.events() == []
    assert Destination.objects.get(pk=blocked.pk).blocked_reason
    assert Event.objects.get(event_id="held").status == EventStatus.PENDING


def test_the_send_test_event_button_says_meta_records_the_event(
    meta: Sandbox, destination: Destination, make_user: Any, tenant: Any
) -> None:
    """Meta: "Events sent with test_event_code are not dropped. They flow into Events Manager and
    are used for targeting and ads measurement purposes." (…/conversions-api/using-the-api)
    The page with the button, and Meta's answer to a press, say plainly that Meta records it."""
    client = Client()
    client.force_login(make_user(tenant, Role.EDITOR))

    page = client.get(reverse("capi_destinations:destination", kwargs={"code": destination.code}))
    answer = client.post(
        reverse("capi_destinations:send_test_event", kwargs={"code": destination.code}),
        {"test_event_code": "TEST12345"},
        HTTP_HX_REQUEST="true",
    )

    note = re.search(r'data-testid="test-event-note">(.*?)</p>', page.content.decode(), re.S)
    assert note is not None
    assert "Meta records it in this pixel's dataset like any other event" in note.group(1)
    assert "targeting and ads measurement" in note.group(1)
    assert "recorded it in the dataset" in answer.content.decode()
    (sent,) = meta.events()
    assert sent["test_event_code"] == "TEST12345"


def test_no_page_message_or_doc_says_a_test_event_does_not_count() -> None:
    """Meta: "Events sent with test_event_code are not dropped. They flow into Events Manager and
    are used for targeting and ads measurement purposes." (…/conversions-api/using-the-api)
    Templates, Python messages and docstrings, the README and docs/ never claim otherwise."""
    paths = [
        *sorted((ROOT / "capi_destinations").rglob("*.py")),
        *sorted((ROOT / "capi_destinations" / "templates").rglob("*.html")),
        *sorted((ROOT / "templates").rglob("*.html")),
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    untrue = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in paths
        for match in UNTRUE_ABOUT_TEST_EVENTS.finditer(
            re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))
        )
    ]
    assert untrue == []


def test_test_mode_is_described_as_live_data(meta: Sandbox, make_destination: Any) -> None:
    """Meta: "Events sent with test_event_code are not dropped. They flow into Events Manager and
    are used for targeting and ads measurement purposes." (…/conversions-api/using-the-api)"""
    testing = make_destination(test_event_code="TEST12345")

    check = health.check_destination(testing)

    message = entry(check, health.TEST_MODE)["message"]
    assert "Meta still records them in the dataset" in message
    assert "targeting and ads measurement" in message


# --- item 3: send-only tokens are normal ------------------------------------------------------


def test_the_sandbox_refuses_a_send_only_tokens_read_and_accepts_its_events(
    send_only: Destination, meta: Sandbox
) -> None:
    """Meta: a token made "via the Conversions API inside the dataset settings" is "limited to
    sending data only to Meta. The token can't be used to run API GET data requests"
    (…/conversions-api/guides/end-to-end-implementation, "Integration as a platform"). The
    refusal is Graph's real one for an object the token may not load: code 100, subcode 33,
    GraphMethodException (public issue threads quoting Graph's body; FACTS.md §14)."""
    check = destinations.check_token(send_only.pixel_id, send_only.access_token)
    dispatch_event = destinations.send_test_event(
        send_only, actor=None, test_event_code="TEST12345"
    )

    (read,) = [request for request in meta.requests() if request["method"] == "GET"]
    assert read["error"]["code"] == 100
    assert read["error"]["error_subcode"] == 33
    assert read["error"]["type"] == "GraphMethodException"
    assert check.read_refused
    assert "cannot be shown" in check.message
    assert dispatch_event.ok


def test_a_send_only_token_whose_events_meta_accepts_is_healthy(
    send_only: Destination, meta: Sandbox, make_event: Any
) -> None:
    """Meta: CAPI tokens made in the dataset settings "can't be used to run API GET data
    requests" (…/conversions-api/guides/end-to-end-implementation, "Integration as a
    platform"). Health is decided from the token check and the real deliveries; the pixel read
    is a bonus, so the card is Healthy with a note that the pixel name cannot be shown."""
    make_event(event_id="order-1")
    dispatch.dispatch_pending()
    assert Event.objects.get(event_id="order-1").status == EventStatus.DELIVERED

    check = health.check_destination(send_only)

    token = entry(check, health.META_ACCEPTS_TOKEN)
    assert token["ok"] is True
    assert "Meta accepts this token's events" in token["message"]
    assert "the pixel's name cannot be shown" in token["message"]
    assert check.status == Health.HEALTHY
    assert Destination.objects.get(pk=send_only.pk).pixel_name == ""


def test_a_send_only_token_before_any_delivery_is_not_called_unhealthy(
    send_only: Destination, meta: Sandbox
) -> None:
    """Meta: CAPI tokens made in the dataset settings "can't be used to run API GET data
    requests" (…/conversions-api/guides/end-to-end-implementation). A refused read alone is no
    verdict: with no delivery yet the status stays Unknown and the card says why."""
    check = health.check_destination(send_only)

    token = entry(check, health.META_ACCEPTS_TOKEN)
    assert token["severity"] == "info"
    assert "normal for a token made in the dataset's Conversions API settings" in token["message"]
    assert check.status == Health.UNKNOWN
    assert posts(meta) == []


def test_the_card_of_a_send_only_token_waiting_for_its_first_delivery_says_so(
    send_only: Destination, meta: Sandbox, make_user: Any, tenant: Any
) -> None:
    """Meta: CAPI tokens made in the dataset settings "can't be used to run API GET data
    requests" (…/conversions-api/guides/end-to-end-implementation). The card neither calls
    such a destination unhealthy nor "not checked": it waits for the first delivery."""
    health.check_destination(send_only)
    client = Client()
    client.force_login(make_user(tenant, Role.VIEWER))

    page = client.get(reverse("capi_destinations:destination", kwargs={"code": send_only.code}))

    content = page.content.decode()
    assert 'data-health="unknown">Waiting for first delivery</span>' in content
    assert "the pixel&#x27;s name cannot be shown" in content


def test_a_send_only_token_meta_then_refuses_turns_unhealthy(
    meta: Sandbox, destination: Destination, make_event: Any
) -> None:
    """Graph answers 100/33 alike for an object that "does not exist, cannot be loaded due to
    missing permissions" (FACTS.md §14): a mistyped Pixel ID reads like a send-only token, and
    only the real deliveries tell them apart. Meta refusing the events decides."""
    meta.register_pixel("9999999999999999", "Another pixel", [destination.access_token])
    make_event(event_id="order-1")

    dispatch.dispatch_pending()
    check = health.check_destination(Destination.objects.get(pk=destination.pk))

    assert check.status == Health.UNHEALTHY
    assert entry(check, health.DELIVERIES_ACCEPTED)["ok"] is False


def test_the_pixel_read_asks_only_for_the_fields_the_product_shows(
    meta: Sandbox, destination: Destination
) -> None:
    """Ask Meta only for what the product uses (issue 15, item 3): the pixel's name beside its
    ID. Graph returns only the fields asked for (…/graph-api/using-graph-api, "fields")."""
    health.check_destination(destination)

    (read,) = meta.requests()
    assert read["params"]["fields"] == "id,name"


# --- item 13: Graph API versions ------------------------------------------------------------


def test_the_version_table_holds_metas_dates() -> None:
    """Meta's Graph API changelog, "Available Graph API Versions": v20.0 available until
    24 Sep 2026, v21.0 until 21 Jan 2027, v25.0 until 29 Jul 2028, v26.0 introduced
    29 Jul 2026 (developers.facebook.com/docs/graph-api/changelog); "each version will remain
    for at least 2 years from release" (developers.facebook.com/docs/apps/versions)."""
    versions = graph_versions.VERSIONS
    assert versions["v20.0"][1] == date(2026, 9, 24)
    assert versions["v21.0"][1] == date(2027, 1, 21)
    assert versions["v25.0"][1] == date(2028, 7, 29)
    assert versions["v26.0"] == (date(2026, 7, 29), None)
    for introduced, available_until in versions.values():
        if available_until is not None:
            assert available_until >= introduced.replace(year=introduced.year + 2)


def test_the_default_version_is_supported_today() -> None:
    """Meta's changelog (…/graph-api/changelog): on 6 Dec 2026 v20.0 has ended and v21.0 ends
    within 90 days; the GRAPH_API_VERSION default must be neither."""
    status = graph_versions.version_status(DEFAULTS["GRAPH_API_VERSION"], TODAY.date())

    assert status.state == graph_versions.OK
    assert graph_versions.version_status("v20.0", TODAY.date()).is_error
    assert graph_versions.version_status("v21.0", TODAY.date()).is_warning


def test_the_health_card_warns_90_days_before_a_version_ends(
    meta: Sandbox, make_destination: Callable[..., Destination], clock: Any
) -> None:
    """Meta's changelog (…/graph-api/changelog): v21.0 is available until 21 Jan 2027. From
    90 days before, the health card shows a note; the destination stays Healthy."""
    destination = make_destination(api_version="v21.0")
    clock.freeze(datetime(2026, 10, 22, 12, 0, tzinfo=UTC))  # 91 days before
    assert entry(health.check_destination(destination), health.GRAPH_API_VERSION)["ok"]
    clock.advance(timedelta(days=2))  # 89 days before

    check = health.check_destination(destination)

    version = entry(check, health.GRAPH_API_VERSION)
    assert version["ok"] is False
    assert version["severity"] == "info"
    assert "stops working on 21 Jan 2027, in 89 days" in version["message"]
    assert "v26.0" in version["message"]
    assert version["fix"] == problems.API_VERSION_ENDING.fix
    assert check.status == Health.HEALTHY


def test_a_version_past_its_end_is_an_error_on_the_health_card(
    meta: Sandbox, make_destination: Callable[..., Destination], clock: Any
) -> None:
    """Meta's changelog (…/graph-api/changelog): v20.0 was available until 24 Sep 2026; after
    that Meta no longer serves it (…/apps/versions, "Version Schedules")."""
    meta.set_faults(oldest_version="v10.0")  # the sandbox still answers, to isolate the rule
    destination = make_destination(api_version="v20.0")

    check = health.check_destination(destination)

    version = entry(check, health.GRAPH_API_VERSION)
    assert version["ok"] is False
    assert version["severity"] == "error"
    assert "reached the end of its availability on 24 Sep 2026" in version["message"]
    assert check.status == Health.UNHEALTHY


def test_the_setting_is_checked_too(
    meta: Sandbox, destination: Destination, settings: Any, clock: Any
) -> None:
    """Meta's changelog (…/graph-api/changelog): the version a destination without its own uses
    is the GRAPH_API_VERSION setting; its end date counts the same."""
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "GRAPH_API_VERSION": "v21.0"}

    check = health.check_destination(destination)

    assert "Graph API v21.0 stops working" in entry(check, health.GRAPH_API_VERSION)["message"]


def test_capi_healthcheck_prints_the_versions_in_use(
    meta: Sandbox, make_destination: Callable[..., Destination], clock: Any
) -> None:
    """Meta's changelog (…/graph-api/changelog): v21.0 until 21 Jan 2027, v26.0 without an end
    date yet. ``capi_healthcheck`` prints each version in use with its end."""
    make_destination(name="Old shop", api_version="v21.0")
    make_destination(name="New shop")
    out = StringIO()

    call_command("capi_healthcheck", stdout=out, no_color=True)

    text = out.getvalue()
    assert "Graph API versions in use:" in text
    assert "v26.0 (GRAPH_API_VERSION setting, 1 destination): Graph API v26.0: Meta has not" in text
    assert "v21.0 (1 destination: Old shop): Graph API v21.0 stops working on 21 Jan 2027" in text


@pytest.mark.parametrize(
    ("version", "expected"),
    [("v26.0", []), ("v21.0", ["capi_destinations.W003"]), ("v20.0", ["capi_destinations.W003"])],
)
def test_a_system_check_warns_about_the_setting(
    settings: Any, clock: Any, version: str, expected: list[str]
) -> None:
    """Meta's changelog (…/graph-api/changelog): v21.0 ends 21 Jan 2027 (within 90 days of the
    frozen clock, 24 Nov 2026), v20.0 ended 24 Sep 2026, v26.0 has no end date yet."""
    settings.CAPI_DESTINATIONS = {"GRAPH_API_VERSION": version}

    found = [
        message.id
        for message in django_checks.run_checks(databases=[])
        if message.id and message.id.startswith("capi_destinations.W003")
    ]

    assert found == expected


def test_tokens_never_appear_in_the_new_messages(
    send_only: Destination, meta: Sandbox, make_event: Any
) -> None:
    """A token never appears in a page, log, exception or record (the project's rule)."""
    make_event(event_id="order-1")
    dispatch.dispatch_pending()
    check = health.check_destination(send_only)
    token_check = destinations.check_token(send_only.pixel_id, send_only.access_token)

    assert send_only.access_token not in str(check.checks)
    assert send_only.access_token not in token_check.message + token_check.fix
    assert make_token("unused") not in str(check.checks)
