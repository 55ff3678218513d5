"""Issue 16: search, pagination, CSV exports and an address for every event.

The overview searches client, destination name and Pixel ID and pages through hundreds of
destinations in a fixed number of queries; the event log searches an event_id or order id and a
time range; the overview, the event log and the attempts export exactly what is listed as CSV;
each event has its own address that opens the log with the event open.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from capi_destinations import exports
from capi_destinations.models import (
    AttemptOutcome,
    DeliveryAttempt,
    Destination,
    EventStatus,
    Health,
    Membership,
    Role,
)
from tests.conftest import server_event

HTMX = {"HTTP_HX_REQUEST": "true"}
GRID = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "capi-cards"}
OVERVIEW = "capi_destinations:overview"
CARD_CODE = re.compile(r'data-testid="destination-card" data-code="([0-9a-f-]+)"')


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def body_of(response: Any) -> str:
    """The text of a response, streamed or not."""
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def csv_rows(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(body_of(response))))


def card_codes(response: Any) -> list[str]:
    return CARD_CODE.findall(response.content.decode())


@pytest.fixture
def agency(make_tenant, make_user, make_destination):
    """Two clients of an agency and an outsider's client, with names that share words."""
    acme = make_tenant("Acme Shoes", "acme-shoes")
    bolt = make_tenant("Bolt Bikes", "bolt-bikes")
    rival = make_tenant("Rival Shoes", "rival-shoes")
    made = {
        "acme_web": make_destination(tenant=acme, name="Web shop", pixel_id="1111222233334444"),
        "acme_app": make_destination(tenant=acme, name="App", pixel_id="5555666677778888"),
        "bolt_web": make_destination(
            tenant=bolt, name="Web SHOES outlet", pixel_id="9999000011112222"
        ),
        "rival_web": make_destination(tenant=rival, name="Web shop", pixel_id="1111999988887777"),
    }
    marketer = make_user(acme, Role.VIEWER, username="marketer")
    Membership.objects.create(user=marketer, tenant=bolt, role=Role.EDITOR)
    return made, marketer


# --- overview search ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("shoes", {"acme_web", "acme_app", "bolt_web"}),  # a client's name, or a destination's
        ("ACME", {"acme_web", "acme_app"}),  # case does not matter
        ("web shop", {"acme_web"}),  # the rival's "Web shop" is not the marketer's
        ("3333", {"acme_web"}),  # a part of a Pixel ID
        ("1111", {"acme_web", "bolt_web"}),
        ("nothing like it", set()),
        ("", {"acme_web", "acme_app", "bolt_web"}),
    ],
)
def test_the_overview_search_keeps_exactly_the_matching_destinations(
    agency, query, expected
) -> None:
    made, marketer = agency
    client = logged_in(marketer)
    wanted = sorted(str(made[key].code) for key in expected)
    page = client.get(reverse(OVERVIEW), {"q": query})  # without JavaScript: a plain GET
    assert sorted(card_codes(page)) == wanted
    fragment = client.get(reverse(OVERVIEW), {"q": query}, **GRID)  # htmx swaps the grid
    assert fragment.content.decode().lstrip().startswith("<section")
    assert sorted(card_codes(fragment)) == wanted
    assert str(made["rival_web"].code) not in page.content.decode()


def test_the_search_box_keeps_what_was_typed_and_combines_with_the_other_filters(agency) -> None:
    made, marketer = agency
    client = logged_in(marketer)
    page = client.get(reverse(OVERVIEW), {"q": "web", "tenant": "bolt-bikes"})
    assert card_codes(page) == [str(made["bolt_web"].code)]
    assert 'value="web"' in page.content.decode()
    assert "1 destination matching “web”" in page.content.decode()


def test_an_unknown_client_in_the_filter_does_not_hide_the_search(agency) -> None:
    made, marketer = agency
    page = logged_in(marketer).get(reverse(OVERVIEW), {"q": "app", "tenant": "rival-shoes"})
    assert page.status_code == 200
    assert card_codes(page) == [str(made["acme_app"].code)]


# --- pagination and queries ---------------------------------------------------------------------


def many_destinations(count: int, tenants: list[Any], pixel_base: int) -> list[Destination]:
    """``count`` destinations spread over ``tenants``, every seventh one unhealthy."""
    rows = [
        Destination(
            tenant=tenants[number % len(tenants)],
            name=f"Store {number:03d}",
            pixel_id=str(pixel_base + number),
            access_token=f"EAAB{'x' * 60}{number}",
            health=Health.UNHEALTHY if number % 7 == 0 else Health.HEALTHY,
        )
        for number in range(count)
    ]
    return Destination.objects.bulk_create(rows)


@pytest.fixture
def crowd(make_tenant, make_user):
    """300 destinations: 200 over two tenants a viewer belongs to, 100 of an outsider's tenant."""
    mine = [make_tenant("North Agency client"), make_tenant("South Agency client")]
    theirs = make_tenant("Elsewhere Agency client")
    viewer = make_user(mine[0], Role.VIEWER, username="pager")
    Membership.objects.create(user=viewer, tenant=mine[1], role=Role.VIEWER)
    visible = many_destinations(200, mine, 2_000_000_000_000_000)
    hidden = many_destinations(100, [theirs], 3_000_000_000_000_000)
    # The hidden ones' names are those of visible ones too.
    return viewer, visible, hidden


def test_the_overview_pages_unhealthy_first_and_never_shows_another_tenants_destinations(
    crowd,
) -> None:
    viewer, visible, hidden = crowd
    client = logged_in(viewer)
    seen: list[str] = []
    page_number = 1
    while True:
        response = client.get(reverse(OVERVIEW), {"q": "agency", "page": page_number})
        codes = card_codes(response)
        assert len(codes) <= 30
        seen += codes
        if 'data-testid="overview-next"' not in response.content.decode():
            break
        # The next page's link keeps the search.
        assert f"?q=agency&amp;page={page_number + 1}" in response.content.decode()
        page_number += 1
    assert page_number == 7  # 200 destinations, 30 a page
    assert sorted(seen) == sorted(str(destination.code) for destination in visible)
    hidden_codes = {str(destination.code) for destination in hidden}
    assert not hidden_codes & set(seen)
    health = {str(d.code): d.health for d in visible}
    order = [health[code] for code in seen]
    assert order == sorted(order, key=lambda value: value != Health.UNHEALTHY)
    # The summary counts every match, not only the page.
    first = client.get(reverse(OVERVIEW), {"q": "agency"}).content.decode()
    unhealthy = sum(1 for d in visible if d.health == Health.UNHEALTHY)
    assert "200 destinations matching" in first
    assert f"{unhealthy} Unhealthy" in first


def test_a_page_number_out_of_range_shows_the_last_page(crowd) -> None:
    viewer, _, _ = crowd
    response = logged_in(viewer).get(reverse(OVERVIEW), {"page": "999"})
    assert response.status_code == 200
    assert len(card_codes(response)) == 200 - 6 * 30
    assert logged_in(viewer).get(reverse(OVERVIEW), {"page": "x"}).status_code == 200


@pytest.mark.parametrize("query", [{}, {"q": "agency"}, {"q": "store 1", "page": "2"}])
def test_the_overviews_queries_do_not_grow_with_300_destinations(
    crowd, query, django_assert_num_queries
) -> None:
    viewer, _, _ = crowd
    client = logged_in(viewer)
    client.get(reverse(OVERVIEW))  # warm the session
    # session, user, tenants, health totals (the pager's count too), the page of destinations,
    # their 24-hour counts, memberships (roles)
    with django_assert_num_queries(7):
        client.get(reverse(OVERVIEW), query)
    # The grid alone (htmx: search, paging, polling) needs no tenant rows, only the roles (a
    # card links its fix to an editor's control where the user may use it).
    with django_assert_num_queries(7):
        client.get(reverse(OVERVIEW), query, **GRID)


# --- overview CSV ---------------------------------------------------------------------------------


def test_the_overview_csv_has_every_matching_destination_and_nothing_secret(
    crowd, django_assert_max_num_queries
) -> None:
    viewer, visible, hidden = crowd
    client = logged_in(viewer)
    with django_assert_max_num_queries(6):
        response = client.get(reverse("capi_destinations:overview_csv"), {"q": "store 00"})
    rows = csv_rows(response)
    expected = sorted(d.pixel_id for d in visible if d.name.startswith("Store 00"))
    assert sorted(row["pixel_id"] for row in rows) == expected
    assert list(rows[0]) == list(exports.OVERVIEW_HEADER)
    text = body_of(client.get(reverse("capi_destinations:overview_csv")))
    assert len(list(csv.DictReader(io.StringIO(text)))) == 200  # every page, not the first
    for destination in Destination.objects.filter(pk__in=[d.pk for d in visible[:20]]):
        assert destination.access_token not in text
        assert destination.ingest_key not in text
    assert not {d.pixel_id for d in hidden} & {
        row["pixel_id"] for row in csv.DictReader(io.StringIO(text))
    }


def test_overview_csv_columns_and_formula_injection(
    owner_of_tenant, make_destination, make_event, clock
) -> None:
    destination = make_destination(name='=HYPERLINK("https://evil.test")', enabled=False)
    destination.last_delivered_at = clock.now() - timedelta(minutes=5)
    destination.save()
    make_event(destination=destination, status=EventStatus.DELIVERED)
    make_event(destination=destination, status=EventStatus.REJECTED)
    make_event(destination=destination, status=EventStatus.SUPPRESSED)
    make_event(destination=destination, status=EventStatus.SUPPRESSED)
    make_event(destination=destination)
    client = logged_in(owner_of_tenant)
    (row,) = csv_rows(client.get(reverse("capi_destinations:overview_csv"), {"q": "hyperlink"}))
    assert row["destination"] == '\'=HYPERLINK("https://evil.test")'
    assert row["client"] == "Acme Shoes"
    assert row["enabled"] == "no"
    assert (row["delivered_24h"], row["failed_24h"], row["rejected_24h"]) == ("1", "0", "1")
    # Suppressed (consent, the destination's filter, the client's exclusions): never sent.
    assert row["suppressed_24h"] == "2"
    assert row["waiting"] == "1"
    assert row["waiting_for"] == "1 event waiting while sending is off"
    assert row["last_delivery_utc"] == "2026-11-24T11:55:00Z"
    assert row["health"] == "Not checked yet"


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+33 6", "'+33 6"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("plain", "plain"),
        (-2, -2),
        (None, ""),
    ],
)
def test_safe_cell_defuses_formulas(value, cell) -> None:
    assert exports.safe_cell(value) == cell


# --- event log search -----------------------------------------------------------------------------


@pytest.fixture
def owner_of_tenant(make_user, tenant):
    return make_user(tenant, Role.ADMIN, username="owner")


@pytest.fixture
def log(destination, make_event, clock):
    """Events received over three days, with order ids as text and as numbers."""
    made = {}
    for key, status, order_id in (
        ("old", EventStatus.DELIVERED, "A-100"),
        ("middle", EventStatus.FAILED, 200),
        ("new", EventStatus.FAILED, "300"),
    ):
        clock.advance(timedelta(days=1))
        payload = server_event(f"evt-{key}")
        payload["custom_data"]["order_id"] = order_id
        made[key] = make_event(event_id=f"evt-{key}", payload=payload, status=status)
    lead = server_event("evt-lead", event_name="Lead")
    made["lead"] = make_event(event_id="evt-lead", event_name="Lead", payload=lead)
    return made


def log_ids(response: Any) -> list[str]:
    return re.findall(r"<td><code>([^<]+)</code></td>", response.content.decode())


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"q": "evt-middle"}, ["evt-middle"]),  # an event_id
        ({"q": "A-100"}, ["evt-old"]),  # an order id sent as text
        ({"q": "200"}, ["evt-middle"]),  # … and one sent as a number
        ({"q": "300"}, ["evt-new"]),
        ({"q": "evt"}, []),  # exact, not a part
        ({"status": "failed"}, ["evt-new", "evt-middle"]),
        ({"status": "failed", "q": "A-100"}, []),  # filters combine
        ({"received_from": "2026-11-25T12:01"}, ["evt-lead", "evt-new", "evt-middle"]),
        ({"received_from": "2026-11-25T12:00"}, ["evt-lead", "evt-new", "evt-middle", "evt-old"]),
        ({"received_to": "2026-11-26T12:00"}, ["evt-old"]),
        ({"received_from": "2026-11-26T00:00", "received_to": "2026-11-27T12:00"}, ["evt-middle"]),
        (
            {"received_from": "2026-11-26", "status": "failed", "event_name": "Purchase"},
            ["evt-new", "evt-middle"],
        ),
        ({"event_name": "Lead", "status": "failed"}, []),
    ],
)
def test_the_event_log_keeps_exactly_the_matching_events(
    owner_of_tenant, destination, log, query, expected
) -> None:
    url = reverse("capi_destinations:event_log", kwargs={"code": destination.code})
    assert log_ids(logged_in(owner_of_tenant).get(url, query)) == expected
    # The CSV of the same filters lists the same events, in the same order.
    csv_url = reverse("capi_destinations:event_log_csv", kwargs={"code": destination.code})
    rows = csv_rows(logged_in(owner_of_tenant).get(csv_url, query))
    assert [row["event_id"] for row in rows] == expected


def test_the_time_range_is_read_as_utc_whatever_zone_is_active(
    owner_of_tenant, destination, log
) -> None:
    url = reverse("capi_destinations:event_log", kwargs={"code": destination.code})
    with timezone.override("America/New_York"):
        page = logged_in(owner_of_tenant).get(url, {"received_to": "2026-11-26T12:00"})
    assert log_ids(page) == ["evt-old"]
    assert "Received from (UTC)" in page.content.decode()


def test_a_bad_date_is_said_and_the_other_filters_still_apply(
    owner_of_tenant, destination, log
) -> None:
    url = reverse("capi_destinations:event_log", kwargs={"code": destination.code})
    page = logged_in(owner_of_tenant).get(url, {"received_from": "yesterday", "q": "200"})
    assert page.status_code == 200
    assert 'data-testid="error-received_from"' in page.content.decode()
    assert log_ids(page) == ["evt-middle"]


# --- event and attempt CSV ------------------------------------------------------------------------


def test_the_event_csv_streams_utc_times_and_no_customer_data(
    owner_of_tenant, destination, log
) -> None:
    url = reverse("capi_destinations:event_log_csv", kwargs={"code": destination.code})
    response = logged_in(owner_of_tenant).get(url, {"q": "A-100"})
    assert response.streaming
    text = body_of(response)
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["received_utc"] == "2026-11-25T12:00:00Z"
    assert row["event_time_utc"] == "2026-11-25T12:00:00Z"
    assert row["order_id"] == "A-100"
    assert row["status"] == "delivered"
    payload = log["old"].payload
    for private in (
        payload["user_data"]["em"][0],
        payload["user_data"]["client_ip_address"],
        payload["user_data"]["client_user_agent"],
        destination.ingest_key,
    ):
        assert private not in text


def test_the_attempts_csv_lists_the_attempts_of_the_listed_events(
    owner_of_tenant, destination, log, clock
) -> None:
    failed = DeliveryAttempt.objects.create(
        destination=destination,
        started_at=clock.now() - timedelta(hours=2),
        event_count=2,
        http_status=400,
        error_code=100,
        error_message="=cmd|' /C calc'!A0",
        outcome=AttemptOutcome.INVALID,
    )
    failed.events.add(log["middle"], log["new"])
    delivered = DeliveryAttempt.objects.create(
        destination=destination,
        started_at=clock.now() - timedelta(hours=1),
        event_count=1,
        http_status=200,
        events_received=1,
        fbtrace_id="trace-ok",
        outcome=AttemptOutcome.DELIVERED,
    )
    log["middle"].delivered_by = delivered
    log["middle"].save()
    url = reverse("capi_destinations:attempts_csv", kwargs={"code": destination.code})
    client = logged_in(owner_of_tenant)

    rows = csv_rows(client.get(url, {"q": "200"}))
    assert [(row["attempt_id"], row["event_id"], row["outcome"]) for row in rows] == [
        (str(delivered.pk), "evt-middle", "delivered"),
        (str(failed.pk), "evt-middle", "invalid"),
    ]
    assert rows[0]["started_utc"] == "2026-11-27T11:00:00Z"
    assert rows[1]["error_message"] == "'=cmd|' /C calc'!A0"
    everything = csv_rows(client.get(url, {"status": "failed"}))
    assert sorted((row["attempt_id"], row["event_id"]) for row in everything) == sorted(
        [
            (str(delivered.pk), "evt-middle"),
            (str(failed.pk), "evt-middle"),
            (str(failed.pk), "evt-new"),
        ]
    )
    assert csv_rows(client.get(url, {"q": "A-100"})) == []


# --- an address for every event -------------------------------------------------------------------


def test_an_events_address_opens_the_log_with_the_event_open(
    owner_of_tenant, destination, log
) -> None:
    client = logged_in(owner_of_tenant)
    event = log["middle"]
    url = reverse(
        "capi_destinations:event", kwargs={"code": destination.code, "event_pk": event.pk}
    )
    log_url = reverse("capi_destinations:event_log", kwargs={"code": destination.code})
    listed = client.get(log_url, {"status": "failed"}).content.decode()
    # The log's link to the event carries the log's filters, and htmx pushes it to the address.
    link = f'href="{url}?status=failed"'
    assert link in listed
    assert 'hx-push-url="true" data-testid="event-open"' in listed

    page = client.get(url, {"status": "failed"})
    content = page.content.decode()
    assert content.startswith("<!doctype html>")
    assert 'data-testid="event-log"' in content
    assert log_ids(page) == ["evt-new", "evt-middle"]
    detail = content[content.index('id="event-detail"') :]
    assert 'data-testid="event-detail"' in detail
    assert "evt-middle" in detail
    assert "HX-Request" in page["Vary"]

    fragment = client.get(url, **HTMX).content.decode()
    assert fragment.lstrip().startswith("<article")
    # htmx restoring a page it no longer holds gets the whole page.
    restore = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert restore.content.decode().startswith("<!doctype html>")


def test_each_attempt_has_an_anchor_on_its_events_page(
    owner_of_tenant, destination, log, clock
) -> None:
    attempt = DeliveryAttempt.objects.create(
        destination=destination,
        started_at=clock.now(),
        event_count=1,
        http_status=400,
        outcome=AttemptOutcome.INVALID,
    )
    attempt.events.add(log["new"])
    url = reverse(
        "capi_destinations:event", kwargs={"code": destination.code, "event_pk": log["new"].pk}
    )
    content = logged_in(owner_of_tenant).get(url, **HTMX).content.decode()
    assert f'id="attempt-{attempt.pk}"' in content
    assert f'href="{url}#attempt-{attempt.pk}"' in content


def test_the_old_event_address_still_opens_the_event(owner_of_tenant, destination, log) -> None:
    url = reverse("capi_destinations:event_detail", kwargs={"code": destination.code})
    page = logged_in(owner_of_tenant).get(url, {"event_name": "Purchase", "event_id": "evt-old"})
    assert page.status_code == 200
    detail = page.content.decode().split('id="event-detail"', 1)[1]
    assert "evt-old" in detail


def test_an_event_of_another_destination_or_tenant_is_not_found(
    owner_of_tenant, destination, log, make_destination, make_event, other_tenant, make_user
) -> None:
    elsewhere = make_destination(tenant=other_tenant, name="Globex")
    foreign = make_event(destination=elsewhere, event_id="evt-foreign")
    client = logged_in(owner_of_tenant)
    # Another destination's event under this destination's code.
    mixed = reverse(
        "capi_destinations:event", kwargs={"code": destination.code, "event_pk": foreign.pk}
    )
    assert client.get(mixed).status_code == 404
    own = reverse(
        "capi_destinations:event", kwargs={"code": elsewhere.code, "event_pk": foreign.pk}
    )
    assert client.get(own).status_code == 404
    assert client.get(own, **HTMX).status_code == 404
    for name in ("event_log_csv", "attempts_csv"):
        url = reverse(f"capi_destinations:{name}", kwargs={"code": elsewhere.code})
        assert client.get(url).status_code == 404
    outsider = logged_in(make_user(other_tenant, Role.ADMIN))
    mine = reverse(
        "capi_destinations:event", kwargs={"code": destination.code, "event_pk": log["old"].pk}
    )
    assert outsider.get(mine).status_code == 404
