"""First-party click IDs: Meta's fbc/fbp format and ``ClickIdMiddleware`` (issue 18).

The middleware runs in a real request through Django's test client, in front of a view that
records an event with ``track(..., request=request)``, as a host site's checkout view does.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from capi_destinations import click_ids, consent, track
from capi_destinations.models import Destination, Event
from tests.conftest import FROZEN_AT

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.test_click_ids")]

FROZEN_MS = int(FROZEN_AT.timestamp() * 1000)
FBCLID = "IwAR2xYz_AbC-123dEf"
MIDDLEWARE = "capi_destinations.middleware.ClickIdMiddleware"


def checkout(request: HttpRequest) -> HttpResponse:
    """A host site's view: records a Purchase for the visitor of this very request."""
    destination = Destination.objects.get()
    track(
        destination,
        {
            "event_name": "Purchase",
            "event_id": "order-1",
            "action_source": "website",
            "user_data": {"email": "jane@example.com"},
            "custom_data": {"value": 10, "currency": "EUR"},
        },
        request=request,
    )
    return HttpResponse("thanks")


def consent_from_cookie(request: HttpRequest) -> dict[str, Any] | None:
    """A consent platform's cookie, read as the site's CLICK_ID_CONSENT function would."""
    value = request.COOKIES.get("consent")
    return {"ad_storage": value} if value else None


def landing(request: HttpRequest) -> HttpResponse:
    """A page like any other of the host site: the same for every visitor."""
    return HttpResponse("welcome")


urlpatterns = [path("checkout/", checkout), path("landing/", landing)]


@pytest.fixture
def site(settings: Any, clock: Any, destination: Destination) -> Client:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, MIDDLEWARE]
    return Client(HTTP_HOST="www.shop.example")


def set_cookies(response: Any) -> dict[str, Any]:
    return {name: morsel for name, morsel in response.cookies.items() if morsel.value}


# --- the values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "index"),
    [
        ("com", 0),
        ("example.com", 1),
        (".example.com", 1),
        ("www.example.com", 2),
        ("localhost", 0),
        ("shop.example.co.uk", 3),
    ],
)
def test_the_subdomain_index_counts_the_cookie_domains_labels(domain: str, index: int) -> None:
    assert click_ids.subdomain_index(domain) == index


def test_values_have_metas_documented_form() -> None:
    assert click_ids.build_fbc(FBCLID, created_ms=1554763741205) == f"fb.1.1554763741205.{FBCLID}"
    assert click_ids.build_fbp(1116446470, created_ms=1596403881668, index=2) == (
        "fb.2.1596403881668.1116446470"
    )
    assert click_ids.is_click_id_value("fb.1.1554763741205.AbC-d_9.AQICAQMC")  # builder appendix
    assert not click_ids.is_click_id_value("fb.1.155")
    assert not click_ids.is_click_id_value("fb.1.1.2.3.4")


def test_ad_storage_consent_decides_and_the_default_stands_in() -> None:
    assert consent.allows_ad_storage({"ad_storage": "granted"}, missing_consent="denied")
    assert not consent.allows_ad_storage({"ad_storage": False}, missing_consent="granted")
    assert consent.allows_ad_storage({"region": "DE"}, missing_consent="granted")
    assert not consent.allows_ad_storage(None, missing_consent="denied")


# --- the middleware ------------------------------------------------------------------------------


def test_landing_with_fbclid_sets_fbc_and_fbp_that_the_same_requests_event_carries(
    site: Client,
) -> None:
    response = site.get(f"/checkout/?fbclid={FBCLID}")

    cookies = set_cookies(response)
    assert cookies["_fbc"].value == f"fb.2.{FROZEN_MS}.{FBCLID}"  # www.shop.example: index 2
    assert re.fullmatch(rf"fb\.2\.{FROZEN_MS}\.[0-9]{{1,10}}", cookies["_fbp"].value)
    for morsel in cookies.values():
        assert morsel["max-age"] == 90 * 24 * 60 * 60
        assert morsel["samesite"] == "Lax"
        assert not morsel["httponly"]
        assert not morsel["secure"]  # plain http here; Secure on https
    user_data = Event.objects.get().payload["user_data"]
    assert user_data["fbc"] == cookies["_fbc"].value
    assert user_data["fbp"] == cookies["_fbp"].value


def test_a_later_visit_keeps_the_values_and_renews_them(site: Client, clock: Any) -> None:
    first = set_cookies(site.get(f"/checkout/?fbclid={FBCLID}"))
    clock.advance(timedelta(days=30))

    again = set_cookies(site.get("/checkout/"))
    same_click = set_cookies(site.get(f"/checkout/?fbclid={FBCLID}"))

    assert again["_fbc"].value == first["_fbc"].value  # renewed, not rebuilt
    assert again["_fbp"].value == first["_fbp"].value
    assert same_click["_fbc"].value == first["_fbc"].value  # the same click keeps its first time


def test_a_new_click_replaces_fbc_and_keeps_fbp(site: Client, clock: Any) -> None:
    first = set_cookies(site.get(f"/checkout/?fbclid={FBCLID}"))
    clock.advance(timedelta(hours=1))

    second = set_cookies(site.get("/checkout/?fbclid=NewerClick42"))

    later_ms = FROZEN_MS + 3_600_000
    assert second["_fbc"].value == f"fb.2.{later_ms}.NewerClick42"
    assert second["_fbp"].value == first["_fbp"].value


def test_the_cookie_domain_setting_sets_domain_and_index(site: Client, settings: Any) -> None:
    settings.CAPI_DESTINATIONS = {"CLICK_ID_COOKIE_DOMAIN": ".shop.example"}
    cookies = set_cookies(site.get(f"/checkout/?fbclid={FBCLID}"))
    assert cookies["_fbc"].value == f"fb.1.{FROZEN_MS}.{FBCLID}"
    assert cookies["_fbc"]["domain"] == ".shop.example"


def test_https_cookies_are_secure(site: Client) -> None:
    cookies = set_cookies(site.get(f"/checkout/?fbclid={FBCLID}", secure=True))
    assert cookies["_fbc"]["secure"]
    assert cookies["_fbp"]["secure"]


def test_refused_ad_storage_sets_no_cookie_and_the_event_gets_none(
    site: Client, settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {"CLICK_ID_CONSENT": "tests.test_click_ids.consent_from_cookie"}
    site.cookies["consent"] = "denied"

    response = site.get(f"/checkout/?fbclid={FBCLID}")

    assert set_cookies(response).keys() <= {"consent"}
    assert "fbc" not in Event.objects.get().payload["user_data"]


def expired_cookies(response: Any) -> dict[str, Any]:
    return {
        name: morsel
        for name, morsel in response.cookies.items()
        if not morsel.value and morsel["max-age"] == 0
    }


@pytest.mark.parametrize("method", ["get", "post"])
def test_ad_storage_refused_later_removes_the_cookies_set_before(
    site: Client, settings: Any, method: str
) -> None:
    """A visitor who accepted, got the cookies, then refused: from that request on, no event
    carries them and the browser is told to drop them."""
    settings.CAPI_DESTINATIONS = {
        "CLICK_ID_CONSENT": "tests.test_click_ids.consent_from_cookie",
        "CLICK_ID_COOKIE_DOMAIN": ".shop.example",
    }
    site.cookies["consent"] = "granted"
    given = set_cookies(site.get(f"/landing/?fbclid={FBCLID}"))
    assert {"_fbc", "_fbp"} <= given.keys()

    site.cookies["consent"] = "denied"
    response = getattr(site, method)("/checkout/")

    user_data = Event.objects.get().payload["user_data"]
    assert "fbc" not in user_data
    assert "fbp" not in user_data
    expired = expired_cookies(response)
    assert expired.keys() == {"_fbc", "_fbp"}
    assert {morsel["domain"] for morsel in expired.values()} == {".shop.example"}
    # The answer removes one visitor's cookies: no shared cache may hand it to another.
    assert "private" in response["Cache-Control"]
    assert "Cookie" in response["Vary"]
    assert not set_cookies(site.get("/landing/"))  # gone, and nothing set again


def test_unknown_consent_leaves_existing_cookies_alone(site: Client, settings: Any) -> None:
    """Only a refusal removes cookies: a consent state the server cannot read (a platform
    that keeps the choice in the browser) may hide a yes."""
    settings.CAPI_DESTINATIONS = {
        "CLICK_ID_CONSENT": "tests.test_click_ids.consent_from_cookie",
        "CLICK_ID_MISSING_CONSENT": "denied",
    }
    site.cookies["_fbp"] = "fb.2.1700000000000.123456"

    response = site.get("/landing/")

    assert not expired_cookies(response)
    assert not set_cookies(response)


def test_unknown_consent_counts_as_the_setting_says(site: Client, settings: Any) -> None:
    settings.CAPI_DESTINATIONS = {
        "CLICK_ID_CONSENT": "tests.test_click_ids.consent_from_cookie",
        "CLICK_ID_MISSING_CONSENT": "denied",
    }
    assert not set_cookies(site.get(f"/checkout/?fbclid={FBCLID}"))

    site.cookies["consent"] = "granted"
    assert set_cookies(site.get("/checkout/?fbclid=Other1"))["_fbc"].value.endswith(".Other1")


def test_posts_and_junk_fbclids_set_nothing(site: Client) -> None:
    assert not set_cookies(site.post(f"/checkout/?fbclid={FBCLID}"))
    cookies = set_cookies(site.get("/checkout/?fbclid=<script>"))
    assert "_fbc" not in cookies


def test_a_page_cache_never_hands_one_visitors_cookies_to_another(settings: Any) -> None:
    """Django's per-site cache with the middleware listed last, as the README's snippet reads:
    a cached page must not carry the first visitor's _fbp to every later one."""
    settings.MIDDLEWARE = [
        "django.middleware.cache.UpdateCacheMiddleware",
        *settings.MIDDLEWARE,
        "django.middleware.cache.FetchFromCacheMiddleware",
        MIDDLEWARE,
    ]
    settings.CACHE_MIDDLEWARE_SECONDS = 600

    first = Client().get("/landing/")
    second = Client().get("/landing/")

    assert first.cookies["_fbp"].value != second.cookies["_fbp"].value
    assert "private" in first["Cache-Control"]
    assert "Cookie" in first["Vary"]
