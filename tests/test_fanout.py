"""One event to several destinations: each records and delivers it on its own (issue 20).

The agency's own pixel and the client's: ``track(event=..., destinations=[...])`` in Python, and
a destination's "Also record its events for" on the HTTP endpoint. Each destination receives the
event exactly once, with the same event_id; one destination's revoked token does not hold the
others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from capi_destinations import destinations, dispatch, track
from capi_destinations.models import Destination, EventStatus, Role, Tenant
from capi_destinations.routing import EventFilter
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token, server_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def two(make_destination: Callable[..., Destination], other_tenant: Tenant) -> tuple:
    client_pixel = make_destination(name="Client pixel")
    agency_pixel = make_destination(name="Agency pixel", tenant=other_tenant)
    return client_pixel, agency_pixel


def test_track_records_one_event_for_each_destination(two: tuple) -> None:
    client_pixel, agency_pixel = two

    results = track(event=server_event("order-1"), destinations=[client_pixel, agency_pixel])

    assert [result.status for result in results] == ["stored", "stored"]
    assert {result.event.destination_id for result in results} == {
        client_pixel.pk,
        agency_pixel.pk,
    }
    assert {result.event.event_id for result in results} == {"order-1"}
    again = track(event=server_event("order-1"), destinations=[client_pixel, agency_pixel])
    assert [result.status for result in again] == ["duplicate", "duplicate"]
    with pytest.raises(TypeError):
        track(client_pixel, server_event("x"), destinations=[agency_pixel])  # type: ignore[call-overload]


def test_each_destination_receives_it_once_and_a_revoked_token_holds_only_its_own(
    two: tuple, graph_settings: Sandbox
) -> None:
    client_pixel, agency_pixel = two
    graph_settings.register_pixel(client_pixel.pixel_id, "Client", [client_pixel.access_token])
    graph_settings.register_pixel(agency_pixel.pixel_id, "Agency", [agency_pixel.access_token])
    graph_settings.revoke(agency_pixel.access_token)

    track(event=server_event("order-2"), destinations=[client_pixel, agency_pixel])
    dispatch.dispatch_pending()
    dispatch.dispatch_pending()

    received = graph_settings.events(pixel_id=client_pixel.pixel_id)
    assert [event["event_id"] for event in received] == ["order-2"]
    assert client_pixel.events.get().status == EventStatus.DELIVERED
    assert agency_pixel.events.get().status != EventStatus.DELIVERED
    assert graph_settings.events(pixel_id=agency_pixel.pixel_id) == []


def test_the_held_destination_catches_up_once_and_the_others_are_never_sent_again(
    two: tuple, graph_settings: Sandbox
) -> None:
    """The revoked pixel comes first and keeps its events waiting while the other pixel goes
    on receiving new ones; after a new token each pixel has had each event exactly once."""
    client_pixel, agency_pixel = two
    new_token = make_token("agency-new")
    graph_settings.register_pixel(client_pixel.pixel_id, "Client", [client_pixel.access_token])
    graph_settings.register_pixel(
        agency_pixel.pixel_id, "Agency", [agency_pixel.access_token, new_token]
    )
    graph_settings.revoke(agency_pixel.access_token)

    track(event=server_event("order-10"), destinations=[agency_pixel, client_pixel])
    dispatch.dispatch_pending()
    track(event=server_event("order-11"), destinations=[agency_pixel, client_pixel])
    dispatch.dispatch_pending()

    assert [e["event_id"] for e in graph_settings.events(pixel_id=client_pixel.pixel_id)] == [
        "order-10",
        "order-11",
    ]
    held = Destination.objects.get(pk=agency_pixel.pk)
    assert held.is_blocked
    assert set(held.events.values_list("status", flat=True)) == {EventStatus.PENDING}

    destinations.update_destination(held, actor=None, access_token=new_token)
    dispatch.dispatch_pending()
    dispatch.dispatch_pending()

    def received(pixel: Destination) -> list[str]:
        return sorted(e["event_id"] for e in graph_settings.events(pixel_id=pixel.pixel_id))

    assert received(agency_pixel) == ["order-10", "order-11"]
    assert received(client_pixel) == ["order-10", "order-11"]
    assert set(
        Destination.objects.get(pk=agency_pixel.pk).events.values_list("status", flat=True)
    ) == {EventStatus.DELIVERED}


def test_the_endpoint_also_records_for_the_destinations_it_forwards_to(
    client: Client, two: tuple, make_destination: Callable[..., Destination]
) -> None:
    client_pixel, agency_pixel = two
    only_leads = make_destination(
        name="Leads only", event_filter=EventFilter.ALLOW, event_filter_names="Lead"
    )
    Destination.objects.filter(pk=client_pixel.pk).update(
        forward_to=[agency_pixel.pk, only_leads.pk]
    )
    secret = destinations.regenerate_ingest_keys(client_pixel, actor=None)
    source = Destination.objects.get(pk=client_pixel.pk)

    response = client.post(
        f"/capi/v1/destinations/{source.ingest_key}/events",
        data=json.dumps([server_event("order-3")]),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    assert response.status_code == 202
    assert response.json()["also_recorded_for"] == 2
    assert source.events.get().event_id == "order-3"
    assert agency_pixel.events.get().event_id == "order-3"
    # The target's own filter applies: recorded there, as suppressed with the reason.
    assert only_leads.events.get().status == EventStatus.SUPPRESSED


def test_a_destination_cannot_forward_to_itself(destination: Destination) -> None:
    destination.forward_to = [destination.pk]
    with pytest.raises(ValidationError, match="cannot record its events twice"):
        destination.full_clean()


def test_the_edit_page_offers_only_destinations_the_user_may_edit(
    client: Client,
    two: tuple,
    tenant: Tenant,
    other_tenant: Tenant,
    make_user: Callable[..., Any],
    make_destination: Callable[..., Destination],
) -> None:
    client_pixel, agency_pixel = two
    sibling = make_destination(name="Sibling shop")
    editor = make_user(tenant, Role.EDITOR, username="ed")
    client.force_login(editor)

    page = client.get(f"/capi/d/{client_pixel.code}/edit/").content.decode()
    assert "Sibling shop" in page
    assert "Agency pixel" not in page  # a viewer elsewhere at most: not offered

    form = {
        "name": client_pixel.name,
        "pixel_id": client_pixel.pixel_id,
        "enabled": "on",
        "consent_policy": "send_always",
        "missing_consent": "granted",
        "forward_to_destinations": [str(sibling.pk)],
    }
    assert client.post(f"/capi/d/{client_pixel.code}/edit/", form).status_code == 302
    assert Destination.objects.get(pk=client_pixel.pk).forward_to == [sibling.pk]

    refused = client.post(
        f"/capi/d/{client_pixel.code}/edit/",
        {**form, "forward_to_destinations": [str(agency_pixel.pk)]},
    )
    assert refused.status_code == 200  # not a valid choice for this user
    assert Destination.objects.get(pk=client_pixel.pk).forward_to == [sibling.pk]
