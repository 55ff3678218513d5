"""``IngestMiddleware``: the ingest URL answered without the middleware after it, the pages not."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponseBase
from django.test import Client
from django.urls import reverse

from capi_destinations.models import Destination, Event, EventStatus
from tests.conftest import FROZEN_AT

pytestmark = pytest.mark.usefixtures("clock")

SHOP = "https://shop.example.com"
INGEST = "capi_destinations.middleware.IngestMiddleware"
RECORDER = "tests.test_ingest_middleware.Recorder"


class Recorder:
    """A middleware at the end of the list: records the paths of the requests that reach it."""

    seen: list[str] = []  # shared by the instances Django makes

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        Recorder.seen.append(request.path)
        return self.get_response(request)


@pytest.fixture
def lean_site(settings: Any) -> None:
    """The test site's middleware with IngestMiddleware after SecurityMiddleware."""
    middleware = list(settings.MIDDLEWARE)
    middleware.insert(1, INGEST)
    settings.MIDDLEWARE = [*middleware, RECORDER]
    Recorder.seen = []


@pytest.fixture
def shop(make_destination: Callable[..., Destination]) -> tuple[Destination, str]:
    destination = make_destination(allowed_origins=SHOP)
    secret = destination.set_ingest_secret()
    destination.save()
    return destination, secret


def event(event_id: str) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": int(FROZEN_AT.timestamp()) - 10,
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": f"{SHOP}/checkout",
        "user_data": {"email": "jane@example.com", "user_agent": "Mozilla/5.0 (Server said)"},
        "custom_data": {"value": 20, "currency": "USD"},
    }


def endpoint(destination: Destination) -> str:
    return reverse("capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key})


def browser_post(client: Client, destination: Destination, body: Any) -> Any:
    return client.post(
        endpoint(destination),
        data=json.dumps(body),
        content_type="text/plain;charset=UTF-8",
        HTTP_ORIGIN=SHOP,
        HTTP_USER_AGENT="Mozilla/5.0 (Browser)",
    )


def test_the_ingest_url_is_answered_before_the_rest_of_the_middleware(
    lean_site: None, shop: tuple[Destination, str]
) -> None:
    destination, secret = shop
    client = Client()
    answer = client.post(
        endpoint(destination),
        data=json.dumps(event("lean-1")),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    assert answer.status_code == 202
    assert answer.json()["events"][0]["status"] == "stored"
    assert Event.objects.get(event_id="lean-1").status == EventStatus.PENDING
    # The view's own header is there; none of the middleware after IngestMiddleware ran.
    assert "Content-Security-Policy" in answer
    assert Recorder.seen == []
    assert "Cookie" not in answer.get("Vary", "")


def test_pages_still_go_through_every_middleware_and_csrf(
    lean_site: None, shop: tuple[Destination, str], admin_user: User
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    page = client.get(reverse("capi_destinations:overview"))
    refused = client.post(reverse("capi_destinations:overview"), {})

    assert page.status_code == 200
    assert refused.status_code == 403  # no CSRF token: CsrfViewMiddleware still guards pages
    # Both went down the whole list (CSRF refuses in process_view, after every __call__).
    assert Recorder.seen == [reverse("capi_destinations:overview")] * 2


def test_another_url_ending_in_events_is_not_taken_for_the_endpoint(
    lean_site: None, admin_user: User
) -> None:
    client = Client()
    client.force_login(admin_user)

    answer = client.get("/no/such/page/events")

    assert answer.status_code == 404
    assert Recorder.seen == ["/no/such/page/events"]


def test_a_disallowed_host_is_refused_as_for_any_view(
    lean_site: None, shop: tuple[Destination, str], settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    destination, secret = shop
    answer = Client().post(
        endpoint(destination),
        data=json.dumps(event("lean-host")),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        HTTP_HOST="evil.example.net",
    )

    assert answer.status_code == 400
    assert not Event.objects.filter(event_id="lean-host").exists()


def test_staff_exclusion_still_reads_the_logged_in_user(
    lean_site: None, shop: tuple[Destination, str], admin_user: User
) -> None:
    destination, _ = shop
    destination.tenant.exclude_staff = True
    destination.tenant.save()
    staff = Client()
    staff.force_login(admin_user)

    by_staff = browser_post(staff, destination, event("lean-staff"))
    by_visitor = browser_post(Client(), destination, event("lean-visitor"))

    assert by_staff.status_code == by_visitor.status_code == 202
    assert by_staff.json()["events"][0]["status"] == "suppressed"
    assert Event.objects.get(event_id="lean-staff").status == EventStatus.SUPPRESSED
    assert by_visitor.json()["events"][0]["status"] == "stored"
    # The answer depended on the session cookie, and says so (as SessionMiddleware would).
    assert "Cookie" in by_staff["Vary"]
    assert Recorder.seen == []


def test_without_the_setting_the_endpoint_goes_through_the_whole_stack(
    settings: Any, shop: tuple[Destination, str]
) -> None:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, RECORDER]
    Recorder.seen = []
    destination, secret = shop

    answer = Client().post(
        endpoint(destination),
        data=json.dumps(event("full-1")),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    assert answer.status_code == 202
    assert Recorder.seen == [endpoint(destination)]
