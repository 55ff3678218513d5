"""Click IDs remembered per person fill later events that arrive without a browser (issue 18).

A checkout in the browser carries the visitor's fbc/fbp and email; the payment webhook that
confirms the order an hour later carries only the email. The webhook's Purchase must reach Meta
with the click, say where it came from, and nothing of it may outlive an erasure request.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

import capi_destinations
from capi_destinations import click_memory, retention, track
from capi_destinations.models import ClickIdSighting, Destination, Event, Tenant

pytestmark = pytest.mark.django_db

FBC = "fb.1.1732449600000.IwAR2xYz_AbC-123dEf"
FBP = "fb.1.1732449500000.1098765432"
EMAIL = "Jane.Doe@Example.com"


@pytest.fixture
def shop(clock: Any, destination: Destination) -> Destination:
    return destination


def browser_checkout(
    destination: Destination, *, consent: dict[str, Any] | None = None, **user_data: Any
) -> Event:
    """capi.js's event as a Django view records it: cookies from the request."""
    request = RequestFactory().post(
        "/checkout", HTTP_COOKIE=f"_fbc={FBC}; _fbp={FBP}", HTTP_USER_AGENT="Mozilla/5.0"
    )
    event = {
        "event_name": "InitiateCheckout",
        "event_id": "checkout-1",
        "action_source": "website",
        "event_source_url": "https://shop.example/checkout",
        "user_data": user_data or {"email": EMAIL},
    }
    if consent is not None:
        event["consent"] = consent
    return track(destination, event, request=request).event


def webhook_purchase(destination: Destination, event_id: str = "order-1", **fields: Any) -> Any:
    """The payment provider's webhook: no request, no cookies, only what the order holds."""
    event = {
        "event_name": "Purchase",
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {
            "email": EMAIL,
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {"value": 49.9, "currency": "EUR"},
        **fields,
    }
    return track(destination, event)


def notes(result: Any) -> list[str]:
    return [finding.message for finding in result.diagnostics if finding.code == "click_id_filled"]


def test_a_webhook_purchase_gains_the_click_seen_with_the_same_email(
    shop: Destination, clock: Any
) -> None:
    browser_checkout(shop)
    clock.advance(timedelta(hours=1))

    result = webhook_purchase(shop)

    user_data = result.event.payload["user_data"]
    assert user_data["fbc"] == FBC
    assert user_data["fbp"] == FBP
    assert len(notes(result)) == 2
    assert "seen with this person (email) on 2026-11-24 12:00 UTC" in notes(result)[0]
    stored = Event.objects.get(event_id="order-1")
    assert stored.payload["user_data"]["fbc"] == FBC
    assert "click_id_filled" in {item["code"] for item in stored.diagnostics}
    alone = webhook_purchase(
        Destination.objects.get(pk=shop.pk),
        event_id="order-2",
        user_data={"email": "someone.else@example.com"},
    )
    assert stored.match_quality > alone.event.match_quality


def test_a_retry_of_the_same_webhook_is_a_duplicate_not_a_reused_event_id(
    shop: Destination, clock: Any
) -> None:
    browser_checkout(shop)
    first = webhook_purchase(shop)
    clock.advance(timedelta(minutes=5))

    again = webhook_purchase(shop)

    assert first.status == "stored"
    assert again.status == "duplicate"
    assert "event_id_reused" not in {
        item["code"] for item in Event.objects.get(event_id="order-1").diagnostics
    }


def test_external_id_names_the_person_and_an_unknown_one_gains_nothing(shop: Destination) -> None:
    browser_checkout(shop, external_id="customer-42")

    known = track(
        shop,
        {
            "event_name": "Subscribe",
            "event_id": "crm-1",
            "action_source": "system_generated",
            "user_data": {"external_id": "customer-42"},
        },
    )
    unknown = track(
        shop,
        {
            "event_name": "Subscribe",
            "event_id": "crm-2",
            "action_source": "system_generated",
            "user_data": {"external_id": "customer-43"},
        },
    )

    assert known.event.payload["user_data"]["fbc"] == FBC
    assert "(external_id)" in notes(known)[0]
    assert "fbc" not in unknown.event.payload["user_data"]
    assert not notes(unknown)


def test_an_events_own_click_ids_are_kept(shop: Destination) -> None:
    browser_checkout(shop)
    own = "fb.1.1732449700000.AnotherClick9"

    result = webhook_purchase(
        shop, user_data={"email": EMAIL, "fbc": own, "client_user_agent": "Mozilla/5.0"}
    )

    assert result.event.payload["user_data"]["fbc"] == own
    assert result.event.payload["user_data"]["fbp"] == FBP
    assert [n for n in notes(result) if "no fbc" in n] == []


def test_a_click_seen_longer_ago_than_the_window_is_not_filled(
    shop: Destination, clock: Any, settings: Any
) -> None:
    browser_checkout(shop)
    clock.advance(timedelta(days=7, minutes=1))

    assert "fbc" not in webhook_purchase(shop).event.payload["user_data"]

    settings.CAPI_DESTINATIONS = {"CLICK_ID_FILL_DAYS": 8}
    assert webhook_purchase(shop, event_id="order-2").event.payload["user_data"]["fbc"] == FBC


def test_with_the_click_memory_off_nothing_is_remembered_or_filled(
    shop: Destination, settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {"CLICK_ID_FILL_DAYS": 0}

    browser_checkout(shop)
    result = webhook_purchase(shop)

    # Not filled, and nothing about the person kept for a filling that never happens.
    assert not ClickIdSighting.objects.exists()
    assert notes(result) == []
    assert "fbc" not in result.event.payload["user_data"]


def test_another_clients_sightings_never_fill_an_event(
    shop: Destination, other_tenant: Tenant, make_destination: Callable[..., Destination]
) -> None:
    browser_checkout(shop)
    elsewhere = make_destination(tenant=other_tenant, name="Other client")

    result = webhook_purchase(elsewhere)

    assert "fbc" not in result.event.payload["user_data"]


def test_refused_ad_storage_is_neither_remembered_nor_filled(shop: Destination) -> None:
    browser_checkout(shop, consent={"ad_storage": "denied", "ad_user_data": "granted"})
    assert not ClickIdSighting.objects.exists()

    browser_checkout(shop)  # another visit, consent granted by the destination's default
    refused = webhook_purchase(shop, consent={"ad_storage": "denied"})

    assert "fbc" not in refused.event.payload["user_data"]


def test_only_digests_are_stored_never_the_email(shop: Destination) -> None:
    browser_checkout(shop, email=EMAIL, phone="+1 650 555 1212")

    rows = list(ClickIdSighting.objects.values())
    text = json.dumps(rows, default=str).lower()
    assert "jane" not in text
    assert "650" not in text.replace(FBC.lower(), "").replace(FBP.lower(), "")
    email_digest = hashlib.sha256(EMAIL.lower().encode()).hexdigest()
    assert {
        (row["identifier_key"], row["key"]) for row in rows if row["identifier"] == email_digest
    } == {("em", "fbc"), ("em", "fbp")}
    assert {row["identifier_key"] for row in rows} == {"em", "ph"}


def test_forget_erases_a_person_and_later_events_gain_nothing(
    shop: Destination, tenant: Tenant
) -> None:
    browser_checkout(shop, email=EMAIL, external_id="customer-42")
    browser_checkout(shop, email="other@example.com")
    before = ClickIdSighting.objects.count()

    erased = capi_destinations.forget(
        tenant, email="  jane.doe@EXAMPLE.com ", external_id="customer-42"
    )

    assert erased == 4  # fbc and fbp, by email and by external_id
    assert ClickIdSighting.objects.count() == before - 4
    email_digest = hashlib.sha256(EMAIL.lower().encode()).hexdigest()
    assert not ClickIdSighting.objects.filter(identifier=email_digest).exists()
    assert "fbc" not in webhook_purchase(shop).event.payload["user_data"]
    crm = track(
        shop,
        {
            "event_name": "Subscribe",
            "event_id": "crm-1",
            "action_source": "system_generated",
            "user_data": {"external_id": "customer-42"},
        },
    )
    assert "fbc" not in crm.event.payload["user_data"]
    assert not notes(crm)
    with pytest.raises(ValueError, match="Name the person"):
        capi_destinations.forget(tenant)


def test_retention_purges_sightings_not_seen_for_retention_days(
    shop: Destination, clock: Any
) -> None:
    browser_checkout(shop)
    clock.advance(timedelta(days=31))

    purged = retention.purge_old_records()

    assert purged["click_id_sightings"] == 2
    assert not ClickIdSighting.objects.exists()


def test_the_diagnostics_summary_counts_the_events_that_gained_click_ids(
    shop: Destination, clock: Any, client: Any, make_user: Callable[..., Any], tenant: Tenant
) -> None:
    from capi_destinations import reports
    from capi_destinations.models import Role

    browser_checkout(shop)
    webhook_purchase(shop, event_id="order-1")
    webhook_purchase(
        shop,
        event_id="order-2",
        user_data={"email": "new@example.com", "client_user_agent": "Mozilla/5.0"},
    )

    summary = reports.diagnostics_summary(shop)

    assert {
        (row.event_name, row.key, row.count, row.of_events) for row in summary.click_ids_filled
    } == {("Purchase", "fbc", 1, 2), ("Purchase", "fbp", 1, 2)}
    client.force_login(make_user(tenant, Role.VIEWER, username="vic"))
    page = client.get(f"/capi/d/{shop.code}/").content.decode()
    assert (
        'data-testid="click-id-filled" data-key="fbc" data-event="Purchase" data-count="1"' in page
    )
    assert "in the last 7 days" in page


def test_a_click_seen_again_moves_its_last_sighting_and_keeps_its_first(
    shop: Destination, clock: Any
) -> None:
    first = browser_checkout(shop)
    clock.advance(timedelta(hours=2))
    track(
        shop,
        {
            "event_name": "ViewContent",
            "event_id": "view-2",
            "action_source": "website",
            "event_source_url": "https://shop.example/product",
            "user_data": {
                "email": EMAIL,
                "fbc": FBC,
                "fbp": FBP,
                "client_user_agent": "Mozilla/5.0",
            },
            "consent": {"ad_storage": "granted"},
        },
    )

    rows = list(ClickIdSighting.objects.order_by("key"))
    assert [(row.key, row.value) for row in rows] == [("fbc", FBC), ("fbp", FBP)]
    for row in rows:
        assert row.first_seen_at == first.event_time
        assert row.last_seen_at == first.event_time + timedelta(hours=2)
        assert row.ad_storage == "granted"


def test_a_click_in_an_event_sent_late_widens_the_span_and_never_moves_it_back(
    shop: Destination, clock: Any
) -> None:
    checkout = browser_checkout(shop)
    clock.advance(timedelta(hours=2))
    # An import of last week's orders: the same person and click, three days before the checkout.
    track(
        shop,
        {
            "event_name": "Purchase",
            "event_id": "imported-order",
            "event_time": int((checkout.event_time - timedelta(days=3)).timestamp()),
            "action_source": "website",
            "event_source_url": "https://shop.example/thanks",
            "user_data": {"email": EMAIL, "fbc": FBC, "client_user_agent": "Mozilla/5.0"},
            "consent": {"ad_storage": "granted"},
            "custom_data": {"value": 10, "currency": "EUR"},
        },
    )

    row = ClickIdSighting.objects.get(key="fbc")
    assert row.last_seen_at == checkout.event_time
    assert row.first_seen_at == checkout.event_time - timedelta(days=3)
    # The consent state stays the latest sighting's (the checkout's, given by default).
    assert row.ad_storage == "default"


def test_a_batch_sent_again_rewrites_no_sighting(shop: Destination) -> None:
    browser_checkout(shop)
    before = {
        row.pk: (row.first_seen_at, row.last_seen_at) for row in ClickIdSighting.objects.all()
    }
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = %s",
                [ClickIdSighting._meta.db_table],
            )
            (updates_before,) = cursor.fetchone()

    browser_checkout(shop)  # the same request again: a duplicate, its sightings unchanged

    after = {row.pk: (row.first_seen_at, row.last_seen_at) for row in ClickIdSighting.objects.all()}
    assert after == before
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = %s",
                [ClickIdSighting._meta.db_table],
            )
            assert cursor.fetchone() == (updates_before,)


def test_a_batch_fills_each_event_from_its_own_persons_sightings(
    shop: Destination, clock: Any
) -> None:
    people = [f"person{n}@example.com" for n in range(3)]
    for number, email in enumerate(people[:2]):
        track(
            shop,
            {
                "event_name": "ViewContent",
                "event_id": f"view-{number}",
                "action_source": "website",
                "event_source_url": "https://shop.example/product",
                "user_data": {
                    "email": email,
                    "fbp": f"fb.1.1732449500000.109876543{number}",
                    "client_user_agent": "Mozilla/5.0",
                },
            },
        )
    clock.advance(timedelta(hours=1))

    results = capi_destinations.track_many(
        shop,
        [
            {
                "event_name": "Purchase",
                "event_id": f"order-{email}",
                "action_source": "website",
                "event_source_url": "https://shop.example/thanks",
                "user_data": {
                    "email": email,
                    "client_ip_address": "203.0.113.7",
                    "client_user_agent": "Mozilla/5.0",
                },
                "custom_data": {"value": 49.9, "currency": "EUR"},
            }
            for email in reversed(people)
        ],
    )

    filled = [result.event.payload["user_data"].get("fbp") for result in results]
    assert filled == [None, "fb.1.1732449500000.1098765431", "fb.1.1732449500000.1098765430"]


# --- recall's rules, on the choice itself (both databases) -----------------------------------

PERSON = hashlib.sha256(b"jane.doe@example.com").hexdigest()
CUSTOMER = hashlib.sha256(b"customer-42").hexdigest()


def sight(tenant_id: int, identifier: str, key: str, value: str, first: Any, last: Any) -> None:
    ClickIdSighting.objects.create(
        tenant_id=tenant_id,
        identifier=identifier,
        identifier_key="external_id" if identifier == CUSTOMER else "em",
        key=key,
        value=value,
        first_seen_at=first,
        last_seen_at=last,
        ad_storage="granted",
    )


def test_recall_takes_each_events_latest_sighting_inside_its_own_window(
    shop: Destination, clock: Any
) -> None:
    now = clock.now()
    tenant = shop.tenant_id
    day = timedelta(days=1)
    sight(tenant, PERSON, "fbp", "fb.1.1.old", now - 40 * day, now - 20 * day)
    sight(tenant, PERSON, "fbp", "fb.1.1.mid", now - 10 * day, now - 5 * day)
    sight(tenant, PERSON, "fbp", "fb.1.1.new", now - 2 * day, now - day)
    # First seen after the later event's moment (plus the minute allowed): never a candidate
    # for it, though it is the most recent of all.
    sight(tenant, PERSON, "fbp", "fb.1.1.after", now + timedelta(minutes=5), now + day)
    sight(tenant, PERSON, "fbc", "fb.1.1.IwARclick", now - 30 * day, now - 29 * day)
    identifiers = [("em", PERSON)]

    filled = click_memory.recall(
        tenant,
        {
            0: (now, identifiers, ("fbc", "fbp")),
            1: (now - 6 * day, identifiers, ("fbp",)),
            2: (now - 3 * day, identifiers, ("fbp",)),
            3: (now - 60 * day, identifiers, ("fbp",)),
        },
    )

    values = {index: {item.key: item.value for item in items} for index, items in filled.items()}
    # The fbc seen 29 days ago is outside the 7-day window; the fbp first seen after the
    # event is not the event's; an event 60 days back has nothing seen before it.
    assert values == {0: {"fbp": "fb.1.1.new"}, 1: {"fbp": "fb.1.1.mid"}, 2: {"fbp": "fb.1.1.mid"}}
    assert filled[0][0].seen_at == now - day
    assert filled[0][0].matched_by == "email"
    # A sighting still seen after the event fills it, dated at the event, not later.
    assert filled[1][0].seen_at == now - 6 * day
    assert filled[2][0].seen_at == now - 5 * day


def test_recall_prefers_the_latest_sighting_then_the_strongest_identifier(
    shop: Destination, clock: Any
) -> None:
    now = clock.now()
    tenant = shop.tenant_id
    hour = timedelta(hours=1)
    sight(tenant, PERSON, "fbp", "fb.1.1.by-email", now - 3 * hour, now - hour)
    sight(tenant, CUSTOMER, "fbp", "fb.1.1.by-id", now - 3 * hour, now - hour)
    sight(tenant, PERSON, "fbc", "fb.1.1.IwARlater", now - 3 * hour, now - hour)
    sight(tenant, CUSTOMER, "fbc", "fb.1.1.IwARearlier", now - 3 * hour, now - 2 * hour)

    filled = click_memory.recall(
        tenant, {7: (now, [("external_id", CUSTOMER), ("em", PERSON)], ("fbc", "fbp"))}
    )

    chosen = {item.key: (item.value, item.matched_by) for item in filled[7]}
    assert chosen == {
        # Seen at the same moment by both: the external_id, the stronger name, wins.
        "fbp": ("fb.1.1.by-id", "external_id"),
        # Seen later by email than by external_id: the later one wins.
        "fbc": ("fb.1.1.IwARlater", "email"),
    }


def test_recall_reads_one_sighting_per_lookup_however_many_a_person_has(
    shop: Destination, clock: Any
) -> None:
    """A shared or placeholder email gathers thousands of sightings; recall must not read them.

    On PostgreSQL the plan is checked on a table never analyzed (as after a deploy): each
    lookup is an index scan that stops at its first row.
    """
    now = clock.now()
    tenant = shop.tenant_id
    ClickIdSighting.objects.bulk_create(
        ClickIdSighting(
            tenant_id=tenant,
            identifier=PERSON,
            identifier_key="em",
            key="fbp",
            value=f"fb.1.1.{number}",
            first_seen_at=now - timedelta(minutes=number + 1),
            last_seen_at=now - timedelta(minutes=number),
            ad_storage="granted",
        )
        for number in range(3000)
    )
    wanted = {0: (now, [("em", PERSON)], ("fbc", "fbp"))}
    plans: list[dict[str, Any]] = []

    def explained(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # The statement exactly as recall sends it, parameters bound the same way, explained.
        if connection.vendor == "postgresql" and "LATERAL" in sql:
            cursor = context["cursor"].cursor  # the driver's own: no wrapper again
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
            (document,) = cursor.fetchone()
            document = json.loads(document) if isinstance(document, str) else document
            plans.append(document[0]["Plan"])
        return execute(sql, params, many, context)

    def explained_generic(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # The recall is prepared where the site allows it: its generic plan, explained too.
        if connection.vendor == "postgresql" and "LATERAL" in sql:
            numbered = iter(range(1, 100))
            prepared = re.sub("%s", lambda _: f"${next(numbered)}", sql)
            with psycopg.ClientCursor(connection.connection) as cursor:
                cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                cursor.execute(f"PREPARE recall_generic AS {prepared}")
                arguments = ", ".join(["%s"] * len(params))
                cursor.execute(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE recall_generic({arguments})", params
                )
                (document,) = cursor.fetchone()
                cursor.execute("DEALLOCATE recall_generic")
            plans.append(document[0]["Plan"])
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as queries, connection.execute_wrapper(explained):
        filled = click_memory.recall(tenant, wanted)
    with connection.execute_wrapper(explained_generic):
        click_memory.recall(tenant, wanted)

    assert [(item.key, item.value) for item in filled[0]] == [("fbp", "fb.1.1.0")]
    assert len(queries) == 1
    if connection.vendor != "postgresql":
        return
    assert len(plans) == 2  # the custom plan, then the generic one
    custom_condition, generic_condition = (
        next(node["Index Cond"] for node in _nodes(plan) if "Index Cond" in node) for plan in plans
    )
    assert "$" not in custom_condition
    assert "$" in generic_condition  # planned without the parameters' values
    for plan in plans:
        scans = [
            node
            for node in _nodes(plan)
            if node.get("Relation Name") == ClickIdSighting._meta.db_table
        ]
        assert scans, plan
        for scan in scans:
            assert scan["Node Type"] == "Index Scan", scan
            assert scan["Index Name"] == "capi_click_sighting_recall", scan
            # Rows read per lookup: the one chosen, none filtered away one by one.
            assert scan["Actual Rows"] <= 1, scan
            assert scan.get("Rows Removed by Filter", 0) == 0, scan


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", ()):
        found.extend(_nodes(child))
    return found
