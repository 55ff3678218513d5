"""The ingest endpoint's rate limits, tried the way an attacker would try them.

Anyone can read a destination's public ingest key from a shop's pages and forge an ``Origin``
header, so browser calls prove nothing about their sender. They must never spend the budget of
the destination's own servers, and a request that brings nothing (an empty list, a refused
secret, an origin not allowed) costs the address that sent it, not the destination.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from capi_destinations.models import Destination, Event
from tests.conftest import FROZEN_AT

SHOP = "https://shop.example.com"
ATTACKER = "203.0.113.66"
VISITOR = "198.51.100.23"
SERVER = "192.0.2.10"


@pytest.fixture
def shop(make_destination: Callable[..., Destination]) -> tuple[Destination, str]:
    destination = make_destination(allowed_origins=SHOP)
    secret = destination.set_ingest_secret()
    destination.save()
    return destination, secret


def url(destination: Destination) -> str:
    return reverse("capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key})


def event(event_id: str) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": int(FROZEN_AT.timestamp()) - 10,
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": f"{SHOP}/checkout",
        "user_data": {"email": "jane@example.com"},
        "custom_data": {"value": 20, "currency": "USD"},
    }


def browser_post(client: Client, destination: Destination, body: Any, *, address: str) -> Any:
    """What any script can send: the public key, a forged Origin, a body of its choosing."""
    return client.post(
        url(destination),
        data=json.dumps(body),
        content_type="text/plain;charset=UTF-8",
        HTTP_ORIGIN=SHOP,
        REMOTE_ADDR=address,
    )


def server_post(client: Client, destination: Destination, secret: str, body: Any) -> Any:
    return client.post(
        url(destination),
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        REMOTE_ADDR=SERVER,
    )


def configure(settings: Any, **values: Any) -> None:
    settings.CAPI_DESTINATIONS = {**(settings.CAPI_DESTINATIONS or {}), **values}


def test_a_flood_of_empty_browser_calls_does_not_starve_the_server(
    client: Client, shop: tuple[Destination, str], settings: Any, clock: Any
) -> None:
    # The attack of issue 14: 320 posts of [] in 4 seconds with the public key and a forged
    # Origin, against a site that allows its servers 300 requests a minute.
    destination, secret = shop
    configure(settings, INGEST_RATE_LIMIT="300/m")
    clock.freeze(FROZEN_AT)
    answers = []
    for _ in range(320):
        answers.append(browser_post(client, destination, [], address=ATTACKER).status_code)
        clock.advance(timedelta(milliseconds=12))

    real_call = server_post(client, destination, secret, [event("order-1")])

    assert real_call.status_code == 202, real_call.content
    assert Event.objects.filter(destination=destination, event_id="order-1").exists()
    # The attacker spent only its own address's budget (600/m by default) and recorded nothing.
    assert set(answers) == {202}
    assert Event.objects.count() == 1


def test_browser_events_from_one_address_do_not_spend_the_server_budget(
    client: Client, shop: tuple[Destination, str], settings: Any, clock: Any
) -> None:
    destination, secret = shop
    configure(settings, INGEST_RATE_LIMIT="5/m", INGEST_CLIENT_RATE_LIMIT="1000/m")
    clock.freeze(FROZEN_AT)
    for number in range(20):
        browser_post(client, destination, [event(f"forged-{number}")], address=ATTACKER)

    assert server_post(client, destination, secret, [event("order-1")]).status_code == 202


def test_one_address_is_cut_off_without_cutting_off_other_visitors(
    client: Client, shop: tuple[Destination, str], settings: Any, clock: Any
) -> None:
    destination, _ = shop
    configure(settings, INGEST_CLIENT_RATE_LIMIT="10/m")
    clock.freeze(FROZEN_AT)
    answers = [
        browser_post(client, destination, [], address=ATTACKER).status_code for _ in range(12)
    ]
    visitor = browser_post(client, destination, [event("visit-1")], address=VISITOR)

    assert answers == [202] * 10 + [429] * 2
    assert visitor.status_code == 202
    limited = browser_post(client, destination, [event("x")], address=ATTACKER)
    assert limited.json()["error"]["code"] == "rate_limited"
    assert "Retry-After" in limited


def test_empty_browser_bodies_cost_the_sender_not_the_destination(
    client: Client, shop: tuple[Destination, str], settings: Any, clock: Any
) -> None:
    destination, _ = shop
    configure(settings, INGEST_BROWSER_RATE_LIMIT="3/m", INGEST_CLIENT_RATE_LIMIT="1000/m")
    clock.freeze(FROZEN_AT)
    for _ in range(50):
        assert browser_post(client, destination, [], address=ATTACKER).status_code == 202

    # The destination's browser budget is untouched: three real visits pass, the fourth not.
    answers = [
        browser_post(client, destination, [event(f"v{n}")], address=VISITOR).status_code
        for n in range(4)
    ]
    assert answers == [202, 202, 202, 429]


def test_refused_requests_cost_the_sender(
    client: Client, shop: tuple[Destination, str], settings: Any, clock: Any
) -> None:
    # Guessing the secret, or posting from an origin not allowed, spends the guesser's budget.
    destination, secret = shop
    configure(settings, INGEST_CLIENT_RATE_LIMIT="5/m", INGEST_RATE_LIMIT="5/m")
    clock.freeze(FROZEN_AT)
    guesses = [
        client.post(
            url(destination),
            data="[]",
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer guess-{number}",
            REMOTE_ADDR=ATTACKER,
        ).status_code
        for number in range(7)
    ]
    assert guesses == [403] * 5 + [429] * 2
    # The destination's server, from its own address, is not held back by the guesser.
    assert server_post(client, destination, secret, [event("order-1")]).status_code == 202


def test_the_server_budget_still_holds_for_the_server(
    client: Client, shop: tuple[Destination, str], settings: Any, clock: Any
) -> None:
    destination, secret = shop
    configure(settings, INGEST_RATE_LIMIT="2/m")
    clock.freeze(FROZEN_AT)
    answers = [
        server_post(client, destination, secret, [event(f"o{n}")]).status_code for n in range(3)
    ]
    assert answers == [202, 202, 429]
    # ...and the browsers' budget is apart from it.
    assert browser_post(client, destination, [event("v1")], address=VISITOR).status_code == 202


def test_the_client_address_comes_from_the_trusted_proxy_header(
    client: Client, shop: tuple[Destination, str], settings: Any, clock: Any
) -> None:
    # Behind a proxy every request has the proxy's REMOTE_ADDR; the header tells visitors apart.
    destination, _ = shop
    configure(settings, INGEST_CLIENT_RATE_LIMIT="2/m", TRUSTED_PROXY_HEADER="HTTP_X_REAL_IP")
    clock.freeze(FROZEN_AT)

    def post(real_ip: str) -> int:
        return client.post(
            url(destination),
            data="[]",
            content_type="text/plain",
            HTTP_ORIGIN=SHOP,
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_REAL_IP=real_ip,
        ).status_code

    assert [post(ATTACKER) for _ in range(3)] == [202, 202, 429]
    assert post(VISITOR) == 202


def test_any_text_in_the_proxy_header_is_a_safe_cache_key(
    client: Client, shop: tuple[Destination, str], settings: Any, clock: Any
) -> None:
    # Whatever a client slips into the header (spaces, control characters, 10 kB) becomes a
    # cache key Memcached accepts too, never a 500.
    destination, _ = shop
    configure(settings, INGEST_CLIENT_RATE_LIMIT="1/m", TRUSTED_PROXY_HEADER="HTTP_X_REAL_IP")
    clock.freeze(FROZEN_AT)
    for header in ["1.2.3.4 <script>", "tab\there", "x" * 10_000]:
        answers = [
            client.post(
                url(destination),
                data="[]",
                content_type="text/plain",
                HTTP_ORIGIN=SHOP,
                HTTP_X_REAL_IP=header,
            ).status_code
            for _ in range(2)
        ]
        assert answers == [202, 429], header
