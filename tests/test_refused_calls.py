"""Refused browser and server calls to the ingest endpoint: counted per destination, shown with
the fix on the destination page (issue 16), never counted on a destination the caller did not
name."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from capi_destinations import clock as app_clock
from capi_destinations import counters, problems, retention
from capi_destinations.conf import app_settings
from capi_destinations.models import Destination, IngestRefusal, RefusedCalls, Role
from tests.test_ingest_endpoint import SHOP, Caller, event

pytestmark = pytest.mark.usefixtures("clock")

STRANGER = "https://shop.example.net"


@pytest.fixture
def caller(client: Client, make_destination: Any) -> Caller:
    destination = make_destination(allowed_origins=SHOP)
    secret = destination.set_ingest_secret()
    destination.save()
    return Caller(client, destination, secret)


def destination_page(user: Any, destination: Destination) -> str:
    """The destination page as ``user`` sees it."""
    client = Client()
    client.force_login(user)
    url = reverse("capi_destinations:destination", kwargs={"code": destination.code})
    return str(client.get(url).content.decode())


def counts(destination: Destination) -> dict[str, int]:
    return {row["reason"]: row["count"] for row in counters.refused_last_day(destination.pk)}


def test_a_browser_call_from_a_disallowed_origin_is_counted_with_its_origin(
    caller: Caller,
) -> None:
    assert caller.browser(event(), origin=STRANGER).status_code == 403
    assert caller.browser(event(), origin=STRANGER).status_code == 403

    [row] = counters.refused_last_day(caller.destination.pk)
    assert (row["reason"], row["count"], row["origins"]) == ("origin_not_allowed", 2, [STRANGER])
    # One row per hour and reason, never one per request.
    assert RefusedCalls.objects.count() == 1


def test_a_preflight_from_a_disallowed_origin_is_counted_too(caller: Caller) -> None:
    response = caller.client.options(caller.url, HTTP_ORIGIN=STRANGER)

    assert response.status_code == 403
    assert counts(caller.destination) == {"origin_not_allowed": 1}


def test_each_other_refusal_is_counted_under_its_reason(caller: Caller) -> None:
    caller.server(event(), HTTP_AUTHORIZATION="Bearer not-the-secret")
    caller.client.post(caller.url, data=json.dumps(event()), content_type="application/json")
    caller.server(None, raw=b"{not json")
    caller.browser(event())  # allowed: not counted

    assert counts(caller.destination) == {
        IngestRefusal.WRONG_SECRET: 1,
        IngestRefusal.MISSING_CREDENTIALS: 1,
        IngestRefusal.BAD_BODY: 1,
    }


def test_a_rate_limit_is_counted_once_per_window_not_per_call(
    caller: Caller, settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {"INGEST_RATE_LIMIT": "1/h"}
    statuses = [caller.server(event(f"order-{number}")).status_code for number in range(4)]

    assert statuses == [202, 429, 429, 429]
    assert counts(caller.destination) == {IngestRefusal.RATE_LIMITED: 1}


def test_an_unknown_key_is_counted_on_no_destination(caller: Caller) -> None:
    url = caller.url.replace(caller.destination.ingest_key, "pk_nobody-has-this-key")

    response = caller.client.post(
        url, data=json.dumps(event()), content_type="text/plain", HTTP_ORIGIN=STRANGER
    )

    assert response.status_code == 404
    assert not RefusedCalls.objects.exists()


def test_the_page_shows_the_refused_origin_with_the_fix_and_a_link_to_edit(
    caller: Caller, make_user: Any, tenant: Any
) -> None:
    caller.browser(event(), origin=STRANGER)
    editor = make_user(tenant, Role.EDITOR, username="eddie")

    html = destination_page(editor, caller.destination)

    section = html.split('data-testid="refused-calls"', 1)[1].split("</section>", 1)[0]
    reason = escape(problems.REFUSED_CALLS["origin_not_allowed"].reason)
    assert f"1 call:</strong> {reason}" in section
    assert f'<code data-testid="refused-origin">{STRANGER}</code>' in section
    assert f"Add {STRANGER} to the allowed origins" in section
    edit = reverse("capi_destinations:destination_edit", kwargs={"code": caller.destination.code})
    assert f'href="{edit}"' in section


def test_a_forged_origin_is_shown_escaped_and_cut(
    caller: Caller, make_user: Any, tenant: Any
) -> None:
    forged = "https://<script>alert(1)</script>" + "x" * 500
    caller.browser(event(), origin=forged)
    viewer = make_user(tenant, Role.VIEWER, username="vera")

    html = destination_page(viewer, caller.destination)

    assert "<script>alert(1)" not in html
    assert escape(forged[: counters.ORIGIN_KEPT]) in html
    assert forged[: counters.ORIGIN_KEPT + 1] not in html


def test_a_quiet_destination_shows_no_refused_calls_panel(
    caller: Caller, make_user: Any, tenant: Any
) -> None:
    viewer = make_user(tenant, Role.VIEWER, username="vera")

    html = destination_page(viewer, caller.destination)

    assert 'data-testid="refused-calls"' not in html


def test_refused_calls_older_than_a_day_leave_the_page_and_retention_drops_them(
    caller: Caller,
) -> None:
    caller.browser(event(), origin=STRANGER)
    app_clock.advance(timedelta(hours=25))
    assert counters.refused_last_day(caller.destination.pk) == []

    app_clock.advance(timedelta(days=int(app_settings.RETENTION_DAYS) + 1))
    purged = retention.purge_old_records()

    assert purged["refused_calls"] == 1
    assert not RefusedCalls.objects.exists()
