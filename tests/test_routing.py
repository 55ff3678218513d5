"""A destination's event filter and a client's exclusions: suppressed with the reason (issue 20).

Filtered events are recorded as ``suppressed`` with a reason the event log shows; they are never
sent and never silently dropped.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.test import Client, RequestFactory

from capi_destinations import destinations, dispatch, track
from capi_destinations.models import Destination, EventStatus, Tenant
from capi_destinations.routing import EventFilter
from capi_destinations.sandbox import Sandbox
from tests.conftest import server_event

pytestmark = pytest.mark.django_db


def record(destination: Destination, event_name: str = "Purchase", **fields: Any) -> Any:
    event = server_event(f"{event_name}-{len(fields)}-{id(fields)}", event_name=event_name)
    event["user_data"] = {**event["user_data"], **fields.pop("user_data", {})}
    event["custom_data"] = {**event["custom_data"], **fields.pop("custom_data", {})}
    return track(Destination.objects.get(pk=destination.pk), {**event, **fields})


def configure(destination: Destination, **fields: Any) -> None:
    Destination.objects.filter(pk=destination.pk).update(**fields)


def exclude(tenant: Tenant, **fields: Any) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(**fields)


def test_only_the_listed_events_are_sent(destination: Destination) -> None:
    configure(destination, event_filter=EventFilter.ALLOW, event_filter_names="Purchase\nLead\n")

    kept = record(destination, "Purchase")
    skipped = record(destination, "PageView")

    assert kept.status == "stored"
    assert skipped.status == "suppressed"
    assert skipped.event.status == EventStatus.SUPPRESSED
    assert skipped.event.status_reason == (
        "suppressed: PageView is not among the events this destination sends"
    )


def test_all_but_the_listed_events_are_sent(destination: Destination) -> None:
    configure(destination, event_filter=EventFilter.DENY, event_filter_names="PageView")

    assert record(destination, "PageView").event.status_reason == (
        "suppressed: this destination does not send PageView events"
    )
    assert record(destination, "Purchase").status == "stored"


def test_purchases_below_the_minimum_value_are_not_sent(destination: Destination) -> None:
    configure(destination, minimum_purchase_value=Decimal("10.00"))

    small = record(destination, custom_data={"value": 4.5})
    large = record(destination, custom_data={"value": 10})
    lead = record(destination, "Lead", custom_data={"value": 1})

    assert small.event.status_reason == (
        "suppressed: a Purchase of 4.5 is below this destination's minimum of 10.00"
    )
    assert large.status == "stored"
    assert lead.status == "stored"


def test_test_orders_are_not_sent(destination: Destination, tenant: Tenant) -> None:
    flagged = record(destination, custom_data={"test_order": True})
    not_flagged = record(destination, custom_data={"test_order": "false"})
    exclude(tenant, test_flag="")
    unflagged_client = record(destination, custom_data={"test_order": True})

    assert flagged.event.status_reason == "suppressed: a test order (custom_data.test_order is set)"
    assert not_flagged.status == "stored"
    assert unflagged_client.status == "stored"


def test_staff_traffic_is_not_sent_when_the_client_excludes_it(
    destination: Destination, tenant: Tenant, admin_user: Any, django_user_model: Any
) -> None:
    customer = django_user_model.objects.create_user("customer", password="x")

    def request_by(user: Any) -> Any:
        request = RequestFactory().post("/checkout", REMOTE_ADDR="198.51.100.1")
        request.user = user
        return request

    event = server_event("staff-1")
    assert track(destination, event, request=request_by(admin_user)).status == "stored"

    exclude(tenant, exclude_staff=True)
    fresh = Destination.objects.get(pk=destination.pk)
    by_staff = track(fresh, server_event("staff-2"), request=request_by(admin_user))
    by_customer = track(fresh, server_event("staff-3"), request=request_by(customer))
    anonymous = track(fresh, server_event("staff-4"), request=request_by(AnonymousUser()))

    assert by_staff.event.status_reason == (
        "suppressed: recorded by a logged-in staff user (the client excludes staff)"
    )
    assert by_customer.status == "stored"
    assert anonymous.status == "stored"


def test_excluded_address_ranges_are_not_sent(destination: Destination, tenant: Tenant) -> None:
    exclude(tenant, excluded_networks="203.0.113.0/24\n2001:db8::/32\n")

    office = record(destination, user_data={"client_ip_address": "203.0.113.7"})
    office_v6 = record(destination, user_data={"client_ip_address": "2001:db8::5"})
    customer = record(destination, user_data={"client_ip_address": "198.51.100.20"})

    assert office.event.status_reason == (
        "suppressed: from 203.0.113.0/24, an address range the client excludes"
    )
    assert office_v6.status == "suppressed"
    assert customer.status == "stored"


def test_a_bad_address_range_is_refused_with_the_line(tenant: Tenant) -> None:
    tenant.excluded_networks = "203.0.113.0/24\noffice wifi"
    with pytest.raises(ValidationError, match="'office wifi' is not an IP address or range"):
        tenant.full_clean()


def test_an_event_with_errors_stays_rejected_whatever_the_filter(destination: Destination) -> None:
    configure(destination, event_filter=EventFilter.ALLOW, event_filter_names="Lead")
    result = track(destination, {"event_name": "PageView"})
    assert result.status == "rejected"


def test_suppressed_events_are_never_sent(
    destination: Destination, tenant: Tenant, graph_settings: Sandbox
) -> None:
    exclude(tenant, excluded_networks="203.0.113.0/24")
    record(destination, user_data={"client_ip_address": "203.0.113.7"})

    dispatch.dispatch_pending()

    assert graph_settings.events() == []


def test_the_endpoint_applies_the_clients_exclusions(
    client: Client, destination: Destination, tenant: Tenant
) -> None:
    secret = destinations.regenerate_ingest_keys(destination, actor=None)
    exclude(tenant, excluded_networks="203.0.113.0/24")
    fresh = Destination.objects.get(pk=destination.pk)

    response = client.post(
        f"/capi/v1/destinations/{fresh.ingest_key}/events",
        data=json.dumps({"data": [server_event("office-1")]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    assert response.status_code == 202
    assert response.json()["events"][0]["status"] == "suppressed"


def test_the_edit_page_sets_the_filter(
    client: Client, destination: Destination, make_user: Any, tenant: Tenant
) -> None:
    from capi_destinations.models import Role

    client.force_login(make_user(tenant, Role.EDITOR, username="ed"))
    page = client.get(f"/capi/d/{destination.code}/edit/").content.decode()
    assert "Which events to send" in page

    response = client.post(
        f"/capi/d/{destination.code}/edit/",
        {
            "name": destination.name,
            "pixel_id": destination.pixel_id,
            "enabled": "on",
            "consent_policy": "send_always",
            "missing_consent": "granted",
            "event_filter": "allow",
            "event_filter_names": "Purchase\nLead",
            "minimum_purchase_value": "5",
        },
    )

    assert response.status_code == 302
    saved = Destination.objects.get(pk=destination.pk)
    assert saved.event_filter == EventFilter.ALLOW
    assert saved.event_filter_names == "Purchase\nLead"
    assert saved.minimum_purchase_value == Decimal("5")
    assert record(saved, "PageView").status == "suppressed"


def test_the_overview_card_counts_the_suppressed_events(
    client: Client,
    destination: Destination,
    tenant: Tenant,
    make_user: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from capi_destinations.models import Role

    configure(destination, event_filter=EventFilter.DENY, event_filter_names="PageView")
    with django_capture_on_commit_callbacks(execute=True):
        record(destination, "PageView")
        record(destination, "PageView")
        record(destination, "Purchase")

    client.force_login(make_user(tenant, Role.VIEWER, username="vic"))
    page = client.get("/capi/").content.decode()

    assert "2 suppressed</span>" in page
