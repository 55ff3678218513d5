"""The ingest endpoint: every answer it gives, CORS, limits, and that no input makes a 500."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.template import Context, Template
from django.test import Client, RequestFactory
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capi_destinations import destinations
from capi_destinations.models import Destination, Event, EventStatus
from capi_destinations.views.ingest import forget_destinations
from tests.conftest import FROZEN_AT, terminate_backend

pytestmark = pytest.mark.usefixtures("clock")

SHOP = "https://shop.example.com"
NOW_SECONDS = int(FROZEN_AT.timestamp())


def endpoint(destination: Destination) -> str:
    return reverse("capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key})


def event(event_id: str = "order-1", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": NOW_SECONDS - 10,
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": f"{SHOP}/checkout",
        "user_data": {"email": "jane@example.com", "user_agent": "Mozilla/5.0 (Server said)"},
        "custom_data": {"value": 20, "currency": "USD"},
    }
    data.update(overrides)
    return data


class Caller:
    """Posts to one destination's endpoint as a server (with the secret) or as a browser."""

    def __init__(self, client: Client, destination: Destination, secret: str) -> None:
        self.client = client
        self.destination = destination
        self.secret = secret
        self.url = endpoint(destination)

    def server(self, body: Any, *, raw: bytes | None = None, **headers: Any) -> Any:
        data = raw if raw is not None else json.dumps(body)
        headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {self.secret}")
        return self.client.post(self.url, data=data, content_type="application/json", **headers)

    def browser(self, body: Any, *, origin: str | None = SHOP, **headers: Any) -> Any:
        if origin is not None:
            headers["HTTP_ORIGIN"] = origin
        return self.client.post(
            self.url,
            data=json.dumps(body),
            content_type="text/plain;charset=UTF-8",
            HTTP_USER_AGENT="Mozilla/5.0 (Browser)",
            **headers,
        )


@pytest.fixture
def shop_destination(make_destination: Callable[..., Destination]) -> tuple[Destination, str]:
    destination = make_destination(allowed_origins=f"{SHOP}\nhttps://www.example.org/")
    secret = destination.set_ingest_secret()
    destination.save()
    return destination, secret


@pytest.fixture
def caller(client: Client, shop_destination: tuple[Destination, str]) -> Caller:
    destination, secret = shop_destination
    return Caller(client, destination, secret)


def error_code(response: Any) -> str:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]["code"]


# --- 202 -----------------------------------------------------------------------------------


def test_url_is_mounted_under_the_apps_prefix(caller: Caller) -> None:
    assert caller.url == f"/capi/v1/destinations/{caller.destination.ingest_key}/events"


def test_a_server_call_with_the_secret_records_one_event(caller: Caller) -> None:
    response = caller.server(event())

    assert response.status_code == 202
    body = response.json()
    row = Event.objects.get()
    assert body["received"] == 1
    assert body["events"] == [
        {
            "index": 0,
            "status": "stored",
            "id": row.pk,
            "event_id": "order-1",
            "diagnostics": row.diagnostics,
        }
    ]
    assert row.status == EventStatus.PENDING


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a server to drop the connection")
@pytest.mark.django_db(transaction=True)
def test_a_request_on_a_connection_the_server_dropped_is_recorded(caller: Caller) -> None:
    # CONN_HEALTH_CHECKS on: the request's first statement (the key lookup) checks the reused
    # connection itself, and runs again on a new one when the server has dropped it.
    enabled = connection.health_check_enabled
    connection.health_check_enabled = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (old_pid,) = cursor.fetchone()
        terminate_backend(old_pid)
        # What close_old_connections does when a request starts (the test client skips it).
        connection.health_check_done = False

        response = caller.server(event())
    finally:
        connection.health_check_enabled = enabled

    assert response.status_code == 202
    assert Event.objects.get().event_id == "order-1"


def test_a_data_list_or_a_bare_list_records_each_event(caller: Caller) -> None:
    wrapped = caller.server({"data": [event("a"), event("b", custom_data={})]})
    bare = caller.server([event("c"), event("a")])

    assert wrapped.status_code == bare.status_code == 202
    assert [e["status"] for e in wrapped.json()["events"]] == ["stored", "rejected"]
    assert [e["status"] for e in bare.json()["events"]] == ["stored", "duplicate"]
    rejected = wrapped.json()["events"][1]
    assert "missing_value" in [d["code"] for d in rejected["diagnostics"]]
    assert bare.json()["events"][1]["id"] == wrapped.json()["events"][0]["id"]
    assert Event.objects.count() == 3


def test_a_server_call_is_not_taken_for_the_visitor(caller: Caller) -> None:
    caller.server(event(), HTTP_USER_AGENT="python-requests/2.32", REMOTE_ADDR="10.1.2.3")

    user_data = Event.objects.get().payload["user_data"]
    assert user_data["client_user_agent"] == "Mozilla/5.0 (Server said)"
    assert "client_ip_address" not in user_data


def test_a_browser_call_from_an_allowed_origin_is_enriched_and_gets_cors(caller: Caller) -> None:
    browser_event = event(user_data={"email": "jane@example.com"})
    response = caller.browser(browser_event, REMOTE_ADDR="198.51.100.4")

    assert response.status_code == 202
    assert response["Access-Control-Allow-Origin"] == SHOP
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert response["Vary"] == "Origin"
    user_data = Event.objects.get().payload["user_data"]
    assert user_data["client_ip_address"] == "198.51.100.4"
    assert user_data["client_user_agent"] == "Mozilla/5.0 (Browser)"


def test_origins_match_without_case_or_trailing_slash(caller: Caller) -> None:
    response = caller.browser(event(), origin="https://WWW.example.org")

    assert response.status_code == 202


def test_a_disabled_destination_still_accepts_events(caller: Caller) -> None:
    caller.destination.enabled = False
    caller.destination.save()

    assert caller.server(event()).status_code == 202
    assert Event.objects.count() == 1


def test_an_empty_list_is_accepted_as_nothing(caller: Caller) -> None:
    response = caller.server({"data": []})

    assert response.status_code == 202
    assert response.json() == {"received": 0, "events": []}


# --- CORS preflight --------------------------------------------------------------------------


def test_preflight_from_an_allowed_origin(caller: Caller) -> None:
    response = caller.client.options(
        caller.url,
        HTTP_ORIGIN=SHOP,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type",
    )

    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == SHOP
    assert response["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert response["Access-Control-Allow-Headers"] == "Content-Type"
    assert int(response["Access-Control-Max-Age"]) > 0
    assert response["Vary"] == "Origin"


def test_preflight_from_another_origin_gets_no_cors(caller: Caller) -> None:
    response = caller.client.options(caller.url, HTTP_ORIGIN="https://evil.example.net")

    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response
    assert error_code(response) == "origin_not_allowed"


# --- 401 / 403 / 404 / 405 -------------------------------------------------------------------


def test_no_secret_and_no_origin_is_401(caller: Caller) -> None:
    response = caller.browser(event(), origin=None)

    assert response.status_code == 401
    assert error_code(response) == "missing_credentials"
    assert response["WWW-Authenticate"] == "Bearer"


def test_a_malformed_authorization_header_is_401(caller: Caller) -> None:
    response = caller.server(event(), HTTP_AUTHORIZATION=f"Token {caller.secret}")

    assert response.status_code == 401
    assert error_code(response) == "invalid_authorization"


def test_a_wrong_secret_is_403(caller: Caller) -> None:
    response = caller.server(event(), HTTP_AUTHORIZATION="Bearer sk_not-the-secret")

    assert response.status_code == 403
    assert error_code(response) == "wrong_secret"
    assert Event.objects.count() == 0


def test_an_origin_not_allowed_is_403(caller: Caller) -> None:
    response = caller.browser(event(), origin="https://evil.example.net")

    assert response.status_code == 403
    assert error_code(response) == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in response
    assert Event.objects.count() == 0


def test_a_public_key_without_allowed_origins_accepts_no_browser(
    client: Client, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination()
    response = Caller(client, destination, "").browser(event())

    assert response.status_code == 403


def test_a_destination_without_a_secret_refuses_every_bearer(
    client: Client, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination()
    response = Caller(client, destination, "").server(event(), HTTP_AUTHORIZATION="Bearer x")

    assert response.status_code == 403


def test_an_unknown_key_is_404(client: Client, db: None) -> None:
    for key in ("pk_unknown", "x" * 200, "bad key"):
        url = reverse("capi_destinations:ingest_events", kwargs={"ingest_key": key})
        response = client.post(url, data="{}", content_type="application/json")
        assert response.status_code == 404
        assert error_code(response) == "unknown_key"


def test_other_methods_are_405(caller: Caller) -> None:
    for method in ("get", "put", "delete", "patch"):
        response = getattr(caller.client, method)(caller.url)
        assert response.status_code == 405
        assert response["Allow"] == "POST, OPTIONS"
        assert error_code(response) == "method_not_allowed"


def test_regenerated_keys_apply_at_once(caller: Caller) -> None:
    old_url = caller.url
    destination = caller.destination
    destination.ingest_key = "pk_regenerated-key"
    new_secret = destination.set_ingest_secret()
    destination.save()

    assert caller.client.post(old_url, data="{}", content_type="text/plain").status_code == 404
    caller.url, old_secret, caller.secret = endpoint(destination), caller.secret, new_secret
    assert caller.server(event()).status_code == 202
    assert caller.server(event(), HTTP_AUTHORIZATION=f"Bearer {old_secret}").status_code == 403


def test_a_known_key_costs_one_small_query_to_be_found_again(
    caller: Caller, django_assert_num_queries: Any
) -> None:
    caller.server(event("warm-up"))
    # The credentials' version (one indexed row, three columns), the click IDs remembered for
    # the customer (click_memory), then the INSERT (on SQLite, which has no INSERT inside a
    # WITH, a second one for the queue entry): the cached destination is reused, never trusted
    # without that check.
    with django_assert_num_queries(3 if connection.vendor == "postgresql" else 4) as queries:
        response = caller.server(event("second"))
    assert response.status_code == 202
    check = queries.captured_queries[0]["sql"]
    assert check.startswith("SELECT")
    assert "ingest_secret_hash" in check


# --- 400 / 413 / 429 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b'{"event_name": "Purchase", "custom_data": {"value": NaN}}', "invalid_json"),
        (b"[Infinity]", "invalid_json"),
        (b"[" * 100_000, "invalid_json"),
        (b'"Purchase"', "invalid_body"),
        (b"42", "invalid_body"),
        (b"null", "invalid_body"),
        (b'{"data": {"event_name": "Purchase"}}', "invalid_data"),
    ],
)
def test_bodies_that_are_not_events_are_400(caller: Caller, raw: bytes, code: str) -> None:
    response = caller.server(None, raw=raw)

    assert response.status_code == 400
    assert error_code(response) == code
    assert response.json()["error"]["message"]


def test_more_than_a_thousand_events_is_400(caller: Caller) -> None:
    response = caller.server({"data": [{}] * 1001})

    assert response.status_code == 400
    assert error_code(response) == "too_many_events"
    assert Event.objects.count() == 0


def test_a_body_over_the_limit_is_413(caller: Caller, settings: Any) -> None:
    settings.CAPI_DESTINATIONS = {"INGEST_MAX_BODY_BYTES": 300}
    small = caller.server(event())
    big = caller.server({"data": [event(f"e{n}") for n in range(5)]})

    assert small.status_code == 202
    assert big.status_code == 413
    assert error_code(big) == "body_too_large"


def test_over_the_rate_per_key_is_429_until_the_next_window(
    caller: Caller, settings: Any, clock: Any
) -> None:
    settings.CAPI_DESTINATIONS = {"INGEST_RATE_LIMIT": "2/m"}
    clock.freeze(FROZEN_AT + timedelta(seconds=15))
    answers = [caller.server(event(f"e{n}")).status_code for n in range(3)]
    limited = caller.server(event("e4"))
    clock.advance(timedelta(seconds=45))
    next_window = caller.server(event("e5"))

    assert answers == [202, 202, 429]
    assert error_code(limited) == "rate_limited"
    assert limited["Retry-After"] == "45"
    assert next_window.status_code == 202
    assert Event.objects.count() == 3


def test_the_rate_is_counted_per_key(
    client: Client, caller: Caller, settings: Any, make_destination: Callable[..., Destination]
) -> None:
    settings.CAPI_DESTINATIONS = {"INGEST_RATE_LIMIT": "1/h"}
    other = make_destination()
    other_secret = other.set_ingest_secret()
    other.save()

    assert caller.server(event()).status_code == 202
    assert caller.server(event()).status_code == 429
    assert Caller(client, other, other_secret).server(event()).status_code == 202


# --- never a 500 ---------------------------------------------------------------------------

EVENT_KEYS = [
    "event_name",
    "event_time",
    "event_id",
    "action_source",
    "event_source_url",
    "user_data",
    "custom_data",
    "consent",
    "opt_out",
    "data_processing_options",
]
USER_DATA_KEYS = ["em", "email", "ph", "phone", "fn", "db", "zp", "country", "ip", "fbc", "fbp"]

# Text with NUL and lone surrogates mixed in: JSON can carry them, databases cannot.
# (st.text() never yields surrogates, hence a list of characters joined.)
any_text = st.lists(
    st.characters() | st.sampled_from(["\x00", "\ud800", "\udfff"]), max_size=30
).map("".join)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
event_like = st.dictionaries(
    st.sampled_from(EVENT_KEYS) | st.text(max_size=8),
    json_values
    | st.dictionaries(st.sampled_from(USER_DATA_KEYS) | st.text(max_size=5), json_values),
    max_size=8,
)
bodies = (
    json_values
    | event_like
    | st.lists(event_like, max_size=4)
    | st.builds(lambda events: {"data": events}, st.lists(event_like | json_values, max_size=4))
)

ANY_INPUT = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@ANY_INPUT
@given(body=bodies)
def test_no_json_value_causes_a_500(caller: Caller, body: Any) -> None:
    response = caller.server(body)

    assert response.status_code in (202, 400)
    if response.status_code == 202:
        answer = response.json()
        assert answer["received"] == len(answer["events"])
        assert {e["status"] for e in answer["events"]} <= {
            "stored",
            "rejected",
            "suppressed",
            "duplicate",
        }


def test_json_escapes_no_database_stores_are_accepted(caller: Caller) -> None:
    # Valid JSON, but PostgreSQL refuses NUL in text and jsonb, and lone surrogates anywhere.
    raw = (
        b'{"event_name": "Purchase\\u0000", "event_id": "\\ud800", "action_source": "web\\u0000",'
        b' "user_data": {"em": "\\u0000", "external_id": "\\udfff", "bad\\u0000key": 1},'
        b' "custom_data": {"value": 1, "currency": "USD", "note": "\\ud83d"}, "consent": '
        b'{"ad_storage": "granted", "source": "cmp\\u0000"}}'
    )
    response = caller.server(None, raw=raw)

    assert response.status_code == 202
    row = Event.objects.get()
    assert row.event_name == "Purchase"
    assert row.status == EventStatus.REJECTED


@ANY_INPUT
@given(raw=st.binary(max_size=200))
def test_no_bytes_cause_a_500(caller: Caller, raw: bytes) -> None:
    response = caller.server(None, raw=raw)

    assert response.status_code in (202, 400)


# --- the snippet ---------------------------------------------------------------------------


def test_the_snippet_tag_renders_the_configured_script(caller: Caller) -> None:
    request = RequestFactory().get("/", HTTP_HOST="capi.agency.example")
    html = Template("{% load capi_tags %}{% capi_snippet destination %}").render(
        Context({"destination": caller.destination, "request": request})
    )

    key = caller.destination.ingest_key
    assert 'src="http://capi.agency.example/static/capi_destinations/capi.js"' in html
    assert (
        f'data-capi-endpoint="http://capi.agency.example/capi/v1/destinations/{key}/events"' in html
    )
    assert caller.secret not in html


def test_the_snippet_without_a_request_uses_relative_urls(caller: Caller) -> None:
    html = Template("{% load capi_tags %}{% capi_snippet destination %}").render(
        Context({"destination": caller.destination})
    )

    assert f'data-capi-endpoint="{caller.url}"' in html


# --- changes made by another process ----------------------------------------------------------
#
# Each web process keeps destinations in a cache of its own. A change saved in this process
# clears it through Django's signals; a change saved by another process sends no signal here.
# Disconnecting the handlers while the change is made is exactly that situation.


@contextmanager
def in_another_process() -> Iterator[None]:
    """Make changes the way another web process would: this process's cache is not told."""
    handlers = [
        (post_save, "capi_ingest_cache_save"),
        (post_delete, "capi_ingest_cache_delete"),
    ]
    for signal, uid in handlers:
        assert signal.disconnect(sender=Destination, dispatch_uid=uid)
    try:
        yield
    finally:
        post_save.connect(forget_destinations, sender=Destination, dispatch_uid=handlers[0][1])
        post_delete.connect(forget_destinations, sender=Destination, dispatch_uid=handlers[1][1])


@pytest.fixture
def long_cache(settings: Any) -> None:
    # However long a process may keep a destination, credentials must never be stale.
    settings.CAPI_DESTINATIONS = {"INGEST_KEY_CACHE_SECONDS": 3600, "INGEST_RATE_LIMIT": ""}


@pytest.mark.usefixtures("long_cache")
def test_keys_regenerated_by_another_process_stop_working_here_at_once(caller: Caller) -> None:
    assert caller.server(event("before")).status_code == 202  # the destination is now cached
    old_url, old_secret = caller.url, caller.secret
    with in_another_process():
        new_secret = destinations.regenerate_ingest_keys(caller.destination, actor=None)

    answer = caller.server(event("with-old-key"))
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "unknown_key"
    caller.url = endpoint(caller.destination)
    assert caller.server(event("old-secret")).status_code == 403
    caller.secret = new_secret
    assert caller.server(event("after")).status_code == 202
    assert old_url != caller.url
    assert old_secret != new_secret
    assert not Event.objects.filter(event_id__in=["with-old-key", "old-secret"]).exists()


@pytest.mark.usefixtures("long_cache")
def test_a_secret_changed_without_any_signal_is_checked_at_once(caller: Caller) -> None:
    assert caller.server(event("before")).status_code == 202
    # A bulk update (a data migration, the shell) saves no model and sends no signal at all.
    Destination.objects.filter(pk=caller.destination.pk).update(ingest_secret_hash="0" * 64)
    assert caller.server(event("after")).status_code == 403


@pytest.mark.usefixtures("long_cache")
def test_a_destination_deleted_by_another_process_is_a_clean_404(caller: Caller) -> None:
    assert caller.server(event("before")).status_code == 202
    with in_another_process():
        destinations.delete_destination(caller.destination, actor=None)

    answer = caller.server(event("after"))
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "unknown_key"
    assert not Event.objects.exists()


@pytest.mark.usefixtures("long_cache")
def test_settings_saved_by_another_process_apply_here_at_once(caller: Caller) -> None:
    assert caller.browser(event("before")).status_code == 202
    with in_another_process():
        caller.destination.allowed_origins = "https://elsewhere.example.com"
        caller.destination.save()
    assert caller.browser(event("after")).status_code == 403
